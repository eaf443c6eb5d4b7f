"""The 16 kHz core of the pipeline: feed a stream of blocks to the network, get a stream of blocks back.

Two runners share one shape (``push(x) -> y``, ``finish() -> y``; ``x``/``y`` float32 ``[channels, n]``,
``y`` aligned with ``x``: its first sample answers ``x``'s first sample, it only arrives later; ``lag``
bounds how many samples behind the input the output can be):

- :class:`ChunkRunner` (networks without carried state: FRCRN, ONNX graphs) cuts the stream into the
  overlapping chunks of :func:`chunk_spans`, runs them in batches, and overlap-adds with raised-cosine
  cross-fades into a buffer that only spans the chunks in flight: the same chunks, weights and result as
  cutting the whole signal at once, without holding it.
- :class:`StateRunner` (networks with carried state: GTCRN on torch) drives the backend's
  :meth:`open_stream`; chunk boundaries do not exist for it, so its output is the whole-signal output.

Each channel has its own gain (the working level): applied to what the network sees, undone on what it
returns, before the overlap-add. ``gains=None`` (live use) computes ModelScope's two-stage gain from each
chunk itself (causal: a chunk is complete when it runs).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np

from denoise.backends import run_whole, valid_length
from denoise.engine.levels import SILENCE_RMS, working_level_gain
from denoise_models.spec import spec_of


def chunk_spans(
    total: int, chunk: int, overlap: int, preroll: int = 0
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Split ``[0, total)`` into chunks of ``chunk`` samples for overlap-add.

    Consecutive chunks share ``preroll + overlap`` samples. Within that, the later chunk's first
    ``preroll`` samples are context only (weight 0: a recurrent network's state is still warming up),
    then the two cross-fade with complementary raised-cosine ramps over ``overlap`` samples.

    Yields ``(start, stop, weight)``; the weights of all chunks sum to one at every sample. The last
    chunk is aligned to the end of the signal (never zero-padded), which matters for FRCRN whose SE
    blocks pool over the whole chunk.
    """
    if total <= chunk:
        yield 0, total, np.ones(total)
        return
    if chunk < preroll + 2 * overlap + 1:
        raise ValueError("chunk must be longer than preroll + 2 x overlap")
    step = chunk - overlap - preroll
    starts = [*range(0, total - chunk, step), total - chunk]
    for k, start in enumerate(starts):
        previous = starts[k - 1] if k else None
        yield start, start + chunk, span_weight(chunk, overlap, start, previous, last=k + 1 == len(starts))


def span_weight(chunk: int, overlap: int, start: int, previous: int | None, *, last: bool) -> np.ndarray:
    """The overlap-add weight of the chunk at ``start`` that follows the one at ``previous``."""
    weight = np.ones(chunk)
    if previous is not None:  # fade in over the previous chunk's last `overlap` samples; before: context
        fade_at = previous + chunk - overlap - start
        weight[:fade_at] = 0.0
        weight[fade_at : fade_at + overlap] = _ramp(overlap)
    if not last:
        weight[chunk - overlap :] *= _ramp(overlap)[::-1]
    return weight


def _ramp(n: int) -> np.ndarray:
    """Raised-cosine ramp 0 -> 1 over n samples (complementary to its mirror image)."""
    return 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)


def _inverse(gains: np.ndarray) -> np.ndarray:
    """1/gain, with 0 where the gain is 0 (a silent channel or chunk stays silent)."""
    return np.divide(1.0, gains, out=np.zeros_like(gains), where=gains != 0.0)


