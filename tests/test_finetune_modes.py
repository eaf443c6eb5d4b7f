"""The real Trainer trains in train mode: module modes on every step, BatchNorm statistics, validation.

Each run: both architectures from seeded random weights, synthetic audio (no reference data needed),
2 epochs x 2 steps on CPU, a validation after each epoch. A pre-hook on every BatchNorm layer records
the modes each forward pass ran in; the buffers of ``last.pt`` show whether statistics moved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

import denoise.finetune.trainer as trainer_module
from denoise.finetune.config import FinetuneConfig
from denoise.finetune.trainer import Trainer
from denoise_models import build_model
from denoise_models.weights import save_checkpoint

SR = 16000
STEPS = 4  # 2 epochs x 2 steps: the steps after the first validation must be in train mode again


def _write_audio(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    for sub, count in (("clean", 4), ("noise", 2)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            if sub == "clean":
                wav = sum(np.sin(2 * np.pi * h * (110 + 30 * k) * t) / h for h in range(1, 9)) * 0.1
            else:
                wav = 0.03 * rng.standard_normal(t.size)
            sf.write(folder / sub / f"{sub}_{k}.wav", wav.astype(np.float32), SR)
    return folder / "clean", folder / "noise"


def _config(tmp: Path, arch: str, *, freeze: str, freeze_batchnorm: bool) -> FinetuneConfig:
    clean, noise = _write_audio(tmp / "audio")
    torch.manual_seed(0)
    save_checkpoint(tmp / "start.pt", build_model(arch), arch, {})
    cfg = FinetuneConfig()
    for key, value in {
        "model.arch": arch, "model.weights": str(tmp / "start.pt"), "model.freeze": freeze,
        "model.freeze_batchnorm": freeze_batchnorm, "device": "cpu", "threads": 1, "optim.batch_size": 1,
        "optim.epochs": 2, "optim.early_stop_patience": 0, "data.clean_dir": str(clean),
        "data.noise_dir": str(noise), "data.num_workers": 0, "data.segment_seconds": 0.2,
        "data.items_per_epoch": 2, "data.val_items": 1, "data.val_segment_seconds": 0.2,
        "data.val_fraction": 0.25, "output.run_dir": str(tmp / "run"), "output.pesq_items": 0,
        "output.tensorboard": False, "output.progress": False, "output.register": False,
    }.items():  # fmt: skip
        cfg.set(key, value)
    return cfg


class _Recorder:
    """Per forward pass of each BatchNorm layer: gradients on?, the net's mode, that layer's mode."""

    def __init__(self) -> None:
        self.net: nn.Module | None = None
        self.calls: list[dict[str, Any]] = []

    def attach(self, net: nn.Module) -> nn.Module:
        self.net = net
        for name, module in net.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.register_forward_pre_hook(lambda m, _args, name=name: self._record(name, m))
        return net

    def _record(self, name: str, module: nn.Module) -> None:
        rnns = [m.training for m in self.net.modules() if isinstance(m, nn.RNNBase)]
        self.calls.append(
            {"grad": torch.is_grad_enabled(), "net": self.net.training, "bn": name, "training": module.training,
             "rnns": rnns}
        )  # fmt: skip


_RUNS: dict[tuple[str, str, bool], tuple[list[list[dict[str, Any]]], dict, dict]] = {}


def _run(tmp_path_factory: pytest.TempPathFactory, arch: str, freeze: str, freeze_batchnorm: bool):
    """Per step, the calls recorded since the step before; the start and final state dicts (cached)."""
    key = (arch, freeze, freeze_batchnorm)
    if key not in _RUNS:
        tmp = tmp_path_factory.mktemp(f"{arch}_{freeze}_{freeze_batchnorm}")
        cfg = _config(tmp, arch, freeze=freeze, freeze_batchnorm=freeze_batchnorm)
        recorder, per_step = _Recorder(), []
        load = trainer_module.load_model

        def on_step(_trainer: Trainer, _step: int, _terms: dict) -> None:
            per_step.append(recorder.calls)
            recorder.calls = []

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(trainer_module, "load_model", lambda *a, **k: recorder.attach(load(*a, **k)))
            Trainer(cfg, resume=False, on_step=on_step).run()
        per_step.append(recorder.calls)  # the last validation
        start = torch.load(tmp / "start.pt", weights_only=True)["state_dict"]
        final = torch.load(tmp / "run" / "last.pt", weights_only=True)["model"]
        _RUNS[key] = (per_step, start, final)
    return _RUNS[key]


def _frozen_bn(name: str, arch: str, freeze: str) -> bool:
    """BatchNorm layers inside frozen modules (freeze = encoders: the encoder side)."""
    return freeze == "encoders" and (name.startswith("encoder.") if arch == "gtcrn" else ".encoders." in name)


_FRCRN = pytest.mark.slow  # ~15 s of CPU for FRCRN's four steps and three validations
CASES = [
    ("gtcrn", "none", True),
    ("gtcrn", "none", False),
    ("gtcrn", "encoders", False),
    pytest.param("frcrn", "none", True, marks=_FRCRN),
    pytest.param("frcrn", "none", False, marks=_FRCRN),
]


@pytest.mark.parametrize(("arch", "freeze", "freeze_batchnorm"), CASES)
def test_every_step_trains_in_train_mode_and_validation_in_eval(
    tmp_path_factory: pytest.TempPathFactory, arch: str, freeze: str, freeze_batchnorm: bool
) -> None:
    per_step, _, _ = _run(tmp_path_factory, arch, freeze, freeze_batchnorm)
    assert len(per_step) == STEPS + 1
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in build_model(arch).modules())
    for step, calls in enumerate(per_step[:STEPS], start=1):
        training = [c for c in calls if c["grad"]]
        assert len({c["bn"] for c in training}) == n_bn, f"step {step}: every BatchNorm layer ran"
        for c in training:
            assert c["net"], f"step {step}: the network must be in train mode"
            assert all(c["rnns"]), f"step {step}: RNNs stay in train mode (cuDNN backward)"
            expected = not freeze_batchnorm and not _frozen_bn(c["bn"], arch, freeze)
            assert c["training"] == expected, f"step {step}: {c['bn']} training={c['training']}"
    validation = [c for calls in per_step for c in calls if not c["grad"]]
    assert validation, "validation ran"
    assert not any(c["net"] or c["training"] or any(c["rnns"]) for c in validation), "validation in eval mode"


@pytest.mark.parametrize(("arch", "freeze", "freeze_batchnorm"), CASES)
def test_batchnorm_statistics_move_only_when_not_frozen(
    tmp_path_factory: pytest.TempPathFactory, arch: str, freeze: str, freeze_batchnorm: bool
) -> None:
    _, start, final = _run(tmp_path_factory, arch, freeze, freeze_batchnorm)
    means = [k for k in start if k.endswith("running_mean")]
    assert means
    for key in means:
        moved = not torch.equal(start[key], final[key])
        learns = not freeze_batchnorm and not _frozen_bn(key, arch, freeze)
        assert moved == learns, f"{key}: moved={moved}, expected {learns}"
        counted = key.replace("running_mean", "num_batches_tracked")
        assert int(final[counted] - start[counted]) == (STEPS if learns else 0), counted
