"""The data path, one straight line of streaming stages over blocks ``[channels, n]`` at the input rate::

    resample down to 16 kHz -> working level + network (chunks with cross-fades, or carried state)
      -> level restored -> resample up -> full-band stage -> attenuation limit -> peak limiter

The full-band stage (inputs above 16 kHz, unless ``full_band=False``) adds back the 8 kHz-Nyquist band of
the input, denoised (:mod:`denoise.fullband`), and delays the output by its STFT frame.

:class:`Pipeline` is aligned (its output's first sample answers the input's first sample; blocks come
out when they are final, so their sizes vary); file mode writes what it returns. :class:`EngineStream`
(``Denoiser.stream``) puts a FIFO with a fixed latency behind it, so every ``process`` call returns as
many frames as it was given.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from denoise.engine.chunks import ChunkRunner, StateRunner
from denoise.engine.levels import PeakLimiter
from denoise.engine.stages import Fifo, Resampler
from denoise.fullband import FullBandStage

# The limiter looks this far ahead (and spreads a gain change over as much on each side).
LIMITER_LOOKAHEAD_SECONDS = 0.002


class Pipeline:
    """The whole path for one signal of ``channels`` at ``rate`` Hz; ``push`` blocks, then ``finish``.

    ``core`` is a :class:`ChunkRunner` or :class:`StateRunner` at the network's rate; ``atten_lim_db``
    mixes ``10 ** (-lim / 20)`` of the input back in (suppression bounded at ``lim`` dB). ``full_band``
    adds the :class:`denoise.fullband.FullBandStage` when ``rate`` is above ``net_rate`` (otherwise the
    output has nothing above the network's Nyquist frequency).
    """

    def __init__(
        self,
        core: ChunkRunner | StateRunner,
        *,
        rate: int,
        net_rate: int,
        channels: int,
        atten_lim_db: float | None,
        full_band: bool = False,
    ) -> None:
        self.channels = channels
        self.down = Resampler(rate, net_rate, channels)
        self.core = core
        self.up = Resampler(net_rate, rate, channels)
        self.mix = None if atten_lim_db is None else 10.0 ** (-abs(atten_lim_db) / 20.0)
        self.limiter = PeakLimiter(channels, round(LIMITER_LOOKAHEAD_SECONDS * rate))
        self._input = Fifo(channels)  # input samples the output has not caught up with
        self._made = Fifo(channels)  # network output resampled up, waiting for the input it answers
        self._pushed = 0
        self._done = 0  # output samples handed out
        self.full_band: FullBandStage | None = None
        if full_band and rate > net_rate:
            self.full_band = FullBandStage(rate, channels)
            # x_low = up(down(x)): the network's input (self.down's output) brought back up by a
            # resampler like self.up, so x - x_low is exactly the band the round trip removed.
            self.low_up = Resampler(net_rate, rate, channels)
            self._low = Fifo(channels)  # x_low, waiting like self._made
            self._staged = Fifo(channels)  # input samples inside the stage's delay (for the mix)
            self._to_drop = self.full_band.latency  # the stage's first outputs precede the signal
            # A silent channel (working gain 0) stays silent: its high band is not added back.
            self._active = np.zeros((channels, 1), np.float32)
            self._active[core.rows] = 1.0
        # Bound on how far the output trails the input, in input samples (the stream's fixed latency).
        self.lag = (
            math.ceil((self.down.lag + core.lag) * rate / net_rate) + self.up.lag + self.limiter.delay + 2
        ) + (self.full_band.latency if self.full_band is not None else 0)

    def push(self, x: np.ndarray) -> np.ndarray:
        self._pushed += x.shape[1]
        if self.mix is not None or self.full_band is not None:
            self._input.push(x)
        x_net = self.down.push(x)
        if self.full_band is not None:
            self._low.push(self.low_up.push(x_net))
        self._made.push(self.up.push(self.core.push(x_net)))
        return self.limiter.process(self._after_network(final=False))

    def finish(self) -> np.ndarray:
        x_net = self.down.finish()
        if self.full_band is not None:
            self._low.push(self.low_up.push(x_net))
            self._low.push(self.low_up.finish())
        tail = self.core.push(x_net)
        self._made.push(self.up.push(np.concatenate([tail, self.core.finish()], axis=1)))
        self._made.push(self.up.finish())
        last = self._after_network(final=True)
        if self.full_band is not None:
            last = np.concatenate([last, self._from_stage(self.full_band.flush())], axis=1)
        last = self.limiter.process(last)
        return np.concatenate([last, self.limiter.flush()], axis=1)

    def _after_network(self, *, final: bool) -> np.ndarray:
        # Output sample k answers input sample k: never hand out more than was put in (resampling may
        # round a sample ahead); at the end, crop or zero-pad to exactly the input's length.
        due = self._pushed - self._done
        if not final:
            due = min(due, len(self._made), len(self._low) if self.full_band is not None else due)
        y = _exactly(self._made.pop(due), due)
        self._done += due
        if self.full_band is None:
            return self._mixed(y)
        # Full-band stage: x, x_low and y are the same samples, all at the input's level (the core has
        # already undone the working gain); the stage returns them n_fft - 1 samples later.
        x = self._input.pop(due)
        if self.mix is not None:
            self._staged.push(x)
        x = x * self._active
        x_low = _exactly(self._low.pop(due), due) * self._active
        return self._from_stage(self.full_band.process(x, x_low, y))

    def _from_stage(self, out: np.ndarray) -> np.ndarray:
        """The stage's output without the samples its delay put before the signal, limit applied."""
        drop = min(self._to_drop, out.shape[1])
        self._to_drop -= drop
        return self._mixed(out[:, drop:])

    def _mixed(self, y: np.ndarray) -> np.ndarray:
        """The attenuation limit: ``y`` with its share of the input it answers mixed back in."""
        if self.mix is None:
            return y
        source = self._staged if self.full_band is not None else self._input
        return (1.0 - self.mix) * y + self.mix * source.pop(y.shape[1])

    def notes(self) -> list[str]:
        return self.limiter.notes()


def _exactly(y: np.ndarray, n: int) -> np.ndarray:
    """``y`` zero-padded on the right to ``n`` samples (the end of a signal that resampling rounded off)."""
    if y.shape[1] >= n:
        return y
    return np.concatenate([y, np.zeros((y.shape[0], n - y.shape[1]), np.float32)], axis=1)


class EngineStream:
    """Live use: blocks in, as many frames out, a fixed ``latency`` (samples at the input rate) later.

    ``process(block)`` takes float32 ``[channels, n]`` (any ``n``) and returns ``[channels, n]``: the
    first ``latency`` frames out are silence, then the denoised signal. ``flush()`` returns the last
    ``latency`` frames; after it the stream is closed. Hence ``concatenate(outputs + [flush()])[:,
    latency:]`` equals what file mode produces for the same samples (levels aside: see ``Denoiser.stream``).
    """

    def __init__(self, pipeline: Pipeline, sample_rate: int, channels: int, notes: list[str]) -> None:
        self.pipeline = pipeline
        self.sample_rate = sample_rate
        self.channels = channels
        self.latency: int = pipeline.lag
        self._out = Fifo(channels, initial=self.latency)
        self._closed = False
        self.underruns = 0  # process calls that had to pad (never expected: latency is a bound)
        self._notes = notes

    def process(self, block: np.ndarray) -> np.ndarray:
        block = self._check(block)
        self._out.push(self.pipeline.push(block))
        n = block.shape[1]
        out = self._out.pop(n)
        if out.shape[1] < n:
            self.underruns += 1
            out = np.concatenate([np.zeros((self.channels, n - out.shape[1]), np.float32), out], axis=1)
        return out

    def flush(self) -> np.ndarray:
        self._check(np.zeros((self.channels, 0), np.float32))
        self._closed = True
        self._out.push(self.pipeline.finish())
        return self._out.pop(len(self._out))

    @property
    def notes(self) -> list[str]:
        extra = (
            [f"{self.underruns} output block(s) padded (processing fell behind)"] if self.underruns else []
        )
        return [*self._notes, *self.pipeline.notes(), *extra]

    def _check(self, block: Any) -> np.ndarray:
        if self._closed:
            raise RuntimeError("this stream was flushed; open a new one with Denoiser.stream()")
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"expected a block shaped [{self.channels}, frames], got {list(block.shape)}")
        return np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)
