"""Network calls of fixed shape, shared by every signal in flight: how short files fill a GPU.

A GPU runs one short utterance about as fast as eight, so a corpus of short files wants its rows batched
across files. Two facts decide how, and they make the results *the same bits* as one file at a time:

- **Fixed shape.** A row's result depends on the shape of the call it is in, not on the other rows'
  samples (measured: bit-equal on CPU; ``make gpu-check`` checks CUDA). So every call the
  :class:`BatchGate` makes has exactly ``rows`` rows; zero rows fill a short batch. A file then gets the
  same bits whether its rows shared a call with its own chunks, with other files or with zeros.
- **Exact width.** Only rows the network sees at the same width share a call: FRCRN's SE blocks pool over
  the whole chunk and GTCRN's spectrum is reflected at the signal's end, so padding a row further would
  change it. ``Backend.process`` pads every row with zeros to :func:`denoise.backends.valid_length`
  anyway, so rows with the same valid length are stacked at it; GTCRN's whole-signal stream calls are
  keyed by their exact width. The batch runner sorts files by length so neighbours share widths: the
  larger the corpus, the fuller the batches.

The gate is a :class:`denoise.backends.Backend` in front of the real one (``Denoiser`` puts it there
when ``batch_size`` > 1, the default on a GPU). Threads call it like a backend; each signal in flight
is a :meth:`BatchGate.client`. A call waits until its width has ``rows`` rows waiting or every client is
waiting (no row can join any more); then the thread that completed it runs the batch for everyone, so no
extra thread exists and a lone signal runs at once. :class:`FilesTogether` runs files in such threads.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from denoise.backends import valid_length
from denoise_models.spec import spec_of

T = TypeVar("T")
Run = Callable[[np.ndarray], np.ndarray]  # one call of the network on [rows, width]


class Cancelled(BaseException):
    """Raised in a client whose gate was cancelled (an interrupted batch): unwinds like Ctrl-C."""


@dataclass(eq=False)
class _Request:
    key: tuple[Any, ...]  # requests with equal keys may share a call
    run: Run
    x: np.ndarray  # [n, width] float32
    out: np.ndarray | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass
class GateStats:
    """What the gate did: ``calls`` to the network, ``rows`` of them carrying signal, ``shared`` calls that
    carried rows of more than one request (e.g. of two files)."""

    calls: int = 0
    rows: int = 0
    shared: int = 0
    capacity: int = field(default=0, repr=False)  # rows the calls could have carried

    @property
    def occupancy(self) -> float:
        """Share of the rows computed that carried signal (the rest were zero fill)."""
        return self.rows / self.capacity if self.capacity else 0.0


class BatchGate:
    """A backend whose every network call is ``[rows, width]``, with rows gathered from all its clients.

    Same attributes as the wrapped ``backend`` (``inner``); ``process``, ``open_stream`` and
    ``stream_whole`` are thread-safe and may block until a batch forms (see the module docstring).
    """

    def __init__(self, backend: Any, rows: int) -> None:
        if rows < 1:
            raise ValueError("rows must be at least 1")
        self.inner, self.rows = backend, rows
        for name in ("name", "arch", "sample_rate", "hop_length", "min_samples", "is_gpu"):
            setattr(self, name, getattr(backend, name))
        self.stateful = bool(getattr(backend, "stateful", False))
        self.stats = GateStats()
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._clients = 0
        self._busy = False  # a thread is running a batch (one call on the network at a time)
        self._cancelled = False

    # ---------------------------------------------------------------- the Backend shape

    def process(self, batch: np.ndarray) -> np.ndarray:
        """``Backend.process``: rows of the same valid width share a call."""
        x = np.asarray(batch, dtype=np.float32)
        width = x.shape[1]
        full = valid_length(width, self.hop_length, self.min_samples)
        padded = np.pad(x, ((0, 0), (0, full - width))) if full > width else x
        return self._submit(("process", full), self.inner.process, padded)[:, :width]

    def stream_whole(self, x: np.ndarray) -> np.ndarray:
        """A fresh stream over the whole of ``x`` (:func:`denoise.backends.run_whole`), batched by width."""
        x = np.asarray(x, dtype=np.float32)
        return self._submit(("whole", x.shape[1]), self._whole, x)

    def open_stream(self, batch: int) -> _GateStream:
        """A stream of its own (state cannot be shared), its calls padded to ``rows`` rows like the rest."""
        return _GateStream(self, batch)

    def _whole(self, x: np.ndarray) -> np.ndarray:
        stream = self.inner.open_stream(x.shape[0])
        return np.concatenate([stream.process(x), stream.flush()], axis=1)

    # ---------------------------------------------------------------- clients and cancelling

    @contextlib.contextmanager
    def client(self) -> Iterator[None]:
        """One signal in flight: while it is, a batch that is not full waits for its next call."""
        with self._cond:
            self._clients += 1
        try:
            yield
        finally:
            with self._cond:
                self._clients -= 1
                self._cond.notify_all()

    def cancel(self) -> None:
        """Every waiting call and every later one raises :class:`Cancelled` (until :meth:`reset`)."""
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()

    def reset(self) -> None:
        with self._cond:
            self._cancelled = False

    # ---------------------------------------------------------------- batching

    def _submit(self, key: tuple[Any, ...], run: Run, x: np.ndarray) -> np.ndarray:
        request = _Request(key, run, x)
        with self._cond:
            self._pending.append(request)
            while not request.done:
                if self._cancelled:
                    if request in self._pending:
                        self._pending.remove(request)
                    raise Cancelled
                group = None if self._busy else self._ready_group()
                if group is None:
                    self._cond.wait()
                    continue
                self._busy = True
                for member in group:
                    self._pending.remove(member)
                self._cond.release()
                try:
                    self._run(group)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._cond.notify_all()
        if request.error is not None:
            raise request.error
        assert request.out is not None
        return request.out

    def _ready_group(self) -> list[_Request] | None:
        """The requests to run now: a full batch of one key, or, when every client waits, the oldest's."""
        if not self._pending:
            return None
        by_key: dict[tuple[Any, ...], list[_Request]] = {}
        for request in self._pending:
            by_key.setdefault(request.key, []).append(request)
        for key, requests in by_key.items():
            if key[0] == "stream" or sum(r.x.shape[0] for r in requests) >= self.rows:
                return self._fill(requests)
        if len(self._pending) >= self._clients:
            return self._fill(by_key[self._pending[0].key])
        return None

    def _fill(self, requests: list[_Request]) -> list[_Request]:
        """The oldest requests that fit in one call (at least one: a big one is split into calls)."""
        group, used = [requests[0]], requests[0].x.shape[0]
        for request in requests[1:]:
            if used + request.x.shape[0] > self.rows:
                break
            group.append(request)
            used += request.x.shape[0]
        return group

    def _run(self, group: list[_Request]) -> None:
        """One network call per ``rows`` rows of the group's stacked inputs; each request gets its rows."""
        try:
            x = np.concatenate([r.x for r in group]) if len(group) > 1 else group[0].x
            y = self._call(group[0].run, x, split=group[0].key[0] != "stream")
            at = 0
            for request in group:
                n = request.x.shape[0]
                request.out, at = y[at : at + n], at + n
            self.stats.shared += len(group) > 1
        except Exception as err:  # e.g. out of GPU memory: each file of the batch fails with the reason
            for request in group:
                request.error = err
        finally:
            for request in group:
                request.done = True

    def _call(self, run: Run, x: np.ndarray, *, split: bool) -> np.ndarray:
        """``run`` on ``x`` in calls of ``rows`` rows (``split=False``: one call of a multiple of ``rows``,
        for a stream whose state spans all its rows), zero rows filling the last."""
        size = self.rows if split else -(-x.shape[0] // self.rows) * self.rows
        parts = []
        for at in range(0, x.shape[0], size):
            rows = x[at : at + size]
            fill = size - rows.shape[0]
            if fill:
                rows = np.concatenate([rows, np.zeros((fill, *rows.shape[1:]), np.float32)])
            parts.append(run(np.ascontiguousarray(rows))[: size - fill])
            self.stats.calls += 1
            self.stats.rows += size - fill
            self.stats.capacity += size
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


class _GateStream:
    """A :class:`denoise.backends.NetStream` through the gate: its own state, calls padded to ``rows``."""

    def __init__(self, gate: BatchGate, batch: int) -> None:
        self.gate, self.batch = gate, batch
        self.delay = spec_of(gate.arch).stream_delay
        self._stream: Any = None  # the wrapped backend's stream, opened in the first call
        self._key = ("stream", id(self))

    def process(self, x: np.ndarray) -> np.ndarray:
        return self.gate._submit(self._key, lambda rows: self._real(rows.shape[0]).process(rows), x)

    def flush(self) -> np.ndarray:
        empty = np.zeros((self.batch, 0), np.float32)
        return self.gate._submit(self._key, lambda rows: self._real(rows.shape[0]).flush(), empty)

    def _real(self, rows: int) -> Any:
        if self._stream is None:
            self._stream = self.gate.inner.open_stream(rows)
        return self._stream


def files_in_flight(denoiser: Any) -> int:
    """How many files to keep in flight so their rows fill the calls: 1 unless the denoiser's backend is a
    :class:`BatchGate`; then two batches' worth of rows (one forming while the other runs)."""
    backend = getattr(denoiser, "backend", None)
    return 2 * backend.rows if isinstance(backend, BatchGate) else 1


def sort_by_length(items: list[T], key: Callable[[T], Path]) -> list[T]:
    """``items`` ordered by the duration of the audio file ``key(item)`` (headers only), shortest first;
    files that cannot be read come first (they fail at once)."""
    from denoise.audio import AudioError, probe_audio

    def seconds(item: T) -> float:
        try:
            return probe_audio(key(item), whole_file=False).duration
        except AudioError:
            return -1.0

    return sorted(items, key=seconds)


class FilesTogether:
    """``count`` threads, each running ``work(denoiser, *args)`` for a task at a time, as gate clients.

    The same shape as :class:`denoise.workers.WorkerPool`: use as a context manager; :meth:`run` yields
    ``(key, result)`` as files finish; after an interruption :meth:`stop` cancels the gate (each file in
    flight unwinds at its next network call, so its sink removes its temp file) and yields the results
    that were already made.
    """

    def __init__(self, denoiser: Any, work: Callable[..., Any], count: int) -> None:
        if not isinstance(denoiser.backend, BatchGate):
            raise ValueError("files share batches through a BatchGate: use a Denoiser with batch_size > 1")
        self.denoiser, self.work, self.count = denoiser, work, count
        self.gate: BatchGate = denoiser.backend
        self._pool = ThreadPoolExecutor(count, thread_name_prefix="denoise-file")
        self._running: dict[Future, Any] = {}

    def __enter__(self) -> FilesTogether:
        return self

    def __exit__(self, *exc: object) -> None:
        list(self.stop())

    def run(self, tasks: Iterator[tuple[Any, tuple[Any, ...]]]) -> Iterator[tuple[Any, Any]]:
        pending = iter(tasks)
        while True:
            while len(self._running) < self.count and (task := next(pending, None)) is not None:
                key, args = task
                self._running[self._pool.submit(self._one, args)] = key
            if not self._running:
                return
            done, _ = wait(self._running, return_when=FIRST_COMPLETED)
            for future in done:
                yield self._running.pop(future), future.result()

    def stop(self) -> Iterator[tuple[Any, Any]]:
        """Cancel what is in flight; yield the results that were made anyway."""
        self.gate.cancel()
        try:
            for future, key in list(self._running.items()):
                with contextlib.suppress(Cancelled):
                    yield key, future.result()
        finally:
            self._running.clear()
            self._pool.shutdown(wait=True)
            self.gate.reset()

    def _one(self, args: tuple[Any, ...]) -> Any:
        with self.gate.client():
            return self.work(self.denoiser, *args)
