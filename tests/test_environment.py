"""environment.yml (the image's conda env) against pyproject.toml, and the env's own sanity.

The image installs the project with ``--no-deps`` into the env that environment.yml describes, so
every dependency the code needs must be in environment.yml, with bounds pyproject.toml accepts.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
ENV_NAME = "speech_frcrn_ans_cirm_16k"

# pyproject extras whose packages the image's env must provide too (the notebooks, fine-tuning, ONNX and
# scoring run inside the container). [dev] is for development machines only.
IMAGE_EXTRAS = ("notebooks", "onnx", "train", "eval", "live")
# pyproject name -> the distribution environment.yml provides instead (same import name)
PROVIDED_BY = {"onnxruntime": "onnxruntime-gpu"}
# left out of the image on purpose, with the reason the README repeats
NOT_IN_IMAGE = {"pesq": "sdist only: needs a C toolchain in the image; `pip install pesq` adds it"}


def _load_helper():
    spec = importlib.util.spec_from_file_location("env_pip_part", REPO / "docker" / "env_pip_part.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


env_pip_part = _load_helper()


@pytest.fixture(scope="module")
def env() -> dict:
    return env_pip_part.load_environment(REPO / "environment.yml")


@pytest.fixture(scope="module")
def env_requirements(env) -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in env_pip_part.pip_part(env) if not line.startswith("-")]
    names = [canonicalize_name(r.name) for r in reqs]
    assert len(names) == len(set(names)), f"duplicate entries in environment.yml's pip part: {names}"
    return {canonicalize_name(r.name): r for r in reqs}


@pytest.fixture(scope="module")
def pyproject() -> dict:
    with (REPO / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


def _admitted_versions(*specs: SpecifierSet) -> list[Version]:
    """Probe versions around every bound of ``specs``: enough to compare two specifier sets."""
    probes: set[Version] = {Version("0.0.1"), Version("9999")}
    for spec in specs:
        for item in spec:
            v = Version(item.version.replace(".*", ""))
            major, minor = (*v.release, 0, 0)[:2]
            probes |= {
                v,
                Version(f"{major}.{minor}.9999"),
                Version(f"{major}.{minor + 1}"),
                Version(f"{major + 1}"),
            }
            if v.release[-1] > 0:
                probes.add(Version(".".join(map(str, (*v.release[:-1], v.release[-1] - 1)))))
    return sorted(probes)


def _bounds_compatible(env_spec: SpecifierSet, project_spec: SpecifierSet) -> tuple[bool, str]:
    """Does the env admit some version, and only versions that pyproject.toml accepts as well?"""
    probes = _admitted_versions(env_spec, project_spec)
    env_ok = [v for v in probes if env_spec.contains(v, prereleases=True)]
    if not env_ok:
        return False, f"environment.yml's '{env_spec}' admits no version"
    rejected = [str(v) for v in env_ok if not project_spec.contains(v, prereleases=True)]
    if rejected:
        return (
            False,
            f"environment.yml's '{env_spec}' admits {rejected} which pyproject's '{project_spec}' rejects",
        )
    return True, ""


# ------------------------------------------------------------------------------------------------ file


def test_environment_yml_parses_and_names_the_env(env):
    assert env["name"] == ENV_NAME
    assert env.get("channels") == ["conda-forge"], "conda-forge only: no implicit 'defaults' channel"
    assert env_pip_part.python_version(env) == "3.11"
    conda_names = [re.split(r"[\s=<>!~]", spec, maxsplit=1)[0] for spec in env_pip_part.conda_part(env)]
    assert "python" in conda_names and "pip" in conda_names
    # the smoke build (ENV_BUILDER=venv) can only stand in for an env whose conda part is python + pip
    assert env_pip_part.conda_only_packages(env) == []


def test_conda_specs_are_valid_match_specs(env):
    rattler = pytest.importorskip("rattler", reason="py-rattler validates conda match specs")
    for spec in env_pip_part.conda_part(env):
        rattler.MatchSpec(spec)  # raises on an invalid spec


def test_pip_part_lines_are_valid_requirements(env):
    for line in env_pip_part.pip_part(env):
        assert not line.startswith("-"), (
            f"pip options in environment.yml ({line}) bypass the image's build args"
        )
        Requirement(line)


def test_dockerfile_creates_the_same_env():
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(rf"^\s*ENV_NAME={ENV_NAME}\b", dockerfile, re.MULTILINE)
    assert "COPY environment.yml" in dockerfile


# ----------------------------------------------------------------------------------- vs pyproject.toml


def test_every_runtime_dependency_is_in_the_env_with_compatible_bounds(pyproject, env_requirements):
    problems = []
    for line in pyproject["project"]["dependencies"]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name not in env_requirements:
            problems.append(f"{req.name}: in pyproject.toml, missing from environment.yml")
            continue
        ok, why = _bounds_compatible(env_requirements[name].specifier, req.specifier)
        if not ok:
            problems.append(f"{req.name}: {why}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("extra", IMAGE_EXTRAS)
def test_image_extras_are_in_the_env(pyproject, env_requirements, extra):
    problems = []
    for line in pyproject["project"]["optional-dependencies"][extra]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name in NOT_IN_IMAGE:
            continue
        provided = canonicalize_name(PROVIDED_BY.get(name, name))
        if provided not in env_requirements:
            problems.append(f"[{extra}] {req.name}: missing from environment.yml")
            continue
        if provided == name:
            ok, why = _bounds_compatible(env_requirements[name].specifier, req.specifier)
            if not ok:
                problems.append(f"[{extra}] {req.name}: {why}")
    assert not problems, "\n".join(problems)


def test_env_has_nothing_the_project_does_not_declare(pyproject, env_requirements):
    """Every env package is a dependency or extra of the project (or part of the GPU stack / kernel)."""
    declared = {canonicalize_name(Requirement(x).name) for x in pyproject["project"]["dependencies"]}
    for extra in IMAGE_EXTRAS:
        declared |= {
            canonicalize_name(Requirement(x).name)
            for x in pyproject["project"]["optional-dependencies"][extra]
        }
    declared |= {canonicalize_name(v) for v in PROVIDED_BY.values()}
    image_only = {"torchaudio", "ipykernel"}  # the design list; the kernel the image registers
    extra = sorted(set(env_requirements) - declared - image_only)
    assert not extra, f"environment.yml installs packages pyproject.toml does not know: {extra}"


# ---------------------------------------------------------------------------- helper used by the build


def test_torch_spec_replaces_the_whole_torch_family():
    reqs = ["torch==2.9.1", "torchaudio==2.9.1", "numpy>=1.24", "TorchVision==0.24", "torch-vision-extra==1"]
    out = env_pip_part.substitute_torch(reqs, "torch==2.13.0+cpu")
    assert out == ["torch==2.13.0+cpu", "numpy>=1.24", "torch-vision-extra==1"]
    assert env_pip_part.substitute_torch(reqs, "  ") == reqs


def test_helper_cli_prints_what_the_venv_build_installs(tmp_path):
    script = REPO / "docker" / "env_pip_part.py"
    out = subprocess.run(
        [sys.executable, str(script), str(REPO / "environment.yml"), "--torch-spec", "torch==2.13.0+cpu"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert out[0] == "torch==2.13.0+cpu" and not any(line.startswith("torchaudio") for line in out)
    broken = tmp_path / "environment.yml"
    broken.write_text("name: x\nchannels: [conda-forge]\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script), str(broken)], capture_output=True, text=True)
    assert proc.returncode != 0 and "dependencies" in proc.stderr


# ---------------------------------------------------------------------------------- resolution (PyPI)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pip_part_resolves_to_one_cuda12_cudnn9_stack(env, tmp_path):
    """The pip part resolves on PyPI, and the GPU wheels agree: CUDA 12 and cuDNN 9 throughout."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(env_pip_part.pip_part(env)) + "\n", encoding="utf-8")
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), "--requirement", str(requirements)],
        capture_output=True, text=True, timeout=580,
    )  # fmt: skip
    if proc.returncode != 0 and re.search(
        r"(Connection|NewConnectionError|Temporary failure|timed out)", proc.stderr
    ):
        pytest.skip(f"PyPI unreachable: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    resolved = {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
        for item in json.loads(report.read_text(encoding="utf-8"))["install"]
    }
    assert resolved["torch"] == resolved["torchaudio"].split("+")[0]
    cudnn = resolved.get("nvidia-cudnn-cu12", "")
    assert cudnn.startswith("9."), f"torch's cuDNN is {cudnn!r}: onnxruntime-gpu 1.19+ needs cuDNN 9"
    assert "onnxruntime" not in resolved, "the CPU onnxruntime would shadow onnxruntime-gpu"
    cuda_runtime = resolved.get("nvidia-cuda-runtime-cu12", "")
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    base = re.search(r"ARG CUDA_IMAGE=nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu22\.04", dockerfile)
    assert base, "the CUDA base must be a pinned nvidia/cuda:X.Y.Z-cudnn-runtime-ubuntu22.04 tag"
    # torch's bundled CUDA runtime and the base image's (used by onnxruntime-gpu) are the same minor
    assert cuda_runtime.startswith(f"{base.group(1)}.{base.group(2)}."), (cuda_runtime, base.group(0))
