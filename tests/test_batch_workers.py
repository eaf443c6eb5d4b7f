"""``denoise run --workers N``: the same bytes as one worker, every input one row, clean interruptions.

The real GTCRN runs in the bit-identity test; the hostile cases (a worker killed mid-file, SIGTERM or
Ctrl-C to the run) use :class:`SlowHalf`, a stand-in denoiser that writes through the real atomic sink,
so each case costs worker start-up (a spawned Python) and little else.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from conftest import interrupted_run

import denoise.workers as workers
from denoise.audio import AudioSink, read_audio
from denoise.batch import Status, run_batch
from denoise.cli import main as cli_main
from denoise.engine import DenoiserConfig
from denoise.manifest import MANIFEST_NAME, read_manifest
from denoise.workers import DenoiserFactory, resolve_workers
from denoise_models.atomic import TEMP_PREFIX

TESTS = Path(__file__).resolve().parent


def clip(path: Path, seconds: float, sr: int = 16000, channels: int = 1, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t)[:, None] + 0.05 * rng.standard_normal((t.size, channels))
    sf.write(os.fsencode(path), x.astype(np.float32), sr, subtype="PCM_16")
    return path


def temps(folder: Path) -> list[Path]:
    return list(folder.rglob(f"{TEMP_PREFIX}*"))


# ------------------------------------------------------------------ the real model, 1 vs 2 workers
def test_two_workers_write_the_same_bytes_as_one(weights_mirror: Path, tmp_path: Path) -> None:
    inp = tmp_path / "in"
    for k in range(4):
        clip(inp / f"a{k}.wav", 0.6 + 0.2 * k, seed=k)
    clip(inp / "sub" / "wide.wav", 0.7, sr=48000, channels=2, seed=9)  # resampling, full band, 2 channels
    common = ["run", "--model", "gtcrn", "--weights", "gtcrn_dns3", "--threads", "1", "-q", "-i", str(inp)]
    assert cli_main([*common, "-o", str(tmp_path / "one"), "--workers", "1"]) == 0
    assert cli_main([*common, "-o", str(tmp_path / "two"), "--workers", "2"]) == 0
    names = sorted(p.relative_to(inp) for p in inp.rglob("*.wav"))
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    rows = read_manifest(tmp_path / "two" / MANIFEST_NAME)
    assert sorted(Path(r["input"]).relative_to(inp) for r in rows) == names
    assert {r["status"] for r in rows} == {"done"}
    # A rerun finds everything done: nothing to do, so no worker (and no model) is started.
    assert cli_main([*common, "-o", str(tmp_path / "two"), "--workers", "2"]) == 0
    assert len(read_manifest(tmp_path / "two" / MANIFEST_NAME)) == 2 * len(names)


# ------------------------------------------------------------------ a stand-in for the hostile cases
class SlowHalf:
    """Halves the signal through the real sink; ``pause`` seconds inside it; files named ``crash*`` kill
    their worker (SIGKILL) with the temp file open. Records its pid in ``pids/`` (to check it is gone)."""

    def __init__(self, pause: float, pids: Path | None) -> None:
        self.pause = pause
        if pids:
            pids.mkdir(exist_ok=True)
            (pids / str(os.getpid())).touch()

    def enhance_file(self, src: Path, dst: Path, *, subtype: str | None = None) -> SimpleNamespace:
        audio = read_audio(src)
        with AudioSink(dst, audio.sample_rate, audio.samples.shape[0], subtype=subtype or "PCM_16") as sink:
            sink.write(audio.samples[:, :10] * 0.5)
            if Path(src).name.startswith("crash"):
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(self.pause)
            sink.write(audio.samples[:, 10:] * 0.5)
        return SimpleNamespace(samples=audio.samples, sample_rate=audio.sample_rate, notes=[])


class SlowHalfFactory(DenoiserFactory):
    def __init__(self, pause: float = 0.0, pids: Path | None = None) -> None:
        super().__init__(DenoiserConfig(model="gtcrn", weights=None, device="cpu"), announce=False)
        object.__setattr__(self, "pause", pause)
        object.__setattr__(self, "pids", pids)

    def __call__(self) -> SlowHalf:
        return SlowHalf(self.pause, self.pids)

    def for_worker(self, *, announce: bool) -> SlowHalfFactory:
        return self


def test_a_killed_worker_costs_its_file_one_failed_row_and_the_batch_goes_on(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    names = [f"f{k}.wav" for k in range(5)] + ["crash.wav"] + [f"g{k}.wav" for k in range(4)]
    for k, name in enumerate(names):
        clip(inp / name, 0.2, seed=k)
    summary = run_batch(inp, out, SlowHalfFactory(), workers=2, progress=False, echo=lambda _: None)
    by_name = {r.source.name: r for r in summary.results}
    assert sorted(by_name) == sorted(names)
    assert by_name["crash.wav"].status is Status.FAILED
    assert "worker process died" in by_name["crash.wav"].reason
    assert all(r.status is Status.DONE for n, r in by_name.items() if n != "crash.wav")
    assert summary.exit_code == 1
    rows = read_manifest(out / MANIFEST_NAME)
    assert sorted(Path(r["input"]).name for r in rows) == sorted(names)
    assert not temps(out) and not (out / "crash.wav").exists()
    for name in names[:5]:
        assert sf.info(out / name).frames == sf.info(inp / name).frames


RUNNER = """
import sys
from pathlib import Path
sys.path[:0] = [{tests!r}]
from test_batch_workers import SlowHalfFactory
from denoise.batch import print_summary, run_batch
summary = run_batch(Path(sys.argv[1]), Path(sys.argv[2]), SlowHalfFactory(0.4, Path(sys.argv[3])), workers=2,
                    progress=False)
