"""Benchmark batch prediction: our Classifier vs transformers.pipeline, int8, and streaming memory.

    flock /tmp/nlp-transfer-bench.lock python scripts/bench_predict.py [--model-dir runs/my-model]

Without --model-dir it first fine-tunes the default encoder on 1,000 rows of
../shared/data/rotten_tomatoes (1 epoch, max_length 64) in a temporary folder. Then, in this one
process and on the same texts (the test CSV):

* texts/s of ``load_classifier(DIR).predict`` and of ``pipeline("text-classification", model=DIR)``
  with the same truncation and batch size (best of --repeats, runs interleaved so that load from
  other processes hits both alike), their ratio, and whether the predictions are the same
  (identical labels, max |score difference|). ``pipeline_tokens_over_ours`` is how many more
  (padded) tokens the pipeline's in-order batches hold than our length-sorted ones: with the
  encoder compute-bound, that ratio is about the most exact (fp32) batching can gain;
* the same for ``quantize="int8"``: speed-up over float32 and the change in accuracy;
* peak RSS of ``nlp-transfer predict`` streaming over generated CSVs of 20k and 200k rows (real
  rows repeated), each in a fresh subprocess. By default that part uses a tiny random BERT with
  the real tokenizer so 200k rows take a minute, not an hour on 2 CPU cores (--memory-model
  trained uses the benchmarked model instead); the JSON says which.

* ``backends``: PyTorch fp32, PyTorch int8 (``quantize="int8"``), and the model exported with
  ``nlp-transfer export --format onnx`` as ONNX fp32, ONNX int8 and ONNX O2 (graph-optimised fp32),
  each loaded with ``load_classifier`` in a fresh subprocess and run on the same texts: texts/s
  (best of --repeats), peak RSS of that process, label agreement with PyTorch fp32 and test
  accuracy (needs the ``onnx`` extra; skipped with a note when it is missing).

``--sections`` picks the parts to run (default: all). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "rotten_tomatoes"

# Runs in a fresh interpreter: launches the console script and reports the child's peak RSS.
_MEASURE = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print(json.dumps({'code': code, 'seconds': time.perf_counter() - t,\n"
    "                  'peak_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def train_model(directory: Path, train_file: Path) -> str:
    from nlp_transfer import TrainConfig, train

    config = TrainConfig(train_file=str(train_file), output_dir=str(directory / "model"), max_train_samples=1000,
                         epochs=1, batch_size=32, max_length=64, learning_rate=2e-4, seed=13, small_data="off")
    return train(config).output_dir


def tiny_classifier(directory: Path, labels: list[str], max_length: int) -> str:
    """A randomly initialised 2-layer, 32-wide BERT classifier with the real MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from nlp_transfer.config import DEFAULT_MODEL
    from nlp_transfer.modeling import resolve_model, save_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, id2label=dict(enumerate(labels)),
                        label2id={name: i for i, name in enumerate(labels)})
    save_model(BertForSequenceClassification(config), tokenizer, directory, max_length)
    return str(directory)


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def compare_speed(model_dir: str, rows: list[dict[str, str]], batch_size: int, repeats: int) -> dict:
    from transformers import pipeline

    from nlp_transfer import load_classifier

    texts = [r["text"] for r in rows]
    clf = load_classifier(model_dir, device="cpu")
    pipe = pipeline("text-classification", model=model_dir, device="cpu")
    clf.predict(texts[:batch_size], batch_size=batch_size)  # warm-up: thread pools, allocator
    pipe(texts[:batch_size], truncation=True, batch_size=batch_size)

    ours_s, pipe_s = float("inf"), float("inf")
    for _ in range(repeats):  # interleaved, so a burst of load from other processes hits both
        t, ours = best_time(lambda: clf.predict(texts, batch_size=batch_size), 1)
        ours_s = min(ours_s, t)
        t, theirs = best_time(lambda: pipe(texts, truncation=True, batch_size=batch_size), 1)
        pipe_s = min(pipe_s, t)
    # What a user writes first: pipeline(texts) with its default batch size (one text per forward).
    default_s, default_out = best_time(lambda: pipe(texts, truncation=True), 1)
    same = sum(a["label"] == b["label"] for a, b in zip(ours, theirs))
    # The speed-up is bounded by how many more tokens the pipeline's in-order batches carry (padding).
    lengths = np.asarray(clf.tokenizer(texts, truncation=True, max_length=clf.max_length, return_length=True)["length"])
    padded = sum(lengths[i:i + batch_size].max() * len(lengths[i:i + batch_size]) for i in range(0, len(lengths), batch_size))
    ranked = np.sort(lengths)[::-1]
    sorted_padded = sum(ranked[i:i + batch_size].max() * len(ranked[i:i + batch_size]) for i in range(0, len(ranked), batch_size))
    report = {
        "texts": len(texts),
        "batch_size": batch_size,
        "max_length": clf.max_length,
        "ours_texts_per_s": round(len(texts) / ours_s, 1),
        "pipeline_texts_per_s": round(len(texts) / pipe_s, 1),
        "speedup": round(pipe_s / ours_s, 2),
        "pipeline_tokens_over_ours": round(float(padded / sorted_padded), 2),
        "pipeline_default_batch_texts_per_s": round(len(texts) / default_s, 1),
        "speedup_vs_pipeline_default_batch": round(default_s / ours_s, 2),
        "labels_identical_vs_pipeline_default_batch": all(a["label"] == b["label"] for a, b in zip(ours, default_out)),
        "labels_identical": same == len(texts),
        "labels_differing": len(texts) - same,
        "max_abs_score_diff": float(max(abs(a["score"] - b["score"]) for a, b in zip(ours, theirs))),
    }

    gold = [r["label"] for r in rows]
    quantized = load_classifier(model_dir, quantize="int8")
    quantized.predict(texts[:batch_size], batch_size=batch_size)
    q_s, q_pred = best_time(lambda: quantized.predict(texts, batch_size=batch_size), repeats)
    accuracy = np.mean([p["label"] == g for p, g in zip(ours, gold)])
    q_accuracy = np.mean([p["label"] == g for p, g in zip(q_pred, gold)])
    report["int8"] = {
        "texts_per_s": round(len(texts) / q_s, 1),
        "speedup_over_float32": round(ours_s / q_s, 2),
        "accuracy_float32": round(float(accuracy), 4),
        "accuracy_int8": round(float(q_accuracy), 4),
        "accuracy_change": round(float(q_accuracy - accuracy), 4),
        "labels_changed": int(sum(a["label"] != b["label"] for a, b in zip(ours, q_pred))),
    }
    return report


