"""Audio in and out: what counts as a bad file (:mod:`.probe`), reading, resampling, writing (:mod:`.io`)."""

from denoise.audio.io import (
    AUDIO_EXTENSIONS,
    AudioFile,
    container_for,
    is_audio_path,
    output_subtype,
    read_audio,
    resample,
    to_int_range,
    write_audio,
)
from denoise.audio.probe import AudioError, AudioInfo, probe_audio

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioError",
    "AudioFile",
    "AudioInfo",
    "container_for",
    "is_audio_path",
    "output_subtype",
    "probe_audio",
    "read_audio",
    "resample",
    "to_int_range",
    "write_audio",
]
