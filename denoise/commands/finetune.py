"""``denoise finetune``: fine-tune FRCRN / GTCRN on your own noise from one TOML config."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

HELP = (
    "Fine-tune FRCRN or GTCRN on your own noise, driven by one TOML config (configs/finetune_gtcrn.toml, "
    "configs/finetune_frcrn.toml). The starting checkpoint is scored first; the best model (never worse "
    "than the start) is exported to RUN_DIR/best.pt and registered in the local weights store, so "
    "`python 1键推理.py --weights NAME` uses it. Running the same command again resumes an interrupted run. "
    "Multi-GPU: torchrun --nproc_per_node N -m denoise finetune --config ... "
    "Exit status: 0 done (improved or not: see the message), 1 interrupted (resumable), 2 could not run."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", required=True, help="TOML config file (see configs/)")
    p.add_argument(
        "--weights", "-w", default=None, help="starting weights: name or checkpoint (overrides config)"
    )
    p.add_argument("--run-dir", default=None, help="run folder for checkpoints and logs (overrides config)")
    p.add_argument("--clean-dir", default=None, help="clean speech folder (overrides data.clean_dir)")
    p.add_argument("--noise-dir", default=None, help="noise folder (overrides data.noise_dir)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (overrides optim.epochs)")
    p.add_argument(
        "--max-steps", type=int, default=None, help="stop after N steps (overrides optim.max_steps)"
    )
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1 … (overrides device)")
    p.add_argument("--register-as", default=None, help="name in the local weights store")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config value, e.g. --set optim.lr=5e-5 --set model.freeze=backbone (repeatable)",
    )
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in the run folder")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def load_config(args: argparse.Namespace):
    """The config file with the command-line overrides applied (raises ConfigError on a bad value)."""
    from denoise.finetune.config import FinetuneConfig

    cfg = FinetuneConfig.load(args.config)
    shortcuts = {
        "model.weights": args.weights,
        "output.run_dir": args.run_dir,
        "data.clean_dir": args.clean_dir,
        "data.noise_dir": args.noise_dir,
        "optim.epochs": args.epochs,
        "optim.max_steps": args.max_steps,
        "device": args.device,
        "output.register_as": args.register_as,
    }
    for key, value in shortcuts.items():
        if value is not None:
            cfg.set(key, value)
    for item in args.set:
        cfg.override(item)
    if args.quiet:
        cfg.output.progress = False
    return cfg


def main(args: argparse.Namespace) -> int:
    from denoise.finetune.config import ConfigError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args)
    except ConfigError as err:
        print(f"finetune: {err}", file=sys.stderr)
        return 2
    from denoise.finetune.trainer import Trainer
    from denoise_models.weights import WeightsError

    run_dir = Path(cfg.output.run_dir)
    if args.fresh and run_dir.is_dir() and (run_dir / "last.pt").is_file():
        shutil.rmtree(run_dir / "tb", ignore_errors=True)
    try:
        result = Trainer(cfg, resume=not args.fresh).run()
    except (WeightsError, FileNotFoundError, ValueError) as err:
        print(f"finetune: {err}", file=sys.stderr)
        return 2
    if result.interrupted:
        return 1
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    print(
        f"starting checkpoint: validation {result.baseline}\n"
        f"best (epoch {result.best_epoch}): validation {result.best}"
        f"{'' if result.improved else '  <- the starting checkpoint itself: no improvement'}\n"
        f"exported: {result.best_path}"
        + (f"\nregistered as: {result.registered_as}" if result.registered_as else "")
    )
    return 0
