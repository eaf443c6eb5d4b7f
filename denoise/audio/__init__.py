"""Audio in and out: bad-file rules (:mod:`.probe`), reading/resampling (:mod:`.io`), writing (:mod:`.sink`)."""

from denoise.audio.io import (
    AUDIO_EXTENSIONS,
    AudioFile,
    is_audio_path,
    output_subtype,
    read_audio,
    resample,
    write_audio,
)
from denoise.audio.probe import AudioError, AudioInfo, probe_audio
from denoise.audio.sink import (
    AudioSink,
    check_output_format,
    container_for,
    default_subtype_for,
    required_subtype,
    to_int_range,
)

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioError",
    "AudioFile",
    "AudioInfo",
    "AudioSink",
    "check_output_format",
    "container_for",
    "default_subtype_for",
    "is_audio_path",
    "output_subtype",
    "probe_audio",
    "read_audio",
    "required_subtype",
    "resample",
    "to_int_range",
    "write_audio",
]
