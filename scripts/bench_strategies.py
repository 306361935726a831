"""Transfer strategies side by side, by pooling: accuracy, macro-F1, time and trainable parameters.

On the same seeded rows, seed, model (the bundled all-MiniLM-L6-v2) and fine-tuning epochs, for each
dataset and each pooling (``--pooling cls`` and ``mean``; mean is carried by an appended fixed
encoder layer, so every saved folder is a plain BertForSequenceClassification):

  finetune              every weight trains (lr 1e-4), --epochs
  finetune+llrd0.8      the same with layer-wise LR decay 0.8
  freeze4               embeddings + bottom 4 of 6 layers frozen
  gradual-unfreeze      ULMFiT: the head in epoch 1, one more layer group each later epoch
  lora-r8               LoRA r=8, alpha=16 on query/value (lr 5e-4), merged at save
  feature-extraction    frozen encoder, head on cached vectors, at the strategy's defaults (single-label:
                        --head-solver lbfgs, a logistic regression solved by L-BFGS, its L2 strength
                        picked on the validation split), from an empty cache: the encoding is part of the time
  feature-extraction adamw  the same head trained by gradient steps (--head-solver adamw: lr 1e-3 without
                        warm-up, up to 100 epochs, early stopping after 5), reading the cache the run above filled
  logreg (sklearn)      the baseline: scikit-learn LogisticRegression (default C=1, lbfgs) on the very
                        vectors the feature-extraction run cached, fitted on all training rows (the
                        head sees 90% of them; the other 10% pick its epoch), scored on the same test rows

``--runs`` picks groups (default: all); ``--train-rows`` defaults to the full training files.
Times: ``wall_s`` is the whole train() call (tokenizing, loading, encoding, validation, test,
saving); ``train_s`` is the training loop plus, for feature extraction, the encoder pass that
fills the cache; the baseline's is its fit. Checkpoints are off
(--keep-checkpoints 0) so no strategy pays for writing optimizer states. Prints a table, then the JSON.

On a CPU shared with other jobs, OMP_NUM_THREADS=1 avoids torch's threads waiting on each other (a
head step on cached vectors was 10x faster so on the 2-core CI machine under load).

    flock /tmp/nlp-transfer-bench.lock python scripts/bench_strategies.py --runs feature-extraction
    python scripts/bench_strategies.py --runs finetune --train-rows 600 --epochs 2
    python scripts/bench_strategies.py --datasets trec --train-rows 300 --epochs 1 --poolings mean

Needs scikit-learn for the baseline (``pip install 'nlp-transfer[bench]'``).
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


MAX_LENGTH = {"bbc_news": 128, "trec": 64}


def subset_files(dataset: str, train_rows: int | None, test_rows: int | None, seed: int, workdir: Path) -> dict[str, Any]:
    """Seeded subsets written once, so every strategy reads the very same rows."""
    train = read_rows(SHARED / dataset / "train.csv")
    test = read_rows(SHARED / dataset / "test.csv")
    rng = random.Random(seed)
    rng.shuffle(train)
    train = train[:train_rows] if train_rows is not None else train
    if test_rows is not None and test_rows < len(test):
        rng.shuffle(test)
        test = test[:test_rows]
    folder = workdir / dataset
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "train": str(write_rows(folder / "train.csv", train)), "test": str(write_rows(folder / "test.csv", test)),
        "train_rows": len(train), "test_rows": len(test),
    }


RUN_GROUPS = ("feature-extraction", "finetune", "strategies")


def strategy_runs(groups: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """The runs of the chosen groups; feature extraction keeps its strategy defaults (epochs, rate, stopping)."""
    features = {"strategy": "feature-extraction", "epochs": None}
    adamw = {**features, "head_solver": "adamw"}
    runs = {
        "finetune": [("finetune", {})],
        "strategies": [
            ("finetune+llrd0.8", {"layer_lr_decay": 0.8}),
            ("freeze4", {"strategy": "freeze", "freeze_layers": 4}),
            ("gradual-unfreeze", {"strategy": "gradual-unfreeze"}),
            ("lora-r8", {"strategy": "lora", "lora_r": 8, "learning_rate": 5e-4}),
        ],
        "feature-extraction": [("feature-extraction (cold cache)", features),
                               ("feature-extraction adamw (warm cache)", adamw)],
    }
    return [run for group in RUN_GROUPS if group in groups for run in runs[group]]


def run_strategy(name: str, overrides: dict[str, Any], files: dict[str, Any], common: dict[str, Any],
                 workdir: Path) -> dict[str, Any]:
    from nlp_transfer import TrainConfig, train

    values = {**common, **overrides}
    if values.get("strategy") == "feature-extraction":
        values["feature_cache_dir"] = str(workdir / "feature-cache")
    slug = "".join(c if c.isalnum() else "-" for c in name)
    config = TrainConfig(train_file=files["train"], test_file=files["test"],
                         output_dir=str(workdir / "models" / slug), overwrite=True, **values)
    start = time.perf_counter()
    result = train(config)
    wall = time.perf_counter() - start
    summary, test = result.summary, result.metrics["test"]
    encode_s = (summary.get("feature_cache") or {}).get("encode_seconds", 0.0)
    return {
        "strategy": name,
        "pooling": config.pooling,
        "settings": {k: v for k, v in overrides.items()},
        "epochs": config.epochs,
        "epochs_run": summary["epochs_run"],
        "learning_rate": config.learning_rate,
        "test_accuracy": test["accuracy"],
        "test_f1_macro": test["f1_macro"],
        "wall_s": wall,
        "train_s": summary["train_loop_s"] + encode_s,
        "train_loop_s": summary["train_loop_s"],
        "encode_s": encode_s,
        "trainable_parameters": summary["trainable_parameters"],
        "total_parameters": summary["total_parameters"],
        "feature_cache": summary.get("feature_cache"),
    }


def logreg_baseline(files: dict[str, Any], common: dict[str, Any], pooling: str, workdir: Path) -> dict[str, Any]:
    """scikit-learn's LogisticRegression on the vectors the feature-extraction run cached (read back: no encoding)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from nlp_transfer import TrainConfig
    from nlp_transfer.data import column, prepare_data
    from nlp_transfer.features import CacheStats, cached_features
    from nlp_transfer.metrics import compute_report
    from nlp_transfer.modeling import load_for_training, load_tokenizer
    from nlp_transfer.pooling import apply_pooling
    from nlp_transfer.strategies import apply_strategy

    config = TrainConfig(train_file=files["train"], test_file=files["test"], strategy="feature-extraction",
                         pooling=pooling, **{k: v for k, v in common.items() if k != "epochs"})
    tokenizer = load_tokenizer(config.model)
    data = prepare_data(config, tokenizer)
    model = apply_strategy(load_for_training(config.model, data.labels), config)
    apply_pooling(model, pooling, config.model)
    stats = CacheStats(str(workdir / "feature-cache"))

    def vectors(ds):
        feats = cached_features(model, ds, tokenizer, config.max_length, pooling, stats.directory,
                                config.eval_batch_size, "cpu", stats)
        return np.asarray(feats.with_format("numpy")["features"], dtype=np.float32)

    def labels(ds):
        return column(ds, "labels").to_numpy().astype(np.int64)

    x_train = np.concatenate([vectors(data.train), vectors(data.validation)])
    y_train = np.concatenate([labels(data.train), labels(data.validation)])
    start = time.perf_counter()
    classifier = LogisticRegression(max_iter=5000).fit(x_train, y_train)
    fit_s = time.perf_counter() - start
    report = compute_report(classifier.predict(vectors(data.test)).tolist(), labels(data.test).tolist(), data.labels)
    return {
        "strategy": "logreg (sklearn)", "pooling": pooling, "test_accuracy": report["accuracy"],
        "test_f1_macro": report["f1_macro"], "train_s": fit_s, "fit_rows": len(y_train),
        "cache_hits": stats.hits, "rows_encoded": stats.rows_encoded,
    }


