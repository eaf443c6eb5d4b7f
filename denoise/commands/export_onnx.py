"""``denoise export-onnx``: FRCRN / GTCRN to ONNX (dynamic batch and time), with a parity report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from denoise_models.atomic import atomic_output
from denoise_models.spec import SPECS

HELP = (
    "Export FRCRN or GTCRN to ONNX (opset 17, dynamic batch and time axes, metadata embedded, checked with "
    "onnx.checker), then compare it with the torch network on real speech (max abs error, SI-SNR) and on a "
    "few VoiceBank-DEMAND pairs (PESQ, DNSMOS). FRCRN takes/returns waveforms (STFT inside the graph); GTCRN "
    "takes/returns [batch, 257, frames, 2] spectra (STFT outside, as the onnx backend does it)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", choices=list(SPECS), required=True, help="architecture to export")
    p.add_argument(
        "--weights", "-w", default="default", help="weights name or checkpoint file (default: the model's)"
    )
    p.add_argument(
        "--output", "-o", default=None, help="output .onnx (default: the export cache of the weights store)"
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    p.add_argument("--quantize", choices=["int8", "fp16"], action="append", default=[],
                   help="also write a quantized copy beside the export (repeatable)")  # fmt: skip
    add_report_arguments(p)


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-parity", action="store_true", help="skip the parity report")
    p.add_argument("--no-quality", action="store_true", help="parity: numbers only, no PESQ/DNSMOS pairs")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the parity run")


def report(path: Path, weights: str | None, args: argparse.Namespace) -> int:
    """Run the parity report for ``path``, print it and write ``<path>.parity.json``; 0 on success."""
    from denoise.onnx_metadata import read_metadata
    from denoise.parity import QUALITY_PAIRS, parity_report

    if args.no_parity:
        return 0
    if read_metadata(path).precision == "fp16":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            print(
                "parity: skipped for FP16 (needs the CUDA EP; ORT's CPU EP cannot run this graph)",
                file=sys.stderr,
            )
            return 0
    from denoise.tutorial import shared_dir

    rep = parity_report(
        path,
        weights,
        shared=shared_dir(),
        quality_pairs=None if args.no_quality else QUALITY_PAIRS,
        threads=args.threads,
    )
    print(rep.as_text())
    out = path.with_name(path.name + ".parity.json")
    with atomic_output(out) as tmp:
        tmp.write_text(json.dumps(rep.as_dict(), indent=2, default=float) + "\n")
    print(f"parity report: {out}")
    return 0


def main(args: argparse.Namespace) -> int:
    from denoise.export import ExportConfig, export_onnx, quantize_onnx

    try:
        result = export_onnx(
            ExportConfig(args.model, args.weights, Path(args.output) if args.output else None, args.opset)
        )
    except Exception as err:  # weights missing, exporter failure: one line, not a traceback
        print(f"error: export failed: {err}", file=sys.stderr)
        return 2
    meta = result.metadata
    print(
        f"exported {meta.model} ({meta.weights}, sha256 {meta.weights_sha256[:12] or '-'}) -> {result.path} "
        f"[{result.size_bytes / 1e6:.1f} MB, opset {meta.opset}, {result.seconds:.0f} s]"
    )
    paths = [result.path]
    for mode in args.quantize:
        dst = result.path.with_name(f"{result.path.stem}.{mode}.onnx")
        paths.append(quantize_onnx(result.path, dst, mode))
        print(f"quantized ({mode}) -> {dst} [{dst.stat().st_size / 1e6:.1f} MB]")
    for path in paths:
        report(path, args.weights, args)
    return 0
