"""The real packaged encoder on real data (../shared/data): learns, and pipeline() agrees."""

from __future__ import annotations

import collections
import csv

import pytest
from transformers import pipeline

from nlp_transfer import TrainConfig, evaluate_model, train
from nlp_transfer.metrics import compute_report

from conftest import requires_shared_data

pytestmark = pytest.mark.integration


def test_trec_slice_beats_majority_and_matches_pipeline(tmp_path):
    trec = requires_shared_data("trec")
    config = TrainConfig(
        train_file=str(trec / "train.csv"), test_file=str(trec / "test.csv"), output_dir=str(tmp_path / "trec"),
        max_train_samples=600, epochs=1, batch_size=16, learning_rate=2e-4, max_length=64, seed=13,
    )
    result = train(config)

    with (trec / "test.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    majority = collections.Counter(r["label"] for r in rows).most_common(1)[0][1] / len(rows)
    assert result.metrics["test"]["num_samples"] == len(rows)
    assert result.metrics["test"]["accuracy"] > majority + 0.3, (result.metrics["test"]["accuracy"], majority)

    clf = pipeline("text-classification", model=result.output_dir, device="cpu")
    predicted = clf([r["text"] for r in rows], truncation=True, batch_size=64)
    labels = result.summary["labels"]
    ids = {name: i for i, name in enumerate(labels)}
    from_pipeline = compute_report([ids[p["label"]] for p in predicted], [ids[r["label"]] for r in rows], labels)
    assert from_pipeline == evaluate_model(result.output_dir, str(trec / "test.csv")) == result.metrics["test"]
