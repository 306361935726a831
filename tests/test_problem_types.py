"""Multi-label, regression, sentence pairs and class weights end to end on the tiny model.

Each trained folder is built once per module: thresholds tuned on validation reach config.json
and are applied by evaluate, predict and load_classifier; pipeline() gives the same scores as
load_classifier; pairs reach the tokenizer as pairs on every path; a crashed multi-label run
resumes exactly; the bad inputs of the issue give one error line and exit 2.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import pipeline

from nlp_transfer import TrainConfig, load_classifier, train
from nlp_transfer.cli import main
from nlp_transfer.evaluation import evaluate_model
from nlp_transfer.inference import predict_csv

from conftest import FILLER, NEGATIVE, POSITIVE, crash_after, write_csv

TOPICS = {"sports": ["goal", "match", "team", "coach"], "politics": ["vote", "senate", "policy", "election"],
          "tech": ["software", "chip", "internet", "robot"]}


def topic_rows(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(text, labels joined by ',', score): each topic is present with probability 0.4; the score
    counts sports words minus tech words (plus a little noise)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        chosen = [t for t in TOPICS if rng.random() < 0.4]
        words = rng.sample(FILLER, 4) + [w for t in chosen for w in rng.sample(TOPICS[t], 2)]
        rng.shuffle(words)
        score = 2 * ("sports" in chosen) - 2 * ("tech" in chosen) + rng.uniform(-0.3, 0.3)
        rows.append((" ".join(words), ",".join(chosen), f"{score:.3f}"))
    return rows


@pytest.fixture(scope="module")
def topic_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("topics")
    return {split: write_csv(root / f"{split}.csv", topic_rows(n, seed), header=("text", "labels", "score"))
            for split, n, seed in (("train", 240, 1), ("validation", 60, 2), ("test", 60, 3))}


def _config(model: str, files: dict[str, Path], out: Path, **overrides) -> TrainConfig:
    values = dict(train_file=str(files["train"]), validation_file=str(files["validation"]),
                  test_file=str(files["test"]), model=model, output_dir=str(out), epochs=4, batch_size=16,
                  learning_rate=2e-3, max_length=32, seed=7)
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def multi_label(tiny_model_dir, topic_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("ml") / "model"
    return train(_config(tiny_model_dir, topic_files, out, label_column="labels", multi_label=True,
                         class_weights="balanced", learning_rate=5e-3))


@pytest.fixture(scope="module")
def regression(tiny_model_dir, topic_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("reg") / "model"
    return train(_config(tiny_model_dir, topic_files, out, label_column="score", task="regression"))


TEXTS = ["vote senate goal match today", "software robot the week", "people said", "coach team chip"]


def test_multi_label_learns_and_saves_the_thresholds_tuned_on_validation(multi_label):
    folder = Path(multi_label.output_dir)
    config = json.loads((folder / "config.json").read_text())
    metrics = multi_label.metrics
    assert config["problem_type"] == "multi_label_classification"
    assert config["label_thresholds"] == metrics["validation"]["thresholds"]
    assert metrics["test"]["threshold_source"] == "tuned on the validation set (per-label F1)"
    # Answering every label (each is on in 40% of the rows) gives micro F1 ≈ 0.57; the model must do far better.
    truth = np.array([[t in row[1].split(",") for t in sorted(TOPICS)] for row in topic_rows(60, 3)])
    every_label = 2 * truth.mean() / (1 + truth.mean())
    assert metrics["test"]["f1_micro"] >= every_label + 0.15 and metrics["test"]["f1_macro"] >= every_label + 0.15
    assert metrics["test"]["f1_micro"] >= metrics["test"]["at_0.5"]["f1_micro"]
    weights = multi_label.summary["class_weights"]  # pos_weight = negatives / positives per label
    assert set(weights) == {"politics", "sports", "tech"} and all(0.5 < w < 3 for w in weights.values())
    card = (folder / "README.md").read_text()
    assert "| label | threshold | precision | recall | F1 | support |" in card and "top_k=None" in card
    assert "Class weights in the loss (BCE pos_weight per label)" in card
    # The data table's last row counts texts per split, not label occurrences (a text may have several labels).
    assert "| **texts** | **240** | **60** | **60** |" in card
    assert multi_label.summary["text_counts"] == {"train": 240, "validation": 60, "test": 60}
    assert json.loads((folder / "training_config.json").read_text())["class_weights"] == "balanced"


def test_multi_label_pipeline_equals_load_classifier_and_predict_applies_thresholds(multi_label):
    folder = multi_label.output_dir
    clf = load_classifier(folder)
    probs = clf.predict_proba(TEXTS)
    pipe = pipeline("text-classification", model=folder)
    for text, row in zip(TEXTS, probs):
        scores = {d["label"]: d["score"] for d in pipe(text, truncation=True, top_k=None)}
        assert [scores[label] for label in clf.labels] == pytest.approx(row.tolist(), abs=1e-6)
    thresholds = multi_label.metrics["validation"]["thresholds"]
    for row, answer in zip(probs, clf.predict(TEXTS)):
        expected = {label for label, p in zip(clf.labels, row) if p >= thresholds[label]}
        assert {a["label"] for a in answer} == expected
    everything = load_classifier(folder, threshold=1e-6).predict(TEXTS)
    assert all(len(answer) == 3 for answer in everything)


def test_evaluate_and_predict_use_the_saved_thresholds(multi_label, topic_files, tmp_path):
    folder = multi_label.output_dir
    report = evaluate_model(folder, str(topic_files["test"]))
    for name in ("f1_micro", "f1_macro", "accuracy", "hamming_loss"):
        assert report[name] == pytest.approx(multi_label.metrics["test"][name])
    plain = evaluate_model(folder, str(topic_files["test"]), threshold=0.5)
    assert plain["f1_micro"] == pytest.approx(multi_label.metrics["test"]["at_0.5"]["f1_micro"])
    out = tmp_path / "predictions.csv"
    predict_csv(folder, str(topic_files["test"]), str(out), progress=False)
    rows = list(csv.DictReader(out.open()))
    clf = load_classifier(folder)
    answers = clf.predict([r["text"] for r in rows])
    assert [r["predicted_labels"] for r in rows] == [",".join(a["label"] for a in ans) for ans in answers]
    assert set(rows[0]) == {"text", "labels", "score", "predicted_labels", "scores"}


def test_regression_learns_and_predicts_the_value(regression, topic_files, tmp_path):
    folder = regression.output_dir
    test = regression.metrics["test"]
    assert test["pearson"] >= 0.8 and test["spearman"] >= 0.7 and test["r2"] > 0  # r2 > 0: beats the mean
    assert regression.summary["history"][0]["validation"].keys() >= {"rmse", "pearson", "r2"}
    clf = load_classifier(folder)
    values = clf.predict(TEXTS)
    pipe = pipeline("text-classification", model=folder)
    assert [d["score"] for d in pipe(TEXTS, truncation=True)] == pytest.approx(values, abs=1e-5)
    assert {d["label"] for d in pipe(TEXTS, truncation=True)} == {"score"}
    assert values[0] > values[1]  # sports words push the score up, tech words down
    report = evaluate_model(folder, str(topic_files["test"]))
    assert report["rmse"] == pytest.approx(test["rmse"])
    out = tmp_path / "values.csv"
    predict_csv(folder, str(topic_files["test"]), str(out), progress=False)
    rows = list(csv.DictReader(out.open()))
    assert float(rows[0]["predicted_value"]) == pytest.approx(clf.predict([rows[0]["text"]])[0], abs=1e-5)
    card = (Path(folder) / "README.md").read_text()
    assert "RMSE" in card and "Pearson" in card and "validation r2" in card


def pair_rows(n: int, seed: int) -> list[tuple[str, str, str]]:
    """The label is the sentiment of the second text only; the first is neutral filler."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ("neg", "pos")[i % 2]
        words = rng.sample(FILLER, 3) + rng.sample(POSITIVE if label == "pos" else NEGATIVE, 2)
        rng.shuffle(words)
        rows.append((" ".join(rng.sample(FILLER, 5)), " ".join(words), label))
    return rows


