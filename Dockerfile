# Speech-denoising workstation: FRCRN + GTCRN, JupyterLab and one-click batch inference, on CUDA.
#
# Conventions: Jupyter docker-stacks (non-root NB_USER / NB_UID / NB_GID that owns the env, tini as PID 1,
# HEALTHCHECK against the server's API, settings in /etc/jupyter) and NVIDIA's CUDA images (the runtime tag
# is pinned and is a build arg). How to build and run it: README.md, section "Docker image".
#
# GPU stack (one combination that works together; cuDNN major versions must match, 8 and 9 do not mix):
#   base   nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04   CUDA 12.8 runtime + cuDNN 9   (host driver >= 570)
#   torch 2.9.1 + torchaudio 2.9.1 (PyPI, cu128 wheels: own CUDA 12.8 libs, cuDNN 9.10.2)
#   onnxruntime-gpu 1.23.2 (PyPI, CUDA 12.x + cuDNN 9.x: uses the base image's libraries)
#
# tests/image/ builds THIS file on a machine with no registry and no conda channel; the build args it
# changes are documented where they are declared (ENV_BUILDER, TORCH_SPEC, PIP_FIND_LINKS, BUILD_CA_URL,
# WEIGHTS, WEIGHTS_MIRROR, CUDA_IMAGE). Everything else is the same in the published image.

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
FROM ${CUDA_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The notebook user. Give your own IDs (--build-arg NB_UID=$(id -u) --build-arg NB_GID=$(id -g)) so that
# files written into bind-mounted input/ and output/ belong to you; `docker run --user` works as well.
ARG NB_USER=jovyan
ARG NB_UID=1000
ARG NB_GID=100
ARG DEBIAN_FRONTEND=noninteractive

ENV LANG=C.UTF-8 \
    LC_ALL=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    CONDA_DIR=/opt/conda \
    ENV_NAME=speech_frcrn_ans_cirm_16k \
    DENOISE_WORKSPACE=/workspace \
    JUPYTER_RUNTIME_DIR=/tmp/jupyter-runtime
# The env is first on PATH for every process, so `docker run IMAGE python …` needs no activation.
ENV PATH=${CONDA_DIR}/envs/${ENV_NAME}/bin:${CONDA_DIR}/bin:${PATH}

# OS packages: curl fetches the conda installer, tini reaps zombies and forwards signals as PID 1,
# libportaudio2 is what `denoise live` (sounddevice) talks to the sound card through.
# Versions come with the pinned base image's distribution release; pinning each one would break the build
# at the distribution's next security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends ca-certificates curl tini libportaudio2 \
    && rm -rf /var/lib/apt/lists/*

# The user owns the env prefix and the workspace (created here, filled below).
RUN if ! getent group "${NB_GID}" > /dev/null; then groupadd --gid "${NB_GID}" "${NB_USER}"; fi \
    && useradd --no-log-init --create-home --shell /bin/bash --uid "${NB_UID}" --gid "${NB_GID}" "${NB_USER}" \
    && mkdir -p "${CONDA_DIR}" "${DENOISE_WORKSPACE}" \
    && chown "${NB_UID}:${NB_GID}" "${CONDA_DIR}" "${DENOISE_WORKSPACE}"

# ---- the conda env speech_frcrn_ans_cirm_16k, from environment.yml ------------------------------------
# ENV_BUILDER  conda (published image): Miniforge MINIFORGE_VERSION, verified against MINIFORGE_SHA256, then
#              `conda env create -f environment.yml`.
#              venv (smoke test only, no conda channel reachable): the base image's python3 as a venv at
#              the same prefix, filled with environment.yml's pip part (see docker/create-env.sh).
# TORCH_SPEC   venv only, smoke test: replaces the torch/torchaudio lines, e.g. "torch==2.13.0+cpu".
# Mirrors for offline / air-gapped builds (empty = the public default):
#   MINIFORGE_URL        a copy of the installer (still checked against MINIFORGE_SHA256)
#   CONDA_CHANNEL_ALIAS  a conda channel mirror; PIP_INDEX_URL a PyPI mirror
#   PIP_FIND_LINKS       an extra wheel location (directory or http(s) URL); the smoke test's CPU torch wheel
# BUILD_CA_URL URL of an extra CA bundle trusted during build steps only (intercepting proxies); it is
#              deleted at the end of each step and never stored in the image (docker/build-step).
ARG ENV_BUILDER=conda
ARG MINIFORGE_VERSION=24.11.3-0
ARG MINIFORGE_SHA256=2e1ad2188fe69fcdd522c2b20c08c800a5c7411b775eca768318b1540ed32e53
ARG MINIFORGE_URL=
ARG CONDA_CHANNEL_ALIAS=
ARG PIP_INDEX_URL=
ARG PIP_FIND_LINKS=
ARG TORCH_SPEC=
ARG BUILD_CA_URL=
COPY environment.yml docker/create-env.sh docker/env_pip_part.py docker/build-step /tmp/env-build/
RUN /tmp/env-build/build-step /tmp/env-build/create-env.sh /tmp/env-build/environment.yml \
    && rm -rf /tmp/env-build

# Every shell activates the env: login shells via profile.d, Jupyter terminals and `docker exec … bash`
# via bash.bashrc; the entrypoint sources the same file.
COPY docker/shell-env.sh /etc/profile.d/denoise-env.sh
RUN echo '. /etc/profile.d/denoise-env.sh' >> /etc/bash.bashrc

COPY docker/jupyter_server_config.py /etc/jupyter/jupyter_server_config.py
COPY docker/entrypoint.sh /usr/local/bin/denoise-entrypoint
COPY docker/healthcheck.py /usr/local/bin/denoise-healthcheck

USER ${NB_UID}
WORKDIR ${DENOISE_WORKSPACE}

# A named kernel, so notebooks say which env they run in.
RUN python -m ipykernel install --sys-prefix --name "${ENV_NAME}" --display-name "Python 3 (${ENV_NAME})"

# ---- the project: input/ output/ notebooks/ denoise_models/ 1键推理.py … (.dockerignore keeps data and weights out)
COPY --chown=${NB_UID}:${NB_GID} . ${DENOISE_WORKSPACE}/
# Editable, so the notebooks and `import denoise_models` use the code in /workspace; the env already holds the
# dependencies (--no-deps keeps pip from adding the CPU onnxruntime next to onnxruntime-gpu).
RUN docker/build-step python -m pip install --no-cache-dir --no-deps --editable . \
    && denoise --help > /dev/null

# ---- pretrained weights, fetched and sha256-verified by the project's own command ----------------------
# WEIGHTS         manifest names to bake in (the smoke test leaves out frcrn_official, which its machines
#                 cannot download).
# WEIGHTS_MIRROR  space-separated directories or http(s) base URLs tried before the upstream URLs, for
#                 offline / air-gapped builds (e.g. `python -m http.server` over a folder of weight files).
ARG WEIGHTS="frcrn_official gtcrn_dns3 gtcrn_dns3_stream gtcrn_vctk"
ARG WEIGHTS_MIRROR=
ENV DENOISE_WEIGHTS_DIR=${DENOISE_WORKSPACE}/denoise_models/weights
# ${WEIGHTS} is unquoted on purpose: it is a list. Afterwards any UID given with `docker run --user` may
# work in the workspace (a single-user workstation).
# hadolint ignore=SC2086
RUN DENOISE_WEIGHTS_MIRROR="${WEIGHTS_MIRROR}" docker/build-step denoise fetch-weights ${WEIGHTS} \
    && ls -l "${DENOISE_WEIGHTS_DIR}" \
    && chmod -R a+rwX "${DENOISE_WORKSPACE}"

LABEL org.opencontainers.image.title="speech-denoise-workstation" \
      org.opencontainers.image.description="FRCRN + GTCRN speech denoising with JupyterLab" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.speech-denoise.env-builder="${ENV_BUILDER}" \
      io.speech-denoise.torch-spec="${TORCH_SPEC}"

EXPOSE 8888
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["denoise-healthcheck"]
ENTRYPOINT ["tini", "-g", "--", "denoise-entrypoint"]
CMD ["jupyter", "lab"]
