"""The batch runner keeps every promise under hostile conditions (issue 14): one test per case.

The network is replaced by a stand-in (:class:`HalfGain`, installed as ``denoise.engine.Denoiser``) so
each test runs the whole command a user runs in well under a second; the real model's path is covered
by tests/test_batch.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO

import denoise.engine
from denoise.audio import container_for, output_subtype, read_audio, write_audio
from denoise.cli import main as cli_main
from denoise.manifest import MANIFEST_NAME, read_manifest
from denoise_models.atomic import TEMP_PREFIX

REAL_DENOISER = denoise.engine.Denoiser  # before the stand-in below replaces it


class HalfGain:
    """Stands in for Denoiser: halves the signal, writes through the real writer. Hooks for hostile tests."""

    calls: ClassVar[list[Path]] = []
    during: ClassVar[object] = None  # called with (src, dst) while a file is being processed

    def __init__(self, config: object = None, **_: object) -> None:
        self.config = config
        self.backend = SimpleNamespace(name="stand-in")

    def enhance_file(self, src: Path, dst: Path, *, subtype: str | None = None) -> SimpleNamespace:
        HalfGain.calls.append(Path(src))
        audio = read_audio(src)
        if HalfGain.during:
            HalfGain.during(src, dst)
        chosen = subtype or output_subtype(audio, container_for(Path(dst)))
        write_audio(dst, audio.samples * 0.5, audio.sample_rate, subtype=chosen)
        return SimpleNamespace(samples=audio.samples, sample_rate=audio.sample_rate, notes=audio.notes)


@pytest.fixture(autouse=True)
def stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(denoise.engine, "Denoiser", HalfGain)
    HalfGain.calls = []
    HalfGain.during = None


def run(*args: str | Path) -> int:
    return cli_main(["run", "--model", "gtcrn", "--weights", "gtcrn_dns3", "-q", *map(str, args)])


def tone(path: Path, seconds: float = 0.2, sr: int = 16000, channels: int = 1, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = 0.3 * np.random.default_rng(seed).standard_normal((int(seconds * sr), channels))
    sf.write(os.fsencode(path), x.astype(np.float32), sr, subtype="PCM_16")
    return path


def result_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln[:2] in ("✓ ", "✗ ", "- ")]


# 1 -------------------------------------------------------------------------------------------------
def test_colliding_output_names_are_planned_apart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    tone(inp / "talk.wav", seed=1)
    tone(inp / "talk.flac", seed=2)
    assert run("-i", inp, "-o", out, "--format", "wav", "-v") == 0
    err = capsys.readouterr().err
    assert "name clash" in err and "talk.flac.wav" in err
    kept, renamed = sf.read(out / "talk.wav")[0], sf.read(out / "talk.flac.wav")[0]
    assert np.allclose(kept, sf.read(inp / "talk.wav")[0] * 0.5, atol=1e-4)
    assert np.allclose(renamed, sf.read(inp / "talk.flac")[0] * 0.5, atol=1e-4)
    assert run("-i", inp, "-o", out, "--format", "wav") == 0
    assert "done 0, skipped 2" in capsys.readouterr().err


def test_unresolvable_collision_is_refused_before_any_write(tmp_path: Path, capsys) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    for name in ("talk.wav", "talk.flac", "talk.flac.wav"):
        tone(inp / name)
    assert run("-i", inp, "-o", out, "--format", "wav") == 2
    assert "would both be written to" in capsys.readouterr().err
    assert not out.exists() or list(out.iterdir()) == []
    assert HalfGain.calls == []


# 2 -------------------------------------------------------------------------------------------------
def test_output_inside_input_is_excluded_by_resolved_path(tmp_path: Path, monkeypatch, capsys) -> None:
    rec = tmp_path / "rec"
    tone(rec / "a.wav")
    (tmp_path / "link").symlink_to(rec)
    monkeypatch.chdir(tmp_path)
    assert run("-i", "rec", "-o", "rec/clean") == 0
    assert run("-i", "link", "-o", "rec/clean", "--overwrite") == 0
    assert sorted(p.relative_to(rec).as_posix() for p in rec.rglob("*.wav")) == ["a.wav", "clean/a.wav"]


def test_walk_follows_links_once_and_counts_what_it_leaves(tmp_path: Path, capsys) -> None:
    inp, out, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    tone(inp / "a.wav")
    tone(elsewhere / "b.wav")
    (inp / "linked").symlink_to(elsewhere)
    (inp / "loop").symlink_to(inp)
    tone(inp / ".hidden.wav")
    (inp / "noext").write_bytes((inp / "a.wav").read_bytes())
    (inp / "notes.txt").write_text("not audio")
    assert run("-i", inp, "-o", out, "-v") == 0
    err = capsys.readouterr().err
    assert (out / "a.wav").is_file() and (out / "linked" / "b.wav").is_file()
    assert not (out / "loop").exists()
    for reason in (
        "hidden file",
        "audio without an extension",
        "not an audio file name",
        "folder already walked",
    ):
        assert f"1 ignored: {reason}" in err, err
    assert "ignored " in err and "noext" in err  # --verbose lists them


def test_single_file_input_and_folder_in_the_way(tmp_path: Path, capsys) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    tone(inp / "a.wav")
    tone(inp / "b.wav")
    assert run("-i", inp / "a.wav", "-o", out) == 0
    assert [p.name for p in out.glob("*.wav")] == ["a.wav"]
    (out / "b.wav").mkdir()
    capsys.readouterr()
    assert run("-i", inp, "-o", out) == 1
    lines = result_lines(capsys.readouterr().err)
    assert any(ln.startswith("✗ b.wav: a folder is in the way") for ln in lines), lines


# 3 -------------------------------------------------------------------------------------------------
def test_half_copied_wav_is_noted_and_redone_once_complete(tmp_path: Path, capsys) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    full = tone(tmp_path / "full.wav", seconds=1.0).read_bytes()
    inp.mkdir()
    (inp / "a.wav").write_bytes(full[: 44 + 16000])  # header promises 1.0 s, 0.5 s arrived
    assert run("-i", inp, "-o", out) == 0
    assert (
        "incomplete: header promises 1.0 s, file holds 0.5 s — still being copied?" in capsys.readouterr().err
    )
    (inp / "a.wav").write_bytes(full)  # the copy completes
    assert run("-i", inp, "-o", out) == 0
    assert "done 1, skipped 0" in capsys.readouterr().err
    assert sf.info(str(out / "a.wav")).frames == 16000


def test_input_growing_while_processed_is_not_done(tmp_path: Path, capsys) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    tone(inp / "a.wav")

    def grow(src: Path, dst: Path) -> None:  # the copy goes on while we work
        with open(src, "ab") as fh:
            fh.write(b"\0" * 64)

    HalfGain.during = grow
    assert run("-i", inp, "-o", out) == 1
    assert "changed while it was processed" in capsys.readouterr().err
    assert not (out / "a.wav").exists()
    HalfGain.during = None
    assert run("-i", inp, "-o", out) == 0  # redone on the next run


# 4 -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_mid_write_ends_cleanly_and_resumes(
    tmp_path: Path, capsys, monkeypatch, signum, code
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    for name in ("a.wav", "b.wav", "c.wav"):
        tone(inp / name)
    real_write = sf.SoundFile.write

    def write_then_signal(self: sf.SoundFile, data: np.ndarray) -> None:
        real_write(self, data)
        if len(HalfGain.calls) == 2:  # in the middle of writing the second file
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(sf.SoundFile, "write", write_then_signal)
    # What a terminal's Ctrl-C reaches: Python's own SIGINT handler. A test runner started in the background
    # by a non-interactive shell inherits SIGINT ignored, which no program sees; put the handler back.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert run("-i", inp, "-o", out) == code
    finally:
        signal.signal(signal.SIGINT, previous)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "AssertionError" not in err
    assert "done 1, skipped 0, failed 0" in err and "interrupted — rerun to resume" in err
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "a.wav"]
    monkeypatch.setattr(sf.SoundFile, "write", real_write)
    assert run("-i", inp, "-o", out) == 0
    assert "done 2, skipped 1" in capsys.readouterr().err


# 5 -------------------------------------------------------------------------------------------------
def test_stale_temps_of_killed_runs_are_removed(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    tone(inp / "a.wav")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = [
        out / f"{TEMP_PREFIX}{dead.stdout.strip()}-0123abcd.wav",
        out / "sub" / f"{TEMP_PREFIX}1-0123abcd",
    ]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a result")
    os.utime(stale[1], (1, 1))  # pid 1 lives, but a day-old temp is stale anyway
    assert run("-i", inp, "-o", out) == 0
    assert not any(p.exists() for p in stale)


# 6 -------------------------------------------------------------------------------------------------
@pytest.mark.slow  # a subprocess or DNSMOS model load: 10-60 s on the shared 2-core box
def test_full_disk_fails_the_file_with_a_reason_and_goes_on(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    tone(inp / "big.wav", seconds=8.0)  # 256 kB out: past the limit below
    tone(inp / "small.wav", seconds=0.2)
    script = textwrap.dedent(
        f"""
        import resource, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import denoise.engine, test_batch_promises as t
        denoise.engine.Denoiser = t.HalfGain
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        sys.exit(t.run("-i", {str(inp)!r}, "-o", {str(out)!r}))
        """
    )
    proc = subprocess.run([sys.executable, "-O", "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "✗ big.wav: file too large for this file system or limit (wrote 0.1 of 0.3 MB)" in proc.stderr
    assert "Exception ignored" not in proc.stderr and "AssertionError" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "small.wav"]


# 7 -------------------------------------------------------------------------------------------------
def test_long_odd_and_non_utf8_names(tmp_path: Path, capsys) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    long_name = "录" * 82 + ".wav"  # 250 bytes
    gbk = os.fsdecode("中文".encode("gbk")) + ".wav"
    tone(inp / long_name)
    tone(inp / gbk)
    tone(inp / "two\nlines.wav")
    tone(inp / ("a" * 251 + ".au"))  # 254 bytes; as .flac it would be 256
    assert run("-i", inp, "-o", out, "--format", "flac") == 1
    lines = result_lines(capsys.readouterr().err)
    assert len(lines) == 4, lines
    assert any(ln.startswith("✓ two\\nlines.wav") for ln in lines)
    assert any(ln.startswith("✓ \\xd6\\xd0\\xce\\xc4.wav") for ln in lines)
    assert any("output name would be 256 bytes, over the 255-byte limit" in ln for ln in lines)
    assert (out / ("录" * 82 + ".flac")).is_file() and (out / (gbk[:-4] + ".flac")).is_file()


# 8 -------------------------------------------------------------------------------------------------
def test_pathological_files_are_refused_with_one_line(
    tmp_path: Path, capsys, monkeypatch, weights_mirror
) -> None:
    import denoise.audio.probe as probe

    monkeypatch.setattr(denoise.engine, "Denoiser", REAL_DENOISER)  # the real, streaming engine

    inp, out = tmp_path / "in", tmp_path / "out"
    tone(inp / "one_hz.wav", seconds=200, sr=1)
    tone(inp / "many.wav", seconds=0.01, channels=40)
    tone(inp / "long.wav", seconds=2.0)
    monkeypatch.setattr(probe, "MEMORY_BUDGET_BYTES", 500_000)  # 2 s mono needs ~768 kB held whole
    assert run("-i", inp, "-o", out) == 1
    lines = result_lines(capsys.readouterr().err)
    assert "✗ one_hz.wav: sample rate 1 Hz is outside 4,000–384,000 Hz" in lines
    assert "✗ many.wav: 40 channels; at most 32 are processed" in lines
    # the batch streams: a file longer than the memory budget holds whole is processed, not refused ...
    assert any(ln.startswith("✓ long.wav") for ln in lines)
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_NAME, "long.wav"])
    # ... while a whole-file read of it (compat mode, eval, the array API) is refused with one line
    from denoise.audio import AudioError, read_audio

    with pytest.raises(AudioError, match=r"would need about .* to hold the whole file"):
        read_audio(inp / "long.wav")


# 9 -------------------------------------------------------------------------------------------------
def test_opus_output_is_opus(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    tone(inp / "a.wav")
    assert run("-i", inp, "-o", out, "--format", "opus") == 0
    assert sf.info(str(out / "a.opus")).subtype == "OPUS"


@pytest.mark.parametrize(
    "option", [["--format", "xyz"], ["--subtype", "PCM_99"], ["--format", "flac", "--subtype", "FLOAT"]]
)
def test_bad_format_or_subtype_exits_2_before_loading(tmp_path: Path, capsys, option: list[str]) -> None:
    tone(tmp_path / "in" / "a.wav")
    assert run("-i", tmp_path / "in", "-o", tmp_path / "out", *option) == 2
    assert "error:" in capsys.readouterr().err and HalfGain.calls == []


def test_second_run_on_the_same_output_exits_2(tmp_path: Path, capsys) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    tone(inp / "a.wav")
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what a running batch holds
        assert run("-i", inp, "-o", out) == 2
        assert "another run is writing to" in capsys.readouterr().err
    finally:
        os.close(fd)
    assert run("-i", inp, "-o", out) == 0


def test_wait_queues_behind_the_other_run(tmp_path: Path, capsys) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    tone(inp / "a.wav")
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    threading.Timer(1.0, os.close, [fd]).start()  # the other run finishes a second later
    assert run("-i", inp, "-o", out, "--wait") == 0
    assert "waiting for the other run" in capsys.readouterr().err
    assert (out / "a.wav").is_file()


# 10 ------------------------------------------------------------------------------------------------
def test_manifest_row_per_input_and_resume_rules(tmp_path: Path, capsys) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    for name in ("keep.wav", "empty.wav", "broken.wav", "other.wav"):
        tone(inp / name)
    (inp / "bad.wav").write_text("not audio")
    assert run("-i", inp, "-o", out, "--hash") == 1
    rows = read_manifest(out / MANIFEST_NAME)
    assert sorted((Path(r["input"]).name, r["status"]) for r in rows) == [
        ("bad.wav", "failed"), ("broken.wav", "done"), ("empty.wav", "done"), ("keep.wav", "done"),
        ("other.wav", "done"),
    ]  # fmt: skip
    keep = next(r for r in rows if r["input"].endswith("keep.wav"))
    assert (keep["rate"], keep["channels"], keep["output_frames"], len(keep["input_sha256"])) == (
        16000,
        1,
        3200,
        64,
    )
    (out / "empty.wav").write_bytes(b"")
    broken = (out / "broken.wav").read_bytes()
    (out / "broken.wav").write_bytes(broken[:-100] + b"\0" * 100)  # same size, header still fine: kept
    (out / "broken.wav").write_bytes(broken[:100])
    capsys.readouterr()
    HalfGain.calls = []
    assert run("-i", inp, "-o", out) == 1
    assert sorted(p.name for p in HalfGain.calls) == ["bad.wav", "broken.wav", "empty.wav"]
    HalfGain.calls = []
    assert run("-i", inp, "-o", out, "--atten-lim-db", "12") == 1  # other settings: all redone
    assert len(HalfGain.calls) == 5


def test_inputs_from_a_list(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    tone(inp / "x" / "a.wav")
    tone(inp / "y" / "b.wav")
    (tmp_path / "list.csv").write_text("path,speaker\nin/x/a.wav,1\nin/y/b.wav,2\n")
    assert run("-i", tmp_path / "list.csv", "-o", out) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav")) == ["x/a.wav", "y/b.wav"]
    (tmp_path / "list.jsonl").write_text(json.dumps({"path": str(inp / "x" / "a.wav")}) + "\n")
    assert run("-i", tmp_path / "list.jsonl", "-o", tmp_path / "out2") == 0
    assert (tmp_path / "out2" / "a.wav").is_file()


@pytest.mark.slow  # a subprocess or DNSMOS model load: 10-60 s on the shared 2-core box
def test_score_adds_dnsmos_before_and_after(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    tone(inp / "a.wav", seconds=1.0)
    assert run("-i", inp, "-o", out, "--score") == 0
    (row,) = read_manifest(out / MANIFEST_NAME)
    for name in ("sig", "bak", "ovrl"):
        assert 1.0 <= row[f"dnsmos_{name}_before"] <= 5.0 and 1.0 <= row[f"dnsmos_{name}_after"] <= 5.0
