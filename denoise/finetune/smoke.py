"""A few steps of the real trainer on synthetic audio: the fine-tuning line of ``make gpu-check``.

:func:`smoke_run` needs nothing but the package: it writes its own speech-like and noise recordings and
starts from seeded random weights, trains in two sessions (interrupted halfway, then resumed) and
reports the loss curve, the module modes of every forward pass, the checkpoint, the resume and the peak
GPU memory. Under ``torchrun`` every process runs it (DDP; rank 0's report is the one that counts)::

    python -m denoise.finetune.smoke --arch gtcrn --steps 20 --device cuda --workdir /tmp/smoke
    torchrun --nproc_per_node 2 -m denoise.finetune.smoke --arch gtcrn --steps 6 --device cuda --workdir /tmp/ddp
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torch.distributed as dist
from torch import nn

import denoise.finetune.distributed as D
from denoise.finetune.config import FinetuneConfig
from denoise.finetune.datasets import SAMPLE_RATE
from denoise.finetune.runlog import STEPS_CSV, read_csv
from denoise.finetune.trainer import Trainer
from denoise_models import build_model
from denoise_models.weights import save_checkpoint

_STEPS_PER_EPOCH = 4  # few items, seen again every epoch: the loss must fall on data it has seen


def write_synthetic_audio(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Four 2 s speech-like files (harmonics under a syllable-rate envelope) and two 4 s noises."""
    rng = np.random.default_rng(seed)
    clean_dir, noise_dir = folder / "clean", folder / "noise"
    clean_dir.mkdir(parents=True, exist_ok=True)
    noise_dir.mkdir(parents=True, exist_ok=True)
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    for k in range(4):
        f0 = 100.0 + 40.0 * k
        voiced = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 15))
        envelope = np.clip(np.sin(2 * np.pi * (3.0 + k) * t), 0.0, None)
        sf.write(clean_dir / f"speech_{k}.wav", (0.1 * voiced * envelope).astype(np.float32), SAMPLE_RATE)
    t = np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE
    hum = 0.05 * np.sin(2 * np.pi * 50.0 * t) + 0.02 * rng.standard_normal(t.size)
    sf.write(noise_dir / "hum.wav", hum.astype(np.float32), SAMPLE_RATE)
    sf.write(noise_dir / "hiss.wav", (0.03 * rng.standard_normal(t.size)).astype(np.float32), SAMPLE_RATE)
    return clean_dir, noise_dir


