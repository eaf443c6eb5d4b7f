"""Shared test helpers: where the read-only reference data lives, and how to skip without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Set before anything imports torch: on a 2-core CI box one intra-op thread per process is several times
# faster than two threads contending with pytest's own work (measured: FRCRN tests 47 s vs 170 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """``$DENOISE_SHARED`` if set, else ``../shared`` beside the repository."""
    return Path(os.environ.get("DENOISE_SHARED", REPO.parent / "shared")).resolve()


def shared_path(*parts: str) -> Path:
    """A path under the shared folder; skips the calling test with a clear reason if absent."""
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data {path} is absent (set DENOISE_SHARED or place ../shared)")
    return path


@pytest.fixture
def shared() -> Path:
    return shared_path()