@pytest.fixture(scope="module")
def pair_model(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    files = {split: write_csv(root / f"{split}.csv", pair_rows(n, seed), header=("premise", "hypothesis", "label"))
             for split, n, seed in (("train", 240, 1), ("validation", 60, 2), ("test", 60, 3))}
    result = train(_config(tiny_model_dir, files, root / "model", text_column="premise",
                           text_pair_column="hypothesis"))
    return result, files


def test_pairs_reach_the_tokenizer_as_pairs_on_every_path(pair_model, tmp_path):
    result, files = pair_model
    folder = result.output_dir
    # Training: the label is in the second text only, so learning it proves the pair was read.
    assert result.metrics["test"]["accuracy"] >= 0.85
    # evaluate = pipeline() fed {"text", "text_pair"}.
    rows = list(csv.DictReader(files["test"].open()))
    pipe = pipeline("text-classification", model=folder)
    predicted = pipe([{"text": r["premise"], "text_pair": r["hypothesis"]} for r in rows], truncation=True)
    accuracy = np.mean([p["label"] == r["label"] for p, r in zip(predicted, rows)])
    assert evaluate_model(folder, str(files["test"]))["accuracy"] == pytest.approx(accuracy)
    # load_classifier / predict: the same scores as the pipeline on pairs, not those of the first text alone.
    clf = load_classifier(folder)
    probs = clf.predict_proba([r["premise"] for r in rows[:8]], [r["hypothesis"] for r in rows[:8]])
    assert [p["score"] for p in predicted[:8]] == pytest.approx(probs.max(axis=1).tolist(), abs=1e-6)
    assert not np.allclose(probs, clf.predict_proba([r["premise"] for r in rows[:8]]))
    out = tmp_path / "pairs.csv"
    predict_csv(folder, str(files["test"]), str(out), progress=False)
    assert [r["predicted_label"] for r in csv.DictReader(out.open())] == [p["label"] for p in predicted]
    # The card's snippets pass the pair.
    card = (Path(folder) / "README.md").read_text()
    assert '{"text": "first text", "text_pair": "second text"}' in card and 'text_pairs=["second text"]' in card


def test_feature_extraction_encodes_pairs_as_pairs(pair_model, tmp_path):
    from nlp_transfer.data import TextColumns, load_split, tokenize
    from nlp_transfer.features import encode
    from nlp_transfer.modeling import load_trained

    result, files = pair_model
    model, tokenizer = load_trained(result.output_dir)
    columns = TextColumns("premise", "hypothesis", None)
    ds = tokenize(load_split(str(files["test"]), "test", columns), tokenizer, columns, 32, None, "tok")
    vectors = encode(model, ds.select(range(4)), tokenizer, "cls", 4, "cpu")
    rows = list(csv.DictReader(files["test"].open()))[:4]
    batch = tokenizer([r["premise"] for r in rows], [r["hypothesis"] for r in rows], truncation=True,
                      max_length=32, padding=True, return_tensors="pt")
    assert (batch["token_type_ids"] == 1).any()
    with torch.inference_mode():
        expected = model.base_model(**batch).last_hidden_state[:, 0]
    assert np.allclose(vectors, expected.numpy(), atol=1e-5)


@pytest.mark.parametrize(("strategy", "kind"), [
    ("feature-extraction", "regression"), pytest.param("lora", "multi_label", marks=pytest.mark.slow),
    pytest.param("freeze", "multi_label", marks=pytest.mark.slow)])
def test_every_strategy_trains_the_new_problem_types(strategy, kind, tiny_model_dir, topic_files, tmp_path):
    extra = {"freeze": {"freeze_layers": 1}}.get(strategy, {})
    settings = {"regression": dict(label_column="score", task="regression"),
                "multi_label": dict(label_column="labels", multi_label=True)}[kind]
    result = train(_config(tiny_model_dir, topic_files, tmp_path / "m", strategy=strategy, epochs=2,
                           learning_rate=5e-3, **settings, **extra))
    clf = load_classifier(result.output_dir)
    scores = clf.predict_proba(TEXTS)
    pipe = pipeline("text-classification", model=result.output_dir)
    if kind == "regression":
        assert [d["score"] for d in pipe(TEXTS, truncation=True)] == pytest.approx(scores[:, 0].tolist(), abs=1e-5)
        assert np.isfinite(result.metrics["test"]["rmse"])
    else:
        got = [{d["label"]: d["score"] for d in row} for row in pipe(TEXTS, truncation=True, top_k=None)]
        assert np.allclose([[g[label] for label in clf.labels] for g in got], scores, atol=1e-5)
        assert "label_thresholds" in json.loads((Path(result.output_dir) / "config.json").read_text())


def test_a_crashed_multi_label_run_resumes_exactly(tiny_model_dir, topic_files, tmp_path):
    settings = dict(label_column="labels", multi_label=True, epochs=2, checkpoint_every=4)
    reference = train(_config(tiny_model_dir, topic_files, tmp_path / "reference", **settings))
    handle = crash_after(20)  # 15 steps per epoch: mid epoch 2, after the checkpoint of step 16
    try:
        with pytest.raises(KeyboardInterrupt):
            train(_config(tiny_model_dir, topic_files, tmp_path / "crashed", **settings))
    finally:
        handle.remove()
    resumed = train(_config(tiny_model_dir, topic_files, tmp_path / "crashed", resume="latest", **settings))
    ours, theirs = (load_file(str(Path(r.output_dir) / "model.safetensors")) for r in (resumed, reference))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert resumed.metrics == reference.metrics and resumed.summary["history"] == reference.summary["history"]


def _error_run(args: list[str], capsys) -> str:
    code = main(["-q", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize(("rows", "extra", "message"), [
    ([("a b", "sports"), ("c d", ", ,"), ("e f", "tech")], ["--multi-label"], r"holds only separators .*data rows 2"),
    ([("a b", "1.5"), ("c d", "inf"), ("e f", "x")], ["--task", "regression"], r"finite number .*data rows 2, 3"),
    ([("a b", "spam"), ("c d", "ham")], ["--class-weights", '{"spma": 3}'], r"does not have: 'spma'"),
    ([("a b", "x")], ["--multi-label", "--task", "regression"], r"do not go together"),
    ([("a b", "x"), ("c d", "y")], ["--text-pair-column", "second"], r"column 'second' not found"),
])
def test_bad_problem_type_inputs_give_one_line_and_write_nothing(rows, extra, message, tiny_model_dir, tmp_path,
                                                                 capsys):
    data = write_csv(tmp_path / "train.csv", rows * 10)
    out = tmp_path / "out"
    line = _error_run(["train", str(data), "--model", tiny_model_dir, "--output-dir", str(out), "--max-length",
                       "32", *extra], capsys)
    assert __import__("re").search(message, line), line
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_an_unknown_label_at_test_time_is_named(multi_label, tmp_path, capsys):
    data = write_csv(tmp_path / "test.csv", [("goal match", "sports"), ("chip", "tech,weather")],
                     header=("text", "labels"))
    line = _error_run(["evaluate", multi_label.output_dir, str(data)], capsys)
    assert "never seen in training: 'weather'" in line


@pytest.mark.skipif(importlib.util.find_spec("accelerate.commands.launch") is None, reason="no accelerate launcher")
def test_two_processes_tune_multi_label_thresholds_on_every_validation_row_once(tiny_model_dir, tmp_path):
    import os
    import subprocess
    import sys

    root = tmp_path / "data"
    files = {split: write_csv(root / f"{split}.csv", topic_rows(n, seed), header=("text", "labels", "score"))
             for split, n, seed in (("train", 160, 1), ("validation", 41, 2), ("test", 41, 3))}
    out = tmp_path / "two"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "nlp_transfer.cli"]
    args = ["train", str(files["train"]), "--validation-file", str(files["validation"]), "--test-file",
            str(files["test"]), "--model", tiny_model_dir, "--output-dir", str(out), "--epochs", "2",
            "--batch-size", "8", "--learning-rate", "5e-3", "--max-length", "32", "--multi-label",
            "--label-column", "labels", "--class-weights", "balanced",
            "--small-data", "off"]  # one pass per epoch: 10 batches per process, not the step floor's 50
    proc = subprocess.run([*launcher, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "ACCELERATE_USE_CPU": "true"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Epoch 1/2: 100%|██████████| 10/10" in proc.stderr.replace("\r", "\n")  # really two processes
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation"]["num_samples"] == 41 and metrics["test"]["num_samples"] == 41
    config = json.loads((out / "config.json").read_text())
    assert config["label_thresholds"] == metrics["validation"]["thresholds"]
    assert evaluate_model(str(out), str(files["test"]))["f1_micro"] == pytest.approx(metrics["test"]["f1_micro"])
