#!/usr/bin/env bash
# Install nlp-transfer with its test extras and run the whole test suite (slow tests included).
# On a machine without a GPU, the CPU build of torch is installed first so pip does not pull
# a multi-GB CUDA build; a GPU machine keeps the torch it has.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then python -m pip install "torch>=2.4,<2.15"; else python -m pip install torch==2.13.0; fi
fi
python -m pip install -e ".[test]"
python -m pytest --run-slow "$@"
