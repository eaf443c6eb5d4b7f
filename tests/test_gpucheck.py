"""``make gpu-check`` on a machine without CUDA: its distinct exit status, and every check's logic on CPU.

The GPU branches themselves run only on a CUDA machine (``make gpu-check``); here the same code paths run
with the device forced to CPU (``--device cpu``: CPU vs CPU), and the pass/fail rules are fed known results.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from denoise import gpucheck


def test_no_cuda_is_said_and_has_its_own_exit_status(monkeypatch, capsys) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpucheck.main([]) == gpucheck.EXIT_NO_CUDA == 3
    summary = json.loads(capsys.readouterr().out)
    assert (
        summary["status"] == "no-cuda" and summary["ok"] is False and "no CUDA device" in summary["message"]
    )


def test_the_one_device_selector(monkeypatch) -> None:
    import torch

    from denoise.backends.torch_backend import select_device

    assert select_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="no CUDA device is available; use --device cpu"):
        select_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert select_device("auto") == torch.device("cuda") and select_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(RuntimeError, match="has 1 CUDA device"):
        select_device("cuda:1")


def test_unknown_check_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        gpucheck.main(["--device", "cpu", "--checks", "engine,warp"])
    assert exit_info.value.code == 2


def test_agreement_figures() -> None:
    x = gpucheck.synthetic_speech(1.0)
    assert gpucheck.agreement(x, x) == {"max_abs_error": 0.0, "snr_db": "inf", "finite": True}
    noisy = x + 0.01 * np.abs(x).max()
    result = gpucheck.agreement(x, noisy)
    assert result["max_abs_error"] == pytest.approx(0.01 * np.abs(x).max(), rel=1e-5)
    assert (
        20.0 < result["snr_db"] < 60.0 and gpucheck.passes(result, 20.0) and not gpucheck.passes(result, 60.0)
    )
    broken = gpucheck.agreement(x, np.full_like(x, np.nan))
    assert broken["finite"] is False and not gpucheck.passes(broken, -math.inf)


def fake_smoke(
    losses: list[float], tmp_path, *, resumed: bool = True, checkpoint: bool = True, run_ok: bool = True
):
    """A stand-in for denoise.finetune.smoke_run's report (its keys), to test the check's own rules."""
    ckpt = tmp_path / "best.pt"
    if checkpoint:
        ckpt.write_bytes(b"x")

    def smoke(arch, steps, device, amp, workdir):
        return {"ok": run_ok, "losses": losses, "checkpoint": str(ckpt) if checkpoint else None,
                "resume_ok": resumed, "amp_dtype": "off", "peak_memory_mb": None}  # fmt: skip

    return smoke


@pytest.mark.parametrize(
    ("losses", "options", "ok"),
    [
        ([1.0, 0.9, 0.8, 0.7], {}, True),
        ([1.0, 1.1, 1.2, 1.3], {}, False),  # rising
        ([1.0, float("nan"), 0.5, 0.4], {}, False),  # not finite
        ([1.0, 0.9, 0.8, 0.7], {"resumed": False}, False),
        ([1.0, 0.9, 0.8, 0.7], {"checkpoint": False}, False),
        ([1.0, 0.9, 0.8, 0.7], {"run_ok": False}, False),  # e.g. a step ran in eval mode
        ([], {}, False),
    ],
)
def test_finetune_rules(monkeypatch, tmp_path, losses, options, ok) -> None:
    monkeypatch.setattr(gpucheck, "finetune_smoke", fake_smoke(losses, tmp_path, **options))
    result = gpucheck.check_finetune("gtcrn", "cpu", tmp_path, steps=len(losses))
    assert result["ok"] is ok
    assert result["amp"] == "off"  # mixed precision only on CUDA


def test_a_crashing_check_fails_without_stopping_the_others() -> None:
    def boom():
        raise RuntimeError("cudnn RNN backward can only be called in training mode")

    result = gpucheck.run_check("boom", boom, "cpu")
    assert result["ok"] is False and "training mode" in result["error"] and result["seconds"] >= 0


@pytest.mark.slow
def test_self_test_on_cpu(tmp_path, capsys) -> None:
    """Device selection, the engine, chunk and cross-file batching, the GTCRN stream and ONNX Runtime through the check's own
    code, CPU vs CPU."""
    out = tmp_path / "summary.json"
    argv = [
        "--device",
        "cpu",
        "--models",
        "gtcrn",
        "--checks",
        "device,engine,batching,files,stream,onnx",
        "--out",
        str(out),
    ]
    assert gpucheck.main([*argv, "--workdir", str(tmp_path / "work")]) == gpucheck.EXIT_OK
    summary = json.loads(out.read_text())
    assert summary == json.loads(capsys.readouterr().out)
    assert set(summary["checks"]) == {
        "device",
        "engine_gtcrn",
        "batching",
        "files_gtcrn",
        "stream",
        "onnx_gtcrn",
    }
    assert all(check["ok"] for check in summary["checks"].values())
    assert summary["checks"]["engine_gtcrn"]["fp32"]["snr_db"] == "inf"  # CPU vs CPU: the same arithmetic
    assert summary["checks"]["batching"]["batch_size"] > 1
    assert summary["checks"]["files_gtcrn"]["max_abs_error"] == 0.0  # batched with other files: same bits
    assert summary["checks"]["stream"]["snr_db"] == "inf" or summary["checks"]["stream"]["snr_db"] >= 60


@pytest.mark.slow
def test_finetune_check_runs_the_real_smoke_run_on_cpu(tmp_path) -> None:
    """The whole path: the real Trainer through denoise.finetune.smoke_run, a few CPU steps of GTCRN."""
    result = gpucheck.check_finetune("gtcrn", "cpu", tmp_path, steps=4)
    assert result["ok"], result
    assert result["steps"] == 4 and result["resumed_at"] == 2 and Path(result["checkpoint"]).exists()


@pytest.mark.slow
def test_ddp_self_test_with_gloo(tmp_path) -> None:
    result = gpucheck.check_ddp("cpu", tmp_path, steps=2)
    assert result["ok"] and result["backend"] == "gloo" and result["processes"] == 1
    assert result["replicas_identical"] and all(math.isfinite(v) for v in result["losses"])
