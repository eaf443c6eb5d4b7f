"""``denoise stream``: raw PCM or WAV on stdin, denoised through ``Denoiser.stream``, to stdout.

Made for pipelines::

    arecord -f S16_LE -r 48000 -c 1 | denoise stream --rate 48000 --channels 1 | aplay -f S16_LE -r 48000 -c 1
    ffmpeg -i in.mp3 -f s16le -ac 1 -ar 48000 - | denoise stream --rate 48000 --channels 1 \\
        | ffmpeg -f s16le -ar 48000 -ac 1 -i - out.flac

stdout carries audio only (messages go to stderr, and so does anything a library prints); each block is
written as soon as it is denoised.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Protocol

import numpy as np

from denoise.audio.pipe import ENCODINGS, RAW_ENCODINGS, PipeFormatError, PipeReader, PipeWriter, open_pipe
from denoise.commands.engine_options import add_engine_arguments, engine_config

if TYPE_CHECKING:
    from denoise.engine import Denoiser

EXIT_OK = 0
EXIT_SETUP = 2  # bad options, a malformed header, a model that cannot load: nothing was written
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as a shell reports it
EXIT_BROKEN_PIPE = 141  # the reader of stdout went away (128 + SIGPIPE, what a C tool dies with)

HELP = (
    "Denoise audio from stdin to stdout: raw PCM (--format s16le|s24le|s32le|f32le, with --rate and "
    "--channels) or a WAV stream (--format wav; rate and channels from its header). The output has the "
    "input's length and alignment (the model's start-up delay is removed) unless --live, which keeps the "
    "delay for the lowest latency. Exit status: 0 done, 2 bad options/header or model unavailable, "
    "130 interrupted (Ctrl-C), 141 stdout closed by the reader."
)


class AudioStream(Protocol):
    """What ``Denoiser.stream(sample_rate, channels)`` returns (see :mod:`denoise.engine`)."""

    latency: int  # samples at the stream's rate between an input sample and its output
    notes: list[str]  # what the user should know (e.g. levels set per chunk, blocks padded)

    def process(self, block: np.ndarray) -> np.ndarray: ...

    def flush(self) -> np.ndarray: ...


class AlignedStream:
    """A denoiser stream whose output lines up with its input.

    The first ``latency`` output samples (start-up delay) are dropped and :meth:`flush` returns the rest,
    so the concatenated output equals file-mode output sample for sample. ``keep_delay=True`` passes
    everything through (live use: lowest latency, output = input length + latency).
    """

    def __init__(self, stream: AudioStream, *, keep_delay: bool = False) -> None:
        self.stream = stream
        self.latency = int(stream.latency)
        self._skip = 0 if keep_delay else self.latency

    @property
    def notes(self) -> list[str]:
        return list(self.stream.notes)

    def process(self, block: np.ndarray) -> np.ndarray:
        return self._drop_delay(self.stream.process(block))

    def flush(self) -> np.ndarray:
        return self._drop_delay(self.stream.flush())

    def _drop_delay(self, out: np.ndarray) -> np.ndarray:
        if self._skip:
            k = min(self._skip, out.shape[-1])
            self._skip -= k
            out = out[..., k:]
        return out


@dataclass
class StreamResult:
    frames_in: int = 0
    frames_out: int = 0
    clipped: int = 0
    notes: list[str] = field(default_factory=list)


def pump(reader: PipeReader, stream: AlignedStream, writer: PipeWriter, block_frames: int) -> StreamResult:
    """Read ``reader`` to its end in blocks, denoise, write each block at once, flush the model, close."""
    for block in reader.blocks(block_frames):
        writer.write(stream.process(block))
    writer.write(stream.flush())
    writer.close()
    return StreamResult(
        reader.frames_read, writer.frames_written, writer.clipped, reader.notes() + stream.notes
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    formats = ["wav", *RAW_ENCODINGS]
    p.add_argument(
        "--format",
        "-f",
        choices=formats,
        default="s16le",
        help="input: raw little-endian PCM or a WAV stream (default: %(default)s, what arecord -f S16_LE sends)",
    )
    p.add_argument(
        "--out-format",
        choices=formats,
        default=None,
        help="output format (default: as the input; wav keeps the input's sample encoding)",
    )
    p.add_argument("--rate", "-r", type=int, default=None, help="sample rate of raw input in Hz (any rate)")
    p.add_argument("--channels", "-c", type=int, default=None, help="channels of raw input (any number)")
    p.add_argument(
        "--block-ms",
        type=float,
        default=None,
        help="read and write blocks of this length (default: one model frame, 16 ms for GTCRN)",
    )
    p.add_argument(
        "--live",
        action="store_true",
        help="keep the model's start-up delay in the output (lowest latency; output is longer by it)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no messages except errors")
    add_engine_arguments(p, live=True)


def main(args: argparse.Namespace) -> int:
    for name, stream, hint in (
        ("stdin", sys.stdin, "pipe audio in"),
        ("stdout", sys.stdout, "pipe it on or redirect it"),
    ):
        if stream.isatty():
            print(f"error: {name} is a terminal: {hint} (see denoise stream --help)", file=sys.stderr)
            return EXIT_SETUP
    audio_out = _claim_stdout()  # before anything can print: stdout is for audio only
    try:
        return run(args, sys.stdin.buffer, audio_out)
    except KeyboardInterrupt:
        print("denoise stream: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_BROKEN_PIPE
    finally:
        with contextlib.suppress(OSError):  # a reader that went away makes the last flush fail too
            audio_out.close()


def run(args: argparse.Namespace, stdin: BinaryIO, stdout: BinaryIO) -> int:
    """The command on given binary streams (``main`` passes the process's stdin and stdout)."""

    def say(line: str) -> None:
        if not args.quiet:
            print(f"denoise stream: {line}", file=sys.stderr)

    problem = _check_options(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_SETUP
    try:
        reader = open_pipe(stdin, args.format, sample_rate=args.rate, channels=args.channels)
        _check_header(args, reader)
    except PipeFormatError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_SETUP
    out_format = args.out_format or args.format
    encoding = reader.encoding if out_format == "wav" else ENCODINGS[out_format]
    container = "wav" if out_format == "wav" else "raw"
    denoiser = load_denoiser(args)
    if denoiser is None:
        return EXIT_SETUP
    try:
        stream = AlignedStream(denoiser.stream(reader.sample_rate, reader.channels), keep_delay=args.live)
    except ValueError as err:  # e.g. --compat modelscope, whole-file by definition
        print(f"error: {err}", file=sys.stderr)
        return EXIT_SETUP
    block_frames = block_length(args.block_ms, denoiser, reader.sample_rate)
    rate = reader.sample_rate
    say(
        f"{denoiser.config.model} on {denoiser.backend.name}, {rate} Hz x {reader.channels} ch, "
        f"{reader.container}:{reader.encoding.name} -> {container}:{encoding.name}, "
        f"latency {stream.latency} samples ({1000 * stream.latency / rate:.1f} ms, "
        f"{'kept: --live' if args.live else 'removed'}), blocks of {block_frames}"
    )
    writer = PipeWriter(stdout, encoding, rate, reader.channels, container=container)
    try:
        result = pump(reader, stream, writer, block_frames)
    except KeyboardInterrupt:
        with contextlib.suppress(OSError, ValueError):
            writer.close()  # what was written stays a valid stream (WAV sizes patched where seekable)
        raise
    say(f"{result.frames_in / rate:.2f} s in, {result.frames_out / rate:.2f} s out")
    for note in result.notes:
        say(note)
    if result.clipped:
        say(f"{result.clipped:,} samples clipped to the {encoding.name} range")
    return EXIT_OK


def load_denoiser(args: argparse.Namespace) -> Denoiser | None:
    """The engine the options describe; ``None`` after printing the one-line reason it cannot start."""
    from denoise.engine import Denoiser
    from denoise_models import WeightsError

    try:
        return Denoiser(engine_config(args))
    except (WeightsError, ValueError, RuntimeError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return None


def block_length(block_ms: float | None, denoiser: Denoiser, sample_rate: int) -> int:
    """Frames per block at ``sample_rate``: ``block_ms``, or one frame of the model by default."""
    from denoise_models.spec import spec_of

    seconds = block_ms / 1000 if block_ms else spec_of(denoiser.config.model).frame_seconds
    return max(1, round(seconds * sample_rate))


def _check_options(args: argparse.Namespace) -> str | None:
    if args.rate is not None and args.rate <= 0:
        return f"--rate must be a positive number of Hz, got {args.rate}"
    if args.channels is not None and args.channels <= 0:
        return f"--channels must be at least 1, got {args.channels}"
    if args.block_ms is not None and not args.block_ms > 0:
        return f"--block-ms must be positive, got {args.block_ms}"
    if args.format != "wav" and (args.rate is None or args.channels is None):
        return f"raw {args.format} input needs --rate and --channels (or send a WAV stream with --format wav)"
    return None


def _check_header(args: argparse.Namespace, reader: PipeReader) -> None:
    """With WAV input, --rate / --channels are optional but must agree with the header."""
    for option, given, found in (
        ("--rate", args.rate, reader.sample_rate),
        ("--channels", args.channels, reader.channels),
    ):
        if given is not None and given != found:
            raise PipeFormatError(f"{option} {given} disagrees with the WAV header ({found})")


def _claim_stdout() -> BinaryIO:
    """The process's stdout as a binary stream reserved for audio; fd 1 and ``sys.stdout`` then point at
    stderr, so a stray print (ours or a library's, Python or C) cannot corrupt the audio."""
    sys.stdout.flush()
    audio = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return audio
