"""Worker processes for a batch on one machine: each builds its Denoiser once and denoises file after file.

The parent (:mod:`denoise.batch`) keeps everything that must be in one place (the lock, the plan, resume,
the manifest, the progress bar); a worker only runs ``work(denoiser, *task)`` and sends the result back.
Each worker holds at most :data:`IN_FLIGHT` tasks (the one it computes and the next, queued in its pipe:
that is the prefetch queue, so a worker never waits for the parent between files). Workers are started
with the ``spawn`` method (never ``fork`` after torch is loaded) and run one intra-op thread each, which
on CPU is cheaper than two threads on one file (docs/benchmarks.md).

Interruption: workers ignore Ctrl-C (a terminal sends it to the whole process group); the parent, which
gets it or SIGTERM, sends each worker SIGTERM, which unwinds it like Ctrl-C so its sink removes its temp
file, and collects the results that were already on their way (:meth:`WorkerPool.stop`). A worker that
dies (killed, out of memory) costs only the file it was computing: the pool reports it as :class:`Lost`,
gives the file it had queued to the next free worker, and starts a replacement.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from denoise.interrupts import signals_deferred

IN_FLIGHT = 2  # tasks per worker: the one being computed and the next one, queued
STOP_GRACE_S = 10.0  # how long stopped workers get to remove their temp files before they are killed
# A worker costs a process start (Python, torch, the weights: ~3 s of CPU here), so "auto" starts them only
# for a batch with more audio than this (GTCRN on one core: ~5 s of work; FRCRN: far more).
AUTO_MIN_AUDIO_SECONDS = 120.0


@dataclass(frozen=True)
class DenoiserFactory:
    """The picklable recipe a process builds its :class:`denoise.engine.Denoiser` from (once).

    ``label`` names the weights in the one line printed when the model is ready (``announce``).
    """

    config: Any  # denoise.engine.DenoiserConfig
    label: str = ""
    announce: bool = True

    def __call__(self) -> Any:
        from denoise.engine import Denoiser

        denoiser = Denoiser(self.config)
        if self.announce:
            label = f" ({self.label})" if self.label else ""
            print(f"model {self.config.model}{label} on {denoiser.backend.name}", file=sys.stderr)
        return denoiser

    @property
    def on_gpu(self) -> bool:
        """True when the model will run on a CUDA device (decided without loading it)."""
        from denoise.backends.torch_backend import runs_on_gpu

        return runs_on_gpu(str(self.config.device))

    def for_worker(self, *, announce: bool) -> DenoiserFactory:
        """A worker's recipe: one intra-op thread unless the user chose a count."""
        config = self.config if self.config.threads else replace(self.config, threads=1)
        return replace(self, config=config, announce=self.announce and announce)


