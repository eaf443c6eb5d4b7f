#!/usr/bin/env python3
"""Print the pip part of environment.yml as a requirements file, one requirement a line.

Used by docker/create-env.sh when the image's env is built without conda (ENV_BUILDER=venv, the
smoke-test path) and by tests/test_environment.py, so that both read environment.yml the same way.

``--torch-spec "torch==2.13.0+cpu"`` replaces every torch-family line (torch, torchaudio,
torchvision) by the given requirements: the smoke build cannot download the multi-GB CUDA
torch, and torchaudio pins the exact torch release it was built for, so the family is swapped
as a whole. With an empty spec the file's own lines are printed unchanged.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

TORCH_FAMILY = frozenset({"torch", "torchaudio", "torchvision"})


def requirement_name(line: str) -> str:
    """The normalised distribution name of a requirement line ("" for pip options like ``--index-url``)."""
    if line.startswith("-"):
        return ""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else ""


def load_environment(path: Path) -> dict:
    with path.open(encoding="utf-8") as fh:
        env = yaml.safe_load(fh)
    if not isinstance(env, dict) or not isinstance(env.get("dependencies"), list):
        raise ValueError(f"{path}: not a conda environment file (no 'dependencies' list)")
    return env


def pip_part(env: dict) -> list[str]:
    """The entries of the ``- pip:`` block (an empty list when there is none)."""
    for dep in env["dependencies"]:
        if isinstance(dep, dict) and "pip" in dep:
            return [str(item).strip() for item in dep["pip"]]
    return []


def substitute_torch(requirements: list[str], torch_spec: str) -> list[str]:
    """Replace the torch family by ``torch_spec`` (whitespace-separated requirements), if given."""
    replacement = torch_spec.split()
    if not replacement:
        return list(requirements)
    kept = [req for req in requirements if requirement_name(req) not in TORCH_FAMILY]
    return replacement + kept


def conda_part(env: dict) -> list[str]:
    """The conda match specs (strings) of ``dependencies``, without the pip block."""
    return [str(dep).strip() for dep in env["dependencies"] if not isinstance(dep, dict)]


def python_version(env: dict) -> str:
    """The ``major.minor`` that the conda part asks for (``python=3.11`` -> ``3.11``), or ""."""
    for spec in conda_part(env):
        match = re.fullmatch(r"python\s*[=<>!~ ]*=?\s*(\d+\.\d+)(?:\.\*)?", spec)
        if match:
            return match.group(1)
    return ""


def conda_only_packages(env: dict) -> list[str]:
    """Conda specs other than python and pip: what a pip-only (venv) build of the env would miss."""
    return [
        spec
        for spec in conda_part(env)
        if re.split(r"[\s=<>!~]", spec, maxsplit=1)[0] not in ("python", "pip")
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("environment", type=Path, help="path to environment.yml")
    parser.add_argument(
        "--torch-spec", default="", help="requirements replacing torch/torchaudio/torchvision"
    )
    parser.add_argument(
        "--print",
        choices=["pip", "name", "python", "conda-only"],
        default="pip",
        help="pip: the pip part (default); name: the env name; python: the python major.minor; "
        "conda-only: conda packages other than python/pip",
    )
    args = parser.parse_args(argv)
    env = load_environment(args.environment)
    if args.print != "pip":
        value = {
            "name": lambda: str(env.get("name", "")),
            "python": lambda: python_version(env),
            "conda-only": lambda: "\n".join(conda_only_packages(env)),
        }[args.print]()
        if value:
            print(value)
        return 0
    requirements = substitute_torch(pip_part(env), args.torch_spec)
    if not requirements:
        print(f"{args.environment}: the pip part is empty", file=sys.stderr)
        return 1
    print("\n".join(requirements))
    return 0


if __name__ == "__main__":
    sys.exit(main())
