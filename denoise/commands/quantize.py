"""``denoise quantize``: an exported graph to dynamic INT8 (CPU) or FP16 (CUDA), with a parity report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from denoise.commands.export_onnx import add_report_arguments, report

HELP = (
    "Quantize a graph written by `denoise export-onnx`: int8 = dynamic INT8 (onnxruntime.quantization; "
    "MatMul/Gemm weights in 8 bit, Conv kept in FP32), fp16 = float16 for the CUDA execution provider. "
    "Ends with the parity report against torch (the weights named in the graph's metadata, or --weights)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="exported FP32 .onnx")
    p.add_argument("--mode", choices=["int8", "fp16"], default="int8", help="(default: %(default)s)")
    p.add_argument(
        "--output", "-o", default=None, help="output .onnx (default: INPUT with .int8/.fp16 added)"
    )
    p.add_argument("--weights", "-w", default=None,
                   help="torch weights for the parity report (default: the manifest name in the metadata)")  # fmt: skip
    add_report_arguments(p)


def main(args: argparse.Namespace) -> int:
    from denoise.export import quantize_onnx
    from denoise.onnx_metadata import read_metadata
    from denoise_models import manifest

    src = Path(args.input)
    try:
        meta = read_metadata(src)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    dst = Path(args.output) if args.output else src.with_name(f"{src.stem}.{args.mode}.onnx")
    quantize_onnx(src, dst, args.mode)
    print(
        f"quantized {src} ({args.mode}) -> {dst} [{src.stat().st_size / 1e6:.1f} -> {dst.stat().st_size / 1e6:.1f} MB]"
    )
    weights = args.weights or (meta.weights if meta.weights in manifest() else None)
    if weights is None and not args.no_parity:
        print(
            f"parity: skipped; pass --weights with the checkpoint {meta.weights!r} was exported from",
            file=sys.stderr,
        )
        return 0
    return report(dst, weights, args)
