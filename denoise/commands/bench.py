"""``denoise bench``: real-time factor and peak memory of one configuration (a fresh subprocess)."""

from __future__ import annotations

import argparse
import json
import sys

from denoise.backends import BACKENDS
from denoise_models.spec import SPECS

HELP = (
    "Measure the real-time factor (processing time / audio time, lower is faster) and the peak RSS of the "
    "engine on real speech repeated to --seconds, in a fresh process. The whole matrix of docs/benchmarks.md "
    "is benchmarks/run_benchmarks.py."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", choices=list(SPECS), default="frcrn")
    p.add_argument("--weights", "-w", default="default", help="weights name or checkpoint file")
    p.add_argument("--backend", choices=list(BACKENDS), default="torch")
    p.add_argument("--onnx-path", default=None, help="graph for --backend onnx (default: export/cache)")
    p.add_argument("--seconds", type=float, default=10.0, help="audio duration (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default: %(default)s)")
    p.add_argument(
        "--repeats", type=int, default=3, help="timed runs; the minimum counts (default: %(default)s)"
    )
    p.add_argument("--input", default=None, help="speech file to repeat (default: a shared noisy clip)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")


def main(args: argparse.Namespace) -> int:
    from denoise.bench import TABLE_HEADER, BenchConfig, format_row, measure

    config = BenchConfig(
        model=args.model, weights=args.weights, backend=args.backend, onnx_path=args.onnx_path,
        seconds=args.seconds, threads=args.threads, repeats=args.repeats, speech=args.input,
    )  # fmt: skip
    try:
        result = measure(config)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(f"{result.backend_name}: times {', '.join(f'{t:.2f}' for t in result.times)} s")
        print(TABLE_HEADER)
        print(format_row(result))
    return 0
