"""Command-line options of the Denoiser engine, shared by every command that runs a model."""

from __future__ import annotations

import argparse

from denoise.backends import BACKENDS
from denoise.engine import DenoiserConfig, resolve_arch, resolve_backend
from denoise_models.spec import SPECS


def add_engine_arguments(p: argparse.ArgumentParser, *, live: bool = False) -> None:
    """``--model``, ``--weights``, device/backend, chunking, strength and compat options.

    ``live``: the command runs audio as it arrives (``denoise stream``/``live``), so ``--backend`` defaults to
    ``auto`` and threads to one: a 16 ms hop is far too small to share out over threads.
    """
    g = p.add_argument_group("model and engine")
    g.add_argument(
        "--model",
        "-m",
        choices=list(SPECS),
        default=None,
        help="frcrn (best quality; default) or gtcrn (light, real-time on CPU); default: the weights' own",
    )
    g.add_argument(
        "--weights",
        "-w",
        default="default",
        help="weights name (see `denoise fetch-weights --list`), a fine-tuned name, or a checkpoint file",
    )
    g.add_argument(
        "--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 … (default: auto)"
    )
    if live:
        g.add_argument(
            "--backend",
            choices=["auto", *BACKENDS],
            default="auto",
            help="inference backend (default: auto = onnx for GTCRN on a CPU when onnxruntime is installed, "
            "the fastest per hop; else torch)",
        )
    else:
        g.add_argument(
            "--backend", choices=list(BACKENDS), default="torch", help="inference backend (default: torch)"
        )
    g.add_argument(
        "--onnx-path",
        default=None,
        help="exported .onnx graph for --backend onnx (default: the cached export of --weights, made once)",
    )
    g.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="rows per forward pass, every pass that shape: a file's chunks and, in a batch, other files' rows "
        "of the same length side by side (same result as alone) (default: 1 on CPU, 8 on a GPU)",
    )
    g.add_argument(
        "--chunk-seconds",
        type=float,
        default=None,
        help="chunk length for networks without carried state (default: 10 for FRCRN; GTCRN on torch "
        "carries its state and needs no chunks)",
    )
    g.add_argument(
        "--overlap-seconds", type=float, default=1.0, help="cross-fade between chunks (default: 1.0)"
    )
    g.add_argument(
        "--threads",
        type=int,
        default=1 if live else None,
        help=f"CPU threads (default: {'1' if live else 'all cores'})",
    )
    g.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        default="fp32",
        help="bf16/fp16: autocast on a CUDA GPU with the torch backend, an error elsewhere (fp32 is exact)",
    )
    g.add_argument(
        "--atten-lim-db",
        type=float,
        default=None,
        help="strength control: suppress noise by at most this many dB, e.g. 12 (default: no limit)",
    )
    g.add_argument(
        "--band-limit",
        action="store_true",
        help="keep the networks' 16 kHz bandwidth: drop everything above 8 kHz (default: 44.1/48/96 kHz "
        "inputs keep their high band, denoised)",
    )
    g.add_argument(
        "--compat",
        choices=["modelscope"],
        default=None,
        help="reproduce ModelScope's pipeline output (16 kHz mono int16, -25 dBFS; FRCRN only)",
    )


def engine_config(args: argparse.Namespace) -> DenoiserConfig:
    """The :class:`DenoiserConfig` the options describe (architecture inferred from the weights if needed)."""
    arch = resolve_arch(args.model, args.weights)
    return DenoiserConfig(
        model=arch,
        weights=args.weights,
        backend=resolve_backend(args.backend, arch, args.device),
        onnx_path=args.onnx_path,
        device=args.device,
        precision=args.precision,
        threads=args.threads,
        chunk_seconds=args.chunk_seconds,
        overlap_seconds=args.overlap_seconds,
        batch_size=args.batch_size,
        atten_lim_db=args.atten_lim_db,
        compat=args.compat,
        full_band=not getattr(args, "band_limit", False),
    )