print_summary(summary)
sys.exit(summary.exit_code)
"""


@pytest.mark.slow  # ~15 s: a Python, two spawned workers
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_run_stops_its_workers_and_leaves_only_whole_files(
    tmp_path: Path, signum: int
) -> None:
    inp, out, pids = tmp_path / "in", tmp_path / "out", tmp_path / "pids"
    for k in range(40):
        clip(inp / f"f{k:02d}.wav", 0.2, seed=k)
    argv = [sys.executable, "-c", RUNNER.format(tests=str(TESTS)), str(inp), str(out), str(pids)]
    code, err = interrupted_run(argv, out / MANIFEST_NAME, signum)
    assert code == 128 + signum, err
    assert "interrupted" in err and "Traceback" not in err, err
    rows = read_manifest(out / MANIFEST_NAME)
    assert 3 <= len(rows) < 40
    assert all(r["status"] == "done" for r in rows)
    for row in rows:  # every row has its whole output, and nothing else was published
        assert sf.info(row["output"]).frames == sf.info(row["input"]).frames
    assert sorted(p.name for p in out.glob("*.wav")) == sorted(Path(r["output"]).name for r in rows)
    assert not temps(out)
    for pid in (int(p.name) for p in pids.iterdir()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    # The rerun resumes: what is done stays, the rest is made (in this process: quicker to start).
    summary = run_batch(inp, out, SlowHalfFactory(), workers=1, progress=False, echo=lambda _: None)
    assert summary.count(Status.SKIPPED) == len(rows) and summary.count(Status.DONE) == 40 - len(rows)
    assert json.loads((out / MANIFEST_NAME).read_text().splitlines()[-1])["status"] == "done"


# ------------------------------------------------------------------ --workers auto
def test_auto_is_one_per_core_for_minutes_of_audio_else_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "physical_cores", lambda: 4)
    cpu = DenoiserFactory(DenoiserConfig(model="gtcrn", weights=None, device="cpu"))
    short = [clip(tmp_path / f"s{k}.wav", 0.5, sr=8000, seed=k) for k in range(3)]
    long = [clip(tmp_path / f"l{k}.wav", 50.0, sr=8000, seed=k) for k in range(3)]  # 150 s in all
    assert resolve_workers("auto", long, cpu) == 3  # at most one per file
    assert resolve_workers("auto", long + short, cpu) == 4  # at most one per core
    assert resolve_workers("auto", short, cpu) == 1  # too little audio to pay for starting processes
    assert resolve_workers("auto", long[:1], cpu) == 1  # one file
    gpu = DenoiserFactory(DenoiserConfig(model="gtcrn", weights=None, device="cuda"))
    assert resolve_workers("auto", long, gpu) == 1  # one process keeps a GPU busy
    assert resolve_workers("auto", long, lambda: None) == 1  # cannot be sent to a process
    monkeypatch.setattr(workers, "physical_cores", lambda: 1)
    assert resolve_workers("auto", long, cpu) == 1
    assert resolve_workers(3, short, cpu) == 3  # a number is taken as given
    with pytest.raises(ValueError, match="at least 1"):
        resolve_workers(0, short, cpu)


def test_workers_option_is_checked_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip(tmp_path / "in" / "a.wav", 0.2)
    code = cli_main(["run", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--workers", "two"])
    assert code == 2
    assert "--workers takes 'auto' or a whole number" in capsys.readouterr().err
    assert not (tmp_path / "out" / "a.wav").exists()


# ------------------------------------------------------------------ per-file fixed costs
def test_a_short_file_costs_two_network_calls_and_the_same_result(tmp_path: Path) -> None:
    """Each call of the torch stream costs over a thousand small kernels, so a 3-5 s file is fed in one
    call (margins and end padding included) plus the stream's own end; the result is the block-fed one."""
    from denoise.engine import Denoiser
    from denoise.engine.chunks import StateRunner

    d = Denoiser(model="gtcrn", weights=None, device="cpu", threads=1)
    calls: list[int] = []
    open_stream = d.backend.open_stream

    def counted(batch: int) -> object:
        stream = open_stream(batch)
        push, finish = stream._push, stream._finish
        stream._push = lambda x: (calls.append(x.shape[1]), push(x))[1]
        stream._finish = lambda: (calls.append(0), finish())[1]
        return stream

    d.backend.open_stream = counted
    src = clip(tmp_path / "utt.wav", 3.7, seed=3)
    d.enhance_file(src, tmp_path / "out.wav")
    assert len(calls) == 2, calls  # everything, then the end's reflection
    assert calls[0] % d.backend.hop_length == 0  # padded to whole hops: the flush pads nothing
    d.backend.open_stream = open_stream
    x = sf.read(src, dtype="float32")[0][None]
    block_fed = StateRunner(d.backend, 1, gains=np.ones(1))  # feed=0: a network call per 1000 samples
    ref = np.concatenate(
        [*(block_fed.push(x[:, at : at + 1000]) for at in range(0, x.shape[1], 1000)), block_fed.finish()],
        axis=1,
    )[0]
    y = sf.read(tmp_path / "out.wav", dtype="float32")[0]
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() < 2e-4  # PCM_16 rounding (3e-5) plus float noise of the stream's split


