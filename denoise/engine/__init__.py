"""The denoising engine: a streaming pipeline from any source to any sink, in bounded memory.

The way a signal travels (each stage a small streaming object over blocks ``[channels, n]``)::

    source (file blocks / array / live) @ any rate
      -> resample to 16 kHz (soxr stream) -> per channel: level to the model's working level
      -> the network: overlapping chunks + raised-cosine cross-fades (FRCRN, ONNX), or carried state
         (stateful GTCRN: chunking changes nothing)
      -> level restored -> resample back (soxr stream) -> [full-band stage] -> attenuation limit
      -> look-ahead peak limiter (never clips, only touches samples that would) -> sink

Memory follows the chunk, not the file. ``compat="modelscope"`` instead reproduces ModelScope's
ANSPipeline (whole-file, up to its 120 s; see :mod:`denoise.modelscope_compat`).
"""

from denoise.engine.chunks import chunk_spans
from denoise.engine.config import DenoiserConfig, Enhanced, resolve_arch, resolve_backend
from denoise.engine.denoiser import Denoiser
from denoise.engine.levels import working_level_gain
from denoise.engine.pipeline import EngineStream

__all__ = [
    "Denoiser",
    "DenoiserConfig",
    "EngineStream",
    "Enhanced",
    "chunk_spans",
    "resolve_arch",
    "resolve_backend",
    "working_level_gain",
]
