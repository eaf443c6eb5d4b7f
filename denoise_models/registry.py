"""Which architectures exist and how to build one (no weights involved)."""

from __future__ import annotations

import importlib

from torch import nn

# name -> "module:Class"; imported lazily so that using one network never imports the other.
ARCHITECTURES: dict[str, str] = {
    "frcrn": "denoise_models.frcrn:FRCRN",
    "gtcrn": "denoise_models.gtcrn:GTCRN",
}


def architecture_class(arch: str) -> type[nn.Module]:
    """Return the ``nn.Module`` class registered under ``arch``."""
    try:
        target = ARCHITECTURES[arch.lower()]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture {arch!r}; known: {known}") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def build_model(arch: str, **config: object) -> nn.Module:
    """A randomly initialised network of architecture ``arch`` (released config by default)."""
    return architecture_class(arch)(**config)
