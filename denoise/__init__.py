"""The speech-denoising application: audio I/O, the Denoiser engine, batch runs, evaluation,
fine-tuning and export. Networks and weights live in the sibling package ``denoise_models``.

Small public API::

    from denoise import Denoiser, read_audio, write_audio
    d = Denoiser(model="frcrn")              # or DenoiserConfig(...)
    clean = d.enhance(noisy, sample_rate)    # [channels, samples] -> same shape, same rate
"""

from denoise.audio import AudioError, AudioFile, read_audio, resample, write_audio
from denoise.engine import Denoiser, DenoiserConfig, Enhanced

__all__ = [
    "AudioError",
    "AudioFile",
    "Denoiser",
    "DenoiserConfig",
    "Enhanced",
    "read_audio",
    "resample",
    "write_audio",
]