class ChunkRunner:
    """Overlapping chunks with cross-fades over a stream (see the module docstring).

    ``chunk``/``overlap``/``preroll`` are in samples; ``gains`` holds one gain per channel (0 = silent:
    not run, output zero) or is None for per-chunk working levels at ``level_dbfs``.
    """

    def __init__(
        self,
        backend: Any,
        channels: int,
        *,
        chunk: int,
        overlap: int,
        preroll: int,
        batch_size: int,
        gains: np.ndarray | None,
        level_dbfs: float | None = None,
    ) -> None:
        if chunk < backend.min_samples or overlap < 0:
            raise ValueError("chunk_seconds must cover at least one frame and overlap_seconds be >= 0")
        if chunk <= 2 * preroll:  # short chunks (tests, tiny memory budgets): less context
            preroll = chunk // 4
        overlap = min(overlap, (chunk - preroll) // 3)
        self.backend, self.batch_size, self.level_dbfs = backend, batch_size, level_dbfs
        self.chunk, self.overlap, self.preroll = chunk, overlap, preroll
        self.step = chunk - overlap - preroll
        self.gains = gains
        self.rows = np.arange(channels) if gains is None else np.flatnonzero(gains != 0.0)
        # Zero margins so the first and last samples are seen by full analysis frames.
        self.margin = 2 * backend.hop_length
        # The margins alone must not cost a second chunk: up to this many samples are one chunk.
        self.single = chunk + preroll + overlap
        self._x = np.zeros((channels, self.margin), np.float32)  # padded input from index _x_at on
        self._x_at = 0
        self._acc = np.zeros((channels, 0), np.float64)  # overlap-add buffer from index _acc_at on
        self._acc_at = 0
        self._next = 0  # start of the next regular chunk
        self._previous: int | None = None  # start of the last chunk queued
        self._queue: list[tuple[int, int, np.ndarray]] = []
        self._final = 0  # samples before this index are complete in _acc
        spans_per_batch = max(1, -(-batch_size // max(1, len(self.rows))))
        self.lag = self.single + (spans_per_batch - 1) * self.step

    @property
    def _available(self) -> int:
        return self._x_at + self._x.shape[1]

    def push(self, x: np.ndarray) -> np.ndarray:
        self._x = np.concatenate([self._x, x], axis=1)
        while self._available > max(self._next + self.chunk, self.single):
            self._queue_span(self._next, last=False)
            self._next += self.step
        if len(self._queue) * len(self.rows) >= self.batch_size:
            self._run_queue()
        return self._emit(self._final)

    def finish(self) -> np.ndarray:
        self._x = np.concatenate([self._x, np.zeros((self._x.shape[0], self.margin), np.float32)], axis=1)
        total = self._available
        while total > max(self._next + self.chunk, self.single):  # the margin may complete regular chunks
            self._queue_span(self._next, last=False)
            self._next += self.step
        if self._previous is None:
            self._queue.append((0, total, np.ones(total)))  # short signal: one chunk
        else:
            self._queue_span(total - self.chunk, last=True)
        self._run_queue()
        return self._emit(total - self.margin)

    def _queue_span(self, start: int, *, last: bool) -> None:
        weight = span_weight(self.chunk, self.overlap, start, self._previous, last=last)
        self._queue.append((start, start + self.chunk, weight))
        self._previous = start

    def _run_queue(self) -> None:
        jobs = [(c, span) for span in self._queue for c in self.rows]
        for i in range(0, len(jobs), self.batch_size):
            self._run_batch(jobs[i : i + self.batch_size])
        if self._queue:
            _, stop, _ = self._queue[-1]
            # the next chunk (regular or last) contributes nothing before the previous one's fade-out
            self._final = stop - self.overlap
            keep_from = min(self._next, self._available - self.chunk)
            self._x = self._x[:, max(0, keep_from - self._x_at) :]
            self._x_at = max(self._x_at, keep_from)
        self._queue = []

    def _run_batch(self, group: list[tuple[int, tuple[int, int, np.ndarray]]]) -> None:
        width = max(stop - start for _, (start, stop, _) in group)
        batch = np.zeros((len(group), width), dtype=np.float32)
        for row, (c, (start, stop, _)) in enumerate(group):
            batch[row, : stop - start] = self._x[c, start - self._x_at : stop - self._x_at]
        gains = self._row_gains(group, batch)
        result = self.backend.process(batch * gains[:, None].astype(np.float32))
        inverse = _inverse(gains)
        end = max(stop for _, (_, stop, _) in group)
        if end > self._acc_at + self._acc.shape[1]:
            grow = end - self._acc_at - self._acc.shape[1]
            self._acc = np.concatenate([self._acc, np.zeros((self._acc.shape[0], grow))], axis=1)
        for row, (c, (start, stop, weight)) in enumerate(group):
            # a chunk's context (weight 0) may reach back into samples already emitted
            skip = max(0, self._acc_at - start)
            at = start + skip - self._acc_at
            part = result[row, skip : stop - start] * weight[skip:] * inverse[row]
            self._acc[c, at : at + part.shape[0]] += part

    def _row_gains(self, group: list, batch: np.ndarray) -> np.ndarray:
        if self.gains is not None:
            return self.gains[[c for c, _ in group]]
        if self.level_dbfs is None:
            return np.ones(len(group))
        return np.array([_chunk_gain(row, self.level_dbfs) for row in batch])

    def _emit(self, upto: int) -> np.ndarray:
        n = max(0, upto - self._acc_at)
        skip = min(n, max(0, self.margin - self._acc_at))  # the leading margin is never emitted
        out = self._acc[:, skip:n].astype(np.float32)
        self._acc = self._acc[:, n:]
        self._acc_at += n
        return out


def _chunk_gain(x: np.ndarray, level_dbfs: float) -> float:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return 0.0 if rms < SILENCE_RMS else working_level_gain(x, level_dbfs)


class StateRunner:
    """A network with carried state, through ``backend.open_stream`` (any block size, exact).

    The network sees the same zero margins the chunked path adds, so its output equals one whole-signal
    forward; the outputs that answer the leading margin and the stream's own delay are dropped.

    ``feed`` (samples; 0 = every block at once, live use) holds input back until that much is pending, so
    the network runs in few long calls: each call of the torch stream has a fixed cost of over a thousand
    small kernels, which dominated a 3-5 s file fed block by block (docs/benchmarks.md, "Stateful GTCRN").
    A file shorter than ``feed`` is one call, margins included (:func:`denoise.backends.run_whole`, which a
    :class:`denoise.engine.batching.BatchGate` batches across files); the end is padded with the zeros the
    stream's flush would add in a call of its own (to whole hops), so only the end's reflection is left.
    """

    def __init__(self, backend: Any, channels: int, *, gains: np.ndarray, feed: int = 0) -> None:
        self.gains = np.asarray(gains, dtype=np.float64)
        self.rows = np.flatnonzero(self.gains != 0.0)
        self.channels = channels
        self.backend = backend
        self.net: Any = None  # the stream, opened at the first call that is not the whole signal
        delay = spec_of(backend.arch).stream_delay if len(self.rows) else 0
        self.margin = 2 * backend.hop_length
        self._valid = functools.partial(valid_length, hop=backend.hop_length, min_samples=backend.min_samples)
        self.feed = feed
        self.lag = (delay + feed) if len(self.rows) else 0
        self._skip = self.margin + delay
        self._pushed = self._emitted = 0
        self._fed = 0  # samples given to the network, margins included
        self._pending: list[np.ndarray] = []  # rows (gain applied) not yet given to the network
        self._pending_n = 0
        if len(self.rows):
            self._hold(np.zeros((len(self.rows), self.margin), np.float32))

    def push(self, x: np.ndarray) -> np.ndarray:
        self._pushed += x.shape[1]
        if not len(self.rows):  # every channel silent
            out = np.zeros_like(x)
        else:
            out = self._hold(x[self.rows] * self.gains[self.rows, None].astype(np.float32))
        self._emitted += out.shape[1]
        return out

    def finish(self) -> np.ndarray:
        if not len(self.rows):
            return np.zeros((self.channels, 0), np.float32)
        end = self._fed + self._pending_n + self.margin
        self._pending.append(np.zeros((len(self.rows), self._valid(end) - end + self.margin), np.float32))
        if self.net is None:  # the whole signal in one call: one that batches across files (BatchGate)
            out = self._out(run_whole(self.backend, self._take_pending()))
        else:
            tail = self.net.process(self._take_pending())
            out = self._out(np.concatenate([tail, self.net.flush()], axis=1))
        return out[:, : self._pushed - self._emitted]

    def _hold(self, rows: np.ndarray) -> np.ndarray:
        """Queue ``rows``; run the network over the queue once it holds ``feed`` samples."""
        self._pending.append(rows)
        self._pending_n += rows.shape[1]
        if self._pending_n < self.feed:
            return np.zeros((self.channels, 0), np.float32)
        if self.net is None:
            self.net = self.backend.open_stream(len(self.rows))
        return self._out(self.net.process(self._take_pending()))

    def _take_pending(self) -> np.ndarray:
        block = np.ascontiguousarray(np.concatenate(self._pending, axis=1))
        self._pending, self._pending_n = [], 0
        self._fed += block.shape[1]
        return block

    def _out(self, y: np.ndarray) -> np.ndarray:
        drop = min(self._skip, y.shape[1])
        self._skip -= drop
        out = np.zeros((self.channels, y.shape[1] - drop), np.float32)
        out[self.rows] = y[:, drop:] * _inverse(self.gains[self.rows])[:, None]
        return out
