"""Short files batched together (``--batch-size`` > 1, the default on a GPU): the same bits as one at a time.

Runs the GPU's batching logic on the CPU (a :class:`BatchGate` with ``batch_size=4``): fixed-shape calls,
rows of different files in one call, GTCRN's whole-signal stream calls and FRCRN's chunks, files sorted
by length, and an interrupted run. ``make gpu-check`` (``batching``) runs the same comparison on CUDA.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import interrupted_run

from denoise.batch import Status, run_batch
from denoise.engine import Denoiser
from denoise.engine.batching import BatchGate, Cancelled, FilesTogether, sort_by_length
from denoise.manifest import MANIFEST_NAME, read_manifest
from denoise_models.atomic import TEMP_PREFIX


def clip(path: Path, seconds: float, sr: int = 16000, channels: int = 1, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.3 * np.sin(2 * np.pi * (180 + 40 * seed) * t) * (1 + np.sin(2 * np.pi * 3 * t))
    x = tone[:, None] + 0.05 * rng.standard_normal((t.size, channels))
    sf.write(os.fsencode(path), x.astype(np.float32), sr, subtype="PCM_16")
    return path


def corpus(folder: Path, seconds: float) -> list[Path]:
    """Files that share network widths (equal lengths, stereo, 48 kHz) and some that do not."""
    files = [clip(folder / f"same{k}.wav", seconds, seed=k) for k in range(4)]
    files += [clip(folder / f"stereo{k}.wav", seconds, channels=2, seed=10 + k) for k in range(2)]
    files += [clip(folder / "wide.wav", seconds, sr=48000, channels=2, seed=20)]
    files += [clip(folder / f"other{k}.wav", seconds * (0.6 + 0.1 * k), seed=30 + k) for k in range(3)]
    return files


@pytest.mark.parametrize("arch", ["gtcrn", "frcrn"])
def test_files_batched_together_equal_one_at_a_time_bit_for_bit(
    arch: str, weights_mirror: Path, tmp_path: Path
) -> None:
    files = corpus(tmp_path / "in", 1.5 if arch == "gtcrn" else 0.5)  # FRCRN: ~10x GTCRN's CPU per second
    # GTCRN: its real weights; FRCRN: seeded random ones (the official weights are not downloadable here).
    d = Denoiser(model=arch, weights="default" if arch == "gtcrn" else None, device="cpu", batch_size=4)
    assert isinstance(d.backend, BatchGate)
    alone = tmp_path / "alone"
    for f in files:  # one at a time: the gate has no other client, every call still [4, width]
        d.enhance_file(f, alone / f.name, subtype="FLOAT")
    before = d.backend.stats.shared
    assert before == 0, "one file at a time never shares a call"
    summary = run_batch(tmp_path / "in", tmp_path / "out", lambda: d, subtype="FLOAT", progress=False,
                        echo=lambda _: None)  # fmt: skip
    assert summary.exit_code == 0 and summary.count(Status.DONE) == len(files)
    assert d.backend.stats.shared > 0, "some calls carried rows of several files"
    for f in files:  # FLOAT output: any difference in any bit of the network's output shows
        a, b = sf.read(alone / f.name)[0], sf.read(tmp_path / "out" / f.name)[0]
        assert a.shape == b.shape and np.array_equal(a, b), f.name
    rows = read_manifest(tmp_path / "out" / MANIFEST_NAME)
    assert sorted(Path(r["input"]).name for r in rows) == sorted(f.name for f in files)


class Recording:
    """A backend that records each call's shape and returns its input doubled."""

    name, arch, sample_rate, hop_length, min_samples, is_gpu, stateful = (
        "rec",
        "gtcrn",
        16000,
        256,
        512,
        True,
        True,
    )

    def __init__(self) -> None:
        self.shapes: list[tuple[int, int]] = []

    def process(self, batch: np.ndarray) -> np.ndarray:
        self.shapes.append(batch.shape)
        return batch * 2.0


