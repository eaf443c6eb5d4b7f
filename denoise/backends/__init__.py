"""Backends run a network on batches of 16 kHz waveforms; the engine does everything else.

A backend is any object with this shape (see :class:`Backend`). ``torch`` wraps ``model.load_model``;
``onnx`` runs an exported graph with ONNX Runtime. Add one by registering a factory in ``BACKENDS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np


class NetStream(Protocol):
    """The network run over a signal that arrives in blocks, its state carried from block to block.

    For any split of ``x [B, T]`` into blocks, ``concat(process(b) for b in blocks) + flush()`` has
    ``T + delay`` samples and its ``[delay:]`` is ``Backend.process(x)`` (up to float rounding).
    """

    delay: int  # samples at the network's rate: output sample t is the network's output for input t - delay

    def process(self, x: np.ndarray) -> np.ndarray:
        """float32 ``[B, n]`` (any n >= 0) -> float32 ``[B, n]``."""
        ...

    def flush(self) -> np.ndarray:
        """End of input -> the last ``[B, delay]`` samples; the stream is closed afterwards."""
        ...


class Backend(Protocol):
    """What the engine needs from a backend."""

    name: str  # e.g. "torch:cpu", "onnx:CPUExecutionProvider"
    arch: str  # "frcrn" or "gtcrn"
    sample_rate: int  # Hz the network runs at (16000)
    hop_length: int  # samples; inputs are padded to a multiple of it
    min_samples: int  # shortest input the network accepts
    is_gpu: bool  # runs on a GPU: the engine batches chunks there
    stateful: bool  # True when open_stream works (chunks can carry the network's state)

    def process(self, batch: np.ndarray) -> np.ndarray:
        """Enhance ``batch`` float32 ``[B, T]`` -> float32 ``[B, T]`` (same length, no delay)."""
        ...

    def open_stream(self, batch: int) -> NetStream:
        """A fresh stream of ``batch`` signals (zero state). Only stateful backends implement it."""
        ...


BACKENDS: dict[str, str] = {
    "torch": "denoise.backends.torch_backend:TorchBackend",
    "onnx": "denoise.backends.onnx_backend:OnnxBackend",
    # GTCRN's official streaming graph, frame by frame with caches (real-time path)
    "gtcrn-stream": "denoise.backends.gtcrn_stream:GtcrnStreamBackend",
}


def create_backend(kind: str, **options: Any) -> Backend:
    """Instantiate backend ``kind`` ("torch" or "onnx") with its keyword options."""
    try:
        target = BACKENDS[kind]
    except KeyError:
        raise ValueError(f"unknown backend {kind!r}; known: {', '.join(BACKENDS)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(**options)


def run_whole(backend: Backend, x: np.ndarray) -> np.ndarray:
    """A fresh stream of ``backend`` over the whole of ``x [B, T]``: ``process(x)`` then ``flush()``, ``[B, T +
    delay]``. A backend that gathers such calls from many signals into batches offers ``stream_whole``
    (:class:`denoise.engine.batching.BatchGate`)."""
    whole = getattr(backend, "stream_whole", None)
    if whole is not None:
        return whole(x)
    stream = backend.open_stream(x.shape[0])
    return np.concatenate([stream.process(x), stream.flush()], axis=1)


def valid_length(length: int, hop: int, min_samples: int) -> int:
    """``length`` rounded up to a multiple of ``hop`` and to at least ``min_samples``."""
    return max(min_samples, -(-length // hop) * hop)


def pad_to_valid(batch: np.ndarray, hop: int, min_samples: int) -> np.ndarray:
    """Right-pad ``[B, T]`` with zeros to :func:`valid_length`."""
    length = batch.shape[-1]
    target = valid_length(length, hop, min_samples)
    if target == length:
        return batch
    return np.pad(batch, [(0, 0)] * (batch.ndim - 1) + [(0, target - length)])


class FixedDelayStream:
    """A :class:`NetStream` over an incremental producer that releases output as soon as it is final.

    ``push(x [B, n]) -> [B, m]`` returns the producer's newly final output samples and ``finish() -> [B, m]``
    the rest once the input has ended. This class turns that into exactly ``n`` samples out per ``n`` in,
    ``delay`` samples behind, and ends the input as ``Backend.process`` would see it (zero-padded by
    :func:`valid_length`, output cropped back), so the streamed output equals the offline one.
    ``delay`` must be at least the producer's worst-case lag.
    """

    def __init__(
        self,
        push: Callable[[np.ndarray], np.ndarray],
        finish: Callable[[], np.ndarray],
        *,
        batch: int,
        delay: int,
        hop_length: int,
        min_samples: int,
    ) -> None:
        self.delay = delay
        self._push, self._finish = push, finish
        self._hop, self._min_samples = hop_length, min_samples
        self._batch = batch
        self._ready = np.zeros(
            (batch, delay), dtype=np.float32
        )  # output not yet returned (delay's zeros first)
        self._seen = 0  # input samples received
        self._produced = 0  # output samples received from the producer
        self._closed = False

    def process(self, x: np.ndarray) -> np.ndarray:
        if self._closed:
            raise RuntimeError("stream already flushed; open a new one")
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] != self._batch:
            raise ValueError(f"expected a block [{self._batch}, samples], got shape {x.shape}")
        self._seen += x.shape[1]
        if x.shape[1]:
            self._append(self._push(x))
        return self._take(x.shape[1])

    def flush(self) -> np.ndarray:
        if self._closed:
            raise RuntimeError("stream already flushed; open a new one")
        self._closed = True
        if self._seen:
            padding = valid_length(self._seen, self._hop, self._min_samples) - self._seen
            rest = [self._push(np.zeros((self._batch, padding), dtype=np.float32))] if padding else []
            self._append(np.concatenate([*rest, self._finish()], axis=1)[:, : self._seen - self._produced])
        if self._produced != self._seen or self._ready.shape[1] != self.delay:
            raise RuntimeError(f"stream produced {self._produced} samples for {self._seen} (a bug)")
        return self._take(self.delay)

    def _append(self, y: np.ndarray) -> None:
        self._produced += y.shape[1]
        self._ready = np.concatenate([self._ready, y.astype(np.float32, copy=False)], axis=1)

    def _take(self, n: int) -> np.ndarray:
        if self._ready.shape[1] < n:
            raise RuntimeError(f"stream lags more than its delay of {self.delay} samples (a bug)")
        out, self._ready = self._ready[:, :n], self._ready[:, n:]
        return out
