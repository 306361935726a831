"""Domain adaptation benchmark: movie reviews (labelled source) → Amazon product reviews (target).

Arms, each over the same seeds, all tested on ``amazon_reviews_test.csv``:

- ``source-only``: fine-tune on the movie reviews;
- ``dann``: ``--strategy dann`` with the texts of ``amazon_reviews_train.csv`` (labels removed) as target;
- ``adapt-lm+finetune``: ``adapt-lm`` on those texts, then fine-tune on the movie reviews from it;
- ``adapt-lm+dann``: both;
- ``self-training``: the source-only model of the same seed labels the target texts
  (``nlp-transfer pseudo-label``: probability ≥ ``--pseudo-label-threshold``, default pseudo-label's 0.7, the same
  number for each class); they join training as labelled target rows (``--strategy dann``,
  ``L_tgt`` on them, ``--adversarial-weight`` 0: no discriminator); its wall time includes the
  source-only run;
- ``in-domain``: the ceiling, fine-tuned on the Amazon labels themselves.

Prints a Markdown table and JSON (mean ± std of target accuracy and macro-F1, wall time per run). The
issue's full scale is the default (every row, 3 seeds, 3 epochs); on a small CPU pass e.g.
``--max-train-samples 1000 --target-samples 1000 --seeds 0 --epochs 2``. The adapted encoder is
trained once (seed of ``--lm-seed``) and shared by the seeds of the arms that use it.

    python scripts/bench_domain.py [--data ../shared/data/sentiment] [--arms source-only,dann] [--out bench.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ARMS = ("source-only", "dann", "adapt-lm+finetune", "adapt-lm+dann", "self-training", "in-domain")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sentiment"


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the four sentiment CSVs")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of: {', '.join(ARMS)}")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--max-train-samples", type=int, default=None, help="rows of the labelled training file")
    parser.add_argument("--target-samples", type=int, default=None, help="target texts used (seeded sample)")
    parser.add_argument("--adversarial-weight", type=float, default=0.1)
    parser.add_argument("--grl-schedule", default="ganin")
    parser.add_argument("--discriminator-hidden", type=int, default=256)
    parser.add_argument("--pseudo-label-threshold", type=float, default=None)
    parser.add_argument("--lm-epochs", type=int, default=5)
    parser.add_argument("--lm-learning-rate", type=float, default=1e-4)
    parser.add_argument("--lm-head-warmup-steps", type=int, default=300)
    parser.add_argument("--lm-seed", type=int, default=0)
    parser.add_argument("--lm-dir", type=Path, default=None,
                        help="keep the adapted encoder in this folder; a folder that already holds one is reused "
                        "(its adapt_lm_config.json must match these settings)")
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    return parser.parse_args()


def _target_texts(data: Path, work: Path, limit: int | None) -> Path:
    """The Amazon training texts with their labels removed (a seeded sample of ``limit`` rows)."""
    import random

    with open(data / "amazon_reviews_train.csv", encoding="utf-8", newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    if limit is not None and limit < len(texts):
        texts = random.Random(0).sample(texts, limit)
    path = work / "amazon_unlabelled.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text"])
        writer.writerows([t] for t in texts)
    return path


def _adapted_encoder(args: argparse.Namespace, target: Path, work: Path) -> tuple[str, dict]:
    from nlp_transfer.adapt_lm import adapt_lm
    from nlp_transfer.adapt_lm_config import AdaptLmConfig

    config = AdaptLmConfig(
        text_file=str(target), model=args.model, output_dir=str(args.lm_dir or work / "adapted-lm"), new_mlm_head=True,
        head_warmup_steps=args.lm_head_warmup_steps, epochs=args.lm_epochs, learning_rate=args.lm_learning_rate,
        max_length=args.max_length, batch_size=args.batch_size, seed=args.lm_seed, keep_checkpoints=0,
    )
    kept = Path(config.output_dir)
    if (kept / "adapt_lm_summary.json").is_file():
        saved = json.loads((kept / "adapt_lm_config.json").read_text(encoding="utf-8"))
        differs = [k for k, v in config.to_dict().items() if k not in ("text_file", "output_dir") and saved.get(k) != v]
        if differs:
            raise SystemExit(f"--lm-dir {kept} holds an encoder adapted with other settings ({', '.join(differs)})")
        return str(kept), {**json.loads((kept / "adapt_lm_summary.json").read_text(encoding="utf-8")), "reused": True}
    started = time.perf_counter()
    result = adapt_lm(config)
    return result.output_dir, {**result.summary, "wall_s": round(time.perf_counter() - started, 1)}


def _run_arm(arm: str, seed: int, args: argparse.Namespace, target: Path, encoder: str | None, work: Path) -> dict:
    if arm != "self-training":
        return _train_arm(arm, seed, args, target, encoder, work)
    teacher = work / f"source-only-{seed}"
    if not (teacher / "config.json").is_file():  # the source-only arm did not run first in this invocation
        _train_arm("source-only", seed, args, target, encoder, work)
    extra = _runs[("source-only", seed)]["wall_s"]
    from nlp_transfer import UserInputError
    from nlp_transfer.pseudo_label import pseudo_label

    started = time.perf_counter()
    try:
        pseudo = pseudo_label(str(teacher), str(target), str(work / f"pseudo-{seed}.csv"), overwrite=True,
                              **({"threshold": args.pseudo_label_threshold} if args.pseudo_label_threshold else {}))
    except UserInputError as err:  # some class has no confident text: nothing to add, the teacher is the result
        return {**_runs[("source-only", seed)], "pseudo_labels": str(err)}
    label_s = time.perf_counter() - started
    run = _train_arm(arm, seed, args, work / f"pseudo-{seed}.csv", encoder, work)
    return {**run, "wall_s": round(run["wall_s"] + extra + label_s, 1), "pseudo_labels": pseudo}


_runs: dict = {}  # (arm, seed) -> the results of the runs of this invocation


def _train_arm(arm: str, seed: int, args: argparse.Namespace, target: Path, encoder: str | None, work: Path) -> dict:
    from nlp_transfer import TrainConfig, train

    data = args.data
    settings = dict(
        train_file=str(data / ("amazon_reviews_train.csv" if arm == "in-domain" else "movie_reviews_train.csv")),
        test_file=str(data / "amazon_reviews_test.csv"), model=encoder if "adapt-lm" in arm else args.model,
        output_dir=str(work / f"{arm}-{seed}"), overwrite=True, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, max_length=args.max_length, seed=seed, keep_checkpoints=0,
        max_train_samples=args.max_train_samples, small_data="off",  # the --epochs budget as named (no step floor)
    )
    if arm.endswith("dann"):
        settings.update(strategy="dann", target_file=str(target), adversarial_weight=args.adversarial_weight,
                        grl_schedule=args.grl_schedule, discriminator_hidden=args.discriminator_hidden,
                        pseudo_label_threshold=args.pseudo_label_threshold)
    elif arm == "self-training":  # the target file holds the pseudo-labelled rows, as labelled target rows
        settings.update(strategy="dann", target_file=str(target), adversarial_weight=0.0)
    started = time.perf_counter()
    result = train(TrainConfig(**settings))
    test = result.metrics["test"]
    run = {"seed": seed, "accuracy": test["accuracy"], "f1_macro": test["f1_macro"],
           "source_validation_accuracy": (result.metrics.get("validation") or {}).get("accuracy"),
           "wall_s": round(time.perf_counter() - started, 1)}
    _runs[(arm, seed)] = run
    if "objective" in result.summary:
        run["discriminator_accuracy_per_epoch"] = result.summary["objective"].get("discriminator_accuracy_per_epoch")
    return run


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def main() -> None:
    args = _parse()
    logging.basicConfig(level=logging.WARNING)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s): {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "arms": {}}
    with tempfile.TemporaryDirectory(prefix="bench-domain-") as tmp:
        work = Path(tmp)
        target = _target_texts(args.data, work, args.target_samples)
        encoder = None
        for arm in arms:
            if "adapt-lm" in arm and encoder is None:  # trained once, when the first arm needs it
                encoder, report["adapt_lm"] = _adapted_encoder(args, target, work)
                print(json.dumps({"adapt_lm": report["adapt_lm"]}), file=sys.stderr, flush=True)
            runs = []
            for seed in seeds:
                runs.append(_run_arm(arm, seed, args, target, encoder, work))
                print(json.dumps({"arm": arm, **runs[-1]}), file=sys.stderr, flush=True)  # partial results
            report["arms"][arm] = {"runs": runs, **{k: _stats([r[k] for r in runs]) for k in
                                                    ("accuracy", "f1_macro", "wall_s")}}
    base = report["arms"].get("source-only")
    print("| arm | target accuracy | target macro-F1 | Δ accuracy vs source-only | wall s / run |")
    print("|---|---|---|---|---|")
    for arm, r in report["arms"].items():
        delta = f"{100 * (r['accuracy']['mean'] - base['accuracy']['mean']):+.2f} pts" if base else "n/a"
        print(f"| {arm} | {r['accuracy']['mean']:.4f} ± {r['accuracy']['std']:.4f} | {r['f1_macro']['mean']:.4f} ± "
              f"{r['f1_macro']['std']:.4f} | {delta} | {r['wall_s']['mean']:.0f} |")
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
