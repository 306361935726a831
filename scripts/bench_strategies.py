"""Transfer strategies side by side: accuracy, macro-F1, time and trainable parameters.

On the same seeded rows, seed, model (the bundled all-MiniLM-L6-v2) and epochs, for each dataset:

  finetune              every weight trains (lr 1e-4)
  finetune+llrd0.8      the same with layer-wise LR decay 0.8
  freeze4               embeddings + bottom 4 of 6 layers frozen
  gradual-unfreeze      ULMFiT: the head in epoch 1, one more layer group each later epoch
  lora-r8               LoRA r=8, alpha=16 on query/value (lr 5e-4), merged at save
  feature-extraction    frozen encoder, pooler + classifier on cached [CLS] vectors (lr 1e-3):
                        "cold" (empty cache: the encoding is part of the time), "warm" (a re-run
                        with the same model/data/length: no encoder pass), and warm with 10× epochs

then the pooling comparison for feature extraction: the same head (pooler dense + tanh +
classifier) trained by the same loop on cached [CLS] vectors and on mean-pooled vectors.
Only [CLS] is offered by ``--strategy feature-extraction``: the saved BertForSequenceClassification
reads [CLS], so pipeline() reproduces it; a mean-pooling head has no place in a standard folder.

Times: ``wall_s`` is the whole train() call (tokenizing, loading, encoding, validation, test,
saving); ``train_s`` is the training loop plus, for feature extraction, the encoder pass that
fills the cache (zero when warm). Checkpoints are off (--keep-checkpoints 0) so no strategy pays
for writing optimizer states. Prints a table, then the JSON.

    flock /tmp/nlp-transfer-bench.lock python scripts/bench_strategies.py
    python scripts/bench_strategies.py --datasets trec --train-rows 300 --epochs 1
"""

from __future__ import annotations

import argparse
import csv
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

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MAX_LENGTH = {"bbc_news": 128, "trec": 64}


def read_rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [{"text": r["text"], "label": r["label"]} for r in csv.DictReader(fh)]


def write_rows(path: Path, rows: list[dict]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def subset_files(dataset: str, train_rows: int, test_rows: int | None, seed: int, workdir: Path) -> dict[str, Any]:
    """Seeded subsets written once, so every strategy reads the very same rows."""
    train = read_rows(SHARED / dataset / "train.csv")
    test = read_rows(SHARED / dataset / "test.csv")
    rng = random.Random(seed)
    rng.shuffle(train)
    train = train[:train_rows]
    if test_rows is not None and test_rows < len(test):
        rng.shuffle(test)
        test = test[:test_rows]
    folder = workdir / dataset
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "train": str(write_rows(folder / "train.csv", train)), "test": str(write_rows(folder / "test.csv", test)),
        "train_rows": len(train), "test_rows": len(test),
    }


def strategy_runs(epochs: int) -> list[tuple[str, dict[str, Any]]]:
    features = {"strategy": "feature-extraction", "learning_rate": 1e-3}
    return [
        ("finetune", {}),
        ("finetune+llrd0.8", {"layer_lr_decay": 0.8}),
        ("freeze4", {"strategy": "freeze", "freeze_layers": 4}),
        ("gradual-unfreeze", {"strategy": "gradual-unfreeze"}),
        ("lora-r8", {"strategy": "lora", "lora_r": 8, "learning_rate": 5e-4}),
        ("feature-extraction (cold cache)", features),
        ("feature-extraction (warm cache)", features),
        (f"feature-extraction (warm, {10 * epochs} epochs)", {**features, "epochs": 10 * epochs}),
    ]


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
        "settings": {k: v for k, v in overrides.items()},
        "epochs": config.epochs,
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


