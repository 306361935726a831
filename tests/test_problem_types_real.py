"""Regression on real data with the real packaged encoder: the movie-review rating is learned, and
pipeline() returns the same values as load_classifier."""

from __future__ import annotations

import csv

import pytest
from transformers import pipeline

from nlp_transfer import TrainConfig, load_classifier, train

from conftest import requires_shared_data, write_csv

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_movie_review_score_regression_correlates_and_matches_pipeline(tmp_path):
    data = requires_shared_data("sentiment")
    with (data / "movie_reviews_test.csv").open(encoding="utf-8") as fh:
        rows = [(r["text"], r["score"]) for r in list(csv.DictReader(fh))[:300]]
    test_file = write_csv(tmp_path / "test.csv", rows, header=("text", "score"))
    result = train(TrainConfig(
        train_file=str(data / "movie_reviews_train.csv"), test_file=str(test_file), output_dir=str(tmp_path / "m"),
        label_column="score", task="regression", max_train_samples=500, epochs=1, batch_size=16,
        learning_rate=2e-4, max_length=64, seed=13, keep_checkpoints=0,
    ))
    test = result.metrics["test"]
    assert test["num_samples"] == 300 and test["pearson"] >= 0.6 and test["spearman"] >= 0.55, test
    texts = [text for text, _ in rows[:16]]
    values = load_classifier(result.output_dir, device="cpu").predict(texts)
    pipe = pipeline("text-classification", model=result.output_dir, device="cpu")
    assert [d["score"] for d in pipe(texts, truncation=True)] == pytest.approx(values, abs=1e-4)
