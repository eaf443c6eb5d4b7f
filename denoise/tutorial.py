"""Where the project's reference data lives, for the notebooks, benchmarks and tests (never the library).

The example audio, evaluation sets, parity fixtures and an offline copy of the pretrained weights live in a
``shared`` folder beside the repository on the project's machines; ``$DENOISE_SHARED`` points elsewhere.
A user's machine may not have it. The library proper (engine, export, evaluation, benchmarks' measuring
code) takes paths as arguments and never looks for this folder; this module is the one place that does,
so notebooks, benchmark scripts and tests find it the same way.

It lives in the package (not beside the notebooks) because all three kinds of caller can import it:
notebooks run from ``notebooks/``, benchmark scripts from the repository root, tests from ``tests/``, and
the Docker image installs the package.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]  # the repository root (an editable install or a checkout)


def shared_dir() -> Path:
    """``$DENOISE_SHARED`` if set, else ``../shared`` beside the repository (it may not exist)."""
    return Path(os.environ.get("DENOISE_SHARED", REPO.parent / "shared")).resolve()


def shared_file(*parts: str) -> Path:
    """A path under :func:`shared_dir`; a one-line ``FileNotFoundError`` saying how to provide it if absent."""
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"reference data {path} is absent (set DENOISE_SHARED or place ../shared)")
    return path


def use_weights_mirror() -> Path | None:
    """Point ``$DENOISE_WEIGHTS_MIRROR`` at the shared weights copy when there is one and it is unset."""
    mirror = shared_dir() / "weights"
    if not mirror.is_dir():
        return None
    os.environ.setdefault("DENOISE_WEIGHTS_MIRROR", str(mirror))
    return Path(os.environ["DENOISE_WEIGHTS_MIRROR"])


class NotebookPaths(NamedTuple):
    repo: Path  # the repository root
    shared: Path  # the reference data folder (may not exist: check ``.is_dir()``)
    out: Path  # this notebook's results folder (created)


def notebook_setup(name: str, out_dir: str | Path = "") -> NotebookPaths:
    """The first call of every notebook: find the data, use the weights mirror, make the results folder.

    ``out_dir`` empty means ``<repository>/runs/notebooks``; results go to ``<out_dir>/<name>``. Prints
    where everything is, so a reader sees at once whether the example data was found.
    """
    shared = shared_dir()
    use_weights_mirror()
    out = Path(out_dir or REPO / "runs" / "notebooks") / name
    out.mkdir(parents=True, exist_ok=True)
    print(f"repository:    {REPO}")
    print(f"example data:  {shared if shared.is_dir() else 'not found (set DENOISE_SHARED)'}")
    print(f"results go to: {out}")
    return NotebookPaths(REPO, shared, out)
