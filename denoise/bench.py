"""Speed (real-time factor) and peak memory of the engine, each configuration in a fresh subprocess.

``RTF = processing seconds / audio seconds`` (lower is faster; < 1 is faster than real time). A fresh process
per configuration makes the peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) that of the
configuration alone: imports, model, ONNX Runtime session, the input and every buffer the engine makes.

The input is real speech (a shared noisy clip, or any file) repeated to the requested duration. Each
measurement goes through :class:`denoise.engine.Denoiser` exactly as ``1键推理.py`` runs it (resampling,
levels, chunking, overlap-add), with the default chunking unless told otherwise.

    python -m denoise.bench '{"model": "gtcrn", "seconds": 10, "threads": 1}'   # one JSON line out
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_SPEECH = "audio/noisy/modelscope_frcrn__speech_with_noise.wav"


@dataclass(frozen=True)
class BenchConfig:
    """One measured configuration. ``backend``: "torch", "onnx" (``onnx_path`` FP32/INT8) or "gtcrn-stream"."""

    model: str = "frcrn"
    weights: str | None = "default"
    backend: str = "torch"
    onnx_path: str | None = None
    label: str = ""  # e.g. "ORT INT8"; defaults to the backend
    seconds: float = 10.0  # audio duration (s)
    threads: int | None = 1  # None: the libraries' defaults (what 1键推理.py uses)
    repeats: int = 1  # timed runs; the minimum is reported (the machine is shared)
    speech: str | None = None  # input file (default: the shared noisy clip), repeated to ``seconds``
    # False: time only ``backend.process`` on the whole 16 kHz input in one call (the network alone, as a
    # reference implementation runs it) instead of the engine's chunked pipeline
    engine: bool = True


@dataclass
class BenchResult:
    config: BenchConfig
    backend_name: str  # what the engine reported, e.g. "onnx:CPUExecutionProvider:int8-dynamic"
    load_seconds: float  # model + session construction
    times: list[float] = field(default_factory=list)  # wall seconds per timed run
    cpu_times: list[float] = field(default_factory=list)  # process CPU seconds (user + sys) per timed run
    peak_rss_mb: float = 0.0  # MiB, whole process

    @property
    def rtf(self) -> float:
        """Best (minimum) real-time factor over the timed runs (wall clock)."""
        return min(self.times) / self.config.seconds

    @property
    def cpu_rtf(self) -> float:
        """CPU seconds per audio second (all threads summed): the cost, much less sensitive to other load
        on a shared machine than the wall clock; equals the RTF on an idle machine with one thread."""
        return min(self.cpu_times) / self.config.seconds if self.cpu_times else float("nan")

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "rtf": self.rtf, "cpu_rtf": self.cpu_rtf}


def make_input(seconds: float, speech: str | Path | None = None) -> tuple[np.ndarray, int]:
    """Real speech tiled to ``seconds``: float32 ``[1, samples]`` and its sample rate (Hz)."""
    from denoise.audio import read_audio
    from denoise.tutorial import shared_file

    audio = read_audio(speech or shared_file(DEFAULT_SPEECH))
    x = audio.samples[:1]
    n = round(seconds * audio.sample_rate)
    return np.tile(x, (1, -(-n // x.shape[1])))[:, :n].copy(), audio.sample_rate


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_here(config: BenchConfig) -> BenchResult:
    """Measure ``config`` in this process (use :func:`measure` for a clean peak-RSS figure)."""
    from denoise.engine import Denoiser, DenoiserConfig

    x, sr = make_input(config.seconds, config.speech)
    started = time.perf_counter()
    onnx_path = config.onnx_path
    if config.backend == "onnx" and onnx_path is None:  # the cached export (made once, timed as load)
        from denoise.export import ensure_onnx

        onnx_path = str(ensure_onnx(config.model, config.weights))
    denoiser = Denoiser(
        DenoiserConfig(
            model=config.model, weights=config.weights, backend=config.backend, onnx_path=onnx_path,
            device="cpu", threads=config.threads,
        )
    )  # fmt: skip
    load = time.perf_counter() - started
    result = BenchResult(config, denoiser.backend.name, load)
    if not config.engine:
        from denoise.audio import resample

        x = resample(x, sr, denoiser.sample_rate)
    run = denoiser.backend.process if not config.engine else (lambda a: denoiser.enhance(a, sr))
    for _ in range(max(1, config.repeats)):
        t, c = time.perf_counter(), time.process_time()
        run(x)
        result.times.append(time.perf_counter() - t)
        result.cpu_times.append(time.process_time() - c)
    result.peak_rss_mb = peak_rss_mb()
    return result


def measure(config: BenchConfig, timeout: float | None = None) -> BenchResult:
    """Measure ``config`` in a fresh Python subprocess (threads pinned through the environment too)."""
    env = dict(os.environ)
    if config.threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(config.threads)
    cmd = [sys.executable, "-m", "denoise.bench", json.dumps(asdict(config))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark {config} failed:\n{proc.stderr[-2000:]}")
    raw = json.loads(proc.stdout.strip().splitlines()[-1])
    return BenchResult(
        BenchConfig(**raw["config"]), raw["backend_name"], raw["load_seconds"], raw["times"], raw["cpu_times"],
        raw["peak_rss_mb"],
    )  # fmt: skip


def format_row(r: BenchResult) -> str:
    """A markdown table row: model, label, audio, threads, RTF, CPU-s per audio-s, best time, peak RSS, load."""
    c = r.config
    audio = f"{c.seconds / 60:.0f} min" if c.seconds >= 60 else f"{c.seconds:.0f} s"
    return (
        f"| {c.model} | {c.label or c.backend} | {audio} | {c.threads or 'default'} | {r.rtf:.3f} | {r.cpu_rtf:.3f} "
        f"| {min(r.times):.2f} s | {r.peak_rss_mb:,.0f} MB | {r.load_seconds:.1f} s |"
    )


TABLE_HEADER = (
    "| model | backend | audio | threads | RTF (wall, min) | CPU s / audio s | time (min) | peak RSS | load |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    result = run_here(BenchConfig(**json.loads(argv[0])))
    print(json.dumps(result.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
