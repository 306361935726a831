"""Training speed: nlp-transfer vs the transformers Trainer, side by side, plus the roofline.

One command trains, on the same rows, model, batch size, learning rate, schedule and epochs:

  ours          nlp-transfer train (length-grouped batches, dynamic padding)
  trainer_pad   transformers.Trainer as run_classification.py runs it by default
                (every text padded to max_seq_length=128)
  trainer_tuned Trainer with DataCollatorWithPadding + train_sampling_strategy="group_by_length"

Each variant runs in its own subprocess (so peak RSS is its own) and prints JSON: samples/s,
real (non-pad) tokens/s, padding fraction, wall time, peak RSS, test accuracy and macro-F1.
The parent adds the ratios ours / each baseline, the machine's fp32 matmul throughput and our
throughput as a fraction of the roofline (training FLOPs per real token ≈ 6 × non-embedding
parameters + attention), and the same for the FLOPs ours executes (the last layer runs at [CLS]
only, so it does less work than that count).

    python scripts/bench_train.py --dataset trec --train-rows 2000
    python scripts/bench_train.py --scale 1000 10000 100000   # time and memory vs data size (ours)
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
VARIANTS = ("ours", "trainer_pad", "trainer_tuned")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_rows(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows({"text": r["text"], "label": r["label"]} for r in rows)


def read_rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def make_files(args, workdir: Path) -> dict:
    """Seeded subsets written once, so every variant reads the very same rows."""
    import random

    source = SHARED / args.dataset
    train = read_rows(source / "train.csv")
    test = read_rows(source / "test.csv")
    rng = random.Random(args.seed)
    rng.shuffle(train)
    rng.shuffle(test)
    if args.train_rows:
        # Repeat real rows when more are asked than exist (the scale runs).
        train = [train[i % len(train)] for i in range(args.train_rows)]
    test = test[: args.test_rows] if args.test_rows else test
    files = {"train": workdir / "train.csv", "test": workdir / "test.csv", "validation": workdir / "validation.csv"}
    write_rows(files["train"], train)
    write_rows(files["test"], test)
    write_rows(files["validation"], test[: args.validation_rows])
    return {k: str(v) for k, v in files.items()}


# ----------------------------------------------------------------------------- variants


def run_ours(args, files: dict) -> dict:
    from nlp_transfer import DEFAULT_MODEL, TrainConfig, train

    out = Path(args.workdir) / "ours-model"
    start = time.perf_counter()
    result = train(TrainConfig(
        train_file=files["train"], validation_file=files["validation"], test_file=files["test"],
        model=args.model or DEFAULT_MODEL, output_dir=str(out), overwrite=True, epochs=args.epochs, batch_size=args.batch_size,
        eval_batch_size=64, learning_rate=args.learning_rate, max_length=args.max_length, seed=args.seed,
        mixed_precision=args.mixed_precision,
        small_data="off",  # the Trainer's budget: one pass per epoch (no step floor)
    ))
    wall = time.perf_counter() - start
    s = result.summary
    return {
        "train_seconds": s["train_loop_s"], "wall_seconds": wall,
        "samples_per_s": s["train_samples_per_s"], "real_tokens_per_s": s["train_tokens_per_s"],
        "padding_fraction": s["padding_fraction"],
        "test_accuracy": result.metrics["test"]["accuracy"], "test_f1_macro": result.metrics["test"]["f1_macro"],
    }


class CountingCollator:
    """Wraps a collator and counts real vs padded tokens of the batches it builds."""

    def __init__(self, inner):
        self.inner, self.real, self.padded = inner, 0, 0

    def __call__(self, features):
        batch = self.inner(features)
        mask = batch["attention_mask"]
        self.real += int(mask.sum())
        self.padded += mask.numel()
        return batch


def run_trainer(args, files: dict, tuned: bool) -> dict:
    import numpy as np
    from datasets import load_dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments, default_data_collator, set_seed)

    from nlp_transfer.config import DEFAULT_MODEL
    from nlp_transfer.metrics import compute_report
    from nlp_transfer.modeling import resolve_model

    path = resolve_model(DEFAULT_MODEL)
    start = time.perf_counter()
    raw = load_dataset("csv", data_files={"train": files["train"], "test": files["test"]})
    labels = sorted(set(raw["train"]["label"]))
    label2id = {name: i for i, name in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(path)
    max_length = args.max_length if tuned else 128  # run_classification.py: max_seq_length=128, pad_to_max_length

    def preprocess(batch):
        enc = tokenizer(batch["text"], truncation=True, max_length=max_length,
                        padding=False if tuned else "max_length")
        enc["labels"] = [label2id[v] for v in batch["label"]]
        return enc

    data = raw.map(preprocess, batched=True, remove_columns=["text", "label"])
    set_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    collator = CountingCollator(DataCollatorWithPadding(tokenizer) if tuned else default_data_collator)
    training_args = TrainingArguments(
        output_dir=str(Path(args.workdir) / ("trainer-tuned" if tuned else "trainer-pad")),
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64,
        learning_rate=args.learning_rate, num_train_epochs=args.epochs, weight_decay=0.01, warmup_steps=0.1,
        lr_scheduler_type="linear", max_grad_norm=1.0, seed=args.seed, save_strategy="no", report_to="none",
        logging_strategy="no", disable_tqdm=True, use_cpu=not args.gpu,
        bf16=args.mixed_precision == "bf16", fp16=args.mixed_precision == "fp16",
        train_sampling_strategy="group_by_length" if tuned else "random",
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=data["train"], data_collator=collator)
    train_start = time.perf_counter()
    from nlp_transfer.speed.allocator import reuse_freed_memory

    with reuse_freed_memory() if args.trainer_heap_reuse else contextlib.nullcontext():
        trainer.train()
    train_seconds = time.perf_counter() - train_start
    real, padded = collator.real, collator.padded
    output = trainer.predict(data["test"])
    predictions = np.argmax(output.predictions, axis=-1)
    report = compute_report(predictions, output.label_ids, labels)
    n = len(data["train"]) * args.epochs
    return {
        "train_seconds": train_seconds, "wall_seconds": time.perf_counter() - start,
        "samples_per_s": n / train_seconds, "real_tokens_per_s": real / train_seconds,
        "padding_fraction": 1 - real / padded if padded else 0.0,
        "test_accuracy": report["accuracy"], "test_f1_macro": report["f1_macro"],
    }


def build_tiny_model(path: Path) -> str:
    """A 2-layer random BERT with the real tokenizer: the model cost is small, the data pipeline is not."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from nlp_transfer.config import DEFAULT_MODEL
    from nlp_transfer.modeling import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=128)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


