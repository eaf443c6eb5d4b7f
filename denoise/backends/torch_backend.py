"""PyTorch backend: the networks of ``denoise_models/`` on CPU or CUDA."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from denoise.backends import FixedDelayStream, NetStream, pad_to_valid
from denoise_models import load_model, optimize_for_inference
from denoise_models.spec import spec_of


def select_device(device: str = "auto") -> torch.device:
    """The one torch device selector: ``"auto"`` -> CUDA when available, else CPU; else ``torch.device``.

    Raises:
        RuntimeError: a CUDA device was asked for that this machine does not have (one line, with the fix).
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise RuntimeError(
                f"device {device!r} requested but no CUDA device is available; use --device cpu"
            )
        if dev.index is not None and dev.index >= count:
            raise RuntimeError(f"device {device!r} requested but this machine has {count} CUDA device(s)")
    return dev


def runs_on_gpu(device: str) -> bool:
    """True when ``device`` ("auto", "cpu", "cuda", "cuda:1" ...) means a CUDA device, decided without
    loading a model: what :func:`select_device` would pick, without its errors."""
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


class TorchBackend:
    """Runs ``model.load_model(arch, weights)`` under ``torch.inference_mode``.

    Args:
        arch: "frcrn" or "gtcrn".
        weights: manifest name, file path, "default", or None (random init; tests only).
        device: "auto", "cpu", "cuda", "cuda:1", ...
        precision: "fp32" (default, exact), or "bf16"/"fp16" autocast on CUDA (faster, not bit-exact).
        threads: torch CPU threads (None keeps torch's default).
    """

    def __init__(
        self,
        arch: str,
        weights: str | Path | None = "default",
        device: str = "auto",
        precision: str = "fp32",
        threads: int | None = None,
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.device = select_device(device)
        self.arch = arch
        net = load_model(arch, weights, device=self.device)
        self.net = optimize_for_inference(net)
        self.sample_rate = int(getattr(net, "sample_rate", 16000))
        self.hop_length = int(getattr(net, "hop_length", 256))
        self.min_samples = int(getattr(net, "min_samples", self.hop_length))
        self.is_gpu = self.device.type == "cuda"
        self.precision = precision if self.device.type == "cuda" else "fp32"
        self.name = f"torch:{self.device}" + ("" if self.precision == "fp32" else f":{self.precision}")
        self.stateful = spec_of(arch).stateful

    def _run(self, fn: Callable[..., torch.Tensor], *args: np.ndarray) -> np.ndarray:
        """``fn(*tensors)`` on the device under inference mode and the chosen precision -> float32 numpy."""
        tensors = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device) for a in args]
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            y = fn(*tensors)
        return y.float().cpu().numpy()

    def open_stream(self, batch: int) -> NetStream:
        """The network over ``batch`` signals arriving in blocks, state carried (see :class:`NetStream`)."""
        if not self.stateful:
            raise ValueError(f"{self.arch} cannot stream with carried state; the engine chunks it instead")
        with torch.inference_mode():
            stream = self.net.open_stream(batch)
        return FixedDelayStream(
            lambda x: self._run(stream.push, x),
            lambda: self._run(stream.finish),
            batch=batch,
            delay=spec_of(self.arch).stream_delay,
            hop_length=self.hop_length,
            min_samples=self.min_samples,
        )

    def process(self, batch: np.ndarray) -> np.ndarray:
        length = batch.shape[-1]
        padded = pad_to_valid(np.asarray(batch, dtype=np.float32), self.hop_length, self.min_samples)
        y = self._run(self.net, padded)
        if y.shape[-1] < length:  # a network may return a few samples less; keep timing aligned
            y = np.pad(y, [(0, 0), (0, length - y.shape[-1])])
        return y[:, :length]
