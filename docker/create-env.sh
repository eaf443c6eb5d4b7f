#!/bin/bash
# Create the conda env ${ENV_NAME} at ${CONDA_DIR}/envs/${ENV_NAME} from environment.yml (one build step).
#
#   ENV_BUILDER=conda (default, the published image): install Miniforge ${MINIFORGE_VERSION} (from the GitHub
#       release or ${MINIFORGE_URL}), verified against ${MINIFORGE_SHA256}, then `conda env create` -- exactly
#       what a user runs on their own machine.
#   ENV_BUILDER=venv (the image smoke test, where no conda channel is reachable): a venv of the base image's
#       python3 at the same prefix, filled with environment.yml's pip part. It refuses to run when the base
#       python's major.minor differs from the file's `python=` or when the file has conda-only packages,
#       so that the substitute cannot silently drift from the real env. ${TORCH_SPEC}, when set, replaces
#       the torch / torchaudio lines (see docker/env_pip_part.py).
#
# Usage: create-env.sh ENVIRONMENT_YML   (as root; chowns the result to ${NB_UID}:${NB_GID})
set -euo pipefail

env_file="$1"
helper_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prefix="${CONDA_DIR}/envs/${ENV_NAME}"
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

case "${ENV_BUILDER}" in
conda)
    installer="Miniforge3-${MINIFORGE_VERSION}-Linux-$(uname -m).sh"
    url="${MINIFORGE_URL:-https://github.com/conda-forge/miniforge/releases/download/${MINIFORGE_VERSION}/${installer}}"
    curl --fail --silent --show-error --location --output "/tmp/${installer}" "${url}"
    echo "${MINIFORGE_SHA256}  /tmp/${installer}" | sha256sum --check --strict
    bash "/tmp/${installer}" -b -p "${CONDA_DIR}"
    rm -f "/tmp/${installer}"
    # reproducible solves: no self-updates, strict channel priority, no implicit defaults channel
    "${CONDA_DIR}/bin/conda" config --system --set auto_update_conda false
    "${CONDA_DIR}/bin/conda" config --system --set channel_priority strict
    "${CONDA_DIR}/bin/conda" env create --name "${ENV_NAME}" --file "${env_file}"
    "${CONDA_DIR}/bin/conda" clean --all --force-pkgs-dirs --yes
    ;;
venv)
    apt-get update
    apt-get install --yes --no-install-recommends python3 python3-venv python3-yaml
    rm -rf /var/lib/apt/lists/*
    part() { /usr/bin/python3 "${helper_dir}/env_pip_part.py" "${env_file}" "$@"; }
    [[ "$(part --print name)" == "${ENV_NAME}" ]] || {
        echo "create-env: ${env_file} names env '$(part --print name)', expected '${ENV_NAME}'" >&2
        exit 1
    }
    wanted="$(part --print python)"
    have="$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if [[ "${wanted}" != "${have}" ]]; then
        echo "create-env: environment.yml wants python ${wanted}, the base image has ${have}" >&2
        exit 1
    fi
    conda_only="$(part --print conda-only)"
    if [[ -n "${conda_only}" ]]; then
        echo "create-env: a venv cannot provide these conda packages: ${conda_only}" >&2
        exit 1
    fi
    /usr/bin/python3 -m venv "${prefix}"
    # the conda part asks for a current pip; the venv's bundled one is older
    "${prefix}/bin/python" -m pip install --upgrade "pip>=24"
    part --torch-spec "${TORCH_SPEC:-}" > /tmp/env-requirements.txt
    echo "create-env: installing into ${prefix}:"
    cat /tmp/env-requirements.txt
    "${prefix}/bin/python" -m pip install --requirement /tmp/env-requirements.txt
    rm -f /tmp/env-requirements.txt
    ;;
*)
    echo "create-env: ENV_BUILDER must be 'conda' or 'venv', not '${ENV_BUILDER}'" >&2
    exit 1
    ;;
esac

"${prefix}/bin/python" -c "import sys; print('create-env: ${ENV_NAME} ->', sys.executable, sys.version.split()[0])"
# the notebook user may `pip install` / `conda install` into its env, as in Jupyter docker-stacks
chown -R "${NB_UID}:${NB_GID}" "${CONDA_DIR}"