# ----------------------------------------------------------------------------- roofline


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best fp32 matmul throughput of this machine, in GFLOP/s."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def flops_per_real_token(mean_length: float) -> dict:
    """Training FLOPs per real token: 6 × non-embedding parameters + attention scores and mixing."""
    from transformers import AutoConfig

    from nlp_transfer.config import DEFAULT_MODEL
    from nlp_transfer.modeling import resolve_model

    cfg = AutoConfig.from_pretrained(resolve_model(DEFAULT_MODEL))
    d, layers, ff = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    per_layer = 4 * d * d + 2 * d * ff  # Q, K, V, output projections + the two feed-forward matrices
    non_embedding = layers * per_layer + d * d  # + pooler
    # QK^T and attention·V: 2 × (2 · s · d) forward FLOPs per token per layer; × 3 for backward.
    attention = 3 * layers * 4 * mean_length * d
    nominal = 6 * non_embedding + attention
    # What ours executes: with --cls-only-last-layer (the default) the last layer computes keys and
    # values at every position but its query, output projection and feed-forward block, and its
    # attention, at [CLS] only. The nominal count above is the one the roofline target is set on.
    skipped_share = (mean_length - 1) / mean_length
    skipped = skipped_share * (6 * (2 * d * d + 2 * d * ff) + 3 * 4 * mean_length * d)
    return {"non_embedding_params": non_embedding, "flops_per_token": nominal,
            "executed_flops_per_token": nominal - skipped}


# ----------------------------------------------------------------------------- driver


