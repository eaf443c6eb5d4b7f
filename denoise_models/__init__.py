"""The networks and their weights.

The public entry point is :func:`load_model`::

    from denoise_models import load_model
    net = load_model("frcrn", weights="frcrn_official")   # or a path, or None
    wav_out = net(wav_in)   # float32 [batch, samples] at 16 kHz -> [batch, samples']

``model`` knows nothing about files of audio, command lines or printing: that is the
application's job (package ``denoise``). Dependencies point one way: denoise -> denoise_models.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from denoise_models.registry import ARCHITECTURES, build_model
from denoise_models.weights import (
    WeightsEntry,
    WeightsError,
    arch_of,
    default_weights,
    manifest,
    model_from_checkpoint,
    resolve_weights,
)

__all__ = [
    "ARCHITECTURES",
    "WeightsEntry",
    "WeightsError",
    "arch_of",
    "build_model",
    "default_weights",
    "load_model",
    "manifest",
    "optimize_for_inference",
    "resolve_weights",
]


def load_model(
    arch: str,
    weights: str | Path | None = "default",
    *,
    device: str | torch.device = "cpu",
    strict: bool = True,
    progress: bool = True,
) -> nn.Module:
    """Build the network ``arch`` ("frcrn" or "gtcrn") and load its weights.

    Args:
        arch: architecture name, one of :data:`ARCHITECTURES`.
        weights: ``"default"`` (the manifest's default checkpoint for ``arch``), a manifest
            name (e.g. ``"gtcrn_dns3_stream"``), a file path, or ``None`` for random
            initialisation (training from scratch, tests).
        device: where the returned module lives.
        strict: refuse a checkpoint with missing or unexpected keys (the report names them).
        progress: show a progress bar if weights must be downloaded.

    Returns:
        The module in eval mode. ``net(x)`` maps float32 waveforms ``[batch, samples]`` at
        16 kHz to enhanced waveforms ``[batch, samples']``.
    """
    arch = arch.lower()
    if weights is None:
        net = build_model(arch)
    else:
        if weights == "default":
            weights = default_weights(arch)
        entry = manifest().get(str(weights))
        if entry is not None and entry.arch != arch:
            raise WeightsError(f"weights {weights!r} are for {entry.arch!r}, not {arch!r}")
        path = resolve_weights(weights, progress=progress)
        config = entry.config if entry is not None else None
        net = model_from_checkpoint(arch, path, strict=strict, config=config)
    return net.to(device).eval()


def optimize_for_inference(net: nn.Module) -> nn.Module:
    """An inference-only equivalent of ``net`` (e.g. fused layers) when its architecture offers one.

    The architecture module may define ``optimize_for_inference(net)``; otherwise ``net`` is returned.
    The training path never goes through this.
    """
    fn = getattr(sys.modules[type(net).__module__], "optimize_for_inference", None)
    return fn(net) if fn is not None else net
