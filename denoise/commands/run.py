"""``denoise run``: denoise every audio file in a folder (``1键推理.py`` is this with its defaults)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from denoise.commands.engine_options import add_engine_arguments, engine_config

HELP = (
    "Denoise every audio file below INPUT (a folder, one file, or a .csv/.jsonl/.parquet list with a "
    "'path' column) into OUTPUT (sub-folders mirrored). Every input gets a row in OUTPUT/"
    ".denoise-manifest.jsonl; a rerun skips what that manifest shows done with the same settings and an "
    "intact output, so an interrupted run resumes. Exit status: 0 all good, 1 some files failed (each "
    "with its reason), 2 nothing could run (weights unavailable, folder not writable or in use by another "
    "run, bad option), 130/143 interrupted by Ctrl-C/SIGTERM (rerun to resume)."
)


def add_arguments(
    p: argparse.ArgumentParser, *, input_default: str = "input", output_default: str = "output"
) -> None:
    p.add_argument(
        "--input",
        "-i",
        default=input_default,
        help="folder of noisy recordings, one file, or a list (.csv/.jsonl/.parquet) (default: %(default)s)",
    )
    p.add_argument("--output", "-o", default=output_default, help="folder for results (default: %(default)s)")
    add_engine_arguments(p)
    p.add_argument(
        "--format",
        dest="out_format",
        default=None,
        help="output container by extension, e.g. wav or flac (default: same as the input)",
    )
    p.add_argument(
        "--subtype", default=None, help="output sample format, e.g. PCM_16, PCM_24, FLOAT (default: as input)"
    )
    p.add_argument("--overwrite", action="store_true", help="redo every file, even those done before")
    p.add_argument(
        "--manifest", default=None, help="results manifest path (default: OUTPUT/.denoise-manifest.jsonl)"
    )
    p.add_argument("--hash", action="store_true", help="record each input's sha256 (resume then checks it)")
    p.add_argument(
        "--score",
        action="store_true",
        help="add DNSMOS SIG/BAK/OVRL before and after to the manifest (slower)",
    )
    p.add_argument(
        "--workers",
        default="auto",
        help="processes that denoise files side by side, one thread each: a number (1 = in this process), "
        "or auto = one per physical CPU core when the files hold minutes of audio, else 1; 1 on a GPU "
        "(default: auto)",
    )
    p.add_argument("--wait", action="store_true", help="wait for another run on OUTPUT instead of exit 2")
    p.add_argument("--verbose", "-v", action="store_true", help="list the plan, skipped and ignored files")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from denoise.batch import EXIT_INTERRUPTED
    from denoise.interrupts import Interrupted, interruptible

    try:
        with interruptible():  # from the start: a TERM while torch imports still ends cleanly
            return _main(args)
    except (KeyboardInterrupt, Interrupted) as err:  # before the batch started: nothing was written
        print("interrupted — nothing was written", file=sys.stderr)
        return 128 + err.signum if isinstance(err, Interrupted) else EXIT_INTERRUPTED


def _main(args: argparse.Namespace) -> int:
    from denoise.batch import EXIT_OK, EXIT_SETUP, SetupError, print_summary, run_batch
    from denoise.manifest import engine_settings
    from denoise.workers import DenoiserFactory
    from denoise_models import WeightsError

    input_path, output_dir = Path(args.input), Path(args.output)
    suffix = None
    if args.compat:
        suffix = ".wav"
    elif args.out_format:
        suffix = "." + args.out_format.lower().lstrip(".")
    workers = args.workers if args.workers == "auto" else _positive(args.workers)
    try:
        config = engine_config(args)
        settings = engine_settings(config)
    except (WeightsError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_SETUP
    if workers is None:
        print(f"error: --workers takes 'auto' or a whole number >= 1, not {args.workers!r}", file=sys.stderr)
        return EXIT_SETUP

    try:
        summary = run_batch(
            input_path,
            output_dir,
            DenoiserFactory(config, label=args.weights),  # called once, only when there is work to do
            settings=settings,
            overwrite=args.overwrite,
            suffix=suffix,
            subtype=args.subtype,
            manifest_path=Path(args.manifest) if args.manifest else None,
            with_hash=args.hash,
            score=args.score,
            wait=args.wait,
            verbose=args.verbose,
            progress=not args.quiet,
            workers=workers,
        )
    except SetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_SETUP
    except Exception as err:  # weights unavailable or a backend that cannot start: nothing was written
        if isinstance(err, WeightsError | ValueError | RuntimeError | ImportError):
            print(f"error: {err}", file=sys.stderr)
            return EXIT_SETUP
        raise
    if not summary.results and not summary.interrupted_by:
        print(
            f"{input_path}/ has no audio files yet: put .wav/.flac/.ogg/.mp3 files there and run again.",
            file=sys.stderr,
        )
        return EXIT_OK
    print_summary(summary)
    return summary.exit_code


def _positive(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) >= 1 else None
