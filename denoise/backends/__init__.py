"""Backends run a network on batches of 16 kHz waveforms; the engine does everything else.

A backend is any object with this shape (see :class:`Backend`). ``torch`` wraps ``model.load_model``;
``onnx`` runs an exported graph with ONNX Runtime. Add one by registering a factory in ``BACKENDS``.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np


class Backend(Protocol):
    """What the engine needs from a backend."""

    name: str  # e.g. "torch:cpu", "onnx:CPUExecutionProvider"
    arch: str  # "frcrn" or "gtcrn"
    sample_rate: int  # Hz the network runs at (16000)
    hop_length: int  # samples; inputs are padded to a multiple of it
    min_samples: int  # shortest input the network accepts
    is_gpu: bool  # runs on a GPU: the engine batches chunks there

    def process(self, batch: np.ndarray) -> np.ndarray:
        """Enhance ``batch`` float32 ``[B, T]`` -> float32 ``[B, T]`` (same length, no delay)."""
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


def pad_to_valid(batch: np.ndarray, hop: int, min_samples: int) -> np.ndarray:
    """Right-pad ``[B, T]`` with zeros to a multiple of ``hop`` and at least ``min_samples``."""
    length = batch.shape[-1]
    target = max(min_samples, -(-length // hop) * hop)
    if target == length:
        return batch
    return np.pad(batch, [(0, 0)] * (batch.ndim - 1) + [(0, target - length)])
