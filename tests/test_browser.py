"""Notebook 1 in a real browser: JupyterLab on loopback with a token, driven by headless Chromium.

The test starts its own JupyterLab on 127.0.0.1 (random free port, random token) serving a temporary copy
of ``notebooks/01_quick_start.ipynb`` (so autosave can never write outputs into the checkout), opens it in
Debian's ``chromium`` through Playwright (``executable_path``; no browser download), runs every cell from
the Run menu, saves, and checks that

* no cell produced an error output (read back from the saved notebook),
* the page shows the before/after ``<audio>`` players and rendered figures,
* a screenshot of the waveform figure really shows the plot (pixel check), and is kept for CI artifacts.

Skips with the reason when Chromium, Playwright, JupyterLab or the shared reference data are missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, shared_path

pytestmark = pytest.mark.browser

NOTEBOOK = REPO / "notebooks" / "01_quick_start.ipynb"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
RUN_TIMEOUT_S = 240  # all cells, fast settings; about 30 s on an idle 2-core machine
TAB_BLUE = (31, 119, 180)  # matplotlib's default line colour: the enhanced waveform in notebook 1


def _chromium() -> str:
    for candidate in (os.environ.get("DENOISE_CHROMIUM", ""), *CHROMIUM_CANDIDATES, shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Loopback only: never route the test's requests through a proxy from the environment.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _request(url: str, token: str | None, method: str = "GET") -> int:
    """HTTP status of ``url`` (0 when nothing listens yet)."""
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        with _LOCAL.open(urllib.request.Request(url, headers=headers, method=method), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return 0


def _write_lab_settings(settings_dir: Path) -> None:
    """Every cell in the DOM (no windowing), no news fetching: a deterministic page for the checks."""
    tracker = settings_dir / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    notifications = settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notifications.parent.mkdir(parents=True)
    notifications.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))


@contextlib.contextmanager
def _jupyterlab(root: Path, env: dict[str, str], log: Path):
    """A JupyterLab server on 127.0.0.1 with a random token; yields (base_url, token); always stopped."""
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
        "--ip=127.0.0.1", f"--port={port}", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={root.parent / 'settings'}",
        f"--LabApp.workspaces_dir={root.parent / 'workspaces'}", "--LabApp.extension_manager=readonly",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    with log.open("w") as out:
        server = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while _request(f"{base}/api/status", token) != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, token
    finally:
        _request(f"{base}/api/shutdown", token, method="POST")  # also shuts its kernels down
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _kernel_state(base: str, token: str, name: str) -> str:
    """Execution state of the kernel of the session of notebook ``name`` ("" while there is none)."""
    request = urllib.request.Request(f"{base}/api/sessions", headers={"Authorization": f"token {token}"})
    try:
        with _LOCAL.open(request, timeout=10) as response:
            sessions = json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return ""
    states = [
        s["kernel"]["execution_state"]
        for s in sessions
        if s.get("path", "").endswith(name) and s.get("kernel")
    ]
    return states[0] if states else ""


def _wait_for_idle_kernel(base: str, token: str, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _kernel_state(base, token, name) != "idle":
        if time.monotonic() > deadline:
            pytest.fail(f"the kernel of {name} did not become idle in {timeout:.0f} s")
        time.sleep(0.5)


def _prompts(page) -> list[str]:
    return page.eval_on_selector_all(
        ".jp-Notebook .jp-CodeCell .jp-InputArea-prompt", "els => els.map(e => e.textContent.trim())"
    )


def _pixels(png: bytes, box: dict[str, float]) -> tuple[int, int]:
    """(pixels close to matplotlib's blue, distinct colours) inside ``box`` of a screenshot."""
    import io

    import numpy as np
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    x0, y0 = max(int(box["x"]), 0), max(int(box["y"]), 0)
    crop = image[y0 : y0 + int(box["height"]), x0 : x0 + int(box["width"])]
    blue = int((np.abs(crop - np.array(TAB_BLUE)).sum(axis=-1) < 60).sum())
    distinct = len(np.unique(crop.reshape(-1, 3), axis=0)) if crop.size else 0
    return blue, distinct


def test_quick_start_runs_in_jupyterlab(tmp_path: Path) -> None:
    chromium = _chromium()
    playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    pytest.importorskip("jupyterlab", reason="JupyterLab is not installed")
    shared = shared_path()
    if not (shared / "weights" / "gtcrn_dns3_stream.tar").is_file():
        pytest.skip(f"the GTCRN weights mirror {shared / 'weights'} is absent")

    root = tmp_path / "lab"
    root.mkdir()
    notebook = root / NOTEBOOK.name
    shutil.copyfile(NOTEBOOK, notebook)
    _write_lab_settings(tmp_path / "settings")
    env = {
        **os.environ,
        "DENOISE_NOTEBOOK_FAST": "1",
        "DENOISE_SHARED": str(shared),
        "DENOISE_WEIGHTS_MIRROR": str(shared / "weights"),
        "DENOISE_WEIGHTS_DIR": str(tmp_path / "weights"),
        "DENOISE_WEIGHTS_OFFLINE": "1",
        "DENOISE_NOTEBOOK_OUT": str(tmp_path / "out"),
        "OMP_NUM_THREADS": "1",
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    screenshot = tmp_path / "01_quick_start.png"
    started = time.monotonic()
    with _jupyterlab(root, env, tmp_path / "jupyterlab.log") as (base, token):
        assert _request(f"{base}/api/status", None) == 403, (
            "the server must refuse requests without the token"
        )
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium,
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                      "--no-proxy-server", "--disable-background-networking", "--disable-component-update",
                      "--disable-sync"],
            )  # fmt: skip
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1800})
                page.goto(f"{base}/lab/tree/{notebook.name}?token={token}", timeout=90_000)
                page.wait_for_selector(".jp-Notebook .jp-CodeCell", state="visible", timeout=90_000)
                _wait_for_idle_kernel(base, token, notebook.name, 120)

                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

                deadline = time.monotonic() + RUN_TIMEOUT_S
                while True:
                    prompts = _prompts(page)
                    done = prompts and all(p.startswith("[") and p[1:-2].strip().isdigit() for p in prompts)
                    if done and _kernel_state(base, token, notebook.name) == "idle":
                        break
                    if time.monotonic() > deadline:
                        pytest.fail(f"cells did not finish in {RUN_TIMEOUT_S} s; prompts: {prompts}")
                    time.sleep(1.0)

                page.keyboard.press("Control+s")
                page.wait_for_function(
                    "() => !document.querySelector('.jp-mod-current .jp-mod-dirty')", timeout=30_000
                )

                audio = page.locator(".jp-OutputArea-output audio")
                images = page.locator(".jp-OutputArea-output.jp-RenderedImage img")
                assert audio.count() >= 2, "before/after audio players"
                assert images.count() >= 3, "waveforms, spectrograms, DNSMOS chart"
                waveform = images.first
                waveform.scroll_into_view_if_needed()
                page.wait_for_timeout(500)
                png = page.screenshot(path=str(screenshot))
                box = waveform.bounding_box()
                player = audio.last.bounding_box()
            finally:
                browser.close()

    saved = json.loads(notebook.read_text())
    errors = [
        output
        for cell in saved["cells"]
        if cell["cell_type"] == "code"
        for output in cell.get("outputs", [])
        if output["output_type"] == "error"
    ]
    assert not errors, [f"{e['ename']}: {e['evalue']}" for e in errors]
    assert all(c.get("execution_count") for c in saved["cells"] if c["cell_type"] == "code")

    artifacts = os.environ.get("DENOISE_TEST_ARTIFACTS")
    if artifacts:  # CI keeps the screenshot
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, Path(artifacts) / screenshot.name)
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000
    assert box is not None and box["width"] > 300 and box["height"] > 150, box
    blue, distinct = _pixels(png, box)
    assert blue > 500, f"the waveform plot is not visible in the screenshot ({blue} blue pixels)"
    assert distinct > 50, f"the figure area looks blank ({distinct} colours)"
    assert player is not None and player["width"] > 100 and player["height"] > 10, player
    _, player_colours = _pixels(png, player)
    assert player_colours > 5, "the audio player is not drawn in the screenshot"
    print(f"browser test: {time.monotonic() - started:.0f} s; screenshot {screenshot}")