def test_the_gate_pads_to_fixed_shapes_and_waits_only_for_its_clients() -> None:
    backend = Recording()
    gate = BatchGate(backend, rows=4)
    x = np.ones((1, 1000), np.float32)
    # No client registered: a call runs at once, padded to 4 rows and the valid width (a multiple of 256).
    np.testing.assert_array_equal(gate.process(x), 2 * x)
    assert backend.shapes == [(4, 1024)]
    # Three clients, widths 1000, 1000 and 1100 (valid 1024, 1024, 1280): the first two share a call once
    # every client waits; a row never waits for a client that has left.
    results: dict[int, np.ndarray] = {}
    started = threading.Barrier(3)

    def client(k: int, width: int) -> None:
        with gate.client():
            started.wait()
            time.sleep(0.05 * k)
            results[k] = gate.process(np.full((1, width), k + 1, np.float32))

    threads = [threading.Thread(target=client, args=(k, w)) for k, w in enumerate((1000, 1000, 1100))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == [0, 1, 2] and all(np.all(results[k] == 2 * (k + 1)) for k in results)
    assert sorted(backend.shapes[1:]) == [(4, 1024), (4, 1280)] and gate.stats.shared == 1
    # More rows than a call holds: split into fixed-shape calls.
    assert gate.process(np.ones((6, 300), np.float32)).shape == (6, 300)
    assert backend.shapes[-2:] == [(4, 512), (4, 512)]
    # Cancelled: a waiting call and every later one raise (the run is being interrupted).
    with gate.client(), gate.client():
        gate.cancel()
        with pytest.raises(Cancelled):
            gate.process(x)
    gate.reset()
    assert gate.process(x).shape == x.shape


def test_files_are_sorted_by_length_unreadable_first(tmp_path: Path) -> None:
    long, short = clip(tmp_path / "long.wav", 2.0), clip(tmp_path / "short.wav", 0.5)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio")
    pairs = [(long, 1), (short, 2), (broken, 3)]
    assert sort_by_length(pairs, key=lambda p: p[0]) == [(broken, 3), (short, 2), (long, 1)]


def test_files_together_needs_a_gate() -> None:
    d = Denoiser(model="gtcrn", weights=None, device="cpu")  # batch_size 1 on a CPU: no gate
    with pytest.raises(ValueError, match="batch_size > 1"):
        FilesTogether(d, lambda *_: None, 2)


RUNNER = """
import sys, time
import numpy as np
from pathlib import Path
from denoise.batch import print_summary, run_batch
from denoise.engine import Denoiser

class Slow:
    name, arch, sample_rate, hop_length, min_samples, is_gpu = "slow", "frcrn", 16000, 320, 640, False
    def process(self, batch):
        time.sleep(0.3)
        return batch * 0.5

d = Denoiser(model="frcrn", backend=Slow(), batch_size=4)
summary = run_batch(Path(sys.argv[1]), Path(sys.argv[2]), lambda: d, progress=False)
print_summary(summary)
sys.exit(summary.exit_code)
"""


@pytest.mark.slow  # ~10 s
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_batched_run_leaves_only_whole_files_with_their_rows(
    tmp_path: Path, signum: int
) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    for k in range(40):
        clip(inp / f"f{k:02d}.wav", 0.3 + 0.01 * (k % 3), seed=k)
    code, err = interrupted_run(
        [sys.executable, "-c", RUNNER, str(inp), str(out)], out / MANIFEST_NAME, signum
    )
    assert code == 128 + signum, err
    assert "interrupted" in err and "Traceback" not in err, err
    rows = read_manifest(out / MANIFEST_NAME)
    assert 3 <= len(rows) < 40 and all(r["status"] == "done" for r in rows)
    for row in rows:  # every row has its whole output, and nothing else was published
        assert sf.info(row["output"]).frames == sf.info(row["input"]).frames
    assert sorted(p.name for p in out.glob("*.wav")) == sorted(Path(r["output"]).name for r in rows)
    assert not list(out.rglob(f"{TEMP_PREFIX}*"))
