"""Training under ``accelerate launch`` with two CPU processes (gloo): the same command, the same files.

Evaluation must count every row exactly once (odd row counts leave a shard one row short, which
``gather_for_metrics`` must not pad with a duplicate), only the main process writes, checkpoints
are written collectively, and the result matches a one-process run within noise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nlp_transfer.cli import main
from nlp_transfer.plots import plots_available

from conftest import synthetic_rows, write_csv, write_splits

MODEL_FILES = {"README.md", "config.json", "metrics.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json", "training_config.json", "training_summary.json"} | (
    {"training_curves.png", "confusion_matrix.png"} if plots_available() else set())


# accelerate's --cpu flag starts a single process unless MPI is set up; the multi-process
# launcher with ACCELERATE_USE_CPU gives torch.distributed over gloo (see the README).
LAUNCHER = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "nlp_transfer.cli"]


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="the accelerate launcher is not on PATH")
def test_two_processes_train_evaluate_every_row_once_and_match_one_process(tiny_model_dir, tmp_path):
    files = write_splits(tmp_path, train=160, validation=41, test=81)

    def args(out: Path) -> list[str]:
        return [
            "-q", "train", str(files["train"]), "--validation-file", str(files["validation"]),
            "--test-file", str(files["test"]), "--model", tiny_model_dir, "--output-dir", str(out),
            "--epochs", "4", "--batch-size", "8", "--learning-rate", "2e-3", "--max-length", "32",
            "--checkpoint-every", "5", "--small-data", "off",  # one pass per epoch: the batch counts below
        ]

    env = {**os.environ, "ACCELERATE_USE_CPU": "true"}
    # Without -q (which switches the progress bars off): the bar shows how many batches each process ran.
    proc = subprocess.run([*LAUNCHER, *args(tmp_path / "two")[1:]], capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Each process trained on half of the 20 batches of an epoch: really two processes, not one.
    assert "Epoch 1/4: 100%|██████████| 10/10" in proc.stderr.replace("\r", "\n")
    assert main(args(tmp_path / "one")) == 0

    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert two["validation"]["num_samples"] == 41
    assert two["test"]["num_samples"] == 81
    assert sum(map(sum, two["test"]["confusion_matrix"]["matrix"])) == 81
    assert abs(two["test"]["accuracy"] - one["test"]["accuracy"]) <= 0.1
    assert two["test"]["accuracy"] >= 0.85
    # Only the main process wrote: exactly the model files, no checkpoints, nothing beside the folders.
    assert {p.name for p in (tmp_path / "two").iterdir()} == MODEL_FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "test.csv", "train.csv", "two", "validation.csv"]
    print(json.dumps({"one_process": one["test"]["accuracy"], "two_processes": two["test"]["accuracy"]}))


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="the accelerate launcher is not on PATH")
def test_dann_in_two_processes_saves_a_plain_classifier_and_matches_one_process(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file
    from transformers import pipeline

    files = write_splits(tmp_path, train=320, validation=41, test=81)
    target = write_csv(tmp_path / "target.csv", [(text.replace("movie", "phone"), label if i % 3 == 0 else "")
                                                 for i, (text, label) in enumerate(synthetic_rows(90, seed=11))])

    def args(out: Path, batch_size: int) -> list[str]:
        return [
            "-q", "train", str(files["train"]), "--validation-file", str(files["validation"]),
            "--test-file", str(files["test"]), "--model", tiny_model_dir, "--output-dir", str(out),
            "--epochs", "4", "--batch-size", str(batch_size), "--learning-rate", "2e-3", "--max-length", "32",
            "--checkpoint-every", "5", "--strategy", "dann", "--target-file", str(target), "--adversarial-weight", "0.5",
            "--small-data", "off",  # one pass per epoch: the batch counts below
        ]

    env = {**os.environ, "ACCELERATE_USE_CPU": "true"}
    proc = subprocess.run([*LAUNCHER, *args(tmp_path / "two", 8)[1:]], capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Epoch 1/4: 100%|██████████| 20/20" in proc.stderr.replace("\r", "\n")  # 40 batches of 8, half each
    # One process with the same effective batch (16) takes the same number of steps.
    assert main(args(tmp_path / "one", 16)) == 0

    two, one = (json.loads((tmp_path / name / "training_summary.json").read_text()) for name in ("two", "one"))
    # The reversal ramp follows each process's own progress: the same λ per epoch as one process.
    assert [round(e["train_logs"]["grl_coefficient"], 5) for e in two["history"]] == \
        [round(e["train_logs"]["grl_coefficient"], 5) for e in one["history"]]
    assert two["history"][-1]["train_logs"]["grl_coefficient"] > 0.99
    assert two["objective"]["target_rows"] == one["objective"]["target_rows"]
    assert all(0.0 <= e["objective"]["discriminator_accuracy"] <= 1.0 for e in two["history"])
    metrics = [json.loads((tmp_path / name / "metrics.json").read_text())["test"] for name in ("two", "one")]
    assert metrics[0]["num_samples"] == 81 and metrics[0]["accuracy"] >= 0.85
    assert abs(metrics[0]["accuracy"] - metrics[1]["accuracy"]) <= 0.1

    # A plain classifier: the model files only, no discriminator weights, loads in pipeline().
    assert {p.name for p in (tmp_path / "two").iterdir()} == MODEL_FILES
    names = load_file(str(tmp_path / "two" / "model.safetensors")).keys()
    assert all(k.startswith(("bert.", "classifier.")) for k in names), sorted(names)
    predicted = pipeline("text-classification", model=str(tmp_path / "two"), device="cpu")(["great love it"])
    assert predicted[0]["label"] in ("neg", "pos")


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="the accelerate launcher is not on PATH")
def test_adapt_lm_in_two_processes_checkpoints_and_writes_one_encoder(tiny_model_dir, tmp_path):
    texts = write_csv(tmp_path / "texts.csv", [[t] for t, _ in synthetic_rows(200, seed=5)], header=("text",))
    env = {**os.environ, "ACCELERATE_USE_CPU": "true"}
    proc = subprocess.run([*LAUNCHER, "adapt-lm", str(texts), "--model", tiny_model_dir, "--output-dir",
                           str(tmp_path / "lm"), "--new-mlm-head", "--head-warmup-steps", "10", "--epochs", "2",
                           "--batch-size", "8", "--learning-rate", "1e-3", "--max-length", "32",
                           "--checkpoint-every", "5"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Epoch 1/2: 100%|██████████| 12/12" in proc.stderr.replace("\r", "\n")  # 23 batches of 8, shared
    assert "checkpoint-5" in proc.stderr and "checkpoint-10" in proc.stderr  # written by both, collectively
    summary = json.loads(proc.stdout)  # printed once, by the main process
    assert summary["perplexity_after"] < summary["perplexity_before"]
    assert sorted(p.name for p in (tmp_path / "lm").iterdir()) == [
        "adapt_lm_config.json", "adapt_lm_summary.json", "config.json", "model.safetensors", "tokenizer.json",
        "tokenizer_config.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm", "texts.csv"]  # no checkpoints left behind
