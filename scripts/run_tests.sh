#!/usr/bin/env bash
# Install nlp-transfer with its test extras and run the whole test suite (slow tests included).
# scripts/install.py picks the torch build: a torch already installed is kept; otherwise the CPU
# build on a machine without a GPU, a CUDA build on a machine with one.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
"$PYTHON" scripts/install.py test
"$PYTHON" -m pytest --run-slow "$@"