def smoke_config(
    arch: str, *, steps: int, device: str, amp: str, workdir: Path, clean_dir: Path, noise_dir: Path
) -> FinetuneConfig:
    """A tiny fine-tune: 0.5 s segments, batch 2, lr 1e-3, ``steps`` steps, checkpoints every half."""
    cfg = FinetuneConfig()
    for key, value in {
        "model.arch": arch, "model.weights": str(workdir / f"{arch}_start.pt"), "device": device,
        "optim.amp": amp != "off", "optim.amp_dtype": "auto" if amp == "off" else amp, "optim.lr": 1e-3,
        "optim.batch_size": 2, "optim.max_steps": steps, "optim.epochs": math.ceil(steps / _STEPS_PER_EPOCH),
        "optim.early_stop_patience": 0, "data.clean_dir": str(clean_dir), "data.noise_dir": str(noise_dir),
        "data.num_workers": 0, "data.segment_seconds": 0.5, "data.items_per_epoch": 2 * _STEPS_PER_EPOCH,
        "data.val_items": 2, "data.val_segment_seconds": 0.5, "data.val_fraction": 0.25,
        "output.run_dir": str(workdir / "run"), "output.checkpoint_every": max(1, steps // 2),
        "output.pesq_items": 0, "output.tensorboard": False, "output.progress": False, "output.register": False,
        # one SNR and one level: the loss of one step is comparable with another's
        "data.snr_db": [5.0, 5.0], "data.level_dbfs": [-25.0, -25.0],
    }.items():  # fmt: skip
        cfg.set(key, value)
    return cfg


class ModeRecorder:
    """Records the module modes of every forward pass of ``net``, whichever entry point ran it.

    A pre-hook on the first BatchNorm layer fires once per pass of ``forward``, ``forward_outputs`` or
    ``forward_spec`` alike; it notes whether gradients were on (a training step) or off (validation).
    """

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.batchnorms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.rnns = [m for m in net.modules() if isinstance(m, nn.RNNBase)]
        self.calls: list[dict[str, Any]] = []
        self.batchnorms[0].register_forward_pre_hook(self._record)

    def _record(self, _module: nn.Module, _args: tuple) -> None:
        self.calls.append(
            {
                "grad": torch.is_grad_enabled(),
                "net": self.net.training,
                "rnns": [m.training for m in self.rnns],
                "batchnorms": [m.training for m in self.batchnorms],
            }
        )

    def training_steps(self) -> int:
        return sum(c["grad"] for c in self.calls)

    def modes_ok(self, *, freeze_batchnorm: bool) -> bool:
        """Steps: net and RNNs in train mode, BatchNorm as configured; validation: everything in eval."""
        for call in self.calls:
            modes = [call["net"], *call["rnns"]]
            if call["grad"] and not (all(modes) and all(bn != freeze_batchnorm for bn in call["batchnorms"])):
                return False
            if not call["grad"] and any([*modes, *call["batchnorms"]]):
                return False
        return self.training_steps() > 0


def smoke_run(
    arch: str, *, steps: int = 20, device: str = "auto", amp: str = "auto", workdir: str | Path
) -> dict[str, Any]:
    """Fine-tune ``arch`` from seeded random weights for ``steps`` steps, interrupted and resumed halfway.

    Args:
        arch: an architecture name (``denoise_models.spec.SPECS``).
        steps: optimiser steps in all (at least 2: one before and one after the resume).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1`` … (under torchrun: one GPU per process).
        amp: ``off``, ``auto`` (bf16 where the GPU has it, else fp16 with gradient scaling), ``bf16``,
            ``fp16``; mixed precision applies on CUDA only.
        workdir: an empty folder for the audio, the start weights and the run.

    Returns:
        A JSON-ready dict: ``ok`` (every check passed), the checks (``loss_finite``, ``loss_falling``,
        ``train_mode_every_step``, ``batchnorm_kept``, ``resume_ok``), ``losses`` per step,
        ``checkpoint`` (best.pt), ``resumed_at``, ``amp_dtype``, ``grad_scaler``, ``peak_memory_mb``
        (CUDA; None on CPU), ``world_size``, ``seconds``.
    """
    if steps < 2:
        raise ValueError(f"steps must be >= 2 (one before and one after the resume), got {steps}")
    started = time.perf_counter()
    workdir = Path(workdir)
    procs = D.Processes.from_environment()
    torch_device = D.process_device(device, procs.local_rank)
    owns_group = D.join(procs, torch_device)  # once for both sessions of the run
    try:
        # Every process writes its own identical copy of the audio: no file is written by two processes.
        clean_dir, noise_dir = write_synthetic_audio(workdir / f"audio_rank{procs.rank}")
        if procs.is_main:
            torch.manual_seed(0)
            save_checkpoint(
                workdir / f"{arch}_start.pt", build_model(arch), arch, {"description": "smoke start"}
            )
        D.barrier(procs)
        cfg = smoke_config(
            arch,
            steps=steps,
            device=device,
            amp=amp,
            workdir=workdir,
            clean_dir=clean_dir,
            noise_dir=noise_dir,
        )
        if torch_device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(torch_device)
        half = steps // 2

        def stop_halfway(trainer: Trainer, step: int, _terms: dict[str, float]) -> None:
            if step == half:
                trainer.stop_requested = True  # what Ctrl-C does: checkpoint after this step

        first = Trainer(cfg, resume=False, on_step=stop_halfway)
        modes = [ModeRecorder(first.net)]
        bn_start = _batchnorm_buffers(first.net)
        interrupted = first.run()
        second = Trainer(cfg, resume=True)
        modes.append(ModeRecorder(second.net))
        result = second.run()
        peak = torch.cuda.max_memory_allocated(torch_device) / 2**20 if torch_device.type == "cuda" else None
        report = _report(Path(cfg.output.run_dir), procs, steps)
        report.update(
            arch=arch, device=str(torch_device), steps=result.steps, resumed_at=interrupted.steps,
            amp_dtype=str(second.autocast_dtype).removeprefix("torch.") if second.autocast_dtype else "off",
            grad_scaler=second.scaler.is_enabled(),
            train_mode_every_step=all(m.modes_ok(freeze_batchnorm=True) for m in modes),
            batchnorm_kept=_batchnorm_buffers(second.net) == bn_start, checkpoint=str(result.best_path),
            peak_memory_mb=round(peak, 1) if peak is not None else None,
            seconds=round(time.perf_counter() - started, 2),
        )  # fmt: skip
        # The first session stopped at the half, the second did exactly the rest, nothing was lost.
        report["resume_ok"] = report["resume_ok"] and (
            interrupted.interrupted and interrupted.steps == half and result.steps == steps
            and [m.training_steps() for m in modes] == [half, steps - half]
        )  # fmt: skip
        checks = ("loss_finite", "loss_falling", "train_mode_every_step", "batchnorm_kept", "resume_ok")
        report["ok"] = all(report[name] for name in checks)
        return report
    finally:
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _batchnorm_buffers(net: nn.Module) -> list[list[float]]:
    return [
        m.running_mean.double().cpu().tolist()
        for m in net.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    ]


def _report(run_dir: Path, procs: D.Processes, steps: int) -> dict[str, Any]:
    """Loss curve and saved state from what the run left in its folder (the logs are rank 0's)."""
    saved_step = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)["step"]
    if not procs.is_main:
        return {"world_size": procs.world, "losses": [], "loss_finite": True, "loss_falling": True,
                "resume_ok": saved_step == steps}  # fmt: skip
    rows = read_csv(run_dir / STEPS_CSV)
    losses = [float(r["loss"]) for r in rows]
    quarter = max(1, len(losses) // 4)
    return {
        "world_size": procs.world,
        "losses": [round(v, 5) for v in losses],
        "loss_finite": bool(losses) and all(math.isfinite(v) for v in losses),
        "loss_falling": bool(losses) and float(np.mean(losses[-quarter:])) < float(np.mean(losses[:quarter])),
        # one log row per step, none twice (the resumed session redoes nothing)
        "resume_ok": saved_step == steps and [int(r["step"]) for r in rows] == list(range(1, steps + 1)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m denoise.finetune.smoke", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--arch", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="auto", choices=("off", "auto", "bf16", "fp16"))
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args(argv)
    report = smoke_run(args.arch, steps=args.steps, device=args.device, amp=args.amp, workdir=args.workdir)
    if D.Processes.from_environment().is_main:
        print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
