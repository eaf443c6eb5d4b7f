"""The CUDA paths of fine-tuning, exercised on CPU: precision choice, gradient scaling, skipped steps,
device placement of everything the objective creates, process groups, module modes, and a whole smoke run.

What still needs a GPU (cuDNN RNN backward, real autocast kernels, NCCL) is run by ``make gpu-check``
through :func:`denoise.finetune.smoke_run`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from denoise.finetune import distributed as D
from denoise.finetune import losses as L
from denoise.finetune.objective import (
    LossModule,
    amp_dtype,
    apply_freeze,
    evaluating,
    needs_grad_scaler,
    set_train_mode,
)
from denoise.finetune.trainer import should_step
from denoise_models import build_model

CUDA = torch.device("cuda:0")  # only ever inspected, never used for computation here


def test_amp_precision_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert amp_dtype(torch.device("cpu"), True) is None  # mixed precision is a CUDA feature here
    assert amp_dtype(CUDA, False) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert amp_dtype(CUDA, True) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100 or T4
    assert amp_dtype(CUDA, True) is torch.float16
    assert amp_dtype(CUDA, True, "bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="fp8"):
        amp_dtype(CUDA, True, "fp8")
    assert needs_grad_scaler(torch.float16)
    assert not needs_grad_scaler(torch.bfloat16) and not needs_grad_scaler(None)


def test_a_non_finite_gradient_is_skipped_without_a_scaler() -> None:
    assert should_step(True, math.inf)  # fp16: the GradScaler skips the step and lowers its scale
    assert not should_step(False, math.inf) and not should_step(False, math.nan)  # fp32 and bf16
    assert should_step(False, 3.0)


@pytest.mark.parametrize("arch", ["gtcrn", pytest.param("frcrn", marks=pytest.mark.slow)])
def test_objective_under_autocast_keeps_float32_losses_and_finite_gradients(arch: str) -> None:
    """bf16 autocast on CPU runs the same code path as on CUDA: losses in float32, gradients finite."""
    torch.manual_seed(0)
    net = build_model(arch)
    apply_freeze(net, arch, "none")
    set_train_mode(net, freeze_batchnorm=True)
    clean = 0.1 * torch.randn(2, 3200)
    terms = LossModule(net, arch, "composite", (1.0, 0.5, 0.3), autocast_dtype=torch.bfloat16)(
        clean + 0.05 * torch.randn(2, 3200), clean
    )
    assert all(v.dtype == torch.float32 for v in terms.values())
    assert {"log_mag", "cirm", "sisnr"} <= set(terms)  # the mask reached the cIRM term
    terms["loss"].backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("arch", ["gtcrn", "frcrn"])
def test_everything_moves_with_the_network(arch: str) -> None:
    """No tensor hides in a plain attribute (it would stay on the CPU when the net moves to a GPU)."""
    net = build_model(arch)
    for name, module in net.named_modules():
        registered = {id(t) for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]}
        stray = [
            k for k, v in vars(module).items() if isinstance(v, torch.Tensor) and id(v) not in registered
        ]
        assert not stray, f"{name or arch}: tensor attributes {stray} would not follow .to(device)"


def test_losses_create_nothing_on_another_device() -> None:
    """On the meta device any tensor made on the CPU inside a loss would raise a device mismatch."""
    meta = torch.device("meta")
    wav, ref = torch.randn(2, 3200, device=meta), torch.randn(2, 3200, device=meta)
    spec, clean_spec = torch.randn(2, 257, 13, 2, device=meta), torch.randn(2, 257, 13, 2, device=meta)
    mask = torch.randn(2, 257, 13, 2, device=meta)
    results = [
        L.si_snr(estimate=wav, reference=ref),
        L.frcrn_mix_loss(wav, mask, ref, clean_spec, spec)["loss"],
        L.gtcrn_hybrid_loss(spec, clean_spec, wav, ref)["loss"],
        L.composite_loss(spec, clean_spec, wav, ref, estimate_mask=mask, noisy_spec=spec)["loss"],
    ]
    assert all(r.device == meta for r in results)
    # FRCRN's whole objective, its conv-STFT included (GTCRN's torch.istft has no meta kernel)
    net = build_model("frcrn").to(meta)
    terms = LossModule(net, "frcrn", "native", (1.0, 0.5, 0.3))(wav, ref)
    assert all(v.device == meta for v in terms.values())


def test_process_devices_and_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    assert D.process_group_backend(CUDA) == "nccl" and D.process_group_backend(torch.device("cpu")) == "gloo"
    assert D.process_device("cpu", 3) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)  # the selector also checks the index exists
    assert D.process_device("auto", 1) == torch.device("cuda:1")  # one GPU per torchrun process
    assert D.process_device("cuda", 2) == torch.device("cuda:2")
    assert D.process_device("cuda:0", 2) == torch.device("cuda:0")  # an explicit index wins
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    procs = D.Processes.from_environment()
    assert (procs.world, procs.rank, procs.local_rank, procs.is_main) == (4, 2, 0, False)
    single = D.Processes()
    values = torch.tensor([1.0, 2.0])
    assert D.mean_over_processes(single, values) is values and D.broadcast(single, {"a": 1}) == {"a": 1}


def test_validation_restores_each_modules_own_mode() -> None:
    """``net.train(previous)`` would switch frozen BatchNorm back on; the trainer must not."""
    net = build_model("gtcrn")
    apply_freeze(net, "gtcrn", "encoders")
    set_train_mode(net, freeze_batchnorm=False)
    before = {name: m.training for name, m in net.named_modules()}
    assert not before["encoder.en_convs.0.bn"] and before["decoder.de_convs.3.bn"]  # frozen side in eval
    assert before["encoder.en_convs.2.tra.att_gru"]  # a frozen GRU stays in train mode for cuDNN
    with evaluating(net):
        assert not any(m.training for m in net.modules()) and not torch.is_grad_enabled()
        net(0.1 * torch.randn(1, 3200))
    assert {name: m.training for name, m in net.named_modules()} == before
    assert isinstance(net.encoder.en_convs[0].bn, nn.BatchNorm2d)


@pytest.mark.slow
def test_smoke_run_on_cpu(tmp_path: Path) -> None:
    """The function ``make gpu-check`` calls, end to end on CPU: every check it reports passes."""
    from denoise.finetune import smoke_run

    torch.set_num_threads(1)
    report = smoke_run("gtcrn", steps=8, device="cpu", amp="auto", workdir=tmp_path)
    assert report["ok"], report
    assert report["amp_dtype"] == "off" and not report["grad_scaler"] and report["peak_memory_mb"] is None
    assert report["steps"] == 8 and report["resumed_at"] == 4 and len(report["losses"]) == 8
    assert Path(report["checkpoint"]).is_file()
    json.dumps(report)  # JSON-ready for the check's summary
