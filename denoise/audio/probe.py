"""What counts as a bad input file, decided before any decoding: one place for every rule.

:func:`probe_audio` opens the header only and raises :class:`AudioError` with the one line a batch
prints for that file. Readers (whole-file and block) call it first.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

# What a file may ask of us before it is refused with one line (README "What you can count on").
MIN_RATE = 4_000  # Hz; below this there is no speech band to denoise (a "1 Hz" header is a broken file)
MAX_RATE = 384_000  # Hz; the highest rate audio interfaces record
MAX_CHANNELS = 32


# Working memory a WHOLE-FILE read may need (read_audio: compat mode, eval, the array API), estimated as
# decoded float32 samples times the copies held (input, resampled, output, resampled back, headroom); the
# budget is half the machine's RAM (the kernel would kill the whole batch past it), or
# DENOISE_MEMORY_BUDGET_GB. Block readers (the streaming engine) hold a few blocks whatever the length.
def _memory_budget() -> int:
    override = os.environ.get("DENOISE_MEMORY_BUDGET_GB")
    if override:
        return int(float(override) * 2**30)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): a conservative 8 GB
        return 8 * 2**30


MEMORY_BUDGET_BYTES = _memory_budget()
WORKING_COPIES = 6


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


def probe_audio(path: str | Path, *, whole_file: bool = True) -> AudioInfo:
    """Check that ``path`` is a readable audio file and return its header facts (no samples decoded).

    ``whole_file``: the caller will decode the whole file into memory, so it must fit the memory budget;
    a block reader passes False (any length).
    """
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
        info = sf.info(os.fsencode(path))  # bytes: non-UTF-8 names work
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        reason = str(err).split(":")[-1].strip() or "unknown format"
        raise AudioError(f"not an audio file libsndfile can read ({reason})") from err
    except OSError as err:
        raise AudioError(f"cannot read: {err.strerror or err}") from err
    checked = AudioInfo(
        path, int(info.samplerate), int(info.channels), int(info.frames), info.format, info.subtype
    )
    check_limits(checked, whole_file=whole_file)
    if checked.format == "WAV":
        shortfall = _wav_shortfall(path, st.st_size, checked)
        if shortfall is not None:
            promised, held = shortfall
            checked.notes.append(
                f"incomplete: header promises {promised:.1f} s, file holds {held:.1f} s — still being copied?"
            )
    return checked


def check_limits(info: AudioInfo, *, whole_file: bool = True) -> None:
    """Refuse what cannot be sensible: rate outside [MIN_RATE, MAX_RATE], too many channels, and (for a
    whole-file read) more decoded audio than the memory budget holds."""
    if not MIN_RATE <= info.sample_rate <= MAX_RATE:
        raise AudioError(f"sample rate {info.sample_rate:,} Hz is outside {MIN_RATE:,}–{MAX_RATE:,} Hz")
    if info.channels > MAX_CHANNELS:
        raise AudioError(f"{info.channels:,} channels; at most {MAX_CHANNELS} are processed")
    need = info.frames * info.channels * 4 * WORKING_COPIES
    if whole_file and need > MEMORY_BUDGET_BYTES:
        raise AudioError(
            f"would need about {need / 2**30:.1f} GB of memory (budget {MEMORY_BUDGET_BYTES / 2**30:.1f} GB, "
            "DENOISE_MEMORY_BUDGET_GB) to hold the whole file; `denoise run` streams any length"
        )


def _wav_shortfall(path: Path, size: int, info: AudioInfo) -> tuple[float, float] | None:
    """``(promised, held)`` seconds when a RIFF/WAVE data chunk claims more bytes than the file has.

    libsndfile silently shortens its frame count to what is there, so a half-copied WAV would look
    whole; the header's own data size tells the truth. RF64 and streaming headers (size 0 or 0xFFFFFFFF)
    make no promise and are left alone.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = 0
            while True:
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = fh.read(min(csize, 16))
                    block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else 0
                    fh.seek(csize - len(fmt) + (csize & 1), os.SEEK_CUR)
                elif cid == b"data":
                    if csize in (0, 0xFFFFFFFF) or not block_align:
                        return None
                    held = size - fh.tell()
                    if csize <= held:
                        return None
                    rate = info.sample_rate
                    return csize // block_align / rate, max(held, 0) // block_align / rate
                else:
                    fh.seek(csize + (csize & 1), os.SEEK_CUR)
    except OSError:
        return None
