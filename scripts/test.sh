#!/usr/bin/env bash
# The test command: googletest suites through ctest (unit tests, generated op conformance
# tests, the MLP example's convergence check), then the Python tests against eager PyTorch.
# Assumes scripts/setup.sh has run.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
(cd build && ctest --output-on-failure -j "$(nproc)" --timeout 600)
python3 -m pytest -q tests/e2e
