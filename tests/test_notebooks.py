"""The tutorial notebooks: stored without outputs, and each one executes headless from a clean checkout.

Execution uses the notebooks' fast settings (``DENOISE_NOTEBOOK_FAST=1``, read in each parameters cell),
no network (``DENOISE_WEIGHTS_OFFLINE=1``; the GTCRN weights come from the shared mirror into a temporary
store) and a temporary results folder (``DENOISE_NOTEBOOK_OUT``), so nothing is written into the checkout.
The same can be run by hand with ``pytest --nbmake notebooks`` after exporting those variables.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, shared_path

nbformat = pytest.importorskip("nbformat")

NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
EXPECTED = ["01_quick_start", "02_spectrograms", "03_losses", "04_finetune_custom_noise", "05_onnx_int8"]
CELL_TIMEOUT_S = 300  # one cell; the whole notebook is bounded by the pytest timeout below


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def test_every_tutorial_is_present() -> None:
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


# What restores a notebook to its committed form after running it.
STRIP_COMMAND = (
    "jupyter nbconvert --clear-output --ClearMetadataPreprocessor.enabled=True "
    "--ClearMetadataPreprocessor.preserve_cell_metadata_mask=tags "
    "\"--ClearMetadataPreprocessor.preserve_nb_metadata_mask=['kernelspec','language_info']\" "
    "--inplace notebooks/*.ipynb"
)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_stripped(path: Path) -> None:
    """Notebooks go into git without outputs, execution counts, run metadata or widget state."""
    nb = _read(path)
    fix = f"{path.name}: strip it before committing: {STRIP_COMMAND}"
    code_cells = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    with_outputs = [i for i, c in code_cells if c.get("outputs") or c.get("execution_count") is not None]
    assert not with_outputs, f"code cells {with_outputs} hold outputs or execution counts; {fix}"
    run_metadata = [i for i, c in enumerate(nb.cells) if set(c.metadata) - {"tags"}]
    assert not run_metadata, f"cells {run_metadata} carry metadata other than tags; {fix}"
    assert "widgets" not in nb.metadata, f"saved widget state in the notebook metadata; {fix}"
    assert not any(c.get("attachments") for c in nb.cells), f"{path.name}: cell attachments"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernelspec python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_opens_as_a_tutorial(path: Path) -> None:
    """Each notebook opens with what it teaches and how long it takes, and has a parameters cell."""
    nb = _read(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert "What you will learn" in first.source and "**Time:**" in first.source
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "DENOISE_NOTEBOOK_FAST" in params[0].source
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "from denoise" in code or "from model" in code  # it calls the library, not a copy of it


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_setup_is_one_call(path: Path) -> None:
    """One setup helper (denoise.tutorial) instead of a copied cell: found data, mirror, results folder."""
    code = [c.source for c in _read(path).cells if c.cell_type == "code"]
    setup = [src for src in code if "notebook_setup(" in src]
    assert len(setup) == 1 and f'notebook_setup("{path.stem}", OUT_DIR)' in setup[0]
    assert not any('environ.get("DENOISE_SHARED"' in src for src in code), "the look-up was copied again"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_hooks_into_network_internals(path: Path) -> None:
    """Notebooks are thin clients of the public API: masks come from ``forward_outputs``, not forward hooks."""
    code = "\n".join(c.source for c in _read(path).cells if c.cell_type == "code")
    assert "register_forward" not in code


@pytest.fixture(scope="module")
def notebook_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    shared = shared_path()
    weights = shared / "weights"
    if not (weights / "gtcrn_dns3_stream.tar").is_file():
        pytest.skip(f"the GTCRN weights mirror {weights} is absent")
    base = tmp_path_factory.mktemp("notebooks")
    return {
        "DENOISE_NOTEBOOK_FAST": "1",
        "DENOISE_SHARED": str(shared),
        "DENOISE_WEIGHTS_MIRROR": str(weights),
        "DENOISE_WEIGHTS_DIR": str(base / "weights"),
        "DENOISE_WEIGHTS_OFFLINE": "1",
        "DENOISE_NOTEBOOK_OUT": str(base / "out"),
        # One thread per process: on a shared 2-core machine oversubscribed torch threads are many times slower.
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        # The kernel is this interpreter (its venv), wherever pytest was started from.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, notebook_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every cell in a fresh kernel (cwd = notebooks/, as Jupyter does); no cell may raise."""
    from nbclient import NotebookClient

    for key, value in notebook_env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    nb = _read(path)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, on the first error
    elapsed = time.perf_counter() - started
    print(f"{path.name}: executed in {elapsed:.1f} s")

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors
    tracebacks = [o.text for o in outputs if o.output_type == "stream" and "Traceback" in o.text]
    assert not tracebacks, tracebacks
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2, f"{path.name}: expected rendered figures, found {len(images)}"
    if path.stem == "01_quick_start":
        html = "".join(str(o.get("data", {}).get("text/html", "")) for o in outputs)
        assert html.count("<audio") >= 2, "notebook 1 shows before/after audio players"
    if path.stem == "02_spectrograms":
        widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert widgets, "notebook 2 shows interactive controls"
