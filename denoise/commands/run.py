"""``denoise run``: denoise every audio file in a folder (``1键推理.py`` is this with its defaults)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from denoise.commands.engine_options import add_engine_arguments, engine_config

HELP = (
    "Denoise every audio file below INPUT into OUTPUT (sub-folders mirrored). Files already done are "
    "skipped unless --overwrite, so an interrupted run resumes. Exit status: 0 all good, 1 some files "
    "failed (each with its reason), 2 nothing could run (weights unavailable, folder not writable)."
)


def add_arguments(
    p: argparse.ArgumentParser, *, input_default: str = "input", output_default: str = "output"
) -> None:
    p.add_argument(
        "--input", "-i", default=input_default, help="folder of noisy recordings (default: %(default)s)"
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
    p.add_argument("--overwrite", action="store_true", help="redo files whose output already exists")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from denoise.batch import EXIT_OK, EXIT_SETUP, SetupError, print_summary, run_batch

    input_dir, output_dir = Path(args.input), Path(args.output)

    def make_denoiser():  # only called when there is work to do
        from denoise.engine import Denoiser

        config = engine_config(args)
        denoiser = Denoiser(config)
        print(f"model {config.model} ({args.weights}) on {denoiser.backend.name}", file=sys.stderr)
        return denoiser

    suffix = None
    if args.compat:
        suffix = ".wav"
    elif args.out_format:
        suffix = "." + args.out_format.lower().lstrip(".")
    try:
        summary = run_batch(
            input_dir,
            output_dir,
            make_denoiser,
            overwrite=args.overwrite,
            suffix=suffix,
            subtype=args.subtype,
            progress=not args.quiet,
        )
    except SetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_SETUP
    except Exception as err:  # weights unavailable or a backend that cannot start: nothing was written
        from denoise_models import WeightsError

        if isinstance(err, WeightsError | ValueError | RuntimeError | ImportError):
            print(f"error: {err}", file=sys.stderr)
            return EXIT_SETUP
        raise
    if not summary.results:
        print(
            f"{input_dir}/ has no audio files yet: put .wav/.flac/.ogg/.mp3 files there and run again.",
            file=sys.stderr,
        )
        return EXIT_OK
    print_summary(summary)
    return summary.exit_code
