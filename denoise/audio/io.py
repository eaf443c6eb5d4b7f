"""Reading, resampling and writing audio (whole arrays). Shapes are always ``[channels, samples]`` float32.

What counts as a bad file is decided in :mod:`denoise.audio.probe`; every write goes through the block
writer :class:`denoise.audio.sink.AudioSink` (verified, atomic).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from denoise.audio.probe import AudioError, probe_audio
from denoise.audio.sink import AudioSink, default_subtype_for

# What libsndfile opens by extension; anything else in a folder is not audio and is left alone.
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd",
     ".caf", ".w64", ".rf64", ".sd2", ".voc", ".mat"}
)  # fmt: skip

# Integer subtypes whose full scale float32 [-1, 1) represents exactly; used to keep the input's depth.
_KEEP_SUBTYPES = frozenset({"PCM_16", "PCM_24", "PCM_32", "PCM_U8", "PCM_S8", "FLOAT", "DOUBLE"})


@dataclass
class AudioFile:
    """Decoded audio plus what is needed to write a result in the same form."""

    samples: np.ndarray  # float32 [channels, samples], nominally in [-1, 1]
    sample_rate: int  # Hz
    format: str  # libsndfile major format, e.g. "WAV", "FLAC"
    subtype: str  # libsndfile subtype, e.g. "PCM_16", "FLOAT"
    notes: list[str] = field(default_factory=list)  # things the user should know (repairs made)

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def frames(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def is_audio_path(path: Path) -> bool:
    """True for names libsndfile may open (by extension; content is checked when read)."""
    return path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".")


def read_audio(path: str | Path) -> AudioFile:
    """Read any file libsndfile understands as float32 ``[channels, samples]``.

    Repairs that keep data are made and reported in ``notes`` (non-finite samples set to zero, a
    header that claims more frames than the file holds). Anything else raises :class:`AudioError`.
    """
    info = probe_audio(path)
    try:
        data, rate = sf.read(os.fsencode(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        reason = str(err).split(":")[-1].strip() or "unknown format"
        raise AudioError(f"not an audio file libsndfile can read ({reason})") from err
    except OSError as err:
        raise AudioError(f"cannot read: {err.strerror or err}") from err
    notes: list[str] = list(info.notes)
    if data.shape[0] == 0:
        raise AudioError("holds no audio samples")
    if info.frames > data.shape[0]:
        notes.append(f"truncated: header claims {info.frames:,} samples, file holds {data.shape[0]:,}")
    samples = np.ascontiguousarray(data.T)
    bad = ~np.isfinite(samples)
    if bad.any():
        samples[bad] = 0.0
        notes.append(f"{int(bad.sum()):,} NaN/Inf samples set to 0")
    return AudioFile(samples, int(rate), info.format, info.subtype, notes)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """High-quality (soxr VHQ) resampling along the last axis; returns float32."""
    x = np.asarray(x, dtype=np.float32)
    if sr_in == sr_out:
        return x
    if x.ndim == 1:
        return soxr.resample(x, sr_in, sr_out, quality="VHQ").astype(np.float32, copy=False)
    flat = x.reshape(-1, x.shape[-1])
    out = soxr.resample(flat.T, sr_in, sr_out, quality="VHQ").T
    return np.ascontiguousarray(out, dtype=np.float32).reshape(*x.shape[:-1], -1)


def output_subtype(source: AudioFile, container: str) -> str:
    """The subtype a result is written with: the input's when the container can hold it."""
    if source.subtype in _KEEP_SUBTYPES and sf.check_format(container, source.subtype):
        return source.subtype
    return sf.default_subtype(container)


def write_audio(
    path: str | Path,
    samples: np.ndarray,
    sample_rate: int,
    *,
    subtype: str | None = None,
    format: str | None = None,
) -> int:
    """Write ``samples`` (``[channels, samples]`` or ``[samples]``) in one go through :class:`AudioSink`.

    The result appears whole and verified under ``path`` or not at all; integer subtypes are clipped,
    never wrapped. Returns the number of clipped samples.
    """
    data = np.asarray(samples, dtype=np.float32)
    if data.ndim == 1:
        data = data[None]
    path = Path(path)
    with AudioSink(
        path, sample_rate, data.shape[0], subtype=subtype or default_subtype_for(path, format),
        format=format, expected_frames=data.shape[1],
    ) as sink:  # fmt: skip
        sink.write(data)
    return sink.clipped
