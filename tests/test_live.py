"""``denoise live``: its logic with the device layer replaced by a fake that drives the callback with a
recording, and (where PortAudio exists) the real command on ALSA's null device, set up without root."""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO, shared_path
from test_stream_cli import DENOISE

from denoise.audio import read_audio, resample
from denoise.cli import build_parser
from denoise.commands import live
from denoise.engine import Denoiser

RATE = 24000  # any rate: the engine resamples


@pytest.fixture(autouse=True)
def engine_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("DENOISE_WEIGHTS_MIRROR", str(shared_path("weights")))
    monkeypatch.setenv("DENOISE_WEIGHTS_OFFLINE", "1")
    monkeypatch.setenv("DENOISE_WEIGHTS_DIR", str(tmp_path_factory.getbasetemp() / "store"))


@pytest.fixture(scope="module")
def mic() -> np.ndarray:
    """1.5 s of real noisy speech at 24 kHz, mono: what the fake microphone hears."""
    noisy = read_audio(shared_path("audio", "noisy", "modelscope_frcrn__speech_with_noise.wav"))
    return resample(noisy.samples[:1, 8000 : 8000 + 24000], noisy.sample_rate, RATE)


class FakeDevices:
    """A device layer whose microphone plays ``mic`` block by block from a thread, as PortAudio would.

    ``played`` collects what the callback wrote to the speakers; ``flag_every`` marks every n-th callback
    with an over/underflow status; ``interrupt_after`` sends Ctrl-C to the main thread after n blocks.
    """

    def __init__(
        self, mic: np.ndarray, *, devices: list[dict[str, Any]] | None = None, **options: int
    ) -> None:
        self.mic = mic
        self._devices = [
            {"name": "Fake USB mic", "max_input_channels": 2, "max_output_channels": 0, "default_samplerate": RATE},
            {"name": "Fake speakers", "max_input_channels": 0, "max_output_channels": 2, "default_samplerate": 48000},
        ] if devices is None else devices  # fmt: skip
        self.flag_every = options.get("flag_every", 0)
        self.interrupt_after = options.get("interrupt_after", 0)
        self.played: list[np.ndarray] = []
        self.opened: dict[str, Any] = {}

    def devices(self) -> list[dict[str, Any]]:
        return self._devices

    def default_rate(self, device: int | str | None) -> int:
        return RATE

    @contextlib.contextmanager
    def open(self, *, callback, duplex: bool, **settings: Any):
        self.opened = {"duplex": duplex, **settings}
        n, channels = settings["block_frames"], settings["channels"]
        stop = threading.Event()

        def run() -> None:
            for k, at in enumerate(range(0, self.mic.shape[1], n)):
                if stop.is_set():
                    return
                indata = np.ascontiguousarray(np.repeat(self.mic[:1, at : at + n], channels, axis=0).T)
                status = bool(self.flag_every and k % self.flag_every == 0)
                if duplex:
                    outdata = np.full_like(indata, np.nan)
                    callback(indata, outdata, indata.shape[0], None, status)
                    self.played.append(outdata.T.copy())
                else:
                    callback(indata, indata.shape[0], None, status)
                if self.interrupt_after and k + 1 == self.interrupt_after:
                    _thread.interrupt_main()
                    return

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()


def run_live(argv: list[str], layer: FakeDevices) -> int:
    args = build_parser("live").parse_args(["live", "--model", "gtcrn", "--device", "cpu", *argv])
    return live.main(args, layer_factory=lambda: layer)


def snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    err = np.sum((ref - est).astype(np.float64) ** 2)
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / (err + 1e-30)))


@pytest.fixture(scope="module")
def gtcrn(tmp_path_factory: pytest.TempPathFactory) -> Denoiser:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DENOISE_WEIGHTS_MIRROR", str(shared_path("weights")))
        mp.setenv("DENOISE_WEIGHTS_OFFLINE", "1")
        mp.setenv("DENOISE_WEIGHTS_DIR", str(tmp_path_factory.getbasetemp() / "store"))
        return Denoiser(model="gtcrn", device="cpu")


@pytest.fixture(scope="module")
def file_mode(gtcrn: Denoiser, mic: np.ndarray) -> np.ndarray:
    return gtcrn.enhance(mic, RATE)


def test_to_speakers_plays_file_mode_output_after_the_latency(mic, file_mode, gtcrn, capsys) -> None:
    layer = FakeDevices(mic, flag_every=7)
    seconds = mic.shape[1] / RATE
    assert run_live(["--seconds", str(seconds), "--block-ms", "100"], layer) == live.EXIT_OK
    assert layer.opened["duplex"] and layer.opened["rate"] == RATE and layer.opened["block_frames"] == 2400
    played = np.concatenate(layer.played, axis=1)
    assert played.shape == mic.shape and np.isfinite(played).all(), "every callback filled its whole buffer"
    err = capsys.readouterr().err
    assert "1.50 s denoised" in err and "3 dropouts" in err and "Traceback" not in err
    # what the speakers play is file mode's output after the stream's fixed start-up delay
    latency = gtcrn.stream(RATE, 1).latency
    assert 0 <= latency < mic.shape[1] // 2
    assert not played[:, :latency].any()
    assert (
        snr_db(file_mode[:, : mic.shape[1] - latency], played[:, latency:]) >= 60.0
    )  # STRICT (issue 11 item 4)


