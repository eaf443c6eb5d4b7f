"""Ctrl-C and SIGTERM in a batch run: both unwind like KeyboardInterrupt, so every ``with`` block cleans up
(a sink removes its temp file), and both can be held back over the few statements that must not be split
(a result's manifest row and the run's note that it is recorded).

Holding back works at two levels. The Python handlers installed by :func:`interruptible` check
:func:`signals_deferred` and keep a signal for its end: that works whatever thread the kernel hands the
signal to (a process with threads, e.g. :class:`denoise.engine.batching.FilesTogether`, cannot steer it to
the main thread with a signal mask). The block also masks both signals in the calling thread, which covers
Python's default Ctrl-C handler in a process without other threads.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

_depth = 0  # nesting of signals_deferred() blocks (signal handlers run in the main thread only)
_held: list[int] = []  # signals that arrived inside one


class Interrupted(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so every ``with`` block cleans up on its way out."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(signum)


def _on_signal(signum: int, frame: object) -> None:
    if _depth:
        _held.append(signum)
        return
    _raise_for(signum)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """While active, SIGTERM raises :class:`Interrupted` and Ctrl-C ``KeyboardInterrupt`` (unless Ctrl-C was
    ignored, e.g. under ``nohup``), both held back inside :func:`signals_deferred`. Nesting is fine: the
    outer handlers are restored."""
    try:
        previous_term = signal.signal(signal.SIGTERM, _on_signal)
    except ValueError:  # not the main thread: leave signals to the host program
        yield
        return
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if previous_int is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous_int)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back until the block ends (they take effect then, once)."""
    global _depth
    mask = hasattr(signal, "pthread_sigmask")
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if mask else None
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if mask:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a masked signal's handler may run here
        if not _depth and _held:
            signum = _held[0]
            _held.clear()
            _raise_for(signum)
