"""``denoise live``: the microphone, denoised through ``Denoiser.stream``, to the speakers or to a file.

The audio device layer is PortAudio through the optional ``sounddevice`` package (extra ``live``), imported
only here and only when the command runs. Everything else talks to a :class:`DeviceLayer`, so the logic is
tested with the device replaced by a fake that drives the callback with blocks.

To the speakers, each block is denoised inside the device callback (one duplex stream, the lowest latency:
the model's own plus the device's). To a file, the callback only queues the microphone's blocks; the main
thread denoises and writes them, with the start-up delay removed, so the file lines up with what was said.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from denoise.commands.engine_options import add_engine_arguments
from denoise.commands.stream import AlignedStream, block_length, load_denoiser

if TYPE_CHECKING:
    from denoise.audio import AudioSink
    from denoise.engine import Denoiser

EXIT_OK = 0  # includes a session the user ended with Ctrl-C: that is how a live session stops
EXIT_FAILED = 1  # the stream broke off (device lost, engine error); a file output is not written
EXIT_SETUP = 2  # bad options, no sounddevice / PortAudio, a device that cannot open, model unavailable
EXIT_NO_DEVICE = 3  # this machine has no audio device to record from (containers, CI)

MAX_BACKLOG_SECONDS = 30.0  # to a file: microphone audio waiting for the model before blocks are dropped

HELP = (
    "Denoise the microphone live: to the speakers (default) or to a file (--output x.wav, written atomically, "
    "aligned with the input). Runs until Ctrl-C or --seconds. Needs the 'live' extra (sounddevice, PortAudio). "
    "Exit status: 0 done (Ctrl-C included), 1 stream failed, 2 setup error, 3 no audio device on this machine."
)


class LiveSetupError(RuntimeError):
    """The device layer cannot start; ``str(err)`` is the one line for the user."""


class NoDeviceError(LiveSetupError):
    """No audio input device exists on this machine."""


class DeviceLayer(Protocol):
    """What the command needs from an audio device library (sounddevice, or a fake in tests)."""

    def devices(self) -> list[dict[str, Any]]:
        """Every device: ``name``, ``max_input_channels``, ``max_output_channels``, ``default_samplerate``."""
        ...

    def default_rate(self, device: int | str | None) -> int:
        """The input device's native rate (Hz)."""
        ...

    def open(
        self,
        *,
        input_device: int | str | None,
        output_device: int | str | None,
        rate: int,
        channels: int,
        block_frames: int,
        callback: Callable[..., None],
        duplex: bool,
    ) -> contextlib.AbstractContextManager[Any]:
        """A started stream (stopped and closed on exit) calling ``callback(indata, outdata, frames, time,
        status)`` when ``duplex``, else ``callback(indata, frames, time, status)``; data ``[frames, channels]``."""
        ...


class SoundDeviceLayer:
    """PortAudio through ``sounddevice``."""

    def __init__(self) -> None:
        try:
            import sounddevice
        except ImportError as err:
            raise LiveSetupError(
                "denoise live needs the sounddevice package: pip install 'speech-denoise-workstation[live]'"
            ) from err
        except OSError as err:  # the wheel is there, the PortAudio library is not (Linux)
            raise LiveSetupError(
                "denoise live needs the PortAudio library (Debian/Ubuntu: apt install libportaudio2)"
            ) from err
        self.sd = sounddevice

    def devices(self) -> list[dict[str, Any]]:
        return [dict(d) for d in self.sd.query_devices()]

    def default_rate(self, device: int | str | None) -> int:
        return int(self.sd.query_devices(device, "input")["default_samplerate"])

    def open(self, *, input_device, output_device, rate, channels, block_frames, callback, duplex):
        common = dict(samplerate=rate, blocksize=block_frames, channels=channels, dtype="float32")
        try:
            if duplex:
                stream = self.sd.Stream(device=(input_device, output_device), callback=callback, **common)
            else:
                stream = self.sd.InputStream(device=input_device, callback=callback, **common)
        except (self.sd.PortAudioError, ValueError) as err:
            raise LiveSetupError(f"cannot open the audio device: {err}") from err
        return stream


