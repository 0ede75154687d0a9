#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, then the linter, the formatter's check and mypy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q "$@"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
MYPYPATH=tiny:tools:memory:apps:sandbox:evals:shell .venv/bin/mypy llmos shell/llmos_shell apps/llmos_apps \
    tools/llmos_tools sandbox/llmos_sandbox memory/llmos_memory evals/llmos_evals tiny/llmos_tiny benchmarks
