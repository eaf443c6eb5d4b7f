"""``denoise run``: denoise every audio file in a folder (``1键推理.py`` is this with its defaults)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    p.add_argument(
        "--model",
        "-m",
        choices=["frcrn", "gtcrn"],
        default=None,
        help="frcrn (best quality, default) or gtcrn (light, real-time on CPU)",
    )
    p.add_argument(
        "--weights",
        "-w",
        default="default",
        help="weights name (see `denoise fetch-weights --list`) or a checkpoint file (default: the model's)",
    )
    p.add_argument(
        "--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 … (default: auto)"
    )
    p.add_argument(
        "--backend", choices=["torch", "onnx"], default="torch", help="inference backend (default: torch)"
    )
    p.add_argument("--onnx-path", default=None, help="exported .onnx graph for --backend onnx")
    p.add_argument(
        "--batch-size", type=int, default=None, help="chunks per forward pass (default: 1 on CPU, 8 on CUDA)"
    )
    p.add_argument(
        "--chunk-seconds",
        type=float,
        default=None,
        help="process long files in chunks of this length (default: 10 for FRCRN, 30 for GTCRN)",
    )
    p.add_argument(
        "--overlap-seconds", type=float, default=1.0, help="cross-fade between chunks (default: 1.0)"
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        default="fp32",
        help="fp32 (exact) or autocast on CUDA (default: fp32)",
    )
    p.add_argument(
        "--atten-lim-db",
        type=float,
        default=None,
        help="strength control: suppress noise by at most this many dB, e.g. 12 (default: no limit)",
    )
    p.add_argument(
        "--compat",
        choices=["modelscope"],
        default=None,
        help="reproduce ModelScope's pipeline output (16 kHz mono int16, -25 dBFS; FRCRN only)",
    )
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
    arch = resolve_arch(args.model, args.weights)

    def make_denoiser():  # only called when there is work to do
        from denoise.engine import Denoiser, DenoiserConfig

        config = DenoiserConfig(
            model=arch,
            weights=args.weights,
            backend=args.backend,
            onnx_path=args.onnx_path,
            device=args.device,
            precision=args.precision,
            threads=args.threads,
            chunk_seconds=args.chunk_seconds,
            overlap_seconds=args.overlap_seconds,
            batch_size=args.batch_size,
            atten_lim_db=args.atten_lim_db,
            compat=args.compat,
        )
        denoiser = Denoiser(config)
        print(f"model {arch} ({args.weights}) on {denoiser.backend.name}", file=sys.stderr)
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
        from model import WeightsError

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


def resolve_arch(model: str | None, weights: str) -> str:
    """``--model`` if given, else the architecture the ``--weights`` name/file belongs to, else FRCRN."""
    if model:
        return model
    if weights and weights != "default":
        from model import arch_of

        try:
            found = arch_of(weights)
        except Exception:  # an unreadable file is reported when the model loads
            found = None
        if found in ("frcrn", "gtcrn"):
            return found
    return "frcrn"
