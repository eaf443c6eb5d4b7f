"""``make gpu-check``: the GPU paths of the product, exercised in one command (a few minutes on one GPU).

    python -m denoise.gpucheck [--out runs/gpu-check.json]     # on a CUDA machine
    python -m denoise.gpucheck --device cpu                    # self-test: every check on CPU vs CPU

Checks, each timed and with its peak GPU memory:

- ``device``: automatic device selection picks CUDA (``denoise.backends.torch_backend.select_device``);
- ``engine_<arch>``: FRCRN and GTCRN through the engine on the device vs CPU: fp32 parity (TF32 off, so
  the comparison is of the same arithmetic), and the bf16 / fp16 autocast error stated;
- ``batching``: chunks batched on the device give the same output as one chunk at a time;
- ``files_<arch>``: short files sharing the device's batches (:mod:`denoise.engine.batching`) give the same
  bits as one file at a time, and files/s both ways (the speed-up of cross-file batching on this GPU);
- ``onnx_<arch>``: ONNX Runtime's CUDA provider vs its CPU provider on the same graph, and for GTCRN the
  graph's carried state streamed hop by hop on the device (skipped, with a note, when the installed
  onnxruntime has no CUDA provider: ``pip install onnxruntime-gpu``);
- ``finetune_<arch>``: fine-tuning steps with AMP: loss finite and falling, checkpoint written, resume;
- ``ddp``: a few DistributedDataParallel steps with NCCL, one process per visible GPU: loss finite and
  the replicas' weights identical afterwards.

Prints one JSON summary; exit status 0 = every check passed, 1 = a check failed, 3 = no CUDA device here
(nothing was run). No downloads: FRCRN runs on the shared test weights when present
(``$DENOISE_SHARED/fixtures/frcrn/frcrn_testweights_seed0.pt``), everything else on seeded random weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

EXIT_OK, EXIT_FAILED, EXIT_NO_CUDA = 0, 1, 3
ARCHS = ("frcrn", "gtcrn")
CHECKS = ("device", "engine", "batching", "files", "stream", "onnx", "finetune", "ddp")
FP32_MIN_SNR_DB = 60.0  # device fp32 vs CPU fp32, TF32 off: only summation order differs
REDUCED_MIN_SNR_DB = 10.0  # bf16 / fp16 autocast: stated, and only a broken path fails (NaN, noise)
BATCH_MIN_SNR_DB = 60.0  # batched chunks vs one at a time on the same device
ONNX_MIN_SNR_DB = 50.0  # CUDA EP vs CPU EP on the same graph

Result = dict[str, Any]


# ------------------------------------------------------------------------------------------ helpers


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """``10 log10(|ref|² / |ref - est|²)`` in dB (inf when equal): how closely two outputs agree."""
    reference, estimate = np.asarray(reference, np.float64), np.asarray(estimate, np.float64)
    noise = float(np.sum((reference - estimate) ** 2))
    return math.inf if noise == 0.0 else 10.0 * math.log10(float(np.sum(reference**2)) / noise)


def agreement(reference: np.ndarray, estimate: np.ndarray) -> Result:
    """Max abs error and SNR of ``estimate`` against ``reference`` (JSON-safe numbers)."""
    finite = bool(np.all(np.isfinite(estimate)))
    snr = snr_db(reference, estimate) if finite else -math.inf
    return {
        "max_abs_error": float(np.max(np.abs(reference - estimate))) if finite else None,
        "snr_db": round(snr, 2) if math.isfinite(snr) else ("inf" if snr > 0 else None),
        "finite": finite,
    }


def passes(result: Result, min_snr_db: float) -> bool:
    snr = result["snr_db"]
    return result["finite"] and (snr == "inf" or (snr is not None and snr >= min_snr_db))


def synthetic_speech(seconds: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Deterministic speech-like input ``[1, samples]``: a gliding harmonic tone with bursts, in noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    pitch = 140.0 + 40.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) > 0.3)
    return (0.1 * voiced + 0.02 * rng.standard_normal(t.size)).astype(np.float32)[None, :]


def weights_for(arch: str, workdir: Path) -> str:
    """The shared FRCRN test weights when present, else a seeded random checkpoint written to ``workdir``."""
    from denoise.tutorial import shared_dir

    fixture = shared_dir() / "fixtures" / "frcrn" / "frcrn_testweights_seed0.pt"
    if arch == "frcrn" and fixture.is_file():
        return str(fixture)
    import torch

    from denoise_models import build_model
    from denoise_models.weights import save_checkpoint

    path = workdir / f"{arch}_random_seed0.pt"
    if not path.exists():
        torch.manual_seed(0)
        save_checkpoint(path, build_model(arch), arch, meta={"purpose": "gpu-check"})
    return str(path)


class GpuMemory:
    """Peak GPU memory of the code run inside the ``with`` block (MiB; None on CPU)."""

    def __init__(self, device: str) -> None:
        self.device, self.peak_mb = device, None

    def __enter__(self) -> GpuMemory:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1)


def run_check(name: str, func: Callable[[], Result], device: str) -> Result:
    """Run one check: its result plus ``ok``, ``seconds`` and ``peak_gpu_mb``; an exception is a failure."""
    started = time.perf_counter()
    with GpuMemory(device) as memory:
        try:
            result = func()
        except Exception as exc:  # a check that crashes has failed; the others still run
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(-3)}
    result.setdefault("ok", False)
    result["seconds"] = round(time.perf_counter() - started, 2)
    if result.get("peak_gpu_mb") is None:
        result["peak_gpu_mb"] = memory.peak_mb
    print(f"gpu-check: {name}: {'ok' if result['ok'] else 'FAILED'} ({result['seconds']} s)", file=sys.stderr)
    return result


# ------------------------------------------------------------------------------------------- checks


def check_device(device: str) -> Result:
    import torch

    from denoise.backends.torch_backend import select_device

    auto = select_device("auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = select_device(device)
    result = {"auto": str(auto), "requested": device, "chosen": str(chosen)}
    if chosen.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(chosen)
    result["ok"] = auto.type == expected and chosen.type == torch.device(device).type
    return result


def check_engine(arch: str, device: str, workdir: Path, seconds: float) -> Result:
    import torch

    from denoise.engine import Denoiser

    weights = weights_for(arch, workdir)
    x = synthetic_speech(seconds)
    reference = Denoiser(model=arch, weights=weights, device="cpu").enhance(x, 16000)
    result: Result = {"weights": Path(weights).name, "seconds_of_audio": seconds}
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        fp32 = Denoiser(model=arch, weights=weights, device=device).enhance(x, 16000)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    result["fp32"] = agreement(reference, fp32)
    ok = passes(result["fp32"], FP32_MIN_SNR_DB)
    for precision in ("bf16", "fp16"):
        if not device.startswith("cuda"):
            result[precision] = "skipped: autocast precisions run on CUDA only"
            continue
        out = Denoiser(model=arch, weights=weights, device=device, precision=precision).enhance(x, 16000)
        result[precision] = agreement(reference, out)
        ok = ok and passes(result[precision], REDUCED_MIN_SNR_DB)
    result["ok"] = ok
    return result


def check_batching(device: str, workdir: Path) -> Result:
    from denoise.engine import Denoiser

    # Chunks are batched only for networks without carried state (FRCRN; any ONNX graph): GTCRN's torch
    # path streams its state and has no chunks to batch. Short chunks keep this quick on a CPU self-test.
    arch = "frcrn"
    weights = weights_for(arch, workdir)
    x = synthetic_speech(12.0 if device.startswith("cuda") else 4.0)
    options = dict(model=arch, weights=weights, device=device, chunk_seconds=1.0, overlap_seconds=0.25)
    batched = Denoiser(**options, batch_size=None if device.startswith("cuda") else 4)
    one_by_one = Denoiser(**options, batch_size=1)
    result = agreement(one_by_one.enhance(x, 16000), batched.enhance(x, 16000))
    result["batch_size"] = batched.batch_size
    result["ok"] = passes(result, BATCH_MIN_SNR_DB) and batched.batch_size > 1
    return result


def check_files(arch: str, device: str, workdir: Path) -> Result:
    from denoise.engine import Denoiser
    from denoise.engine.batching import FilesTogether, files_in_flight

    gpu = device.startswith("cuda")
    d = Denoiser(model=arch, weights=weights_for(arch, workdir), device=device, batch_size=None if gpu else 4)
    # lengths that share widths and some that do not; on the CPU self-test, a quarter as long
    seconds = [s * (1.0 if gpu else 0.25) for s in [3.0, 3.0, 3.0, 4.0, 4.0, 3.5] * (4 if gpu else 1)]
    signals = [synthetic_speech(s, seed=k) for k, s in enumerate(seconds)]
    d.enhance(signals[0], 16000)  # warm-up: CUDA context, kernels
    stats, start = d.backend.stats, time.perf_counter()
    alone = [d.enhance(x, 16000) for x in signals]
    alone_s, calls, rows, capacity = time.perf_counter() - start, stats.calls, stats.rows, stats.capacity
    start = time.perf_counter()
    with FilesTogether(d, lambda den, k: den.enhance(signals[k], 16000), files_in_flight(d)) as pool:
        together = dict(pool.run((k, (k,)) for k in range(len(signals))))
    together_s = time.perf_counter() - start
    errors = [float(np.max(np.abs(alone[k] - together[k]))) for k in range(len(signals))]
    return {
        "files": len(signals),
        "rows_per_call": d.batch_size,
        "max_abs_error": max(errors),  # 0.0: the same bits, whatever a file was batched with
        "files_per_s_alone": round(len(signals) / alone_s, 2),
        "files_per_s_together": round(len(signals) / together_s, 2),
        "calls_alone_together": [calls - 1, stats.calls - calls],  # the warm-up's call aside
        "occupancy_together": round((stats.rows - rows) / max(1, stats.capacity - capacity), 3),
        "ok": max(errors) == 0.0 and stats.shared > 0,
    }


def check_stream(device: str, workdir: Path) -> Result:
    """GTCRN's carried state on the device (TorchBackend.open_stream): a 48 kHz stereo stream in 20 ms blocks
    against file mode on the CPU; fp32 must agree to the exactness the CPU tests assert (>= 60 dB)."""
    from denoise.engine import Denoiser

    weights = weights_for("gtcrn", workdir)
    rate = 48000
    x = np.concatenate([synthetic_speech(3.0, rate, seed) for seed in (0, 1)])
    reference = Denoiser(model="gtcrn", weights=weights, device="cpu").enhance(x, rate)
    stream = Denoiser(model="gtcrn", weights=weights, device=device).stream(rate, 2)
    block = rate // 50
    parts = [stream.process(x[:, i : i + block]) for i in range(0, x.shape[1], block)]
    out = np.concatenate([*parts, stream.flush()], axis=1)[:, stream.latency :]
    result = agreement(reference, out)
    result["latency_samples"] = int(stream.latency)
    result["ok"] = passes(result, FP32_MIN_SNR_DB)
    return result


def check_onnx(arch: str, device: str, workdir: Path) -> Result:
    import onnxruntime as ort

    from denoise.backends.onnx_backend import OnnxBackend
    from denoise.export import ExportConfig, export_onnx

    if device.startswith("cuda") and "CUDAExecutionProvider" not in ort.get_available_providers():
        return {"ok": True, "skipped": "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"}
    graph = workdir / f"{arch}.onnx"
    if not graph.exists():
        export_onnx(ExportConfig(arch, weights_for(arch, workdir), graph, example_seconds=0.5))
    x = synthetic_speech(4.0)
    on_cpu = OnnxBackend(arch, onnx_path=graph, device="cpu").process(x)
    on_device = OnnxBackend(arch, onnx_path=graph, device=device)
    result = agreement(on_cpu, on_device.process(x))
    result["backend"] = on_device.name
    result["ok"] = passes(result, ONNX_MIN_SNR_DB)
    if on_device.stateful:  # GTCRN: the graph's carried state on the device, 16 ms blocks vs one CPU call
        stream = on_device.open_stream(x.shape[0])
        hop = on_device.hop_length
        parts = [stream.process(x[:, i : i + hop]) for i in range(0, x.shape[1], hop)]
        streamed = agreement(on_cpu, np.concatenate([*parts, stream.flush()], axis=1)[:, stream.delay :])
        result["stream_snr_db"] = streamed["snr_db"]
        result["ok"] = result["ok"] and passes(streamed, ONNX_MIN_SNR_DB)
    return result


def finetune_smoke(arch: str, steps: int, device: str, amp: str, workdir: Path) -> Result:
    """The fine-tuning smoke run (:func:`denoise.finetune.smoke_run`): seeded random start, synthetic
    audio, the real Trainer, interrupted and resumed halfway. Its one call site here."""
    from denoise.finetune import smoke_run

    return dict(smoke_run(arch, steps=steps, device=device, amp=amp, workdir=workdir))


def check_finetune(arch: str, device: str, workdir: Path, steps: int) -> Result:
    amp = "auto" if device.startswith("cuda") else "off"  # auto: bf16 where the GPU has it, else fp16
    run = finetune_smoke(arch, steps, device, amp, workdir / f"finetune_{arch}")
    losses = [float(v) for v in run.get("losses", [])]
    checkpoint = run.get("checkpoint")
    result: Result = {
        "amp": run.get("amp_dtype", amp),
        "grad_scaler": run.get("grad_scaler"),
        "steps": len(losses),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "resumed_at": run.get("resumed_at"),
        "run_checks": {k: run[k] for k in run if k.endswith("_ok") or k.startswith(("loss_", "train_mode"))},
        "peak_gpu_mb": run.get("peak_memory_mb"),
    }
    # Checked here too, whatever the run reports: finite, and the last quarter's mean below the first
    # quarter's (single steps are noisy), a checkpoint on disk, and a resume that worked.
    quarter = max(1, len(losses) // 4)
    finite = bool(losses) and all(math.isfinite(v) for v in losses)
    falling = finite and np.mean(losses[-quarter:]) < np.mean(losses[:quarter])
    written = bool(checkpoint) and Path(checkpoint).exists()
    result["ok"] = bool(run.get("ok") and finite and falling and written and run.get("resume_ok"))
    return result


def check_ddp(device: str, workdir: Path, steps: int = 3) -> Result:
    import torch
    import torch.multiprocessing as mp

    device_type = "cuda" if device.startswith("cuda") else "cpu"
    world = max(1, torch.cuda.device_count()) if device_type == "cuda" else 1
    out = workdir / "ddp"
    out.mkdir(parents=True, exist_ok=True)
    from denoise.finetune.distributed import free_port, smoke_replica

    mp.spawn(smoke_replica, args=(world, device_type, free_port(), steps, str(out)), nprocs=world, join=True)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]
    finite = all(math.isfinite(v) for r in ranks for v in r["losses"])
    identical = all(r["replica_spread"] == 0.0 for r in ranks)
    return {
        "processes": world,
        "backend": ranks[0]["backend"],
        "losses": ranks[0]["losses"],
        "replicas_identical": identical,
        "peak_gpu_mb": max((r["peak_gpu_mb"] or 0.0 for r in ranks), default=None)
        if device_type == "cuda"
        else None,
        "ok": finite and identical and len(ranks[0]["losses"]) == steps,
    }


# --------------------------------------------------------------------------------------------- main


def run_checks(
    device: str, archs: tuple[str, ...], checks: tuple[str, ...], workdir: Path, steps: int
) -> Result:
    """Every requested check on ``device``; the JSON summary (``ok`` is True when all passed)."""
    import torch

    seconds = 6.0 if device.startswith("cuda") else 2.0
    plan: dict[str, Callable[[], Result]] = {}
    if "device" in checks:
        plan["device"] = lambda: check_device(device)
    for arch in archs:
        if "engine" in checks:
            plan[f"engine_{arch}"] = lambda a=arch: check_engine(a, device, workdir, seconds)
    if "batching" in checks:
        plan["batching"] = lambda: check_batching(device, workdir)
    for arch in archs:
        if "files" in checks:
            plan[f"files_{arch}"] = lambda a=arch: check_files(a, device, workdir)
    if "stream" in checks:
        plan["stream"] = lambda: check_stream(device, workdir)
    for arch in archs:
        if "onnx" in checks:
            plan[f"onnx_{arch}"] = lambda a=arch: check_onnx(a, device, workdir)
    for arch in archs:
        if "finetune" in checks:
            plan[f"finetune_{arch}"] = lambda a=arch: check_finetune(a, device, workdir, steps)
    if "ddp" in checks:
        plan["ddp"] = lambda: check_ddp(device, workdir)
    results = {name: run_check(name, func, device) for name, func in plan.items()}
    return {
        "ok": all(r["ok"] for r in results.values()),
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "checks": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m denoise.gpucheck", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (self-test)")
    parser.add_argument("--models", default=",".join(ARCHS), help="comma-separated (default: all)")
    parser.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {CHECKS}")
    parser.add_argument("--steps", type=int, default=20, help="fine-tuning steps per model (default: 20)")
    parser.add_argument("--out", default=None, help="also write the JSON summary to this file")
    parser.add_argument("--workdir", default=None, help="exports and checkpoints (default: a temp folder)")
    args = parser.parse_args(argv)
    archs = tuple(a for a in args.models.split(",") if a)
    checks = tuple(c for c in args.checks.split(",") if c)
    unknown = sorted(set(checks) - set(CHECKS)) + sorted(set(archs) - set(ARCHS))
    if unknown:
        parser.error(f"unknown checks or models: {', '.join(unknown)}")

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        summary: Result = {"ok": False, "status": "no-cuda", "message": "no CUDA device: nothing was checked "
                           "(run on a machine with an NVIDIA GPU, or --device cpu for the self-test)"}  # fmt: skip
        print(json.dumps(summary, indent=2))
        return EXIT_NO_CUDA
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        summary = run_checks(args.device, archs, checks, workdir, args.steps)
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    if args.out:
        from denoise_models.atomic import atomic_output

        with atomic_output(args.out) as tmp_out:
            tmp_out.write_text(text + "\n", encoding="utf-8")
    return EXIT_OK if summary["ok"] else EXIT_FAILED


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
