"""Shared test helpers: where the read-only reference data lives, and how to skip without it.

Only a test that reads reference data skips without it, and it says which path is missing. Use
:func:`shared_path` inside the test (or a fixture it requests) for files, and the :func:`weights_mirror`
fixture for tests that load the pretrained weights. :func:`offline_store` (never skips) gives a test a
private weights store with no network, so it may be ``autouse`` in a module whose pure-logic tests
(chunk arithmetic, config parsing) must run in a clone without the reference data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Set before anything imports torch: on a 2-core CI box one intra-op thread per process is several times
# faster than two threads contending with pytest's own work (measured: FRCRN tests 47 s vs 170 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The reference data folder, found the one way the project finds it (:mod:`denoise.tutorial`)."""
    from denoise.tutorial import shared_dir as find_shared

    return find_shared()


def shared_path(*parts: str) -> Path:
    """A path under the shared folder; skips the calling test with a clear reason if absent."""
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data {path} is absent (set DENOISE_SHARED or place ../shared)")
    return path


@pytest.fixture
def shared() -> Path:
    return shared_path()


@pytest.fixture
def offline_store(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private weights store (shared by the session's tests), offline: nothing is downloaded. Never skips.

    Without a mirror, loading named weights fails with the store's own one-line error; tests that need
    real weights request :func:`weights_mirror` as well.
    """
    store = tmp_path_factory.getbasetemp() / "store"
    monkeypatch.setenv("DENOISE_WEIGHTS_DIR", str(store))
    monkeypatch.setenv("DENOISE_WEIGHTS_OFFLINE", "1")
    monkeypatch.delenv("DENOISE_WEIGHTS_MIRROR", raising=False)
    return store


@pytest.fixture
def weights_mirror(offline_store: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared offline copy of the pretrained weights as the store's mirror; skips the test without it."""
    mirror = shared_path("weights")
    monkeypatch.setenv("DENOISE_WEIGHTS_MIRROR", str(mirror))
    return mirror


def real_clip_16k(seconds: int = 60) -> np.ndarray:
    """``seconds`` of real noisy speech at 16 kHz: the VoiceBank-DEMAND noisy files back to back (skips without)."""
    from denoise.audio import read_audio, resample

    pieces = []
    for path in sorted(shared_path("eval", "vbd", "noisy").glob("*.wav")):
        audio = read_audio(path)
        pieces.append(resample(audio.samples[0], audio.sample_rate, 16000))
        if sum(map(len, pieces)) >= seconds * 16000:
            break
    clip = np.concatenate(pieces)[: seconds * 16000]
    assert clip.shape[0] == seconds * 16000, "the VoiceBank-DEMAND noisy set is shorter than asked"
    return clip


def interrupted_run(argv: list[str], manifest: Path, signum: int, *, rows: int = 3) -> tuple[int, str]:
    """Run ``argv`` (a Python process with this repository importable), send it ``signum`` as a user would
    once ``manifest`` holds ``rows`` rows (SIGINT to its process group, as a terminal does; SIGTERM to the
    process), and return its exit status and stderr. Whatever happens, it is gone afterwards."""
    import signal
    import subprocess
    import time

    from denoise.manifest import read_manifest

    # As in a terminal, the run must not start with Ctrl-C ignored: a shell without job control (some CI
    # runners) starts background jobs so, ignored signals stay ignored across exec, and Python honours that.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            argv,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: SIGINT goes to the group, as a terminal sends it
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        deadline = time.monotonic() + 60
        while len(read_manifest(manifest)) < rows and time.monotonic() < deadline:
            time.sleep(0.02)
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        err = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err
