"""Long documents: truncate vs head+tail vs sliding windows, at short windows, against truncation at 512.

On ``../shared/data/bbc_news`` (news articles of ~400 words, ~500 tokens; 5 topics), with the
bundled all-MiniLM-L6-v2, the same seeded training rows, seed and epochs, for each
``--max-length`` L in ``--lengths`` (default 64 and 128):

  truncate L          the first L tokens
  head-tail L         the first quarter and the last three quarters of the budget (Sun et al. 2019)
  sliding-window L    windows of L tokens sharing L/4, every window a training row, mean of the
                      window logits per article at evaluation and prediction

and the reference ``truncate 512`` (``--reference-length``; 0 skips it). Per run: test accuracy and
macro-F1 (counted per article), training time (``train_s``: the loop; ``wall_s``: the whole
``train()`` call), prediction time of the test articles through ``load_classifier`` (windows
included), the model rows per training article. The verdict says whether sliding windows at the
largest L reach the reference accuracy (within ``--tolerance``) and at what share of its training
and prediction time. Prints a table, then the JSON.

    python scripts/bench_long.py                                   # the whole training file, 3 epochs
    nice python scripts/bench_long.py --strategy feature-extraction --learning-rate 1e-3 --epochs 10 \
        --max-train-samples 100 --max-test-samples 60                 # what a busy 2-core CPU can do

With ``--strategy feature-extraction`` the cache is fresh per run, so ``train_s`` includes encoding
the training and validation windows once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from bench_data import SHARED, read_rows, write_rows


def run_one(args: argparse.Namespace, files: dict[str, Path], work: Path, mode: str, length: int) -> dict[str, Any]:
    """Train one model, score the test articles, time prediction; return the row of the table."""
    from nlp_transfer import TrainConfig, load_classifier, train

    name = f"{mode} {length}"
    config = TrainConfig(
        train_file=str(files["train"]), test_file=str(files["test"]), model=args.model,
        output_dir=str(work / name.replace(" ", "-")), overwrite=True, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, max_length=length, seed=args.seed, keep_checkpoints=0,
        max_train_samples=args.max_train_samples, long_text=mode, strategy=args.strategy,
        small_data="off",  # the --epochs budget as named, for every mode alike (no step floor)
        **({"feature_cache_dir": str(work / "features")} if args.strategy == "feature-extraction" else {}),
    )
    started = time.perf_counter()
    result = train(config)
    wall = time.perf_counter() - started
    texts = [row["text"] for row in read_rows(files["test"])]
    clf = load_classifier(result.output_dir, device="cpu")
    started = time.perf_counter()
    clf.predict(texts, batch_size=args.batch_size)
    predict_s = time.perf_counter() - started
    test, summary = result.metrics["test"], result.summary
    windows = (summary.get("long_text") or {}).get("splits", {}).get("train")
    return {
        "run": name, "mode": mode, "max_length": length,
        "test_accuracy": round(test["accuracy"], 4), "test_f1_macro": round(test["f1_macro"], 4),
        "test_articles": test["num_samples"],
        "train_s": round(summary["train_loop_s"] + (summary.get("feature_cache") or {}).get("encode_seconds", 0.0), 1), "wall_s": round(wall, 1), "predict_s": round(predict_s, 1),
        "rows_per_training_article": round(windows["windows"] / windows["texts"], 2) if windows else 1.0,
        "capped_articles": windows["capped_texts"] if windows else 0,
        "unread_fraction": round(summary["truncated_fraction"], 4),
    }


def verdict(rows: list[dict], tolerance: float) -> dict[str, Any]:
    """Whether sliding windows at the largest short length reach truncation at the reference length."""
    reference = [r for r in rows if r.get("reference")]
    windows = sorted((r for r in rows if r["mode"] == "sliding-window"), key=lambda r: r["max_length"])
    if not reference or not windows:
        return {"answered": False, "why": "needs a sliding-window run and the reference run"}
    ref, best = reference[0], windows[-1]
    gap = best["test_accuracy"] - ref["test_accuracy"]
    return {
        "answered": True, "compared": [best["run"], ref["run"]], "accuracy_gap": round(gap, 4),
        "reaches_reference": gap >= -tolerance, "tolerance": tolerance,
        "train_time_share": round(best["train_s"] / ref["train_s"], 3) if ref["train_s"] else None,
        "predict_time_share": round(best["predict_s"] / ref["predict_s"], 3) if ref["predict_s"] else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=SHARED / "bbc_news")
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--modes", nargs="+", default=["truncate", "head-tail", "sliding-window"])
    parser.add_argument("--reference-length", type=int, default=512, help="truncate at this length as the reference; 0: none")
    parser.add_argument("--max-train-samples", type=int, default=None, help="seeded sample of training articles")
    parser.add_argument("--max-test-samples", type=int, default=None, help="seeded sample of test articles")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--strategy", default="finetune",
                        help="finetune, or feature-extraction (encoder frozen: one forward pass per window, the head "
                             "trained on cached vectors) where the CPU cannot fine-tune every window")
    parser.add_argument("--tolerance", type=float, default=0.01, help="accuracy gap that still counts as reaching it")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if not (args.data_dir / "train.csv").is_file():
        print(f"error: {args.data_dir}/train.csv not found (../shared/data is only on developer/CI machines); pass "
              "--data-dir", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore")

    with tempfile.TemporaryDirectory(prefix="bench-long-") as tmp:
        work = Path(tmp)
        test = read_rows(args.data_dir / "test.csv")
        if args.max_test_samples and args.max_test_samples < len(test):
            test = random.Random(args.seed).sample(test, args.max_test_samples)
        files = {"train": args.data_dir / "train.csv", "test": write_rows(work / "test.csv", test)}
        plan = [(mode, length) for length in args.lengths for mode in args.modes]
        rows = []
        for mode, length in plan:
            rows.append(run_one(args, files, work, mode, length))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if args.reference_length:
            rows.append({**run_one(args, files, work, "truncate", args.reference_length), "reference": True})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    import torch

    report = {
        "dataset": args.data_dir.name, "model": args.model, "epochs": args.epochs, "batch_size": args.batch_size,
        "learning_rate": args.learning_rate, "seed": args.seed, "strategy": args.strategy,
        "max_train_samples": args.max_train_samples,
        "test_articles": len(test), "hardware": f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
        "runs": rows, "verdict": verdict(rows, args.tolerance),
    }
    print(f"{'run':<20} {'accuracy':>8} {'macro-F1':>8} {'train_s':>8} {'predict_s':>9} {'rows/article':>12}")
    for r in rows:
        print(f"{r['run']:<20} {r['test_accuracy']:>8.4f} {r['test_f1_macro']:>8.4f} {r['train_s']:>8.1f} "
              f"{r['predict_s']:>9.1f} {r['rows_per_training_article']:>12.2f}")
    print(json.dumps(report, indent=2))
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
