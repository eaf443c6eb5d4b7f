"""``denoise stream``: PCM / WAV through real pipes, as a user runs it, and the pipe codecs beneath it."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO, shared_path

from denoise.audio import read_audio, resample
from denoise.audio.pipe import ENCODINGS, PipeFormatError, PipeWriter, decode_pcm, encode_pcm, open_pipe
from denoise.cli import build_parser
from denoise.commands import stream as stream_command
from denoise.engine import Denoiser

# The command as a user runs it: ``python -m denoise stream ...``.
DENOISE = [sys.executable, "-m", "denoise"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Subprocess environment: this worktree's code, GTCRN's real weights from the offline mirror."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "DENOISE_WEIGHTS_MIRROR": str(shared_path("weights")),
        "DENOISE_WEIGHTS_OFFLINE": "1",
        "DENOISE_WEIGHTS_DIR": str(tmp_path_factory.mktemp("store")),
    }


@pytest.fixture(scope="module")
def speech48() -> np.ndarray:
    """2.5 s of real noisy speech at 48 kHz, stereo (the second channel quieter), float32 [2, n]."""
    noisy = read_audio(shared_path("audio", "noisy", "modelscope_frcrn__speech_with_noise.wav"))
    x = resample(noisy.samples[:1, 16000 : 16000 + 40000], noisy.sample_rate, 48000)
    return np.concatenate([x, 0.3 * x[:, ::-1]]).astype(np.float32)


def denoise_cli(
    args: list[str], data: bytes, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*DENOISE, "stream", "--model", "gtcrn", *args],
        input=data,
        capture_output=True,
        env=env,
        timeout=timeout,
    )


def wav_bytes(x: np.ndarray, rate: int, encoding: str = "s16le", *, sizes_known: bool = False) -> bytes:
    """A WAV stream as a streaming writer sends it (sizes 0xFFFFFFFF) or as a file holds it."""

    class Pipe(io.BytesIO):
        def seekable(self) -> bool:
            return sizes_known

    out = Pipe()
    writer = PipeWriter(out, ENCODINGS[encoding], rate, x.shape[0], container="wav")
    writer.write(x)
    writer.close()
    return out.getvalue()


def snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    return float(
        10
        * np.log10(
            np.sum(ref.astype(np.float64) ** 2) / (np.sum((ref - est).astype(np.float64) ** 2) + 1e-30)
        )
    )


@pytest.fixture(scope="module")
def gtcrn(env: dict[str, str]) -> Denoiser:
    """File mode in this process, with the weights the subprocesses use."""
    with pytest.MonkeyPatch.context() as mp:
        for key in ("DENOISE_WEIGHTS_MIRROR", "DENOISE_WEIGHTS_OFFLINE", "DENOISE_WEIGHTS_DIR"):
            mp.setenv(key, env[key])
        return Denoiser(model="gtcrn", weights="default", device="cpu")


@pytest.fixture(scope="module")
def file_mode(gtcrn: Denoiser, speech48: np.ndarray) -> np.ndarray:
    """What ``Denoiser.enhance`` (file mode) makes of the test input."""
    return gtcrn.enhance(speech48, 48000)


# ------------------------------------------------------------------------------------ end to end


def test_wav_stream_in_wav_out_equals_file_mode(speech48: np.ndarray, file_mode: np.ndarray, env) -> None:
    """A WAV stream with unknown sizes in, a WAV stream out: same rate, channels and length as the input,
    and the samples file mode gives (>= 60 dB SNR: the streaming engine must equal file mode for GTCRN)."""
    done = denoise_cli(["--format", "wav", "--block-ms", "100"], wav_bytes(speech48, 48000, "f32le"), env)
    assert done.returncode == 0, done.stderr.decode()
    y, rate = sf.read(io.BytesIO(done.stdout), dtype="float32", always_2d=True)
    assert rate == 48000 and y.shape == speech48.T.shape
    assert snr_db(file_mode, y.T) >= 60.0  # STRICT: the streaming engine's promise (issue 11 item 4)
    assert b"latency" in done.stderr and b"Traceback" not in done.stderr


def test_raw_s16_pipe_has_input_length_and_tracks_file_mode(speech48, file_mode, gtcrn, env) -> None:
    """What arecord | denoise stream | aplay sends: raw s16le, no header, any rate; output as long as input."""
    mono = speech48[:1]
    raw, _ = encode_pcm(mono, ENCODINGS["s16le"])
    done = denoise_cli(["--rate", "48000", "--channels", "1", "--block-ms", "50"], raw, env)
    assert done.returncode == 0, done.stderr.decode()
    assert len(done.stdout) == len(raw)
    y = decode_pcm(done.stdout, ENCODINGS["s16le"], 1)
    reference = gtcrn.enhance(decode_pcm(raw, ENCODINGS["s16le"], 1), 48000)
    assert snr_db(reference, y) >= 40.0  # int16 quantisation of input and output bounds this one
    assert snr_db(file_mode[:1], y) >= 30.0


def test_wav_out_redirected_to_a_file_gets_its_true_sizes(speech48, env, tmp_path: Path) -> None:
    """``denoise stream ... --out-format wav > out.wav``: seekable stdout, so the header is completed."""
    raw, _ = encode_pcm(speech48[:, :12000], ENCODINGS["s24le"])
    out = tmp_path / "out.wav"
    with out.open("wb") as stdout:
        done = subprocess.run(
            [*DENOISE, "stream", "--model", "gtcrn", "-f", "s24le", "-r", "48000", "-c", "2",
             "--out-format", "wav"],
            input=raw, stdout=stdout, stderr=subprocess.PIPE, env=env, timeout=120,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    info = sf.info(str(out))
    assert (info.frames, info.channels, info.samplerate, info.subtype) == (12000, 2, 48000, "PCM_24")
    with out.open("rb") as f:
        assert f.read(8)[4:] != b"\xff\xff\xff\xff", "RIFF size written"


def test_live_keeps_the_startup_delay(speech48, env) -> None:
    raw, _ = encode_pcm(speech48[:1, :24000], ENCODINGS["s16le"])
    done = denoise_cli(["--rate", "48000", "--channels", "1", "--live", "--out-format", "f32le"], raw, env)
    assert done.returncode == 0, done.stderr.decode()
    y = decode_pcm(done.stdout, ENCODINGS["f32le"], 1)
    latency = y.shape[1] - 24000
    assert latency >= 0
    if latency:
        assert not y[:, : latency // 2].any(), "start-up delay arrives first"


def test_malformed_header_through_the_cli_is_one_line_and_exit_2(env) -> None:
    done = denoise_cli(["--format", "wav"], b"RIFF\xff\xff\xff\xffWAVEdata\xff\xff\xff\xff", env)
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.decode().splitlines() == [
        "error: malformed WAV stream: 'data' chunk before the 'fmt ' chunk"
    ]


def run_in_process(argv: list[str], data: bytes) -> tuple[int, bytes]:
    """``stream.run`` on byte streams (what ``main`` does with the process's stdin/stdout)."""
    args = build_parser("stream").parse_args(["stream", "--model", "gtcrn", *argv])
    out = io.BytesIO()
    return stream_command.run(args, io.BytesIO(data), out), out.getvalue()


@pytest.mark.parametrize(
    "header, message",
    [
        (b"", "ended before"),
        (b"RIFX\x00\x00\x00\x00WAVE", "expected RIFF"),
        (b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00" + b"\x07\x00\x01\x00" + b"\x00" * 12, "unsupported"),
        (b"RIFF\xff\xff\xff\xffWAVEfmt \xff\xff\xff\x00", "claims"),
        (wav_bytes(np.zeros((2, 10), np.float32), 16000)[:30], "ended inside the b'fmt ' chunk"),
    ],
)
def test_bad_wav_header_is_one_line_and_exit_2(header: bytes, message: str, capsys) -> None:
    assert run_in_process(["--format", "wav"], header) == (2, b"")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--channels", "1"], "needs --rate and --channels"),
        (["--rate", "0", "--channels", "1"], "--rate must be"),
        (["--rate", "16000", "--channels", "1", "--block-ms", "0"], "--block-ms must be"),
        (["-f", "wav", "--rate", "8000"], "--rate 8000 disagrees with the WAV header (16000)"),
        (["-f", "wav", "-m", "frcrn", "-w", "no/such/weights.pt"], "does not exist"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(args: list[str], message: str, capsys) -> None:
    assert run_in_process(args, wav_bytes(np.zeros((1, 100), np.float32), 16000)) == (2, b"")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_compat_mode_cannot_stream_and_says_so(capsys) -> None:
    weights = shared_path("fixtures", "frcrn", "frcrn_testweights_seed0.pt")
    argv = ["-f", "wav", "-m", "frcrn", "-w", str(weights), "--compat", "modelscope", "--device", "cpu"]
    assert run_in_process(argv, wav_bytes(np.zeros((1, 100), np.float32), 16000)) == (2, b"")
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: compat='modelscope' is whole-file by definition; it cannot stream"
    ]


def test_closed_stdout_ends_quietly(speech48, env) -> None:
    """``denoise stream | head -c 1000``: the reader leaves early; no traceback, exit 141 (128 + SIGPIPE)."""
    raw, _ = encode_pcm(np.tile(speech48[:1], 4), ENCODINGS["s16le"])
    reader, writer = os.pipe()
    proc = subprocess.Popen(
        [*DENOISE, "stream", "--model", "gtcrn", "--rate", "48000", "--channels", "1", "--live"],
        stdin=subprocess.PIPE, stdout=writer, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    os.close(writer)
    try:
        with os.fdopen(reader, "rb") as out:
            proc.stdin.write(raw[:96000])
            proc.stdin.flush()
            assert len(out.read(1000)) == 1000
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(raw[96000:])
            proc.stdin.close()
        assert proc.wait(timeout=120) == 141
        assert b"Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.timeout(300)
def test_ctrl_c_exits_130_cleanly(env) -> None:
    proc = subprocess.Popen(
        [*DENOISE, "stream", "--model", "gtcrn", "--rate", "16000", "--channels", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        # a terminal's Ctrl-C, even when the test runner itself runs with SIGINT ignored (a background job)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        proc.stdin.write(b"\x00\x01" * 16000)
        proc.stdin.flush()
        line = proc.stderr.readline()  # the start line: the model is loaded and the stream runs
        assert b"latency" in line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        rest = proc.stderr.read()
        assert b"interrupted" in rest and b"Traceback" not in rest
    finally:
        proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                pipe.close()


# ------------------------------------------------------------------------------------ pipe codecs


@pytest.mark.parametrize("name", list(ENCODINGS))
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_wav_writer_is_read_by_libsndfile_and_our_reader(name: str, channels: int) -> None:
    rng = np.random.default_rng(channels)
    x = rng.uniform(-0.99, 0.99, (channels, 777)).astype(np.float32)
    for sizes_known in (False, True):
        data = wav_bytes(x, 44100, name, sizes_known=sizes_known)
        theirs, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        ours = open_pipe(io.BytesIO(data), "wav")
        assert rate == ours.sample_rate == 44100 and ours.encoding.name == name
        y = ours.read(10_000)
        assert y.shape == (channels, 777) and ours.read(10).shape == (channels, 0)
        np.testing.assert_array_equal(theirs.T, y)
        np.testing.assert_allclose(y, x, atol=1.0 / 2 ** (ENCODINGS[name].bits - 1))
    with wave.open(io.BytesIO(wav_bytes(x[:1], 8000, "s16le", sizes_known=True))) as w:
        assert (w.getnframes(), w.getframerate(), w.getsampwidth()) == (777, 8000, 2)


@pytest.mark.parametrize("name", ["u8", "s16le", "s24le", "s32le"])
def test_clipping_never_wraps_and_is_counted(name: str) -> None:
    enc = ENCODINGS[name]
    x = np.array([[-3.0, -1.0, -0.5, 0.0, 0.5, 0.999, 1.0, 1.5, 40.0]], dtype=np.float32)
    data, clipped = encode_pcm(x, enc)
    y = decode_pcm(data, enc, 1)[0]
    assert clipped >= 3  # -3, 1.5, 40 (1.0 itself is one step above the top code)
    assert y[0] == -1.0 and y[-1] == y[-2] == y[-3] > 0.99 and np.all(np.diff(y) >= 0), (
        "monotonic: nothing wrapped"
    )


def test_reader_handles_short_reads_and_a_partial_last_frame() -> None:
    class Trickle(io.RawIOBase):  # a pipe that hands out 3 bytes per read
        def __init__(self, data: bytes) -> None:
            self.data = data

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            part, self.data = self.data[:3], self.data[3:]
            return part

    x = np.linspace(-0.5, 0.5, 2 * 100, dtype=np.float32).reshape(2, 100)
    data, _ = encode_pcm(x, ENCODINGS["s24le"])
    reader = open_pipe(Trickle(data + b"\x01\x02"), "s24le", sample_rate=16000, channels=2)
    blocks = list(reader.blocks(33))
    assert [b.shape[1] for b in blocks] == [33, 33, 33, 1]
    np.testing.assert_allclose(np.concatenate(blocks, axis=1), x, atol=2**-23)
    assert reader.notes() == ["input ended inside a frame: last 2 byte(s) ignored"]


def test_rf64_and_extensible_headers_are_read() -> None:
    x = np.array([[0.25, -0.5, 0.125]], dtype=np.float32)
    buf = io.BytesIO()
    sf.write(buf, x.T, 48000, format="RF64", subtype="PCM_24")
    reader = open_pipe(io.BytesIO(buf.getvalue()), "wav")
    assert (reader.sample_rate, reader.channels, reader.encoding.name) == (48000, 1, "s24le")
    np.testing.assert_array_equal(reader.read(10), x)


def test_wav_data_size_is_respected_when_known() -> None:
    """A file-like WAV with a LIST chunk after the data: the trailing chunk is not read as audio."""
    x = np.array([[0.1, 0.2, 0.3]], dtype=np.float32)
    data = wav_bytes(x, 16000, "s16le", sizes_known=True) + b"LIST\x04\x00\x00\x00abcd"
    reader = open_pipe(io.BytesIO(data), "wav")
    assert reader.read(100).shape == (1, 3)


def test_raw_input_without_rate_is_refused() -> None:
    with pytest.raises(PipeFormatError, match="--rate and --channels"):
        open_pipe(io.BytesIO(b""), "s16le")