# Runs in a fresh interpreter: loads one backend, predicts the texts, reports speed, labels and its own peak RSS.
_BACKEND_RUN = (
    "import json, resource, sys, time, warnings\n"
    "warnings.filterwarnings('ignore')\n"
    "from nlp_transfer import load_classifier\n"
    "folder, backend, quantize, texts_file, batch_size, repeats = sys.argv[1:7]\n"
    "clf = load_classifier(folder, device='cpu', backend=backend, quantize=quantize or None)\n"
    "texts = json.load(open(texts_file, encoding='utf-8'))\n"
    "clf.predict(texts[:int(batch_size)], batch_size=int(batch_size))\n"
    "best = float('inf')\n"
    "for _ in range(int(repeats)):\n"
    "    start = time.perf_counter()\n"
    "    predictions = clf.predict(texts, batch_size=int(batch_size))\n"
    "    best = min(best, time.perf_counter() - start)\n"
    "print(json.dumps({'seconds': best, 'labels': [p['label'] for p in predictions],\n"
    "                  'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
)
VARIANTS = {  # name: (export options or None for the PyTorch folder, backend, PyTorch quantize)
    "pytorch_fp32": (None, "pytorch", ""),
    "pytorch_int8": (None, "pytorch", "int8"),
    "onnx_fp32": ({}, "onnx", ""),
    "onnx_int8": ({"quantize": "int8"}, "onnx", ""),
    "onnx_o2": ({"optimize": "O2"}, "onnx", ""),
}


def compare_backends(model_dir: str, rows: list[dict[str, str]], batch_size: int, repeats: int, workdir: Path) -> dict:
    """Every variant of VARIANTS on the test texts, each in its own process (so peak RSS is its own)."""
    from nlp_transfer.extras import missing_modules
    from nlp_transfer.onnx_export import ExportOptions, export_onnx

    missing = missing_modules("onnx")
    texts_file = workdir / "texts.json"
    texts_file.write_text(json.dumps([r["text"] for r in rows]), encoding="utf-8")
    gold = [r["label"] for r in rows]
    report, reference = {}, None
    for name, (export, backend, quantize) in VARIANTS.items():
        if export is not None and missing:
            report[name] = f"skipped: the onnx extra is missing ({', '.join(missing)})"
            continue
        folder, extra = model_dir, {}
        if export is not None:
            folder = str(workdir / name)
            started = time.perf_counter()
            record = export_onnx(model_dir, folder, ExportOptions(sample_size=64, **export))
            extra = {"export_seconds": round(time.perf_counter() - started, 1), "model_mb": record["size_mb"]}
        proc = subprocess.run([sys.executable, "-c", _BACKEND_RUN, folder, backend, quantize, str(texts_file),
                               str(batch_size), str(repeats)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-2000:]}")
        run = json.loads(proc.stdout.strip().splitlines()[-1])
        reference = reference or run
        report[name] = {
            "texts_per_s": round(len(rows) / run["seconds"], 1),
            "speedup_over_pytorch_fp32": round(reference["seconds"] / run["seconds"], 2),
            "peak_rss_mb": round(run["peak_rss_mb"], 1),
            "label_agreement_with_pytorch_fp32": round(float(np.mean([a == b for a, b in zip(run["labels"], reference["labels"])])), 4),
            "accuracy": round(float(np.mean([p == g for p, g in zip(run["labels"], gold)])), 4),
            **extra,
        }
    return {"texts": len(rows), "batch_size": batch_size, "variants": report}


