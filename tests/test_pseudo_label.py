"""nlp-transfer pseudo-label: confident, class-balanced target labels that a dann run trains on (self-training)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from nlp_transfer import load_classifier, train
from nlp_transfer.cli import main
from nlp_transfer.pseudo_label import balanced_confident, pseudo_label

from conftest import synthetic_rows, write_csv


@pytest.fixture(scope="module")
def teacher(tiny_model_dir, tmp_path_factory) -> str:
    """A tiny classifier trained on keyword sentiment (neg/pos)."""
    from nlp_transfer import TrainConfig

    root = tmp_path_factory.mktemp("teacher")
    train_csv = write_csv(root / "train.csv", synthetic_rows(240, seed=1))
    return train(TrainConfig(train_file=str(train_csv), model=tiny_model_dir, output_dir=str(root / "model"),
                             epochs=10, batch_size=16, learning_rate=2e-3, max_length=32, seed=7,
                             small_data="off")).output_dir


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_balanced_confident_keeps_the_most_confident_k_of_every_class():
    probs = np.array([[0.99, 0.01], [0.95, 0.05], [0.2, 0.8], [0.92, 0.08], [0.05, 0.95], [0.6, 0.4]])
    keep, predicted, k = balanced_confident(probs, 0.9)
    # Class 0 has 3 confident rows, class 1 one: one of each, the most confident, in input order.
    assert k == 1 and keep.tolist() == [0, 4] and predicted.tolist() == [0, 1]
    keep, predicted, k = balanced_confident(probs, 0.75)
    assert k == 2 and keep.tolist() == [0, 1, 2, 4] and predicted.tolist() == [0, 0, 1, 1]
    assert balanced_confident(probs, 0.96)[2] == 0  # class 1 has no row at 0.96


def test_pseudo_labels_are_the_models_confident_predictions(teacher, tmp_path):
    rows = synthetic_rows(120, seed=5)
    texts = write_csv(tmp_path / "target.csv", [[text] for text, _ in rows], header=("text",))
    summary = pseudo_label(teacher, str(texts), str(tmp_path / "picked.csv"), threshold=0.7)
    picked = _read(tmp_path / "picked.csv")
    assert summary["kept"] == len(picked) == 2 * summary["per_class"] > 20
    assert {r["label"] for r in picked} == {"neg", "pos"}
    assert sum(r["label"] == "pos" for r in picked) == summary["per_class"]
    # Every kept row is what the model predicts, with at least the threshold, and the keyword labels agree.
    probs = load_classifier(teacher).predict_proba([r["text"] for r in picked])
    clf_labels = load_classifier(teacher).labels
    assert [clf_labels[i] for i in probs.argmax(1)] == [r["label"] for r in picked]
    assert probs.max(1).min() >= 0.7
    truth = dict(rows)
    assert np.mean([truth[r["text"]] == r["label"] for r in picked]) >= 0.9


def test_the_picked_file_trains_as_labelled_target_rows(teacher, tiny_config, tmp_path):
    texts = write_csv(tmp_path / "target.csv", [[text] for text, _ in synthetic_rows(120, seed=6)], header=("text",))
    pseudo_label(teacher, str(texts), str(tmp_path / "picked.csv"), threshold=0.7)
    result = train(tiny_config(strategy="dann", target_file=str(tmp_path / "picked.csv"), adversarial_weight=0.0,
                               epochs=2))
    assert result.summary["objective"]["loss"] == "1·L_src + 1·L_tgt + 0·L_adv"
    assert result.summary["history"][-1]["train_logs"]["loss_target"] > 0  # the picked rows are in L_tgt
    assert result.metrics["test"]["accuracy"] >= 0.85


@pytest.mark.parametrize("case, args, message", [
    ("threshold", ["--threshold", "0.4"], "--threshold must be a probability in \\[0.5, 1\\)"),
    ("column", ["--text-column", "body"], "body"),
    ("nobody-confident", ["--threshold", "0.9999999"], "lower --threshold"),
])
def test_bad_pseudo_label_input_exits_2_and_writes_nothing(case, args, message, teacher, tmp_path, capsys):
    texts = write_csv(tmp_path / "target.csv", [[text] for text, _ in synthetic_rows(40, seed=5)], header=("text",))
    code = main(["-q", "pseudo-label", teacher, str(texts), "--output", str(tmp_path / "picked.csv"), *args])
    assert code == 2
    assert __import__("re").search(message, capsys.readouterr().err)
    assert not (tmp_path / "picked.csv").exists()


def test_an_existing_output_is_kept_without_overwrite(teacher, tmp_path, capsys):
    texts = write_csv(tmp_path / "target.csv", [[text] for text, _ in synthetic_rows(40, seed=5)], header=("text",))
    mine = tmp_path / "picked.csv"
    mine.write_text("my file\n")
    assert main(["-q", "pseudo-label", teacher, str(texts), "--output", str(mine), "--threshold", "0.6"]) == 2
    assert "--overwrite" in capsys.readouterr().err and mine.read_text() == "my file\n"
    assert main(["-q", "pseudo-label", teacher, str(texts), "--output", str(mine), "--threshold", "0.6",
                 "--overwrite"]) == 0
    assert _read(mine) and set(_read(mine)[0]) == {"text", "label"}
    assert main(["-q", "pseudo-label", teacher, str(texts), "--output", str(texts), "--overwrite"]) == 2  # never the input
