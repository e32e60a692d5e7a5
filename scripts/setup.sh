#!/usr/bin/env bash
# Installs everything tilegraph needs on a fresh Debian 12 machine (run as root) and builds
# it: the C++ core with its googletest suites (build/) and the Python package (pip install).
set -euo pipefail
cd "$(dirname "$0")/.."

# libonnx-dev: ONNX's protobuf schema (and libprotobuf-dev) for the ONNX front end (src/onnx).
# chromium-headless-shell: tests/e2e/test_ipu_report_html.py renders the IPU report's HTML in it.
# libxbyak-dev: the x86 assembler the fused elementwise JIT writes its loops with.
if ! dpkg -s libdnnl-dev libgtest-dev openmpi-bin libopenmpi-dev libonnx-dev libprotobuf-dev \
    chromium-headless-shell libxbyak-dev >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libdnnl-dev libgtest-dev ninja-build \
    openmpi-bin libopenmpi-dev libonnx-dev libprotobuf-dev chromium-headless-shell libxbyak-dev \
    >/dev/null
fi
# torch 2.14.1 is the build torchvision 0.29.1 needs (a CUDA build; it runs on the CPU).
# torchvision / transformers / timm provide the model families (random weights, nothing is
# downloaded); onnxruntime is bench/'s inference baseline and the ONNX tests' reference;
# onnx provides the ONNX conformance tests, onnxscript torch.onnx.export's default exporter.
python3 -m pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1" \
  "transformers==5.24.0" "timm==1.0.31" "onnxruntime==1.32.0" "onnx==1.23.2" "onnxscript==0.7.2" nanobind \
  "scikit-build-core>=0.10" numpy pytest pytest-timeout cmake ninja

# TensorFlow / Keras models through tf2onnx: only tests/e2e/test_onnx.py's Keras test uses them
# (in a child process); the tilegraph package itself does not depend on them.
python3 -m pip install -q --disable-pip-version-check "tensorflow-cpu==2.21.0" "tf2onnx==1.17.0"

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)"
python3 -m pip install -q --disable-pip-version-check --no-build-isolation .
