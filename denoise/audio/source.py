"""Reading a file in blocks: what the streaming engine reads, twice if it needs whole-file statistics.

:class:`AudioSource` checks the file with :func:`denoise.audio.probe.probe_audio` (the one place for the
bad-file rules) and then yields float32 blocks ``[channels, n]``; each call to :meth:`blocks` reads the
file again from the start, so a statistics pass costs I/O, never memory. The repairs and their notes are
those of :func:`denoise.audio.read_audio`: non-finite samples become 0, a header that claims more frames
than the file holds is noted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from denoise.audio.probe import AudioError, AudioInfo, probe_audio

BLOCK_FRAMES = 1 << 16  # ~1.4 s at 48 kHz: large enough for fast I/O, small next to any model's memory


class AudioSource:
    """A checked audio file, read in blocks. ``notes`` are complete after one full :meth:`blocks` pass."""

    def __init__(self, path: str | Path) -> None:
        self.info: AudioInfo = probe_audio(path, whole_file=False)  # blocks: any length
        self.path = Path(path)
        self.frames_read: int | None = None  # known after a full pass
        self._bad = 0

    @property
    def sample_rate(self) -> int:
        return self.info.sample_rate

    @property
    def channels(self) -> int:
        return self.info.channels

    @property
    def subtype(self) -> str:
        return self.info.subtype

    @property
    def notes(self) -> list[str]:
        notes = list(self.info.notes)
        if self.frames_read is not None and self.info.frames > self.frames_read:
            notes.append(
                f"truncated: header claims {self.info.frames:,} samples, file holds {self.frames_read:,}"
            )
        if self._bad:
            notes.append(f"{self._bad:,} NaN/Inf samples set to 0")
        return notes

    def blocks(self, frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
        """The whole file as float32 ``[channels, n]`` blocks; AudioError if it cannot be decoded."""
        read, bad = 0, 0
        try:
            with sf.SoundFile(os.fsencode(self.path)) as f:  # bytes: names need not be UTF-8
                while True:
                    data = f.read(frames, dtype="float32", always_2d=True)
                    if not data.shape[0]:
                        break
                    block = np.ascontiguousarray(data.T)
                    nonfinite = ~np.isfinite(block)
                    if nonfinite.any():
                        block[nonfinite] = 0.0
                        bad += int(nonfinite.sum())
                    read += block.shape[1]
                    yield block
        except (sf.LibsndfileError, RuntimeError, TypeError) as err:
            reason = str(err).split(":")[-1].strip() or "unknown format"
            raise AudioError(f"not an audio file libsndfile can read ({reason})") from err
        except OSError as err:
            raise AudioError(f"cannot read: {err.strerror or err}") from err
        if not read:
            raise AudioError("holds no audio samples")
        self.frames_read, self._bad = read, bad
