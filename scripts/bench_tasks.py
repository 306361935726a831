"""Problem types on real data: multi-label with tuned thresholds, regression, class imbalance.

Three measurements with the bundled all-MiniLM-L6-v2, each on seeded rows of ``../shared/data``:

  multi-label   BBC News articles joined in pairs of different topics (labels: both topics),
                plus single articles (one label); the validation split is held out by iterative
                stratification. Test micro/macro F1 and subset accuracy at the per-label
                thresholds tuned on validation, side by side with the plain 0.5 every peer uses.
  regression    the ``score`` column of the movie reviews (mean human rating in [-4, 4]):
                test Pearson, Spearman, RMSE and R².
  imbalance     SMS spam (13% spam) at a short budget, without and with --class-weights
                balanced: spam recall, spam F1 and macro F1 on test.

Prints a table, then the JSON. The defaults run in minutes on a laptop CPU; raise
``--train-rows`` / ``--epochs`` for the full-scale numbers.

    python scripts/bench_tasks.py
    python scripts/bench_tasks.py --tasks regression --train-rows 4000 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from bench_data import SHARED, read_rows, write_rows

TASKS = ("multilabel", "regression", "imbalance")


def joined_articles(rows: list[dict], n: int, words: int, single_share: float, seed: int) -> list[dict]:
    """``n`` rows: two articles of different topics (their first ``words`` words each, in random order),
    labelled with both topics; a ``single_share`` of the rows is one article with its one topic."""
    rng = random.Random(seed)
    by_topic: dict[str, list[str]] = {}
    for row in rows:
        by_topic.setdefault(row["label"], []).append(" ".join(row["text"].split()[:words]))
    topics = sorted(by_topic)
    out = []
    for _ in range(n):
        if rng.random() < single_share:
            topic = rng.choice(topics)
            out.append({"text": rng.choice(by_topic[topic]), "labels": topic})
            continue
        first, second = rng.sample(topics, 2)
        out.append({"text": f"{rng.choice(by_topic[first])} {rng.choice(by_topic[second])}",
                    "labels": ",".join(sorted((first, second)))})
    return out


def sample(rows: list[dict], n: int, seed: int) -> list[dict]:
    return random.Random(seed).sample(rows, min(n, len(rows)))


def run(name: str, train_rows: list[dict], test_rows: list[dict], root: Path, args: argparse.Namespace,
        **settings: Any) -> tuple[dict[str, Any], float]:
    from nlp_transfer import TrainConfig, train

    folder = root / name
    folder.mkdir()
    values = dict(epochs=args.epochs, batch_size=32, learning_rate=args.learning_rate, seed=args.seed,
                  keep_checkpoints=0, small_data="off")  # the --epochs budget as named (no step floor)
    config = TrainConfig(
        train_file=write_rows(folder / "train.csv", train_rows), test_file=write_rows(folder / "test.csv", test_rows),
        output_dir=str(folder / "model"), **{**values, **settings})
    started = time.perf_counter()
    result = train(config)
    return result.metrics, time.perf_counter() - started


def bench_multilabel(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    bbc = SHARED / "bbc_news"
    train_rows = joined_articles(read_rows(bbc / "train.csv", columns=None), args.train_rows, 45, 0.3, args.seed)
    test_rows = joined_articles(read_rows(bbc / "test.csv", columns=None), args.test_rows, 45, 0.3, args.seed + 1)
    metrics, seconds = run("multilabel", train_rows, test_rows, root, args, label_column="labels",
                           multi_label=True, max_length=128)
    test = metrics["test"]
    return {"task": "multi-label (BBC pairs)", "train_rows": len(train_rows), "test_rows": len(test_rows),
            "seconds": round(seconds, 1), "thresholds": metrics["validation"]["thresholds"],
            "tuned": {k: test[k] for k in ("f1_micro", "f1_macro", "accuracy", "hamming_loss")},
            "at_0.5": {k: test["at_0.5"][k] for k in ("f1_micro", "f1_macro", "accuracy", "hamming_loss")}}


def bench_regression(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    keep = ("text", "score")  # the mean human rating is the target
    reviews = SHARED / "sentiment"
    train_rows = sample(read_rows(reviews / "movie_reviews_train.csv", columns=keep), args.train_rows, args.seed)
    test_rows = sample(read_rows(reviews / "movie_reviews_test.csv", columns=keep), args.test_rows, args.seed)
    metrics, seconds = run("regression", train_rows, test_rows, root, args, label_column="score",
                           task="regression", max_length=96)
    test = metrics["test"]
    return {"task": "regression (movie review score)", "train_rows": len(train_rows), "test_rows": len(test_rows),
            "seconds": round(seconds, 1), **{k: test[k] for k in ("pearson", "spearman", "rmse", "mae", "r2")}}


def bench_imbalance(root: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    train_rows = sample(read_rows(SHARED / "sms_spam" / "train.csv", columns=None), args.train_rows, args.seed)
    test_rows = sample(read_rows(SHARED / "sms_spam" / "test.csv", columns=None), args.test_rows, args.seed)
    results = []
    for weights in ("none", "balanced"):
        metrics, seconds = run(f"spam-{weights}", train_rows, test_rows, root, args, class_weights=weights,
                               max_length=64, epochs=args.imbalance_epochs)
        test = metrics["test"]
        results.append({"task": f"imbalance (sms spam), class weights {weights}", "train_rows": len(train_rows),
                        "test_rows": len(test_rows), "seconds": round(seconds, 1),
                        "spam_recall": test["per_class"]["spam"]["recall"], "spam_f1": test["per_class"]["spam"]["f1"],
                        "f1_macro": test["f1_macro"], "accuracy": test["accuracy"]})
    return results


def table(results: dict[str, Any]) -> str:
    lines = []
    if "multilabel" in results:
        r = results["multilabel"]
        lines.append(f"multi-label, {r['train_rows']} train / {r['test_rows']} test rows ({r['seconds']} s)")
        lines.append(f"  {'thresholds':<22}{'micro F1':>10}{'macro F1':>10}{'subset acc':>12}{'Hamming':>10}")
        for name in ("tuned", "at_0.5"):
            m = r[name]
            label = "tuned on validation" if name == "tuned" else "0.5 for every label"
            lines.append(f"  {label:<22}{m['f1_micro']:>10.4f}{m['f1_macro']:>10.4f}{m['accuracy']:>12.4f}"
                         f"{m['hamming_loss']:>10.4f}")
    if "regression" in results:
        r = results["regression"]
        lines.append(f"regression, {r['train_rows']} train / {r['test_rows']} test rows ({r['seconds']} s): "
                     f"Pearson {r['pearson']:.4f}, Spearman {r['spearman']:.4f}, RMSE {r['rmse']:.4f}, R² {r['r2']:.4f}")
    for r in results.get("imbalance", []):
        lines.append(f"{r['task']}, {r['train_rows']} train / {r['test_rows']} test rows ({r['seconds']} s): spam "
                     f"recall {r['spam_recall']:.4f}, spam F1 {r['spam_f1']:.4f}, macro F1 {r['f1_macro']:.4f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {', '.join(TASKS)}")
    parser.add_argument("--train-rows", type=int, default=800, help="training rows per task (before validation)")
    parser.add_argument("--test-rows", type=int, default=400, help="test rows per task")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--imbalance-epochs", type=int, default=1, help="the short budget of the imbalance runs")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"error: {SHARED} is missing; this benchmark needs the shared real data.", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks.split(","):
            results[task] = {"multilabel": bench_multilabel, "regression": bench_regression,
                             "imbalance": bench_imbalance}[task](Path(tmp), args)
            # Each result as soon as it is measured, so a long run that fails later keeps it.
            print(json.dumps({task: results[task]}), file=sys.stderr, flush=True)
    print(table(results))
    print(json.dumps({"settings": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