def test_an_interrupt_between_publishing_and_the_row_unpublishes_the_output(tmp_path: Path) -> None:
    """Ctrl-C can land after a file was renamed into place but before its manifest row: the run removes that
    output (every published output has its row), keeps what has rows, and the rerun redoes the file."""

    class PublishThenInterrupted(SlowHalf):
        def enhance_file(self, src: Path, dst: Path, *, subtype: str | None = None) -> SimpleNamespace:
            result = super().enhance_file(src, dst, subtype=subtype)
            if Path(src).name == "b.wav":
                assert Path(dst).exists()  # published
                raise KeyboardInterrupt
            return result

    inp, out = tmp_path / "in", tmp_path / "out"
    for k, name in enumerate(["a.wav", "b.wav", "c.wav"]):
        clip(inp / name, 0.2, seed=k)
    out.mkdir()
    clip(out / "c.wav", 0.1, seed=9)  # an older output of c (no row): not this run's, so it stays
    os.utime(out / "c.wav", ns=(0, 0))
    summary = run_batch(
        inp, out, lambda: PublishThenInterrupted(0.0, None), progress=False, echo=lambda _: None
    )
    assert summary.exit_code == 130
    assert [Path(r["input"]).name for r in read_manifest(out / MANIFEST_NAME)] == ["a.wav"]
    assert sorted(p.name for p in out.glob("*.wav")) == ["a.wav", "c.wav"] and not temps(out)
    assert sf.info(out / "c.wav").frames == 1600  # untouched
    rerun = run_batch(inp, out, lambda: SlowHalf(0.0, None), progress=False, echo=lambda _: None)
    assert rerun.count(Status.SKIPPED) == 1 and rerun.count(Status.DONE) == 2