def streaming_memory(model_dir: str, rows: list[dict[str, str]], sizes: list[int], workdir: Path, batch_size: int) -> dict:
    cli = [sys.executable, "-m", "nlp_transfer.cli", "-q", "predict", model_dir]
    out = {}
    for n in sizes:
        source = workdir / f"input-{n}.csv"
        with source.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "text", "label"])
            writer.writerows([i, r["text"], r["label"]] for i, r in zip(range(n), itertools.cycle(rows)))
        target = workdir / f"predictions-{n}.csv"
        proc = subprocess.run([sys.executable, "-c", _MEASURE, *cli, str(source), "--output", str(target),
                               "--eval-batch-size", str(batch_size)], capture_output=True, text=True, check=True)
        measured = json.loads(proc.stdout.strip().splitlines()[-1])
        if measured["code"] != 0:
            raise SystemExit(f"nlp-transfer predict failed on {n} rows:\n{proc.stderr[-2000:]}")
        with target.open(encoding="utf-8", newline="") as fh:
            written = sum(1 for _ in csv.reader(fh)) - 1
        out[f"{n}_rows"] = {"peak_rss_mb": round(measured["peak_rss_mb"], 1), "seconds": round(measured["seconds"], 1),
                            "rows_written": written, "input_mb": round(source.stat().st_size / 2**20, 1)}
        source.unlink()
        target.unlink()
    return out


def memory_section(args: argparse.Namespace, model_dir: str, model_name: str, rows: list[dict[str, str]],
                   workdir: Path) -> dict:
    if args.memory_model == "tiny":
        from nlp_transfer import load_classifier

        reference = load_classifier(model_dir, device="cpu")
        memory_dir = tiny_classifier(workdir / "tiny", reference.labels, reference.max_length)
        memory_model = "tiny random BERT (2 layers, 32 wide, real tokenizer): same I/O path, fast enough for 200k rows"
    else:
        memory_dir, memory_model = model_dir, model_name
    return {
        "model": memory_model,
        "command": "nlp-transfer -q predict MODEL input.csv --output predictions.csv",
        **streaming_memory(memory_dir, rows, args.memory_rows, workdir, args.batch_size),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="A trained model folder; default: fine-tune one on rotten_tomatoes first.")
    parser.add_argument("--train-file", default=str(SHARED / "train.csv"))
    parser.add_argument("--test-file", default=str(SHARED / "test.csv"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="Timed runs per method; the best counts.")
    parser.add_argument("--memory-rows", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--memory-model", choices=["tiny", "trained"], default="tiny",
                        help="Model for the streaming-memory runs: a tiny random BERT (fast) or the benchmarked one.")
    parser.add_argument("--sections", nargs="+", choices=["prediction", "streaming", "backends"],
                        default=["prediction", "streaming", "backends"], help="Which parts to run.")
    parser.add_argument("--max-texts", type=int, help="Use only the first N test rows (a quicker run).")
    args = parser.parse_args()

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")  # deprecation chatter from torch.ao and pyarrow
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    rows = read_rows(Path(args.test_file))[:args.max_texts]
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        workdir = Path(tmp)
        started = time.perf_counter()
        model_dir = args.model_dir or train_model(workdir, Path(args.train_file))
        train_s = None if args.model_dir else round(time.perf_counter() - started, 1)
        result = {
            "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                        "python": platform.python_version(), "torch": torch.__version__,
                        "transformers": transformers.__version__},
            "model": args.model_dir or "all-MiniLM-L6-v2 fine-tuned on 1000 rotten_tomatoes rows, 1 epoch, max_length 64",
            "train_seconds": train_s,
            "test_file": args.test_file,
        }
        if "prediction" in args.sections:
            result["prediction"] = compare_speed(model_dir, rows, args.batch_size, args.repeats)
        if "backends" in args.sections:
            result["backends"] = compare_backends(model_dir, rows, args.batch_size, args.repeats, workdir)
        if "streaming" in args.sections:
            result["streaming_memory"] = memory_section(args, model_dir, result["model"], rows, workdir)
        result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
