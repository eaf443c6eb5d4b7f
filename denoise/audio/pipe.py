"""Audio through pipes: raw PCM or a WAV stream from a binary file object in blocks, and back.

Pipes cannot seek, so a WAV header is parsed as it arrives and written before the length is known.
Streaming writers (ffmpeg, sox, arecord, this module) put 0 or 0xFFFFFFFF in the RIFF and ``data`` size
fields; both mean "until the end of the stream". RF64 headers are read too. Shapes are ``[channels, n]``
float32 at full scale 1.0, as everywhere else in :mod:`denoise.audio`; integers are scaled by 2^(bits-1)
(libsndfile's convention) and clipped, never wrapped, on the way out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from denoise.audio.probe import AudioError
from denoise.audio.sink import to_int_range


@dataclass(frozen=True)
class Encoding:
    """One little-endian sample encoding: its name (ffmpeg's / aplay's spelling), bytes per sample, kind."""

    name: str
    width: int  # bytes per sample
    kind: str  # "int", "uint" (8-bit WAV) or "float"
    subtype: str  # libsndfile's name, for :func:`denoise.audio.to_int_range`

    @property
    def bits(self) -> int:
        return 8 * self.width


ENCODINGS: dict[str, Encoding] = {
    e.name: e
    for e in (
        Encoding("u8", 1, "uint", "PCM_U8"),
        Encoding("s16le", 2, "int", "PCM_16"),
        Encoding("s24le", 3, "int", "PCM_24"),
        Encoding("s32le", 4, "int", "PCM_32"),
        Encoding("f32le", 4, "float", "FLOAT"),
        Encoding("f64le", 8, "float", "DOUBLE"),
    )
}
# What a user can name for raw PCM on the command line (u8 / f64le only arrive inside WAV headers).
RAW_ENCODINGS = ("s16le", "s24le", "s32le", "f32le")

_WAVE_PCM, _WAVE_FLOAT, _WAVE_EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
# The GUID tail every WAVE_FORMAT_EXTENSIBLE sub-format shares (KSDATAFORMAT_SUBTYPE_*).
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


class PipeFormatError(AudioError):
    """A malformed or unsupported stream header; ``str(err)`` is the one line shown to the user."""


def decode_pcm(data: bytes, encoding: Encoding, channels: int) -> np.ndarray:
    """Interleaved little-endian samples -> float32 ``[channels, n]`` (a trailing partial frame is dropped)."""
    frame = encoding.width * channels
    data = memoryview(data)[: len(data) - len(data) % frame]
    if encoding.name == "s24le":
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8  # sign-extend 24 -> 32 bits
        flat = ints.astype(np.float32) / np.float32(2**23)
    elif encoding.kind == "float":
        flat = np.frombuffer(data, dtype=f"<f{encoding.width}").astype(np.float32)
    elif encoding.kind == "uint":
        flat = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        raw = np.frombuffer(data, dtype=f"<i{encoding.width}")
        flat = (raw / float(2 ** (encoding.bits - 1))).astype(np.float32)
    return np.ascontiguousarray(flat.reshape(-1, channels).T)


def encode_pcm(samples: np.ndarray, encoding: Encoding) -> tuple[bytes, int]:
    """float32 ``[channels, n]`` -> interleaved little-endian bytes, and how many samples were clipped."""
    x, clipped = to_int_range(np.asarray(samples, dtype=np.float32), encoding.subtype)
    flat = x.T.reshape(-1)
    if encoding.kind == "float":
        return flat.astype(f"<f{encoding.width}").tobytes(), clipped
    if encoding.kind == "uint":
        return np.rint(flat * 128.0 + 128.0).astype(np.uint8).tobytes(), clipped
    # float64 so 32-bit full scale (2^31 - 1) is exact; clipped again after scaling because float32 cannot
    # hold 1 - 2^-31 (to_int_range's top for 32 bits rounds to 1.0, which would wrap)
    full = 2.0 ** (encoding.bits - 1)
    ints = np.clip(np.rint(flat.astype(np.float64) * full), -full, full - 1).astype("<i4")
    if encoding.name == "s24le":
        return ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes(), clipped
    return ints.astype(f"<i{encoding.width}").tobytes(), clipped


# ---------------------------------------------------------------------------------------------- reading


class PipeReader:
    """Blocks of audio from a binary stream (stdin, a socket, a file) that is read once, front to back.

    Use :func:`open_pipe` to build one from a format name. ``read(frames)`` returns float32
    ``[channels, n]`` with ``n == frames`` until the stream ends, then fewer, then ``n == 0``.
    """

    def __init__(
        self,
        stream: BinaryIO,
        encoding: Encoding,
        sample_rate: int,
        channels: int,
        *,
        data_bytes: int | None = None,
        container: str = "raw",
    ) -> None:
        if sample_rate <= 0 or channels <= 0:
            raise PipeFormatError(
                f"need a positive rate and channel count, got {sample_rate} Hz x {channels}"
            )
        self.stream = stream
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.channels = channels
        self.container = container  # "raw" or "wav"
        self._left = data_bytes  # bytes of sample data still to come (None: until the stream ends)
        self.frames_read = 0
        self.partial_bytes = 0  # bytes of an incomplete last frame, dropped
        self.nonfinite = 0  # NaN / Inf samples set to 0

    def read(self, frames: int) -> np.ndarray:
        frame_bytes = self.encoding.width * self.channels
        want = frames * frame_bytes
        if self._left is not None:
            want = min(want, self._left)
        data = _read_exact(self.stream, want)
        if self._left is not None:
            self._left -= len(data)
        if len(data) % frame_bytes:  # only at the end of the stream
            self.partial_bytes += len(data) % frame_bytes
        block = decode_pcm(data, self.encoding, self.channels)
        if self.encoding.kind == "float":
            bad = ~np.isfinite(block)
            if bad.any():
                block[bad] = 0.0
                self.nonfinite += int(bad.sum())
        self.frames_read += block.shape[1]
        return block

    def blocks(self, frames: int):
        """Yield blocks of ``frames`` (the last one shorter) until the stream ends."""
        while True:
            block = self.read(frames)
            if block.shape[1] == 0:
                return
            yield block
            if block.shape[1] < frames:
                return

    def notes(self) -> list[str]:
        """Repairs made while reading, for the user."""
        notes = []
        if self.partial_bytes:
            notes.append(f"input ended inside a frame: last {self.partial_bytes} byte(s) ignored")
        if self.nonfinite:
            notes.append(f"{self.nonfinite:,} NaN/Inf samples set to 0")
        return notes


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    """``size`` bytes, or fewer only at the end of the stream (raw pipes may return short reads)."""
    parts: list[bytes] = []
    while size > 0:
        chunk = stream.read(size)
        if not chunk:
            break
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


def open_pipe(
    stream: BinaryIO, format: str, *, sample_rate: int | None = None, channels: int | None = None
) -> PipeReader:
    """A :class:`PipeReader` over ``stream``: ``format`` is ``"wav"`` (header read from the stream now) or a
    raw encoding in :data:`RAW_ENCODINGS`, which needs ``sample_rate`` and ``channels``.

    Raises :class:`PipeFormatError` for a malformed header or missing facts.
    """
    if format == "wav":
        return read_wav_header(stream)
    if format not in RAW_ENCODINGS:
        raise PipeFormatError(f"unknown format {format!r}; choose wav or one of {', '.join(RAW_ENCODINGS)}")
    if not sample_rate or not channels:
        raise PipeFormatError(f"raw {format} input needs --rate and --channels")
    return PipeReader(stream, ENCODINGS[format], sample_rate, channels)


def read_wav_header(stream: BinaryIO) -> PipeReader:
    """Parse a RIFF/RF64 WAVE header up to the start of the ``data`` chunk, without seeking."""
    head = _read_exact(stream, 12)
    if len(head) < 12:
        raise PipeFormatError("not a WAV stream: input ended before the 12-byte RIFF header")
    riff, _, wave = struct.unpack("<4sI4s", head)
    if riff not in (b"RIFF", b"RF64") or wave != b"WAVE":
        raise PipeFormatError(f"not a WAV stream: starts with {head[:4]!r}, expected RIFF ... WAVE")
    fmt: tuple[Encoding, int, int] | None = None
    ds64_data: int | None = None
    while True:
        chunk = _read_exact(stream, 8)
        if len(chunk) < 8:
            raise PipeFormatError("malformed WAV stream: no 'data' chunk before the end of input")
        cid, size = struct.unpack("<4sI", chunk)
        if cid == b"data":
            if fmt is None:
                raise PipeFormatError("malformed WAV stream: 'data' chunk before the 'fmt ' chunk")
            if riff == b"RF64" and size == 0xFFFFFFFF and ds64_data:
                size = ds64_data
            known = None if size in _UNKNOWN_SIZES else size
            encoding, rate, channels = fmt
            return PipeReader(stream, encoding, rate, channels, data_bytes=known, container="wav")
        if size > 1 << 20:  # only 'data' may be large; anything else this big is garbage
            raise PipeFormatError(f"malformed WAV stream: {cid!r} chunk claims {size:,} bytes")
        body = _read_exact(stream, size + (size & 1))  # chunks are padded to even sizes
        if len(body) < size:
            raise PipeFormatError(f"malformed WAV stream: input ended inside the {cid!r} chunk")
        if cid == b"fmt ":
            fmt = _parse_fmt(body[:size])
        elif cid == b"ds64" and size >= 16:
            ds64_data = struct.unpack_from("<Q", body, 8)[0]


def _parse_fmt(body: bytes) -> tuple[Encoding, int, int]:
    if len(body) < 16:
        raise PipeFormatError("malformed WAV stream: 'fmt ' chunk shorter than 16 bytes")
    tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _WAVE_EXTENSIBLE:
        if len(body) < 40 or body[26:40] != _GUID_TAIL:
            raise PipeFormatError("unsupported WAV stream: unknown WAVE_FORMAT_EXTENSIBLE sub-format")
        # fewer valid bits than the container (20 in 24) are zero-padded low bits: decode by container width
        tag = struct.unpack_from("<H", body, 24)[0]
    kinds = {_WAVE_PCM: "uint" if bits == 8 else "int", _WAVE_FLOAT: "float"}
    found = [e for e in ENCODINGS.values() if e.kind == kinds.get(tag) and e.bits == bits]
    if not found:
        raise PipeFormatError(f"unsupported WAV stream: format tag {tag:#06x} with {bits} bits per sample")
    if channels == 0 or rate == 0 or block_align != channels * bits // 8:
        raise PipeFormatError(
            f"malformed WAV stream: {channels} channel(s), {rate} Hz, block align {block_align} for {bits} bits"
        )
    return found[0], rate, channels


# ---------------------------------------------------------------------------------------------- writing


class PipeWriter:
    """Writes float32 ``[channels, n]`` blocks to a binary stream as raw PCM or as a WAV stream.

    A WAV header goes out before the first block with both size fields 0xFFFFFFFF ("length unknown",
    what ffmpeg writes to a pipe; aplay, ffmpeg, sox and libsndfile read to the end of the stream). When
    the stream turns out to be seekable (stdout redirected to a file), :meth:`close` writes the true
    sizes. Each block is flushed at once, so a player downstream hears it without delay.
    """

    def __init__(
        self, stream: BinaryIO, encoding: Encoding, sample_rate: int, channels: int, *, container: str = "raw"
    ) -> None:
        if container not in ("raw", "wav"):
            raise ValueError(f"container must be 'raw' or 'wav', got {container!r}")
        self.stream = stream
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.channels = channels
        self.container = container
        self.frames_written = 0
        self.clipped = 0  # samples clipped to the integer range
        self._header_at: int | None = None  # stream position of the WAV header, when seekable
        self._started = False

    def write(self, block: np.ndarray) -> None:
        if not self._started:
            self._start()
        if block.shape[-1] == 0:
            return
        if block.shape[0] != self.channels:
            raise ValueError(f"expected {self.channels} channel(s), got a block of {block.shape[0]}")
        data, clipped = encode_pcm(block, self.encoding)
        self.clipped += clipped
        self.stream.write(data)
        self.stream.flush()
        self.frames_written += block.shape[-1]

    def close(self) -> None:
        """Finish the stream: a WAV header gets its real sizes if the stream can seek. Does not close it."""
        if not self._started:
            self._start()
        self.stream.flush()
        if self._header_at is None:
            return
        data_bytes = self.frames_written * self.channels * self.encoding.width
        if data_bytes + len(self._header()) - 8 > 0xFFFFFFFF:
            return  # too long for RIFF: "unknown" sizes stay, which readers accept
        end = self.stream.tell()
        self.stream.seek(self._header_at)
        self.stream.write(self._header(data_bytes))
        self.stream.seek(end)
        self.stream.flush()

    def _start(self) -> None:
        self._started = True
        if self.container != "wav":
            return
        try:
            self._header_at = self.stream.tell() if self.stream.seekable() else None
        except OSError:
            self._header_at = None
        self.stream.write(self._header())
        self.stream.flush()

    def _header(self, data_bytes: int | None = None) -> bytes:
        e, ch = self.encoding, self.channels
        tag = _WAVE_FLOAT if e.kind == "float" else _WAVE_PCM
        fmt = struct.pack(
            "<HHIIHH", tag, ch, self.sample_rate, self.sample_rate * ch * e.width, ch * e.width, e.bits
        )
        if ch > 2 or e.bits > 16:  # what the WAVE spec asks for beyond stereo 16-bit
            fmt = struct.pack("<HHIIHH", _WAVE_EXTENSIBLE, *struct.unpack_from("<HIIHH", fmt, 2))
            fmt += struct.pack("<HHI", 22, e.bits, 0) + struct.pack("<H", tag) + _GUID_TAIL
        body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        data_size = 0xFFFFFFFF if data_bytes is None else data_bytes
        riff_size = 0xFFFFFFFF if data_bytes is None else len(body) + 8 + data_bytes
        return b"RIFF" + struct.pack("<I", riff_size) + body + b"data" + struct.pack("<I", data_size)