def physical_cores() -> int:
    """Physical cores this process may use (logical CPUs where that cannot be told)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        import psutil

        return max(1, min(usable, psutil.cpu_count(logical=False) or usable))
    except ImportError:
        return max(1, usable)


def resolve_workers(requested: int | str, sources: Sequence[Path], factory: Callable[[], Any]) -> int:
    """How many worker processes denoise ``sources``.

    ``"auto"``: one per physical core, at most one per file, on CPU when the files hold at least
    :data:`AUTO_MIN_AUDIO_SECONDS` of audio; otherwise 1 (in this process): a single file, little audio,
    a GPU (one process keeps it busy), or a ``factory`` that is not a :class:`DenoiserFactory`.
    """
    if requested != "auto":
        count = int(requested)
        if count < 1:
            raise ValueError(f"--workers must be 'auto' or at least 1, not {requested}")
        return count
    if len(sources) <= 1 or not isinstance(factory, DenoiserFactory) or factory.on_gpu:
        return 1
    cores = physical_cores()
    if cores == 1 or _audio_seconds(sources, AUTO_MIN_AUDIO_SECONDS) < AUTO_MIN_AUDIO_SECONDS:
        return 1
    return min(cores, len(sources))


def _audio_seconds(sources: Sequence[Path], enough: float) -> float:
    """Total duration of the ``sources`` that will run (headers only), counted until it reaches ``enough``."""
    from denoise.audio import AudioError, probe_audio

    total = 0.0
    for source in sources:
        with contextlib.suppress(AudioError):  # refused files cost nothing
            total += probe_audio(source).duration
        if total >= enough:
            break
    return total


@dataclass
class Lost:
    """A task whose worker died while computing it."""

    reason: str


class WorkerPool:
    """``count`` processes, each running ``work(denoiser, *args)`` for the ``(key, args)`` tasks it is given.

    Use as a context manager (entering starts the workers and waits until each has its model: a model that
    cannot load raises here, before any file runs). :meth:`run` yields ``(key, result)`` as results arrive
    (``result`` is a :class:`Lost` when the worker died computing it) with Ctrl-C and SIGTERM held back
    until the caller asks for the next one, so a result that arrived is recorded whole; on an
    interruption, :meth:`stop` yields the results that were already made. Leaving the block stops every
    worker.
    """

    def __init__(self, factory: DenoiserFactory, work: Callable[..., Any], count: int) -> None:
        self.factory, self.work, self.count = factory, work, count
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self.restarts = 0

    def __enter__(self) -> WorkerPool:
        try:
            self._workers = [self._start(k) for k in range(self.count)]
            for worker in self._workers:
                worker.wait_ready()
        except BaseException:
            list(self.stop())
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        list(self.stop())

    def run(self, tasks: Iterator[tuple[Any, tuple[Any, ...]]]) -> Iterator[tuple[Any, Any]]:
        """Feed ``(key, args)`` tasks, at most :data:`IN_FLIGHT` per worker; yield ``(key, result)``."""
        backlog: deque[tuple[Any, tuple[Any, ...]]] = deque()
        pending = iter(tasks)
        while True:
            for worker in self._workers:
                while len(worker.held) < IN_FLIGHT:
                    task = backlog.popleft() if backlog else next(pending, None)
                    if task is None:
                        break
                    try:
                        worker.send(task)
                    except OSError:  # it just died: its sentinel is ready, the task waits for another
                        backlog.appendleft(task)
                        break
            if not any(w.held for w in self._workers):
                return
            ready = wait([w.conn for w in self._workers] + [w.process.sentinel for w in self._workers])
            for k, worker in enumerate(self._workers):
                with signals_deferred(), contextlib.suppress(EOFError, OSError):  # died: see below
                    while worker.conn in ready and worker.conn.poll():
                        key, result = worker.conn.recv()
                        worker.held.popleft()
                        yield key, result  # the caller records it before an interruption takes effect
                if worker.process.sentinel in ready or not worker.process.is_alive():
                    worker.process.join()
                    lost = worker.held.popleft() if worker.held else None
                    backlog.extend(worker.held)  # queued, never started: another worker takes it
                    worker.conn.close()
                    self.restarts += 1  # each death costs at most one file, so this ends
                    self._workers[k] = self._start(None)
                    self._workers[k].wait_ready()
                    if lost is not None:
                        code = worker.process.exitcode
                        reason = f"the worker process died (exit status {code}) on this file"
                        with signals_deferred():
                            yield lost[0], Lost(reason)

    def stop(self) -> Iterator[tuple[Any, Any]]:
        """Stop every worker (SIGTERM where one still computes) and yield the results already made."""
        for worker in self._workers:
            with contextlib.suppress(OSError):
                if worker.held and worker.process.is_alive():
                    os.kill(worker.process.pid, signal.SIGTERM)
                else:
                    worker.conn.send(None)
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.process.join(STOP_GRACE_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            with contextlib.suppress(EOFError, OSError):
                while worker.conn.poll():
                    key, result = worker.conn.recv()
                    yield key, result
            worker.conn.close()

    def _start(self, index: int | None) -> _Worker:
        """Start worker ``index`` (None: a replacement); only the first one announces the model."""
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=_serve,
            args=(self.factory.for_worker(announce=index == 0), self.work, theirs),
            name=f"denoise-worker-{index if index is not None else 'r'}",
            daemon=True,
        )
        with _sigint_ignored():  # inherited through spawn: Python then leaves Ctrl-C ignored in the child
            process.start()
        theirs.close()
        return _Worker(process, ours)


class _Worker:
    def __init__(self, process: Any, conn: Connection) -> None:
        self.process, self.conn = process, conn
        self.held: deque[tuple[Any, tuple[Any, ...]]] = deque()  # sent, no result yet (oldest first)

    def send(self, task: tuple[Any, tuple[Any, ...]]) -> None:
        self.conn.send(task)
        self.held.append(task)

    def wait_ready(self) -> None:
        try:
            status, detail = self.conn.recv()
        except EOFError:
            self.process.join()
            code = self.process.exitcode
            raise RuntimeError(
                f"a denoising worker died while loading the model (exit status {code})"
            ) from None
        if status != "ready":
            raise RuntimeError(detail)


def _serve(factory: DenoiserFactory, work: Callable[..., Any], conn: Connection) -> None:
    """A worker's life: build the denoiser, then ``work`` each task until told to stop."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM unwinds like Ctrl-C: temps go
    try:
        try:
            denoiser = factory()
        except Exception as err:
            conn.send(("failed", f"{type(err).__name__}: {err}".splitlines()[0]))
            return
        conn.send(("ready", ""))
        while (task := conn.recv()) is not None:
            key, args = task
            conn.send((key, work(denoiser, *args)))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass  # stopped, or the parent is gone: nothing to report to


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: the host program owns signals
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
