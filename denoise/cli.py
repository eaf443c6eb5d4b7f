"""The ``denoise`` command: one subcommand per module in ``denoise/commands/``.

Each command module exposes ``HELP``, ``add_arguments(parser)`` and ``main(args) -> int``; modules
are imported only when their command runs (``denoise --help`` stays fast), except for the help of
the chosen command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module under denoise.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "denoise a folder of audio files (what 1键推理.py runs)"),
    "fetch-weights": ("fetch_weights", "download/verify pretrained weights into the local store"),
    "eval": ("eval", "score noisy/enhanced audio: PESQ, STOI, SI-SNR, DNSMOS; CSV + report"),
    "finetune": ("finetune", "fine-tune FRCRN/GTCRN on your own noise"),
    "export-onnx": ("export_onnx", "export a model to ONNX with a parity report"),
    "quantize": ("quantize", "quantize an ONNX model (INT8 / FP16) with a parity report"),
    "bench": ("bench", "measure speed (RTF) and peak memory"),
    "stream": ("stream", "denoise raw PCM or WAV from stdin to stdout (pipes: arecord, ffmpeg, aplay)"),
    "live": ("live", "denoise the microphone live, to the speakers or to a file"),
    "corpus": ("corpus", "denoise a corpus on a Ray cluster, local or s3:// in and out, with a run manifest"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="denoise", description="FRCRN / GTCRN speech denoising workstation")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if command is not None and name != command:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(f"denoise.commands.{module_name}")
        p = sub.add_parser(name, help=help_text, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        command = None
    parser = build_parser(command if command else "")
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    return int(args._main(args) or 0)
