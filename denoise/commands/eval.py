"""``denoise eval``: score a model (or another system's outputs) on a folder of noisy files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from denoise.commands.engine_options import add_engine_arguments, engine_config

HELP = (
    "Score enhancement on a folder of noisy files: PESQ-WB, STOI/eSTOI and SI-SNR(i) against clean "
    "references when given (--clean; VoiceBank-DEMAND and DNS-Challenge names are matched), DNSMOS "
    "P.835/P.808 always (offline). The enhanced audio comes from a model run by the engine (--model/"
    "--weights) or from a folder of already-enhanced files (--enhanced). Writes per_file.csv, summary.csv/"
    ".json (mean ± 95 % CI) and report.md with figures to --out. Exit status: 0 all files scored, "
    "1 some files skipped (listed), 2 nothing could run."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--noisy", "-n", required=True, help="folder of noisy input files")
    p.add_argument("--clean", "-c", default=None, help="folder of clean references (optional)")
    p.add_argument(
        "--enhanced", "-e", default=None, help="folder of already-enhanced files to score (no model run)"
    )
    p.add_argument(
        "--out", "-o", default="runs/eval", help="folder for CSV, summary and report (default: %(default)s)"
    )
    p.add_argument(
        "--label", default=None, help="system name in the report (default: weights name or folder name)"
    )
    p.add_argument("--exclude", nargs="*", default=[], metavar="NAME", help="noisy file stems to leave out")
    add_engine_arguments(p)
    p.add_argument("--save-enhanced", action="store_true", help="keep the model outputs in OUT/enhanced/")
    p.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS (intrusive metrics only)")
    p.add_argument("--examples", type=int, default=3, help="spectrogram PNGs in the report (default: 3)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N files (smoke runs)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _make_enhancer(args: argparse.Namespace):
    """The engine as an ``Enhancer`` with the command-line options."""
    from dataclasses import asdict

    from denoise.evaluate import engine_enhancer

    options = asdict(engine_config(args))
    enhance = engine_enhancer(options.pop("model"), options.pop("weights"), **options)
    print(f"model {enhance.arch} ({args.weights}) on {enhance.backend_name}", file=sys.stderr)
    return enhance, enhance.arch


def main(args: argparse.Namespace) -> int:
    from denoise.evaluate import EvalConfig, evaluate, summary_table

    label = args.label
    enhance = None
    if args.enhanced is None:
        try:
            enhance, arch = _make_enhancer(args)
        except Exception as err:  # weights unavailable, backend cannot start: say so, score nothing
            print(f"error: cannot start the model: {err}", file=sys.stderr)
            return 2
        label = label or (f"{arch} ({args.weights})" if args.weights != "default" else arch)
    else:
        label = label or Path(args.enhanced).name
    config = EvalConfig(
        noisy_dir=Path(args.noisy),
        clean_dir=Path(args.clean) if args.clean else None,
        enhanced_dir=Path(args.enhanced) if args.enhanced else None,
        out_dir=Path(args.out),
        label=label,
        exclude=tuple(args.exclude),
        dnsmos=not args.no_dnsmos,
        save_enhanced=args.save_enhanced,
        report_examples=args.examples,
        progress=not args.quiet,
        limit=args.limit,
    )
    try:
        result = evaluate(config, enhance)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary_table(result.summary))
    for name, path in result.paths.items():
        print(f"{name}: {path}", file=sys.stderr)
    if result.failed:
        print(f"{len(result.failed)} file(s) skipped, see the report", file=sys.stderr)
        return 1
    return 0
