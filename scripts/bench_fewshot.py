#!/usr/bin/env python
"""Few labelled rows per class: SetFit vs our strategies, side by side in one command (table + JSON).

For each dataset of ``../shared/data``, each number of rows per class and each seed, the script
draws that many training rows per class (seeded, without replacement), then trains and scores:

- ``setfit``: SetFit 1.x defaults (contrastive body training + logistic-regression head) on the
  same encoder, the same rows; installed only for this benchmark (``pip install -e '.[bench]'``);
- ``contrastive``, ``finetune``, ``feature-extraction``: ``nlp_transfer.train`` with its defaults,
  as a user gets them (the small-data policy applies: no validation split, a fixed budget).

Every method is scored on the full test set of the dataset (accuracy and macro-F1), and timed
from loading the encoder to a trained model (our time includes writing the model folder; the test
scoring is not timed) in wall seconds and in CPU seconds of the process (which a busy machine
distorts less). The output is a table of mean ± std over the seeds and a JSON document
with every run (``--output`` writes it to a file too).

Example (what the README reports):

    nice -n 10 python scripts/bench_fewshot.py --datasets trec rotten_tomatoes bbc_news --shots 8 --seeds 0

The issue's full scale is ``--shots 8 16 64 --seeds 0 1 2``; ``--max-test-rows`` scores a seeded
sample of each test set where the full one takes too long on a busy CPU (the JSON says which).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_data import read_rows, write_rows


DATA = Path(os.environ.get("NLP_TRANSFER_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
METHODS = ("setfit", "contrastive", "finetune", "feature-extraction")
DATASETS = ("trec", "rotten_tomatoes", "bbc_news")


def sample_rows(rows: list[dict[str, str]], per_class: int, seed: int) -> list[dict[str, str]]:
    """``per_class`` rows of every label (all of a smaller class), drawn with ``seed``, in shuffled order."""
    import random

    rng = random.Random(seed)
    by_label: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    chosen = [r for label in sorted(by_label) for r in rng.sample(by_label[label], min(per_class, len(by_label[label])))]
    rng.shuffle(chosen)
    return chosen


def scores(truth: list[str], predicted: list[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(truth, predicted)),
            "f1_macro": float(f1_score(truth, predicted, average="macro"))}


def run_setfit(train: list[dict[str, str]], test: list[dict[str, str]], seed: int, model: str,
               workdir: Path) -> dict[str, Any]:
    """SetFit with its default TrainingArguments (the seed set; its checkpoints in ``workdir``), scored on ``test``."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    start, cpu = time.perf_counter(), time.process_time()
    body = SetFitModel.from_pretrained(model)
    trainer = Trainer(model=body, args=TrainingArguments(seed=seed, show_progress_bar=False,
                                                             output_dir=str(workdir / "setfit")),
                      train_dataset=Dataset.from_list(train))
    trainer.train()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    predicted = [str(p) for p in body.predict([r["text"] for r in test], batch_size=64)]
    return {"train_seconds": seconds, "train_cpu_seconds": cpu, **scores([r["label"] for r in test], predicted)}


def run_ours(strategy: str, train_csv: Path, test_csv: Path, seed: int, workdir: Path,
             settings: dict[str, Any]) -> dict[str, Any]:
    """``nlp_transfer.train`` with its defaults for ``strategy`` (plus ``settings``); the saved folder scored by
    ``evaluate_model``."""
    from nlp_transfer import TrainConfig
    from nlp_transfer.evaluation import evaluate_model
    from nlp_transfer.trainer import train

    out = workdir / f"model-{strategy}"
    start, cpu = time.perf_counter(), time.process_time()
    result = train(TrainConfig(train_file=str(train_csv), output_dir=str(out), strategy=strategy, seed=seed,
                               overwrite=True, feature_cache_dir=str(workdir / "features")
                               if strategy == "feature-extraction" else None, **settings))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    report = evaluate_model(str(out), str(test_csv))
    return {"train_seconds": seconds, "train_cpu_seconds": cpu, "accuracy": report["accuracy"], "f1_macro": report["f1_macro"],
            "epochs_run": result.summary.get("epochs_run")}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std of accuracy, macro-F1 and train time per (dataset, shots, method)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["dataset"], run["shots"], run["method"]), []).append(run)
    table = []
    for (dataset, shots, method), group in groups.items():
        row = {"dataset": dataset, "shots": shots, "method": method, "seeds": len(group)}
        for key in ("accuracy", "f1_macro", "train_seconds", "train_cpu_seconds"):
            values = [g[key] for g in group]
            row[key] = statistics.fmean(values)
            row[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        table.append(row)
    return table


def print_table(table: list[dict[str, Any]]) -> None:
    print(f"{'dataset':<16}{'per class':>9}  {'method':<19}{'accuracy':>17}{'macro-F1':>17}{'train s':>14}"
          f"{'CPU s':>14}", file=sys.stderr)
    for r in table:
        print(f"{r['dataset']:<16}{r['shots']:>9}  {r['method']:<19}"
              f"{r['accuracy']:>9.3f} ± {r['accuracy_std']:.3f}{r['f1_macro']:>9.3f} ± {r['f1_macro_std']:.3f}"
              f"{r['train_seconds']:>8.0f} ± {r['train_seconds_std']:.0f}"
              f"{r['train_cpu_seconds']:>8.0f} ± {r['train_cpu_seconds_std']:.0f}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--shots", nargs="+", type=int, default=[8], help="training rows per class (e.g. 8 16 64)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="one sample of rows per seed")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--max-test-rows", type=int, help="score on a seeded sample of this many test rows "
                        "(default: the full test set)")
    parser.add_argument("--contrastive", default="{}", metavar="JSON",
                        help='TrainConfig settings for our contrastive runs beyond the defaults, e.g. '
                        '\'{"pairs": 128, "batch_size": 16, "epochs": 1}\' for the budget SetFit takes on 16 rows')
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from nlp_transfer.modeling import resolve_model

    model_path = resolve_model(args.model)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-fewshot-") as tmp:
        for dataset in args.datasets:
            full = read_rows(DATA / dataset / "train.csv")
            test_csv = DATA / dataset / "test.csv"
            test = read_rows(test_csv)
            if args.max_test_rows and args.max_test_rows < len(test):
                import random

                test = random.Random(0).sample(test, args.max_test_rows)
                test_csv = write_rows(Path(tmp) / f"{dataset}-test.csv", test)
            for shots in args.shots:
                for seed in args.seeds:
                    workdir = Path(tmp) / f"{dataset}-{shots}-{seed}"
                    workdir.mkdir()
                    rows = sample_rows(full, shots, seed)
                    train_csv = write_rows(workdir / "train.csv", rows)
                    for method in args.methods:
                        if method == "setfit":
                            result = run_setfit(rows, test, seed, model_path, workdir)
                        else:
                            extra = json.loads(args.contrastive) if method == "contrastive" else {}
                            result = run_ours(method, train_csv, test_csv, seed, workdir, extra)
                        run = {"dataset": dataset, "shots": shots, "seed": seed, "method": method,
                               "train_rows": len(rows), **result}
                        runs.append(run)
                        print(json.dumps(run), file=sys.stderr, flush=True)
    table = summarise(runs)
    print_table(table)
    scored = f"a seeded sample of {args.max_test_rows} rows of" if args.max_test_rows else "the full"
    document = {"model": args.model, "contrastive_settings": json.loads(args.contrastive), "test": f"{scored} test.csv of each dataset", "summary": table, "runs": runs}
    print(json.dumps(document, indent=1))
    if args.output:
        Path(args.output).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
