#!/usr/bin/env bash
# Set up (idempotent) and run the main job.
# Until the bundled llmos-tiny lands, the main job is a demo of the kernel loop on the
# tiny story model beside the project: a grammar-forced calculator call is trapped,
# run and its result appended, and decoding continues from the same KV cache.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export LLMOS_HOME=${LLMOS_HOME:-$PWD/runs/home}
status=0
.venv/bin/llmos run examples/loop-demo.yaml "$@" || status=$?
echo
if [ "$status" = 3 ]; then
  # exit code 3 = a budget ran out: the story model never ends its turn, so its token budget does
  echo "(the story model does not end its turns; the task's token budget stopped it, as configured)"
  status=0
fi
echo "Session log: LLMOS_HOME=$LLMOS_HOME .venv/bin/llmos logs"
exit "$status"