def pooling_comparison(files: dict[str, Any], common: dict[str, Any], epochs: int, workdir: Path) -> list[dict]:
    """The same head and loop on cached [CLS] vs mean-pooled vectors (no model is saved)."""
    import numpy as np
    import torch
    from transformers import get_linear_schedule_with_warmup

    from nlp_transfer import TrainConfig
    from nlp_transfer.data import column, prepare_data
    from nlp_transfer.features import CacheStats, FeatureHead, cached_features
    from nlp_transfer.metrics import compute_report
    from nlp_transfer.modeling import load_for_training, load_tokenizer
    from nlp_transfer.strategies import apply_strategy

    config = TrainConfig(train_file=files["train"], test_file=files["test"], strategy="feature-extraction",
                         learning_rate=1e-3, epochs=epochs, **{k: v for k, v in common.items() if k != "epochs"})
    tokenizer = load_tokenizer(config.model)
    data = prepare_data(config, tokenizer)
    out = []
    for pooling in ("cls", "mean"):
        torch.manual_seed(config.seed)
        model = apply_strategy(load_for_training(config.model, data.labels), config)
        stats = CacheStats(str(workdir / "feature-cache"))

        def vectors(ds):
            feats = cached_features(model, ds, tokenizer, config.max_length, pooling, stats.directory,
                                    config.eval_batch_size, "cpu", stats)
            return torch.from_numpy(np.asarray(feats.with_format("numpy")["features"], dtype=np.float32))

        x_train, x_test = vectors(data.train), vectors(data.test)
        y_train = torch.from_numpy(column(data.train, "labels").to_numpy().astype(np.int64))
        y_test = column(data.test, "labels").to_numpy().astype(np.int64)
        head = FeatureHead(model)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        steps = epochs * -(-len(y_train) // config.batch_size)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * steps), steps)
        generator = torch.Generator().manual_seed(config.seed)
        start = time.perf_counter()
        head.train()
        for _ in range(epochs):
            order = torch.randperm(len(y_train), generator=generator)
            for i in range(0, len(order), config.batch_size):
                rows = order[i:i + config.batch_size]
                head(x_train[rows], y_train[rows]).loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        loop_s = time.perf_counter() - start
        head.eval()
        with torch.no_grad():
            predictions = head(x_test).logits.argmax(-1).numpy()
        report = compute_report(predictions.tolist(), y_test.tolist(), data.labels)
        out.append({
            "pooling": pooling, "epochs": epochs, "test_accuracy": report["accuracy"],
            "test_f1_macro": report["f1_macro"], "head_train_s": loop_s, "encode_s": stats.encode_seconds,
            "reproducible_in_pipeline": pooling == "cls",
        })
    return out


def print_table(dataset: str, rows: list[dict], pooling: list[dict]) -> None:
    print(f"\n{dataset}")
    print(f"{'strategy':38} {'acc':>6} {'F1':>6} {'wall_s':>7} {'train_s':>8} {'trainable':>11}")
    for r in rows:
        print(f"{r['strategy']:38} {r['test_accuracy']:6.3f} {r['test_f1_macro']:6.3f} {r['wall_s']:7.1f} "
              f"{r['train_s']:8.2f} {r['trainable_parameters']:11,}")
    for p in pooling:
        print(f"{'  head on ' + p['pooling'] + ' vectors (' + str(p['epochs']) + ' ep)':38} "
              f"{p['test_accuracy']:6.3f} {p['test_f1_macro']:6.3f} {'':>7} {p['head_train_s']:8.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(MAX_LENGTH), choices=list(MAX_LENGTH))
    parser.add_argument("--train-rows", type=int, default=600, help="seeded subset of each training file")
    parser.add_argument("--test-rows", type=int, default=None, help="subset of each test file (default: all)")
    parser.add_argument("--epochs", type=int, default=2)
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
            "train_rows": args.train_rows, "test_rows": args.test_rows or "all", "epochs": args.epochs,
            "seed": args.seed, "validation": "0.1 of the training rows (stratified)", "batch_size": 32,
            "max_length": {d: MAX_LENGTH[d] for d in args.datasets}, "checkpoints": "off (--keep-checkpoints 0)",
            "note": "subsets and few epochs so the whole benchmark runs on a 2-core CPU; accuracies are lower "
                    "than with full data",
        },
        "datasets": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-strategies-") as tmp:
        workdir = Path(tmp)
        for dataset in args.datasets:
            files = subset_files(dataset, args.train_rows, args.test_rows, args.seed, workdir)
            common = {"epochs": args.epochs, "max_length": MAX_LENGTH[dataset], "seed": args.seed,
                      "batch_size": 32, "keep_checkpoints": 0}
            rows = []
            for name, overrides in strategy_runs(args.epochs):
                rows.append(run_strategy(name, overrides, files, common, workdir / dataset))
                print(f"  {dataset}: {name} done ({rows[-1]['wall_s']:.0f} s)", file=sys.stderr, flush=True)
            pooling = pooling_comparison(files, {**common, "epochs": 10 * args.epochs}, 10 * args.epochs,
                                         workdir / dataset)
            by_name = {r["strategy"]: r for r in rows}
            base = by_name["finetune"]
            for r in rows:
                r["accuracy_vs_finetune"] = r["test_accuracy"] - base["test_accuracy"]
                r["train_speedup_vs_finetune"] = base["train_s"] / r["train_s"] if r["train_s"] else None
                r["wall_speedup_vs_finetune"] = base["wall_s"] / r["wall_s"]
            results["datasets"][dataset] = {
                "train_rows": files["train_rows"], "test_rows": files["test_rows"],
                "strategies": rows, "feature_extraction_pooling": pooling,
            }
            print_table(dataset, rows, pooling)
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
