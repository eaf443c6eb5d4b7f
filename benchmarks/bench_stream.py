"""Live cost of ``Denoiser.stream`` with GTCRN on one CPU thread: time per 16 ms hop and real-time factor.

Feeds real speech in hop-sized blocks (256 samples at 16 kHz = 16 ms; the same 16 ms at 48 kHz) and
times every ``process`` call (CPU time of this process, so other load on the machine counts less), then
the official streaming ONNX graph driven frame by frame (``GtcrnStreamer``) on the same audio.

    DENOISE_WEIGHTS_MIRROR=../shared/weights OMP_NUM_THREADS=1 python benchmarks/bench_stream.py --seconds 30
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from denoise.audio import read_audio, resample
from denoise.backends.gtcrn_stream import GtcrnStreamBackend
from denoise.engine import Denoiser

HOP_SECONDS = 0.016


def speech(seconds: float, rate: int) -> np.ndarray:
    shared = Path(os.environ.get("DENOISE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    audio = read_audio(shared / "audio/noisy/modelscope_frcrn__speech_with_noise.wav")
    x = resample(audio.samples[:1], audio.sample_rate, rate)
    return np.tile(x, (1, int(np.ceil(seconds * rate / x.shape[1]))))[:, : round(seconds * rate)]


def timed(process, x: np.ndarray, hop: int) -> np.ndarray:
    costs = []
    for at in range(0, x.shape[-1] - hop + 1, hop):
        block = x[..., at : at + hop]
        t = time.process_time()
        process(block)
        costs.append(time.process_time() - t)
    return np.array(costs) * 1000.0


def row(label: str, costs_ms: np.ndarray, hop_ms: float) -> str:
    rtf = costs_ms.sum() / (len(costs_ms) * hop_ms)
    return (f"| {label} | {np.median(costs_ms):.2f} | {np.percentile(costs_ms, 99):.2f} | {rtf:.3f} |")  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0)
    args = p.parse_args()
    torch.set_num_threads(1)
    d = Denoiser(model="gtcrn", threads=1)
    print("| path (GTCRN, 1 thread) | median ms / 16 ms hop | p99 ms / hop | RTF (CPU) |")
    print("|---|---|---|---|")
    for rate in (16000, 48000):
        live = d.stream(rate, 1)
        hop = round(HOP_SECONDS * rate)
        print(row(f"Denoiser.stream, {rate // 1000} kHz mono (latency {1000 * live.latency / rate:.0f} ms)",
                  timed(live.process, speech(args.seconds, rate), hop), HOP_SECONDS * 1000), flush=True)  # fmt: skip
    official = GtcrnStreamBackend(arch="gtcrn", threads=1).streamer()
    x16 = speech(args.seconds, 16000)[0]
    print(row("official streaming ONNX graph, frame by frame, 16 kHz", timed(official.push, x16, 256), 16.0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