def median_run(runs: list[dict]) -> dict:
    """The run with the median samples/s (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: r["samples_per_s"])[(len(runs) - 1) // 2]


def run_variant_subprocess(args, variant: str, files: dict) -> dict:
    cmd = [sys.executable, __file__, "--run-variant", variant, "--files", json.dumps(files)] + args.passthrough
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="trec", help="folder of ../shared/data (trec, rotten_tomatoes, ...)")
    parser.add_argument("--train-rows", type=int, default=2000, help="seeded sample of training rows (repeated if larger)")
    parser.add_argument("--test-rows", type=int, default=0, help="test rows (0 = all)")
    parser.add_argument("--validation-rows", type=int, default=200, help="rows of test used as our validation file")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--gpu", action="store_true", help="let the Trainer use the GPU (ours follows accelerate)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--repeats", type=int, default=1, help="run the variants this many times, interleaved "
                        "(ours, baselines, ours, ...), and report each variant's median run: a shared or "
                        "virtual machine's noise then hits every variant alike")
    parser.add_argument("--trainer-heap-reuse", action="store_true", help="give the Trainer runs the same glibc "
                        "heap setting that nlp-transfer applies while training (nlp_transfer.speed.allocator), to "
                        "separate that setting's share of the speed-up")
    parser.add_argument("--scale", nargs="+", type=int, help="instead: time and peak memory of ours at these row counts")
    parser.add_argument("--model", help="encoder for ours (default: the packaged MiniLM); 'tiny' = a 2-layer random "
                        "BERT, for scale runs that measure the data pipeline rather than the model")
    parser.add_argument("--run-variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    keep = ("--model", "--dataset", "--epochs", "--batch-size", "--learning-rate", "--max-length", "--seed", "--mixed-precision")
    args.passthrough = [x for k in keep if getattr(args, k[2:].replace("-", "_")) is not None
                        for x in (k, str(getattr(args, k[2:].replace("-", "_"))))]
    if args.gpu:
        args.passthrough.append("--gpu")
    if args.trainer_heap_reuse:
        args.passthrough.append("--trainer-heap-reuse")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.run_variant:
        import torch

        files = json.loads(args.files)
        args.workdir = str(Path(files["train"]).parent)
        result = {"ours": run_ours, "trainer_pad": lambda a, f: run_trainer(a, f, tuned=False),
                  "trainer_tuned": lambda a, f: run_trainer(a, f, tuned=True)}[args.run_variant](args, files)
        result["peak_rss_mb"] = peak_rss_mb()
        result["torch_threads"] = torch.get_num_threads()
        print(json.dumps(result))
        return

    if not (SHARED / args.dataset).exists():
        raise SystemExit(f"{SHARED / args.dataset} is missing: the benchmark needs ../shared/data")
    import torch

    report: dict = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "settings": {k: getattr(args, k) for k in ("dataset", "train_rows", "test_rows", "epochs", "batch_size",
                                                   "learning_rate", "max_length", "seed", "mixed_precision")},
    }
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        if args.model == "tiny":
            args.model = build_tiny_model(Path(tmp) / "tiny-bert")
            args.passthrough[args.passthrough.index("--model") + 1] = args.model
            report["settings"]["model"] = "tiny random BERT (2 layers, hidden 64) with the MiniLM tokenizer"
        if args.scale:
            report["scale"] = []
            for rows in args.scale:
                args.train_rows = rows
                workdir = Path(tmp) / f"rows-{rows}"
                workdir.mkdir()
                files = make_files(args, workdir)
                result = run_variant_subprocess(args, "ours", files)
                report["scale"].append({"train_rows": rows, **result})
                print(json.dumps(report["scale"][-1]), file=sys.stderr)
            print(json.dumps(report, indent=2))
            return
        files = make_files(args, Path(tmp))
        runs: dict = {variant: [] for variant in args.variants}
        for _ in range(args.repeats):
            for variant in args.variants:
                runs[variant].append(run_variant_subprocess(args, variant, files))
                print(f"{variant}: {json.dumps(runs[variant][-1])}", file=sys.stderr)
    results = {variant: median_run(rs) for variant, rs in runs.items()}
    report["results"] = results
    if args.repeats > 1:
        report["samples_per_s_of_each_run"] = {v: [round(r["samples_per_s"], 1) for r in rs] for v, rs in runs.items()}
    if "ours" in results:
        for base in ("trainer_pad", "trainer_tuned"):
            if base in results:
                report[f"ours_vs_{base}"] = {
                    "samples_per_s": results["ours"]["samples_per_s"] / results[base]["samples_per_s"],
                    "wall_time": results[base]["wall_seconds"] / results["ours"]["wall_seconds"],
                    "accuracy_difference_points": 100 * (results["ours"]["test_accuracy"] - results[base]["test_accuracy"]),
                }
        ours = results["ours"]
        mean_len = ours["real_tokens_per_s"] / ours["samples_per_s"]  # real tokens per training text
        flops = flops_per_real_token(mean_len)
        peak = matmul_gflops()
        achieved = results["ours"]["real_tokens_per_s"] * flops["flops_per_token"] / 1e9
        report["roofline"] = {
            "matmul_fp32_gflops": peak, **flops, "mean_real_tokens_per_text": mean_len,
            "ours_achieved_gflops": achieved, "fraction_of_roofline": achieved / peak,
            "fraction_of_roofline_executed": results["ours"]["real_tokens_per_s"]
            * flops["executed_flops_per_token"] / 1e9 / peak,
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
