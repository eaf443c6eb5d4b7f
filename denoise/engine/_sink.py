"""Stand-in for ``denoise.audio.sink.AudioSink`` (the batch slice's block writer), same interface.

Delete this file when that module is merged; :mod:`denoise.engine.denoiser` imports it from there first.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import soundfile as sf

from denoise.audio import container_for, to_int_range
from denoise_models.atomic import atomic_output


class AudioSink:
    """Write float32 blocks ``[channels, n]`` to ``dst`` atomically (temp beside it, renamed on success)."""

    def __init__(
        self, dst: str | Path, sample_rate: int, channels: int, *, subtype: str, format: str | None = None
    ) -> None:
        self.dst, self.sample_rate, self.channels = Path(dst), sample_rate, channels
        self.subtype, self.format = subtype, format or container_for(Path(dst))
        self.frames = 0
        self.clipped = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> AudioSink:
        tmp = self._stack.enter_context(atomic_output(self.dst))
        self._file = self._stack.enter_context(
            sf.SoundFile(str(tmp), "w", self.sample_rate, self.channels, self.subtype, format=self.format)
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.__exit__(*exc)

    def write(self, block: np.ndarray) -> None:
        data, clipped = to_int_range(np.asarray(block, dtype=np.float32), self.subtype)
        self._file.write(data.T)
        self.frames += data.shape[1]
        self.clipped += clipped