@dataclass
class LiveResult:
    frames: int = 0  # microphone frames denoised
    dropouts: int = 0  # callbacks the device flagged (over/underflow: the machine did not keep up)
    dropped_frames: int = 0  # to a file: frames dropped because the model fell MAX_BACKLOG_SECONDS behind
    interrupted: bool = False  # ended by Ctrl-C
    error: BaseException | None = None  # what broke the stream off
    notes: list[str] = field(default_factory=list)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--list-devices", action="store_true", help="list the audio devices and exit")
    p.add_argument(
        "--input-device", default=None, help="microphone: index or part of a name (default: system's)"
    )
    p.add_argument(
        "--output-device", default=None, help="speakers: index or part of a name (default: system's)"
    )
    p.add_argument(
        "--output", "-o", default=None, help="write to this file (e.g. take.wav) instead of speakers"
    )
    p.add_argument(
        "--subtype", default=None, help="--output sample format, e.g. PCM_24, FLOAT (default: PCM_16)"
    )
    p.add_argument(
        "--rate", "-r", type=int, default=None, help="sample rate in Hz (default: the microphone's)"
    )
    p.add_argument("--channels", "-c", type=int, default=1, help="channels to record (default: %(default)s)")
    p.add_argument("--block-ms", type=float, default=None, help="device block (default: one model frame)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this much audio (default: Ctrl-C)")
    p.add_argument("--quiet", "-q", action="store_true", help="no messages except errors")
    add_engine_arguments(p, live=True)


