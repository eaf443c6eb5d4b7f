"""The one-click batch: every bad input gets one line and the batch goes on; data is never lost."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO, shared_path

from denoise.cli import main as cli_main

# A private, offline weights store for every test; tests that run the real GTCRN ask for the mirror too
# (and skip without the reference data); the folder checks run everywhere.
pytestmark = pytest.mark.usefixtures("offline_store")


def speech(seconds: float = 1.0, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A short real speech excerpt (shared clean pool) plus white noise, at ``sr``."""
    from denoise.audio import read_audio, resample

    clean = read_audio(shared_path("audio", "clean_speech", "speechbrain__ASR__spk1_snt1.wav"))
    x = resample(clean.samples[0], clean.sample_rate, sr)[: int(seconds * sr)]
    return (x + 0.02 * np.random.default_rng(seed).standard_normal(x.shape)).astype(np.float32)


def run(*args: str) -> int:
    return cli_main(["run", "--model", "gtcrn", "--quiet", *args])


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def make_bad_inputs(inp: Path) -> dict[str, str]:
    """Write every awkward case; returns name -> expected outcome ("done" or a reason fragment)."""
    inp.mkdir(parents=True, exist_ok=True)
    cases: dict[str, str] = {}
    (inp / "not_audio.wav").write_text("this is a text file pretending to be a wav\n" * 20)
    cases["not_audio.wav"] = "not an audio file"
    (inp / "empty.wav").write_bytes(b"")
    cases["empty.wav"] = "empty file"
    sf.write(inp / "good.wav", speech(1.0), 16000, subtype="PCM_16")
    cases["good.wav"] = "done"
    full = (inp / "good.wav").read_bytes()
    (inp / "truncated.wav").write_bytes(full[: len(full) // 2 + 1])  # header promises more than is there
    cases["truncated.wav"] = "done"
    sf.write(inp / "tiny.wav", speech(0.005), 16000)  # 80 samples: shorter than one frame
    cases["tiny.wav"] = "done"
    sf.write(inp / "silent.wav", np.zeros(16000, np.float32), 16000)
    cases["silent.wav"] = "done"
    nan = speech(1.0)
    nan[100:110] = np.nan
    nan[500] = np.inf
    sf.write(inp / "nan.wav", nan, 16000, subtype="FLOAT")
    cases["nan.wav"] = "done"
    sf.write(inp / "four_channels.wav", np.stack([speech(1.0, seed=s) for s in range(4)], 1), 16000)
    cases["four_channels.wav"] = "done"
    for sr in (8000, 22050, 44100, 48000):
        sf.write(inp / f"rate_{sr}.wav", speech(1.0, sr), sr, subtype="PCM_24")
        cases[f"rate_{sr}.wav"] = "done"
    (inp / "sub").mkdir()
    sf.write(inp / "sub" / "deeper.flac", speech(0.5), 16000)
    cases["sub/deeper.flac"] = "done"
    os.symlink(inp / "does_not_exist.wav", inp / "dangling.wav")
    cases["dangling.wav"] = "cannot open"
    os.mkfifo(inp / "pipe.wav")  # would block a naive reader forever
    cases["pipe.wav"] = "not a regular file"
    return cases


def test_every_bad_input_gets_one_line_and_the_batch_goes_on(weights_mirror, tmp_path, capsys) -> None:
    inp, out = tmp_path / "input", tmp_path / "output"
    cases = make_bad_inputs(inp)
    before = digest(inp)
    code = run("-i", str(inp), "-o", str(out))
    err = capsys.readouterr().err
    assert code == 1, "some files failed, so the exit status must say so"
    for name, expected in cases.items():
        lines = [ln for ln in err.splitlines() if ln[:2] in ("✓ ", "✗ ") and ln[2:].startswith(name)]
        assert len(lines) == 1, f"{name}: expected exactly one result line, got {lines}"
        if expected == "done":
            assert lines[0].startswith("✓"), lines[0]
            assert (out / name).is_file()
        else:
            assert lines[0].startswith("✗") and expected in lines[0], lines[0]
            assert not (out / name).exists()
    failed = sum(v != "done" for v in cases.values())
    assert f"failed {failed}" in err
    assert digest(inp) == before, "inputs must never be modified"
    mask = os.umask(0)
    os.umask(mask)
    assert ((out / "good.wav").stat().st_mode & 0o777) == 0o666 & ~mask, "results get the usual permissions"
    assert not list(out.rglob("*.part"))
    hidden = sorted(p.name for p in out.rglob(".*"))
    assert hidden == [".denoise-manifest.jsonl"], "no temp files left, only the results manifest"


def test_outputs_keep_rate_channels_length_and_subtype(weights_mirror, tmp_path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    make_bad_inputs(inp)
    run("-i", str(inp), "-o", str(out))
    for name in [
        "good.wav",
        "four_channels.wav",
        "rate_8000.wav",
        "rate_44100.wav",
        "rate_48000.wav",
        "tiny.wav",
    ]:
        a, b = sf.info(str(inp / name)), sf.info(str(out / name))
        assert (b.samplerate, b.channels, b.frames, b.subtype) == (
            a.samplerate,
            a.channels,
            a.frames,
            a.subtype,
        )
    nan_out, _ = sf.read(out / "nan.wav")
    assert np.isfinite(nan_out).all()
    silent_out, _ = sf.read(out / "silent.wav")
    assert not silent_out.any()
    assert sf.info(str(out / "sub" / "deeper.flac")).format == "FLAC"


def test_denoising_actually_reduces_noise(tmp_path, weights_mirror) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    noise = 0.05 * np.random.default_rng(1).standard_normal(32000).astype(np.float32)
    sf.write(inp / "noise.wav", noise, 16000)
    assert run("-i", str(inp), "-o", str(out)) == 0
    result, _ = sf.read(out / "noise.wav")
    assert np.sqrt(np.mean(result**2)) < 0.3 * np.sqrt(np.mean(noise**2)), "white noise must be suppressed"


def test_resume_skips_done_files_and_overwrite_redoes_them(weights_mirror, tmp_path, capsys) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    sf.write(inp / "a.wav", speech(0.5), 16000)
    sf.write(inp / "b.wav", speech(0.5, seed=2), 16000)
    assert run("-i", str(inp), "-o", str(out)) == 0
    stamp = (out / "a.wav").stat().st_mtime_ns
    capsys.readouterr()
    assert run("-i", str(inp), "-o", str(out)) == 0
    assert "done 0, skipped 2, failed 0" in capsys.readouterr().err
    assert (out / "a.wav").stat().st_mtime_ns == stamp
    assert run("-i", str(inp), "-o", str(out), "--overwrite") == 0
    assert "done 2, skipped 0" in capsys.readouterr().err


def test_empty_input_is_friendly(tmp_path, capsys) -> None:
    (tmp_path / "in").mkdir()
    assert run("-i", str(tmp_path / "in"), "-o", str(tmp_path / "out")) == 0
    assert "no audio files yet" in capsys.readouterr().err


def test_unwritable_output_is_reported_before_any_work(tmp_path, capsys) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    sf.write(inp / "a.wav", speech(0.5), 16000)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert run("-i", str(inp), "-o", str(blocker / "out")) == 2
    assert "not writable" in capsys.readouterr().err


def test_output_folder_equal_to_input_is_refused(tmp_path, capsys) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    sf.write(inp / "a.wav", speech(0.5), 16000)
    before = digest(inp)
    assert run("-i", str(inp), "-o", str(inp)) == 2
    assert digest(inp) == before
    assert "replace your recordings" in capsys.readouterr().err


def test_output_inside_input_is_not_reprocessed(weights_mirror, tmp_path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    sf.write(inp / "a.wav", speech(0.5), 16000)
    assert run("-i", str(inp), "-o", str(inp / "clean")) == 0
    assert run("-i", str(inp), "-o", str(inp / "clean"), "--overwrite") == 0
    assert sorted(p.name for p in (inp / "clean").rglob("*.wav")) == ["a.wav"]


def test_compat_writes_16k_mono_int16(tmp_path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    sf.write(inp / "stereo.flac", np.stack([speech(1.0, 44100), speech(1.0, 44100, 3)], 1), 44100)
    weights = shared_path("fixtures", "frcrn", "frcrn_testweights_seed0.pt")
    code = cli_main(["run", "--model", "frcrn", "--weights", str(weights), "--compat", "modelscope", "-q",
                     "-i", str(inp), "-o", str(out)])  # fmt: skip
    assert code == 0
    info = sf.info(str(out / "stereo.wav"))
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", 16000)


def test_one_click_script_without_weights_exits_2_and_writes_nothing(tmp_path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    with wave.open(str(inp / "a.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((speech(0.5) * 20000).astype("<i2").tobytes())
    env = {**os.environ, "DENOISE_WEIGHTS_DIR": str(tmp_path / "empty_store"), "DENOISE_WEIGHTS_OFFLINE": "1"}
    env.pop("DENOISE_WEIGHTS_MIRROR", None)
    proc = subprocess.run(
        [sys.executable, str(REPO / "1键推理.py"), "-i", str(inp), "-o", str(out), "-q"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert (
        "fetch-weights" in proc.stderr
        and "DENOISE_WEIGHTS_MIRROR" in proc.stderr
        and "--model gtcrn" in proc.stderr
    )
    assert not out.exists() or not any(out.iterdir())


def test_one_click_script_defaults_denoise_input_into_output(weights_mirror, tmp_path) -> None:
    """The script uses input/ and output/ beside itself: run a copy in a scratch workspace."""
    work = tmp_path / "ws"
    (work / "input").mkdir(parents=True)
    script = work / "1键推理.py"
    script.write_text((REPO / "1键推理.py").read_text(encoding="utf-8"), encoding="utf-8")
    sf.write(work / "input" / "talk.wav", speech(1.0, 48000), 48000)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(script), "--model", "gtcrn", "-q"], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sf.info(str(work / "output" / "talk.wav")).samplerate == 48000
