"""The small-data policy: a tiny training set trains on every row, long enough, and says so."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from nlp_transfer import TrainConfig, UserInputError, train
from nlp_transfer import small_data

from conftest import synthetic_rows, write_csv


@pytest.fixture
def tiny_set(tiny_model_dir, tmp_path, monkeypatch):
    """20 training rows (10 per class) and a test file; the step floor lowered to keep the test fast."""
    monkeypatch.setattr(small_data, "MIN_STEPS", 24)
    train_csv = write_csv(tmp_path / "train.csv", synthetic_rows(20, seed=1))
    test_csv = write_csv(tmp_path / "test.csv", synthetic_rows(40, seed=3))

    def make(**overrides):
        values = dict(train_file=str(train_csv), test_file=str(test_csv), model=tiny_model_dir, max_length=32,
                      output_dir=str(tmp_path / "model"), epochs=2, batch_size=16, learning_rate=2e-3, seed=7)
        values.update(overrides)
        return TrainConfig(**values)

    return make


def test_a_tiny_set_trains_on_every_row_for_enough_steps_and_says_so(tiny_set, caplog):
    with caplog.at_level(logging.INFO, logger="nlp_transfer"):
        result = train(tiny_set())
    log = caplog.text
    assert "small-data policy: 20 training rows for 2 classes (10.0 per class)" in log
    assert "keeping the last epoch" in log and "--strategy contrastive" in log

    summary = result.summary
    assert summary["small_data"]["rows"] == 20 and summary["small_data"]["passes_per_epoch"] == 9
    assert summary["validation_source"].startswith("none: 20 rows (10.0 per class) are too few")
    assert summary["label_counts"]["train"] == {"neg": 10, "pos": 10}  # no row held out
    assert "validation" not in summary["label_counts"]
    # 2 epochs of 9 passes over 20 rows at batch 16: 12 steps each, not the 2 of one pass.
    assert summary["optimizer_steps"] == 24 == small_data.MIN_STEPS
    assert summary["best_epoch"] == 2 and all(e["validation"] is None for e in summary["history"])
    assert result.metrics["validation"] is None and result.metrics["test"]["num_samples"] == 40

    out = Path(result.output_dir)
    assert json.loads((out / "metrics.json").read_text())["validation"] is None
    card = (out / "README.md").read_text()
    assert "No validation data: the last of 2 epochs is kept." in card
    assert "small-data policy applied" in card and "9 passes over the rows per epoch" in card


def test_early_stopping_without_validation_data_is_refused(tiny_set):
    with pytest.raises(UserInputError, match=r"--early-stopping-patience needs validation data.*--validation-file"):
        train(tiny_set(early_stopping_patience=2))
    assert not Path(tiny_set().output_dir).exists()


def test_small_data_off_holds_out_the_split(tiny_set):
    result = train(tiny_set(small_data="off", validation_split=0.2))
    assert "small_data" not in result.summary
    assert result.summary["label_counts"]["validation"] == {"neg": 2, "pos": 2}
    assert result.summary["optimizer_steps"] == 2  # one batch per epoch: what the policy exists to prevent


def test_a_validation_file_is_used_and_the_steps_still_raised(tiny_set, tmp_path):
    validation = write_csv(tmp_path / "validation.csv", synthetic_rows(12, seed=2))
    result = train(tiny_set(validation_file=str(validation)))
    assert result.summary["validation_source"] == "file"
    assert result.metrics["validation"]["num_samples"] == 12
    assert result.summary["small_data"]["validation"] == "" and result.summary["optimizer_steps"] >= 24


def test_unknown_small_data_value_is_refused(tiny_set):
    with pytest.raises(UserInputError, match=r"small_data 'sometimes' is unknown; choose one of: auto, off"):
        tiny_set(small_data="sometimes")


def test_feature_extraction_on_a_tiny_set_has_no_validation_and_enough_steps(tiny_set, tmp_path):
    result = train(tiny_set(strategy="feature-extraction", head_solver="adamw",
                            feature_cache_dir=str(tmp_path / "features")))
    assert result.metrics["validation"] is None
    assert result.summary["small_data"]["passes_per_epoch"] == 9 and result.summary["optimizer_steps"] == 24
    assert result.summary["feature_cache"]["rows_encoded"] == 20  # the training rows only: no validation split


def test_lbfgs_feature_extraction_on_a_tiny_set_fits_on_every_row_and_cross_validates_c(tiny_set, tmp_path):
    result = train(tiny_set(strategy="feature-extraction", feature_cache_dir=str(tmp_path / "features")))
    assert result.metrics["validation"] is None and result.summary["optimizer_steps"] == 0
    assert result.summary["small_data"]["passes_per_epoch"] == 1 and result.summary["small_data"]["min_steps"] == 0
    fit = result.summary["history"][-1]["strategy"]["head_fit"]
    assert fit["rows"] == 20 and fit["cv_folds"] == 5  # C picked by cross-validation of the 20 rows alone
    assert all(t["validation_score"] is None and t["cv_score"] is not None for t in fit["grid"])
    card = (Path(result.output_dir) / "README.md").read_text()
    assert "5-fold cross-validation on the training rows among 9 values" in card and "optimizer steps" not in card
