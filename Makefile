# Two commands set everything up on a fresh machine (see README):
#   make run    - install into .venv, then denoise input/ -> output/ (python 1键推理.py)
#   make test   - install into .venv (+ system tools for the image/browser tests when root), then run every test
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU wheel by default (seconds to install); on a CUDA box: make run TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH  ?= torch==2.13.0
EXTRAS ?= eval,onnx,train,notebooks,live,cluster,dev
ARGS   ?=
PYTEST_ARGS ?=
# Reference data (parity fixtures, GTCRN weights mirror) live beside the repository.
SHARED ?= $(abspath ../shared)
export DENOISE_SHARED ?= $(SHARED)

.PHONY: run test setup system-deps lint image-test notebooks clean gpu-check

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

setup: $(BIN)/.installed

run: setup
	$(BIN)/python 1键推理.py $(ARGS)

# System packages the container and browser tests need (Debian; root only). Without them those
# tests skip with a reason; everything else still runs.
system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  bash tests/image/install-system-deps.sh; \
	else echo "not root or no apt-get: container/browser tests will be skipped"; fi

test: setup system-deps
	DENOISE_WEIGHTS_MIRROR="$${DENOISE_WEIGHTS_MIRROR:-$(SHARED)/weights}" \
	  $(BIN)/python -m pytest -p no:cacheprovider --durations=15 $(PYTEST_ARGS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The GPU paths (CUDA engine at fp32/bf16/fp16, chunk batching, ONNX Runtime CUDA EP, AMP fine-tuning,
# DDP over NCCL), a few minutes on one GPU: JSON summary on stdout and in runs/gpu-check.json.
# Exit 0 = all passed, 1 = a check failed, 3 = no CUDA device here. Self-test on CPU: GPU_CHECK_ARGS="--device cpu"
GPU_CHECK_ARGS ?=
gpu-check: setup
	$(BIN)/python -m denoise.gpucheck --out runs/gpu-check.json $(GPU_CHECK_ARGS)

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
