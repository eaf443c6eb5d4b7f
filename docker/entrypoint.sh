#!/bin/bash
# Entrypoint of the workstation image; tini (PID 1) runs it and it execs the command (default: JupyterLab).
#   docker run IMAGE                        -> JupyterLab on ${JUPYTER_PORT:-8888}, rooted at /workspace
#   docker run IMAGE python 1键推理.py ...   -> batch denoising, with the env already active
set -euo pipefail

# `docker run --user UID:GID` (so that files written to bind-mounted input/ and output/ belong to the host
# user) starts a UID the image never saw: give it a writable HOME for Jupyter's, matplotlib's and pip's state.
if [[ ! -w "${HOME:-/nonexistent}" ]]; then
    export HOME="/tmp/home-$(id -u)"
    mkdir -p "${HOME}"
fi

# Jupyter keeps its runtime files (including the token the healthcheck reads) here; it must be private.
mkdir -p "${JUPYTER_RUNTIME_DIR}"
chmod 700 "${JUPYTER_RUNTIME_DIR}" 2>/dev/null || true

# The env is on PATH already (Dockerfile ENV); activate it properly where conda exists, for tools that read
# CONDA_PREFIX and friends. shell-env.sh is the same snippet every interactive shell sources.
# conda's shell functions are not written for `set -u`.
set +u
# shellcheck source=docker/shell-env.sh
source /etc/profile.d/denoise-env.sh
set -u

exec "$@"
