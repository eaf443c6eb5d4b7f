"""Live streaming cost of GTCRN on one CPU thread: ``Denoiser.stream`` in 16 ms blocks (on the torch backend
and on the ``onnx`` backend, whose exported graph carries GTCRN's state) vs the official streaming ONNX graph
driven frame by frame (``denoise.backends.gtcrn_stream``).

For each configuration, every ``process`` / ``push`` call is timed (wall clock and process CPU time): the cost
per 16 ms hop (median, p99, max) and the real-time factor (processing seconds / audio seconds). The
configurations take turns call by call (interleaved), so a shared machine's load falls on all of them alike. The first
``--warmup`` calls (allocations, first-call dispatch) are left out of the per-hop figures and in the RTF. The
input is real noisy speech (a shared clip) repeated to ``--seconds``, at 16 kHz and at 48 kHz (resampled):
the engine stream resamples to the network's 16 kHz and back; the ONNX graph runs at 16 kHz only (network and
STFT framing, no resampling), as the official real-time demo does. The last column checks the stream's
output against file mode (``Denoiser.enhance``) on the same input: the stream is only fast if it is right.

    DENOISE_WEIGHTS_MIRROR=../shared/weights python benchmarks/bench_stream.py --seconds 30 --backends onnx torch
    python benchmarks/bench_stream.py --json >> benchmarks/results.jsonl   # JSON lines instead of the table

The machine is shared: read the CPU columns, and compare configurations measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one CPU thread, before numpy/torch/onnxruntime load

import numpy as np

from denoise.tutorial import shared_dir

SPEECH = "audio/noisy/modelscope_frcrn__speech_with_noise.wav"


@dataclass
class StreamCost:
    label: str
    rate: int
    block_ms: float  # audio per call
    seconds: float
    calls: int
    hop_ms_median: float  # wall-clock ms per call (per 16 ms hop when block_ms is 16)
    hop_ms_p99: float
    hop_ms_max: float
    cpu_ms_median: float  # process CPU ms per call
    cpu_ms_p99: float
    rtf_wall: float  # whole run: wall seconds / audio seconds
    rtf_cpu: float  # whole run: CPU seconds / audio seconds
    latency_ms: float  # the stream's fixed latency
    snr_vs_file_db: float | None  # output vs Denoiser.enhance on the same input (None: not comparable)

    def row(self) -> str:
        snr = "–" if self.snr_vs_file_db is None else f"{self.snr_vs_file_db:.1f}"
        return (
            f"| {self.label} | {self.rate // 1000} kHz | {self.block_ms:g} | {self.hop_ms_median:.2f} | {self.hop_ms_p99:.2f} | "
            f"{self.hop_ms_max:.2f} | {self.cpu_ms_median:.2f} | {self.cpu_ms_p99:.2f} | {self.rtf_wall:.3f} | "
            f"{self.rtf_cpu:.3f} | {self.latency_ms:.1f} | {snr} |"
        )


HEADER = (
    "| path | rate | block ms | ms / block, median | p99 | max | CPU ms / block, median | CPU p99 | RTF (wall) | "
    "RTF (CPU) | latency ms | SNR vs file mode dB |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def speech(seconds: float, rate: int) -> np.ndarray:
    """Real noisy speech repeated to ``seconds`` at ``rate``: float32 ``[1, n]``."""
    from denoise.audio import read_audio, resample

    shared = shared_dir()
    clip = read_audio(shared / SPEECH)
    x = resample(clip.samples[:1], clip.sample_rate, rate)
    reps = int(np.ceil(seconds * rate / x.shape[1]))
    return np.tile(x, (1, reps))[:, : round(seconds * rate)]


@dataclass
class Feed:
    """One configuration: its blocks, the call to time, and how to check its output afterwards."""

    label: str
    rate: int
    block: float  # seconds per call
    blocks: list[np.ndarray]
    step: object  # block -> output
    latency: int  # samples at ``rate``
    check: object = None  # outputs -> SNR vs file mode (dB), or None

    def __post_init__(self) -> None:
        self.outputs: list[np.ndarray] = []
        self.wall = np.zeros(len(self.blocks))
        self.cpu = np.zeros(len(self.blocks))


def run_interleaved(feeds: list[Feed]) -> None:
    """Call every feed's step on its i-th block, feed after feed, for i = 0, 1, ...: on a shared machine the
    load then falls on every configuration alike (sequential runs compare the load, not the code)."""
    for i in range(max(len(f.blocks) for f in feeds)):
        for f in feeds:
            if i < len(f.blocks):
                t, c = time.perf_counter(), time.process_time()
                f.outputs.append(f.step(f.blocks[i]))
                f.wall[i], f.cpu[i] = time.perf_counter() - t, time.process_time() - c


def summarise(f: Feed, warmup: int) -> StreamCost:
    seconds = len(f.wall) * f.block
    w, c = f.wall[warmup:] * 1000, f.cpu[warmup:] * 1000
    snr = f.check(f.outputs) if f.check else None
    return StreamCost(
        f.label, f.rate, 1000 * f.block, seconds, len(f.wall),
        float(np.median(w)), float(np.percentile(w, 99)), float(w.max()),
        float(np.median(c)), float(np.percentile(c, 99)),
        float(f.wall.sum() / seconds), float(f.cpu.sum() / seconds), 1000 * f.latency / f.rate, snr,
    )  # fmt: skip


def snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    err = np.sum((ref - est).astype(np.float64) ** 2)
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(err, 1e-30)))


def engine_feed(seconds: float, rate: int, block: float, weights: str, backend: str) -> Feed:
    from denoise.engine import Denoiser

    denoiser = Denoiser(model="gtcrn", weights=weights, backend=backend, device="cpu", threads=1)
    x = speech(seconds, rate)
    hop = round(block * rate)
    stream = denoiser.stream(rate, 1)
    blocks = [x[:, i : i + hop] for i in range(0, x.shape[1] - hop + 1, hop)]
    n = len(blocks) * hop

    def check(outputs: list[np.ndarray]) -> float:
        y = np.concatenate([*outputs, stream.flush()], axis=1)[:, stream.latency :]
        return snr_db(denoiser.enhance(x[:, :n], rate), y[:, :n])

    return Feed(f"Denoiser.stream ({backend})", rate, block, blocks, stream.process, stream.latency, check)


def onnx_frames_feed(seconds: float) -> Feed:
    from denoise.backends.gtcrn_stream import HOP, SAMPLE_RATE, GtcrnStreamBackend

    x = speech(seconds, SAMPLE_RATE)[0]
    streamer = GtcrnStreamBackend(threads=1).streamer()
    blocks = [x[i : i + HOP] for i in range(0, x.size - HOP + 1, HOP)]
    # 256 samples ahead of the output plus the 512-sample analysis frame (see gtcrn_stream's docstring)
    label = "official ONNX graph, frame by frame"
    return Feed(label, SAMPLE_RATE, HOP / SAMPLE_RATE, blocks, streamer.push, 2 * HOP)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per configuration (default 30)")
    parser.add_argument("--rates", type=int, nargs="+", default=[16000, 48000])
    parser.add_argument("--block-ms", type=float, default=16.0, help="Denoiser.stream block (default 16)")
    parser.add_argument("--warmup", type=int, default=10, help="first calls left out of the per-hop figures")
    parser.add_argument("--weights", default="default", help="GTCRN weights (default: gtcrn_dns3_stream)")
    parser.add_argument(
        "--backends", nargs="+", default=["onnx", "torch"], help="engine backends to stream on"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line per configuration instead")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    block = args.block_ms / 1000
    feeds = [
        engine_feed(args.seconds, rate, block, args.weights, backend)
        for backend in args.backends
        for rate in args.rates
    ]
    feeds.append(onnx_frames_feed(args.seconds))
    run_interleaved(feeds)
    results = [summarise(f, args.warmup) for f in feeds]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if args.json:
        for r in results:
            print(json.dumps({"bench": "stream", "load": load, **asdict(r)}))
        return 0
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {load:.1f}, 1 thread")
    print(HEADER)
    for r in results:
        print(r.row())
    return 0


if __name__ == "__main__":
    sys.exit(main())