def test_to_file_is_aligned_and_equals_file_mode(mic, file_mode, tmp_path: Path) -> None:
    out = tmp_path / "take.wav"
    layer = FakeDevices(mic)
    seconds = mic.shape[1] / RATE
    argv = ["--seconds", str(seconds), "--output", str(out), "--subtype", "FLOAT", "--block-ms", "100"]
    assert run_live(argv, layer) == 0
    assert not layer.opened["duplex"]
    y, rate = sf.read(out, dtype="float32", always_2d=True)
    assert rate == RATE and y.shape == (mic.shape[1], 1)
    assert snr_db(file_mode, y.T) >= 60.0  # STRICT: stream == file mode for GTCRN (issue 11 item 4)
    assert [p.name for p in tmp_path.iterdir()] == ["take.wav"], "no temporary file left"


@pytest.fixture
def python_ctrl_c():
    """Python's own Ctrl-C handler for one test, even when the runner was started with SIGINT ignored (a
    background job), where ``_thread.interrupt_main`` would do nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.timeout(120)  # a missed Ctrl-C would record forever
def test_ctrl_c_ends_a_recording_and_keeps_the_file(mic, tmp_path: Path, capsys, python_ctrl_c) -> None:
    out = tmp_path / "take.wav"
    layer = FakeDevices(mic, interrupt_after=10)  # 10 blocks of 16 ms (GTCRN's frame) at 24 kHz
    assert run_live(["--output", str(out), "--channels", "2"], layer) == live.EXIT_OK
    info = sf.info(str(out))
    assert (info.frames, info.channels, info.samplerate) == (10 * 384, 2, RATE)
    assert "stopped by Ctrl-C" in capsys.readouterr().err


def test_an_engine_error_in_the_callback_ends_with_status_1_and_no_file(
    mic, tmp_path, monkeypatch, capsys
) -> None:
    class Broken:
        latency = 0
        notes: list[str] = []  # noqa: RUF012

        def __init__(self, *args: object) -> None:
            pass

        def process(self, block: np.ndarray) -> np.ndarray:
            raise RuntimeError("model exploded")

        def flush(self) -> np.ndarray:
            return np.zeros((1, 0), dtype=np.float32)

    monkeypatch.setattr(Denoiser, "stream", Broken, raising=False)
    assert run_live(["--seconds", "1"], FakeDevices(mic)) == live.EXIT_FAILED
    assert (
        run_live(["--seconds", "1", "--output", str(tmp_path / "x.wav")], FakeDevices(mic))
        == live.EXIT_FAILED
    )
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr().err.count("model exploded") == 2


def test_no_device_is_one_line_and_exit_3(mic, capsys) -> None:
    assert run_live([], FakeDevices(mic, devices=[])) == live.EXIT_NO_DEVICE
    speakers_only = [
        {"name": "HDMI", "max_input_channels": 0, "max_output_channels": 2, "default_samplerate": 48000}
    ]
    assert run_live(["--list-devices"], FakeDevices(mic, devices=[])) == live.EXIT_NO_DEVICE
    assert run_live([], FakeDevices(mic, devices=speakers_only)) == live.EXIT_NO_DEVICE
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: no audio input device") for line in lines)


def test_list_devices(mic, capsys) -> None:
    assert run_live(["--list-devices"], FakeDevices(mic)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "  0  Fake USB mic  (in 2, out 0, 24000 Hz)",
        "  1  Fake speakers  (in 0, out 2, 48000 Hz)",
    ]


@pytest.mark.parametrize("argv", [["--channels", "0"], ["--seconds", "-1"], ["--output", "x.unknownext"]])
def test_bad_options_exit_2(argv: list[str], mic, capsys) -> None:
    assert run_live(argv, FakeDevices(mic)) == live.EXIT_SETUP
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_without_sounddevice_the_line_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails as if the extra were absent
    with pytest.raises(live.LiveSetupError, match=r"pip install 'speech-denoise-workstation\[live\]'"):
        live.SoundDeviceLayer()


# ---------------------------------------------------------------------------------- a real device


ASOUNDRC = """
pcm.denoise_null {
    type null
    hint { show on description "null device for tests" }
}
"""


@pytest.mark.slow
def test_real_portaudio_null_device(tmp_path: Path) -> None:
    """The command with PortAudio on ALSA's null plugin (a config file, no kernel module, no root): to the
    speakers and to a file. Null capture delivers silence, as fast as it is asked for."""
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError) as err:
        pytest.skip(f"sounddevice / PortAudio unavailable: {err}")
    alsa_conf = Path("/usr/share/alsa/alsa.conf")
    if not alsa_conf.exists():
        pytest.skip("ALSA's configuration is not installed")
    (tmp_path / "asoundrc").write_text(ASOUNDRC)
    env = {
        **os.environ,
        "ALSA_CONFIG_PATH": f"{alsa_conf}:{tmp_path / 'asoundrc'}",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
    }
    base = [*DENOISE, "live", "--model", "gtcrn", "--input-device", "denoise_null"]
    listed = subprocess.run([*DENOISE, "live", "--list-devices"], capture_output=True, env=env, timeout=60)
    assert listed.returncode == 0 and b"denoise_null" in listed.stdout
    out = tmp_path / "take.wav"
    for extra in (["--output-device", "denoise_null"], ["--output", str(out), "--rate", "16000"]):
        done = subprocess.run([*base, "--seconds", "0.5", *extra], capture_output=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr.decode()
        assert b"0.50 s denoised" in done.stderr
    info = sf.info(str(out))
    assert (info.frames, info.samplerate, info.channels) == (8000, 16000, 1)
