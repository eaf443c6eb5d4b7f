"""Small streaming stages of the pipeline: resampling (soxr's streaming resampler) and a sample FIFO.

Every stage takes float32 blocks ``[channels, n]`` and returns blocks aligned with its input (the first
output sample answers the first input sample; it only arrives later). ``lag`` is how far, at most, the
output count trails the input count, in output samples: the engine adds these up into the fixed
latency of :meth:`denoise.engine.Denoiser.stream`.
"""

from __future__ import annotations

import functools

import numpy as np
import soxr

QUALITY = "VHQ"  # the same quality as denoise.audio.resample, so block and whole-array results agree


class Resampler:
    """``in_rate`` -> ``out_rate`` in blocks; identical to one whole-array ``soxr.resample`` call."""

    def __init__(self, in_rate: int, out_rate: int, channels: int) -> None:
        self.channels = channels
        self.same = in_rate == out_rate
        self.lag = 0 if self.same else resampler_lag(in_rate, out_rate)
        if not self.same:
            self._soxr = soxr.ResampleStream(in_rate, out_rate, channels, dtype="float32", quality=QUALITY)

    def push(self, x: np.ndarray) -> np.ndarray:
        if self.same:
            return x
        return self._soxr.resample_chunk(np.ascontiguousarray(x.T)).T

    def finish(self) -> np.ndarray:
        if self.same:
            return np.zeros((self.channels, 0), np.float32)
        return self._soxr.resample_chunk(np.zeros((0, self.channels), np.float32), last=True).T


@functools.cache
def resampler_lag(in_rate: int, out_rate: int) -> int:
    """How many output samples soxr's stream can hold back, measured once per rate pair (~50 ms).

    soxr works in internal blocks, so the pending output varies with the input block size; this runs
    1.5 s of zeros through it in block sizes from 16 samples to 1 s and keeps the worst case, plus the
    output of 16 input samples (blocks smaller than the smallest tried) and rounding.
    """
    worst = 0.0
    for block in (16, 160, 1024, 4096, in_rate):
        stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=QUALITY)
        fed = made = 0
        for _ in range(max(2, 3 * in_rate // (2 * block))):
            made += stream.resample_chunk(np.zeros(block, np.float32)).shape[0]
            fed += block
            worst = max(worst, fed * out_rate / in_rate - made)
    return int(np.ceil(worst + 16 * out_rate / in_rate)) + 2


class Fifo:
    """Samples ``[channels, n]`` in, the oldest out; holds only what is between the two."""

    def __init__(self, channels: int, initial: int = 0) -> None:
        self._data = np.zeros((channels, initial), np.float32)

    def __len__(self) -> int:
        return self._data.shape[1]

    def push(self, x: np.ndarray) -> None:
        if x.shape[1]:
            self._data = np.concatenate([self._data, x.astype(np.float32, copy=False)], axis=1)

    def pop(self, n: int) -> np.ndarray:
        out, self._data = self._data[:, :n], self._data[:, n:]
        return out
