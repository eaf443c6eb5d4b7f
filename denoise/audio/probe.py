"""What counts as a bad input file, decided before any decoding: one place for every rule.

:func:`probe_audio` opens the header only and raises :class:`AudioError` with the one line a batch
prints for that file. Readers (whole-file and block) call it first.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf


class AudioError(ValueError):
    """A file that cannot be processed; ``str(err)`` is the one-line reason shown to the user."""


@dataclass
class AudioInfo:
    """A file's header facts, checked; ``notes`` are things the user should know (repairs ahead)."""

    path: Path
    sample_rate: int
    channels: int
    frames: int  # as the header (or libsndfile's own count) says
    format: str  # libsndfile major format, e.g. "WAV", "FLAC"
    subtype: str  # libsndfile subtype, e.g. "PCM_16", "FLOAT"
    notes: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def probe_audio(path: str | Path) -> AudioInfo:
    """Check that ``path`` is a readable audio file and return its header facts (no samples decoded)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as err:
        raise AudioError(f"cannot open: {err.strerror or err}") from err
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device named .wav would block or never end
        raise AudioError("not a regular file")
    if st.st_size == 0:
        raise AudioError("empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise AudioError("cannot open: permission denied")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        reason = str(err).split(":")[-1].strip() or "unknown format"
        raise AudioError(f"not an audio file libsndfile can read ({reason})") from err
    except OSError as err:
        raise AudioError(f"cannot read: {err.strerror or err}") from err
    return AudioInfo(
        path, int(info.samplerate), int(info.channels), int(info.frames), info.format, info.subtype
    )
