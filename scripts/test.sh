#!/usr/bin/env bash
# The test command: googletest suites through ctest (unit tests, generated op conformance
# tests, the MLP example's convergence check), then the Python tests against eager PyTorch.
# Assumes scripts/setup.sh has run.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
(cd build && ctest --output-on-failure -j "$(nproc)" --timeout 600)
# --timeout: a test that hangs (threads or processes waiting on each other) fails instead.
python3 -m pytest -q --timeout 900 tests/e2e
# The extended tier (full-size configurations: BERT-Base/Large training steps, full ResNet-50
# etc.; tens of minutes and ~20 GiB on 2 cores) runs only when asked for.
if [[ "${TILEGRAPH_EXTENDED:-0}" == "1" ]]; then
  python3 -m pytest -q tests/extended
fi
