"""AudioSink, the one block writer: verified, clipped never wrapped, atomic, interrupt-safe (issue 14: 4, 6, 7, 10)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from denoise.audio import AudioError, AudioSink, write_audio
from denoise_models.atomic import TEMP_PREFIX

ROOT = Path(__file__).resolve().parents[1]


def _noise(channels: int = 2, frames: int = 20_000, scale: float = 0.3) -> np.ndarray:
    return (np.random.default_rng(1).standard_normal((channels, frames)) * scale).astype(np.float32)


def _leftovers(folder: Path) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX)]


@pytest.mark.parametrize(
    ("name", "subtype", "rate"),
    [
        ("a.wav", "PCM_16", 16000),
        ("a.flac", "PCM_24", 48000),
        ("a.wav", "FLOAT", 16000),
        ("a.opus", "OPUS", 48000),
    ],
)
def test_blocks_become_one_verified_file(tmp_path: Path, name: str, subtype: str, rate: int) -> None:
    x = _noise()
    with AudioSink(tmp_path / name, rate, 2, subtype=subtype, expected_frames=x.shape[1]) as sink:
        for start in range(0, x.shape[1], 4096):
            sink.write(x[:, start : start + 4096])
    info = sf.info(str(tmp_path / name))
    assert (info.frames, info.channels, info.samplerate, info.subtype) == (x.shape[1], 2, rate, subtype)
    assert sink.frames == x.shape[1]
    assert _leftovers(tmp_path) == []


def test_opus_name_means_opus_codec(tmp_path: Path) -> None:
    write_audio(tmp_path / "a.opus", _noise(1), 16000)  # no subtype given: the name decides
    assert sf.info(str(tmp_path / "a.opus")).subtype == "OPUS"
    with pytest.raises(AudioError, match="hold OPUS"):
        AudioSink(tmp_path / "b.opus", 16000, 1, subtype="VORBIS")


def test_unsupported_settings_leave_nothing(tmp_path: Path) -> None:
    with (
        pytest.raises(AudioError, match="44100 Hz"),
        AudioSink(tmp_path / "a.opus", 44100, 1, subtype="OPUS"),
    ):
        pass
    assert os.listdir(tmp_path) == []


def test_integer_output_clips_never_wraps(tmp_path: Path) -> None:
    x = np.array([[1.5, -1.5, 0.5, 1.0]], dtype=np.float32)
    with AudioSink(tmp_path / "a.wav", 16000, 1, subtype="PCM_16") as sink:
        sink.write(x)
    got, _ = sf.read(str(tmp_path / "a.wav"), dtype="int16")
    assert got.tolist() == [32767, -32768, 16384, 32767]
    assert sink.clipped == 3


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_interrupted_write_leaves_no_file(tmp_path: Path, error: type[BaseException]) -> None:
    with pytest.raises(error), AudioSink(tmp_path / "a.wav", 16000, 2, subtype="PCM_16") as sink:
        sink.write(_noise())
        raise error()
    assert os.listdir(tmp_path) == []


def test_fewer_frames_than_promised_is_not_published(tmp_path: Path) -> None:
    with (
        pytest.raises(AudioError, match="wrote 20,000 of 30,000 frames"),
        AudioSink(tmp_path / "a.wav", 16000, 2, subtype="PCM_16", expected_frames=30_000) as sink,
    ):
        sink.write(_noise())
    assert os.listdir(tmp_path) == []


def test_odd_names_work(tmp_path: Path) -> None:
    folder = tmp_path / os.fsdecode(b"\xd6\xd0\xce\xc4")  # GBK bytes, not valid UTF-8
    name = "录" * 82 + ".wav"  # 250 bytes in UTF-8: the temp name must not push it past 255
    assert len(name.encode()) == 250
    write_audio(folder / name, _noise(), 16000)
    assert sf.info(os.fsencode(folder / name)).frames == 20_000


@pytest.mark.slow  # a subprocess or DNSMOS model load: 10-60 s on the shared 2-core box
@pytest.mark.parametrize("optimize", ["", "-O"])
def test_full_file_system_gives_a_reason_and_no_result(tmp_path: Path, optimize: str) -> None:
    """RLIMIT_FSIZE makes writes fail with EFBIG past 200 kB, as a full disk would with ENOSPC."""
    script = textwrap.dedent(
        f"""
        import resource, numpy as np
        from denoise.audio import AudioError, write_audio
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        try:
            write_audio({str(tmp_path / "big.wav")!r}, np.zeros((2, 400_000), np.float32), 16000)
        except AudioError as err:
            print("REASON", err)
        """
    )
    proc = subprocess.run(
        [sys.executable, *([optimize] if optimize else []), "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert proc.stdout.strip().startswith("REASON file too large"), proc.stdout + proc.stderr
    assert "of 1.6 MB)" in proc.stdout
    assert proc.stderr == ""
    assert os.listdir(tmp_path) == []
