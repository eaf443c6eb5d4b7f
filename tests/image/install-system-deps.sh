#!/usr/bin/env bash
# System tools for the container smoke test (docker.io, debootstrap) and the browser test (chromium).
# Debian/Ubuntu, root only; called by `make test` (target system-deps). Idempotent and quiet.
set -euo pipefail
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v chromium >/dev/null || need+=(chromium fonts-liberation)
# PortAudio for `denoise live` (its test runs on ALSA's null device)
ldconfig -p | grep -q libportaudio.so.2 || need+=(libportaudio2)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
echo "installing system packages: ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
