"""The engine's settings (:class:`DenoiserConfig`, validated where it is built) and its result type."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from denoise_models.spec import SPECS

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class DenoiserConfig:
    """Every knob of the engine, with the defaults the one-click script uses."""

    model: str = "frcrn"
    weights: str | None = "default"  # manifest name, file path, "default", or None (random; tests)
    backend: str = "torch"  # "torch" or "onnx"
    onnx_path: str | None = None  # the exported graph for backend="onnx" (None: export/locate by name)
    device: str = "auto"  # "auto" -> CUDA when present, else CPU
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16" (autocast; CUDA with the torch backend only)
    threads: int | None = None  # CPU threads for the backend (None = library default)
    chunk_seconds: float | None = None  # None -> the model's spec (denoise_models.spec)
    overlap_seconds: float = 1.0  # cross-fade length between chunks
    batch_size: int | None = None  # chunks per forward; None -> 1 on CPU, 8 on a GPU
    atten_lim_db: float | None = None  # suppress by at most this many dB (None = no limit)
    keep_level: bool = True  # undo the working-level gain so the output keeps the input's loudness
    compat: str | None = None  # "modelscope": reproduce ModelScope's pipeline output
    # Inputs above the network's rate keep their 8 kHz-Nyquist band, denoised (denoise.fullband); False:
    # the networks' 16 kHz bandwidth, nothing above 8 kHz.
    full_band: bool = True

    def __post_init__(self) -> None:
        arch = self.model.lower()
        if arch not in SPECS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(SPECS)}")
        object.__setattr__(self, "model", arch)
        if self.compat not in (None, "modelscope"):
            raise ValueError(f"unknown compat mode {self.compat!r}; the only one is 'modelscope'")
        if self.compat and arch != "frcrn":
            raise ValueError("compat='modelscope' reproduces ModelScope's FRCRN pipeline: use model='frcrn'")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.precision != "fp32" and self.backend != "torch":
            raise ValueError(
                f"--precision {self.precision} needs the torch backend on a GPU, not {self.backend}"
            )
        if self.precision != "fp32" and self.device == "cpu":
            raise ValueError(f"--precision {self.precision} needs a CUDA device; on CPU use fp32")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")


@dataclass
class Enhanced:
    """A result plus what the user should know about how it was made.

    ``samples`` holds the result for :meth:`Denoiser.enhance_report`; for :meth:`Denoiser.enhance_file`
    the result is in the file and ``samples`` is a read-only zero-stride placeholder of its shape
    (nothing holds the whole file): use ``frames``/``duration``.
    """

    samples: np.ndarray  # float32 [channels, samples]
    sample_rate: int
    notes: list[str] = field(default_factory=list)
    subtype: str | None = None  # forced output subtype (compat mode writes int16)

    @property
    def frames(self) -> int:
        return int(self.samples.shape[-1])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def resolve_arch(model: str | None, weights: str | None) -> str:
    """``model`` if given, else the architecture the weights name/file belongs to, else FRCRN."""
    if model:
        return model.lower()
    if weights and weights != "default":
        from denoise_models import arch_of

        try:
            found = arch_of(weights)
        except Exception:  # an unreadable file is reported when the model loads
            found = None
        if found in SPECS:
            return found
    return "frcrn"


def resolve_backend(kind: str, arch: str, device: str) -> str:
    """``kind``, or for ``"auto"`` the fastest backend for live audio that is installed here.

    GTCRN on a CPU: ``onnx`` (its exported graph carries the network's state; ~1 ms per 16 ms hop on one
    thread, several times less than torch eager) when ``onnx`` and ``onnxruntime`` are installed (the
    ``[onnx]`` extra); otherwise, and for FRCRN or a GPU, ``torch``.
    """
    if kind != "auto":
        return kind
    import importlib.util

    if not SPECS[arch].stateful or any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime")):
        return "torch"
    from denoise.backends.torch_backend import runs_on_gpu

    return "torch" if runs_on_gpu(device) else "onnx"
