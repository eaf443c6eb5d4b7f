"""The block writer every result goes through: verified, clipped never wrapped, atomic, interrupt-safe.

Blocks (float32 ``[channels, n]``) are written to a temporary file beside the destination through
:func:`denoise_models.atomic.atomic_output`; on a clean exit the file is checked (frames accepted ==
frames libsndfile wrote == frames its header declares when re-opened, and the count the caller promised
if it gave one), synced and renamed. On any error, or Ctrl-C, the temporary file is removed.

Why a file descriptor and not a path or a Python file object: libsndfile then does its own I/O, so no
Python callback runs inside C code (an exception there is printed as "Exception ignored from cffi
callback" and swallowed, which turned Ctrl-C into a bogus file failure), and names that are not
valid UTF-8 need no encoding. The checks are explicit ``if``s, not ``assert``, so ``python -O`` keeps them.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from denoise.audio.probe import AudioError
from denoise_models.atomic import atomic_output

# Bits per sample of the integer subtypes; anything else (lossy codecs included) is clipped like 16 bits.
_INT_BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32}
_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})
_BYTES_PER_SAMPLE = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}
_CONTAINER_OF_EXT = {"wave": "WAV", "oga": "OGG", "opus": "OGG", "aif": "AIFF", "aifc": "AIFF", "snd": "AU"}
# The codec a file name promises regardless of its container's default (".opus" in an Ogg would
# otherwise get Vorbis, libsndfile's default for Ogg).
_SUBTYPE_OF_EXT = {".opus": "OPUS"}


def container_for(path: Path) -> str:
    """The libsndfile container (e.g. "WAV", "FLAC") a file name asks for; AudioError if none can write it."""
    ext = path.suffix.lower().lstrip(".")
    container = _CONTAINER_OF_EXT.get(ext, ext.upper())
    if container not in sf.available_formats():
        raise AudioError(f"cannot write {path.suffix!r} files; choose e.g. .wav or .flac")
    return container


def required_subtype(path: Path) -> str | None:
    """The subtype a file name itself demands (``OPUS`` for ``.opus``), else None."""
    return _SUBTYPE_OF_EXT.get(path.suffix.lower())


def default_subtype_for(path: Path, container: str | None = None) -> str:
    """The subtype a result named ``path`` gets when none is asked for (Opus for ``.opus``)."""
    container = (container or container_for(path)).upper()
    return required_subtype(path) or sf.default_subtype(container)


def check_output_format(path: Path, subtype: str | None = None, format: str | None = None) -> tuple[str, str]:
    """``(container, subtype)`` for writing ``path``; AudioError (one line) for what cannot be written.

    Cheap and model-free, so a batch can refuse a bad ``--format``/``--subtype`` before any work.
    """
    container = (format or container_for(path)).upper()
    if container not in sf.available_formats():
        raise AudioError(f"unknown output format {format!r}; choose e.g. WAV or FLAC")
    subtype = (subtype or default_subtype_for(path, container)).upper()
    wanted = required_subtype(path)
    if wanted and subtype != wanted:
        raise AudioError(f"{path.suffix} files hold {wanted}, not {subtype}")
    if subtype not in sf.available_subtypes() or not sf.check_format(container, subtype):
        raise AudioError(f"{container} files cannot hold subtype {subtype!r}")
    return container, subtype


def to_int_range(samples: np.ndarray, subtype: str) -> tuple[np.ndarray, int]:
    """Clip to the representable range of ``subtype`` so an integer cast never wraps around.

    Returns the clipped array and the number of samples that were clipped.
    """
    if subtype in _FLOAT_SUBTYPES:
        return samples, 0
    top = 1.0 - 2.0 ** (1 - _INT_BITS.get(subtype, 16))
    clipped = int(np.count_nonzero((samples > top) | (samples < -1.0)))
    return np.clip(samples, -1.0, top), clipped


def _megabytes(n: float) -> str:
    return f"{n / 1e6:.1f}"


class AudioSink:
    """Write ``[channels, n]`` float32 blocks to ``dst``; it appears whole and verified, or not at all.

    ``expected_frames`` (optional) is the length the caller will write; a different count fails the
    file instead of publishing a short result.
    """

    frames: int  # frames written so far
    clipped: int  # samples clipped so far

    def __init__(
        self,
        dst: str | Path,
        sample_rate: int,
        channels: int,
        *,
        subtype: str,
        format: str | None = None,
        expected_frames: int | None = None,
    ) -> None:
        self.dst = Path(dst)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.format, self.subtype = check_output_format(self.dst, subtype, format)
        self.expected_frames = expected_frames
        self.frames = 0
        self.clipped = 0
        self._stack: contextlib.ExitStack | None = None
        self._tmp: Path | None = None
        self._fd = -1
        self._file: sf.SoundFile | None = None

    def __enter__(self) -> AudioSink:
        stack = contextlib.ExitStack()
        try:
            self._tmp = stack.enter_context(atomic_output(self.dst))
            self._fd = os.open(
                self._tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600
            )
            stack.callback(self._close_fd)
            try:
                self._file = sf.SoundFile(
                    self._fd,
                    "w",
                    self.sample_rate,
                    self.channels,
                    self.subtype,
                    format=self.format,
                    closefd=False,
                )
            except (sf.LibsndfileError, RuntimeError, ValueError) as err:
                reason = str(err).split(":")[-1].strip() or "unsupported settings"
                raise AudioError(
                    f"cannot write {self.format}/{self.subtype} at {self.sample_rate} Hz, "
                    f"{self.channels} channel(s) ({reason})"
                ) from err
        except BaseException as err:
            stack.__exit__(type(err), err, err.__traceback__)  # the temp file goes, not renamed
            raise
        self._stack = stack
        return self

    def write(self, block: np.ndarray) -> None:
        """Append ``block`` (float32 ``[channels, n]``), clipped to the subtype's range."""
        if self._file is None:
            raise RuntimeError("AudioSink.write outside its 'with' block")
        data = np.asarray(block, dtype=np.float32)
        if data.ndim != 2 or data.shape[0] != self.channels:
            raise ValueError(f"expected a block shaped [{self.channels}, n], got {list(data.shape)}")
        if data.shape[1] == 0:
            return
        data, clipped = to_int_range(data, self.subtype)
        expected = self.frames + data.shape[1]
        try:
            # SoundFile.write checks its count with an ``assert`` (gone under -O); the check below is ours.
            self._file.write(np.ascontiguousarray(data.T))
        except (sf.LibsndfileError, RuntimeError, AssertionError) as err:
            raise AudioError(self._write_failure()) from err
        if self._file.frames != expected:  # libsndfile's own count of what reached the file
            raise AudioError(self._write_failure())
        self.frames = expected
        self.clipped += clipped

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            return
        try:
            self._close_file(quiet=exc_type is not None)
            if exc_type is None:
                self._verify()
        except BaseException as err:
            stack.__exit__(type(err), err, err.__traceback__)  # the temp file goes, not renamed
            raise
        stack.__exit__(exc_type, exc, tb)  # renames on success; removes the temp file on the caller's error

    # ---------------------------------------------------------------- internals

    def _close_file(self, *, quiet: bool) -> None:
        file, self._file = self._file, None
        if file is None:
            return
        try:
            file.close()  # writes the final header
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            if not quiet:
                raise AudioError(self._write_failure()) from err

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def _verify(self) -> None:
        """The finished temp file holds exactly what was written, as its header says when re-read."""
        if self.expected_frames is not None and self.frames != self.expected_frames:
            raise AudioError(f"incomplete result: wrote {self.frames:,} of {self.expected_frames:,} frames")
        os.lseek(self._fd, 0, os.SEEK_SET)
        try:
            with sf.SoundFile(self._fd, "r", closefd=False) as check:
                header_frames, header_channels = check.frames, check.channels
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError("the written result cannot be read back") from err
        if header_frames != self.frames or header_channels != self.channels:
            raise AudioError(
                f"the written result reads back as {header_frames:,} frames x {header_channels} channels, "
                f"expected {self.frames:,} x {self.channels}"
            )

    def _write_failure(self) -> str:
        """One line saying why a write failed, asked of the OS (libsndfile only says "System error")."""
        size = 0
        try:
            size = os.fstat(self._fd).st_size
            os.pwrite(self._fd, b"\0", size)  # the temp file is discarded anyway
            reason = "write failed (libsndfile error)"
        except OSError as err:
            reason = {
                errno.ENOSPC: "no space left on device",
                errno.EFBIG: "file too large for this file system or limit",
                errno.EDQUOT: "disk quota exceeded",
            }.get(err.errno, (err.strerror or str(err)).lower())
        per_frame = _BYTES_PER_SAMPLE.get(self.subtype)
        if per_frame and self.expected_frames:
            total = self.expected_frames * self.channels * per_frame
            return f"{reason} (wrote {_megabytes(size)} of {_megabytes(total)} MB)"
        return f"{reason} (wrote {_megabytes(size)} MB)"