def print_table(dataset: str, rows: list[dict]) -> None:
    print(f"\n{dataset}")
    print(f"{'strategy':34} {'pool':>5} {'acc':>6} {'F1':>6} {'epochs':>7} {'wall_s':>7} {'train_s':>8} {'trainable':>11}")
    for r in rows:
        epochs = f"{r['epochs_run']}/{r['epochs']}" if "epochs_run" in r else ""
        wall = f"{r['wall_s']:7.1f}" if "wall_s" in r else f"{'':>7}"
        trainable = f"{r['trainable_parameters']:11,}" if "trainable_parameters" in r else ""
        print(f"{r['strategy']:34} {r['pooling']:>5} {r['test_accuracy']:6.3f} {r['test_f1_macro']:6.3f} {epochs:>7} "
              f"{wall} {r['train_s']:8.2f} {trainable}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(MAX_LENGTH), choices=list(MAX_LENGTH))
    parser.add_argument("--runs", nargs="+", default=list(RUN_GROUPS), choices=RUN_GROUPS,
                        help="groups of runs (default: all)")
    parser.add_argument("--poolings", nargs="+", default=["cls", "mean"], choices=["cls", "mean"])
    parser.add_argument("--train-rows", type=int, default=None, help="seeded subset of each training file (default: all)")
    parser.add_argument("--test-rows", type=int, default=None, help="subset of each test file (default: all)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the fine-tuning strategies")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args()

    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()

    from nlp_transfer import DEFAULT_MODEL

    results: dict[str, Any] = {
        "model": DEFAULT_MODEL,
        "hardware": f"CPU ({platform.machine()}, {torch.get_num_threads()} threads; {os.cpu_count()} cores shared "
                    "with other work)" if not torch.cuda.is_available() else torch.cuda.get_device_name(0),
        "protocol": {
            "train_rows": args.train_rows or "all", "test_rows": args.test_rows or "all",
            "finetune_epochs": args.epochs, "feature_extraction": "strategy defaults", "seed": args.seed,
            "validation": "0.1 of the training rows (stratified)", "batch_size": 32,
            "max_length": {d: MAX_LENGTH[d] for d in args.datasets}, "checkpoints": "off (--keep-checkpoints 0)",
        },
        "datasets": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-strategies-") as tmp:
        workdir = Path(tmp)
        for dataset in args.datasets:
            files = subset_files(dataset, args.train_rows, args.test_rows, args.seed, workdir)
            common = {"epochs": args.epochs, "max_length": MAX_LENGTH[dataset], "seed": args.seed,
                      "batch_size": 32, "keep_checkpoints": 0,
                      "small_data": "off"}  # the --epochs budget as named, one pass each (no step floor)
            rows = []
            for pooling in args.poolings:
                for name, overrides in strategy_runs(args.runs):
                    rows.append(run_strategy(name, {**overrides, "pooling": pooling}, files, common,
                                             workdir / dataset / pooling))
                    print(f"  {dataset}: {name} ({pooling}) done ({rows[-1]['wall_s']:.0f} s)", file=sys.stderr,
                          flush=True)
                if "feature-extraction" in args.runs:
                    rows.append(logreg_baseline(files, common, pooling, workdir / dataset / pooling))
            compare(rows)
            results["datasets"][dataset] = {"train_rows": files["train_rows"], "test_rows": files["test_rows"],
                                            "runs": rows}
            print_table(dataset, rows)
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    return 0


def compare(rows: list[dict]) -> None:
    """Add each run's accuracy against fine-tuning and against the baseline with the same pooling."""
    for r in rows:
        same = {o["strategy"]: o for o in rows if o["pooling"] == r["pooling"]}
        if "finetune" in same:
            r["accuracy_vs_finetune"] = r["test_accuracy"] - same["finetune"]["test_accuracy"]
        if "logreg (sklearn)" in same:
            r["accuracy_vs_logreg"] = r["test_accuracy"] - same["logreg (sklearn)"]["test_accuracy"]


if __name__ == "__main__":
    sys.exit(main())