def main(args: argparse.Namespace, layer_factory: Callable[[], DeviceLayer] = SoundDeviceLayer) -> int:
    def say(line: str) -> None:
        if not args.quiet:
            print(f"denoise live: {line}", file=sys.stderr)

    try:
        _check_options(args)
        layer = layer_factory()
        devices = layer.devices()
        if args.list_devices and devices:
            print("\n".join(describe_devices(devices)))
            return EXIT_OK
        if not any(d.get("max_input_channels", 0) > 0 for d in devices):
            raise NoDeviceError(
                "no audio input device on this machine (PortAudio found none); use `denoise stream`"
            )
        input_device, output_device = _device_id(args.input_device), _device_id(args.output_device)
        rate = args.rate or layer.default_rate(input_device)
    except NoDeviceError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_NO_DEVICE
    except (LiveSetupError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_SETUP
    denoiser = load_denoiser(args)
    if denoiser is None:
        return EXIT_SETUP
    block_frames = block_length(args.block_ms, denoiser, rate)
    limit = None if args.seconds is None else round(args.seconds * rate)
    session = LiveSession(
        denoiser, layer, rate=rate, channels=args.channels, block_frames=block_frames, limit=limit
    )
    target = args.output or "speakers"
    say(
        f"{denoiser.config.model} on {denoiser.backend.name}, {rate} Hz x {args.channels} ch -> {target}; Ctrl-C stops"
    )
    try:
        if args.output:
            result = session.to_file(Path(args.output), input_device, subtype=args.subtype)
        else:
            result = session.to_speakers(input_device, output_device, warn=say)
    except (LiveSetupError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_SETUP
    if result.error is not None:
        print(f"error: the stream broke off: {result.error}", file=sys.stderr)
        return EXIT_FAILED
    say(f"{result.frames / rate:.2f} s denoised{' (stopped by Ctrl-C)' if result.interrupted else ''}")
    if result.dropouts:
        say(f"{result.dropouts} dropouts: the device reported over/underflows (the machine did not keep up)")
    for note in result.notes:
        say(note)
    return EXIT_OK


class LiveSession:
    """One microphone session through a denoiser stream; ``limit`` frames, or until Ctrl-C."""

    def __init__(
        self,
        denoiser: Denoiser,
        layer: DeviceLayer,
        *,
        rate: int,
        channels: int,
        block_frames: int,
        limit: int | None,
    ) -> None:
        self.denoiser, self.layer = denoiser, layer
        self.rate, self.channels, self.block_frames, self.limit = rate, channels, block_frames, limit
        self.result = LiveResult()
        self._done = threading.Event()

    def _take(self, frames: int, status: object) -> int:
        """Frames of this callback to use (the limit may cut the last block); counts device flags."""
        if status:
            self.result.dropouts += 1
        take = frames if self.limit is None else max(0, min(frames, self.limit - self.result.frames))
        self.result.frames += take
        if self.limit is not None and self.result.frames >= self.limit:
            self._done.set()
        return take

    def _fail(self, err: BaseException) -> None:
        self.result.error = err
        self._done.set()

    def _run_device(self, work: Callable[[], None], **settings: Any) -> None:
        """Open the device, call ``work`` until the limit or an error, close it. Ctrl-C (which reaches this,
        the main thread) ends the session at any point, opening the device included."""
        try:
            with self.layer.open(
                rate=self.rate, channels=self.channels, block_frames=self.block_frames, **settings
            ):
                while not self._done.wait(0.02):
                    work()
        except KeyboardInterrupt:
            self.result.interrupted = True
        self._done.set()

    def to_speakers(
        self, input_device: int | str | None, output_device: int | str | None, warn: Callable[[str], None]
    ) -> LiveResult:
        stream = self.denoiser.stream(self.rate, self.channels)  # start-up delay kept: lowest latency
        if stream.latency > self.rate // 2:
            warn(
                f"this model's latency is {stream.latency / self.rate:.1f} s and each chunk arrives at once: "
                "playback will stutter; GTCRN (--model gtcrn) is the live model"
            )

        def callback(indata, outdata, frames, time, status) -> None:
            if self._done.is_set():
                outdata.fill(0.0)
                return
            take = self._take(frames, status)
            try:
                outdata[:take] = stream.process(np.ascontiguousarray(indata[:take].T)).T
            except Exception as err:  # reported by the main thread; PortAudio must not see it
                self._fail(err)
                take = 0
            outdata[take:] = 0.0

        self._run_device(
            lambda: None,
            input_device=input_device,
            output_device=output_device,
            callback=callback,
            duplex=True,
        )
        self.result.notes.extend(stream.notes)
        return self.result

    def to_file(
        self, path: Path, input_device: int | str | None, *, subtype: str | None = None
    ) -> LiveResult:
        stream = AlignedStream(self.denoiser.stream(self.rate, self.channels))
        blocks: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()
        backlog = [0]  # frames queued, not yet denoised
        max_backlog = round(MAX_BACKLOG_SECONDS * self.rate)

        def callback(indata, frames, time, status) -> None:
            if self._done.is_set():
                return
            if backlog[0] > max_backlog:  # the model cannot keep up: drop rather than grow without bound
                self.result.dropped_frames += frames
                return
            take = self._take(frames, status)
            backlog[0] += take
            blocks.put(indata[:take].T.copy())

        def denoise_queued(sink: AudioSink, *, last: bool = False) -> None:
            try:
                while True:
                    try:
                        block = blocks.get_nowait()
                    except queue.Empty:
                        break
                    backlog[0] -= block.shape[1]
                    sink.write(stream.process(block))
                if last:
                    sink.write(stream.flush())
            except Exception as err:  # engine or disk: the session ends, and leaves no file
                self._fail(err)
                raise _Abandon from err

        from denoise.audio import AudioSink, default_subtype_for

        with (
            contextlib.suppress(_Abandon),
            AudioSink(path, self.rate, self.channels, subtype=subtype or default_subtype_for(path)) as sink,
        ):
            self._run_device(
                lambda: denoise_queued(sink), input_device=input_device, output_device=None, callback=callback,
                duplex=False,
            )  # fmt: skip
            denoise_queued(sink, last=True)  # the device is closed: what it delivered is all there is
        if self.result.error is not None:
            return self.result
        self.result.notes.extend(stream.notes)
        if self.result.dropped_frames:
            self.result.notes.append(
                f"processing fell behind: {self.result.dropped_frames / self.rate:.1f} s dropped"
            )
        self.result.notes.append(f"written: {path} ({sink.frames / self.rate:.2f} s)")
        return self.result


class _Abandon(Exception):
    """Raised inside the sink's ``with`` so a broken session leaves no file (the error is in the result)."""


def describe_devices(devices: list[dict[str, Any]]) -> list[str]:
    """One line per device: index, name, input/output channels, native rate."""
    return [
        f"{i:3d}  {d['name']}  (in {d.get('max_input_channels', 0)}, out {d.get('max_output_channels', 0)}, "
        f"{d.get('default_samplerate', 0):g} Hz)"
        for i, d in enumerate(devices)
    ]


def _device_id(value: str | None) -> int | str | None:
    """A device index given as digits is an index; anything else is (part of) its name."""
    return int(value) if value is not None and value.strip().isdigit() else value


def _check_options(args: argparse.Namespace) -> None:
    if args.rate is not None and args.rate <= 0:
        raise ValueError(f"--rate must be a positive number of Hz, got {args.rate}")
    if args.channels <= 0:
        raise ValueError(f"--channels must be at least 1, got {args.channels}")
    if args.block_ms is not None and not args.block_ms > 0:
        raise ValueError(f"--block-ms must be positive, got {args.block_ms}")
    if args.seconds is not None and not args.seconds > 0:
        raise ValueError(f"--seconds must be positive, got {args.seconds}")
    if args.output:
        from denoise.audio import check_output_format

        check_output_format(Path(args.output), args.subtype)  # fails now, not after the recording
