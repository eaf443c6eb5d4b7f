"""Levels without the whole signal: the working-level gain (exact, from streamed statistics) and the
look-ahead peak limiter that replaces "scale the whole file down when it would clip".

Working level (FRCRN). ModelScope's ``audio_norm`` scales the 16 kHz signal so that its RMS is
``level``, then so that the RMS of the samples whose power is above the mean power is ``level``. The
product of its two gains simplifies to ``level / sqrt(mean(x**2 | x**2 > mean(x**2)))``, which needs two
statistics over the whole signal: the mean power (pass 1) and the mean power of the samples above it
(pass 2). :class:`PowerStats` and :class:`LoudStats` compute them in streamed blocks with running float64
sums, so a file is read twice for statistics (I/O and resampling, never memory) and the gain equals the
whole-array :func:`working_level_gain` to float64 rounding.

Peaks. :class:`PeakLimiter` only changes samples near ones that would exceed ``ceiling``: the gain
needed at each sample is spread over +-``lookahead`` samples by a minimum filter, then smoothed by a
moving average of the same width; the average of minima never exceeds the gain a sample needs, so no
sample exceeds the ceiling, and samples further than ``2 x lookahead`` from any overshoot pass untouched
(the loudness of the rest is kept). It reports how many samples would have clipped and by how much.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from denoise.modelscope_compat import working_level_gain  # ModelScope's audio_norm, one place

__all__ = ["CEILING", "SILENCE_RMS", "LoudStats", "PeakLimiter", "PowerStats", "working_level_gain"]

# Below this RMS (-140 dBFS) a channel is silence or dither: nothing to denoise, and a gain would only
# amplify the dither.
SILENCE_RMS = 1e-7
# Peak ceiling after the limiter: just under full scale, above every integer subtype's quantisation step.
CEILING = 0.999


class PowerStats:
    """Pass 1: per-channel mean power from blocks ``[channels, n]`` (float64 running sums)."""

    def __init__(self, channels: int) -> None:
        self.sum = np.zeros(channels, dtype=np.float64)
        self.count = 0

    def add(self, block: np.ndarray) -> None:
        self.sum += np.sum(np.square(block, dtype=np.float64), axis=1)
        self.count += block.shape[1]

    @property
    def mean(self) -> np.ndarray:
        return self.sum / max(self.count, 1)


class LoudStats:
    """Pass 2: per-channel mean power of the samples above ``mean_power`` (ModelScope's second stage)."""

    def __init__(self, mean_power: np.ndarray) -> None:
        self.threshold = np.asarray(mean_power, dtype=np.float64)
        self.sum = np.zeros_like(self.threshold)
        self.count = np.zeros(self.threshold.shape, dtype=np.int64)

    def add(self, block: np.ndarray) -> None:
        power = np.square(block, dtype=np.float64)
        loud = power > self.threshold[:, None]
        self.sum += np.sum(power, axis=1, where=loud)
        self.count += np.count_nonzero(loud, axis=1)

    def gains(self, level_dbfs: float) -> np.ndarray:
        """``level / sqrt(mean loud power)`` per channel (unity where no sample is above the mean)."""
        target = 10.0 ** (level_dbfs / 20.0)
        loud_mean = np.divide(self.sum, self.count, out=np.zeros_like(self.sum), where=self.count > 0)
        with np.errstate(divide="ignore"):
            return np.where(self.count > 0, target / np.sqrt(loud_mean), 1.0)


class PeakLimiter:
    """Streaming look-ahead limiter over blocks ``[channels, n]`` (channels linked); delay ``2 x lookahead``.

    ``process`` returns the samples that are final (all but the last ``2 x lookahead`` seen); ``flush``
    returns the rest. Output is aligned with the input (no leading delay samples).
    """

    def __init__(self, channels: int, lookahead: int, ceiling: float = CEILING) -> None:
        self.lookahead = max(1, lookahead)
        self.ceiling = ceiling
        self.delay = 2 * self.lookahead
        # history: the last 2L samples already emitted (for the look-back) + the pending ones
        self._y = np.zeros((channels, 0), np.float32)
        self._need = np.ones(0)  # gain each buffered sample needs (1 = fine)
        self._emitted_in_buffer = 0  # how many leading buffered samples were already emitted
        self.overshoots = 0
        self.peak = 0.0

    def process(self, block: np.ndarray) -> np.ndarray:
        return self._run(block, final=False)

    def flush(self) -> np.ndarray:
        return self._run(np.zeros((self._y.shape[0], 0), np.float32), final=True)

    def _run(self, block: np.ndarray, final: bool) -> np.ndarray:
        peak = np.max(np.abs(block), axis=0) if block.size else np.zeros(0, np.float32)
        over = peak > self.ceiling
        if over.any():
            self.overshoots += int(np.count_nonzero(np.abs(block) > self.ceiling))
            self.peak = max(self.peak, float(peak.max()))
        need = np.ones(peak.shape)
        need[over] = self.ceiling / peak[over]
        y = np.concatenate([self._y, block], axis=1)
        need = np.concatenate([self._need, need])
        lag, done = self.lookahead, self._emitted_in_buffer
        stop = y.shape[1] if final else max(done, y.shape[1] - self.delay)
        out = y[:, done:stop]
        if out.shape[1] and (need[max(0, done - self.delay) :] < 1.0).any():
            # gain[n] = mean over |k-n| <= L of min over |j-k| <= L of need[j]; outside the signal need = 1
            ext = np.concatenate([np.ones(self.delay), need, np.ones(self.delay)])
            lo, hi = done, stop + 2 * self.delay
            minima = sliding_window_view(ext[lo:hi], 2 * lag + 1).min(axis=1)
            gain = sliding_window_view(minima, 2 * lag + 1).mean(axis=1)
            out = out * gain[: out.shape[1]].astype(np.float32)
        keep = max(0, stop - self.delay)  # keep 2L emitted samples of look-back
        self._y, self._need = y[:, keep:], need[keep:]
        self._emitted_in_buffer = stop - keep
        return out

    def notes(self) -> list[str]:
        if not self.overshoots:
            return []
        over_db = 20 * math.log10(self.peak / self.ceiling)
        return [
            f"limited {self.overshoots:,} samples that would clip (peak {over_db:+.1f} dB over "
            f"{self.ceiling}) to avoid clipping; the rest is untouched"
        ]
