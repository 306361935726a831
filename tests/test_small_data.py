"""The small-data policy: a tiny training set trains on every row, long enough, and says so; any set gets enough steps."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nlp_transfer import TrainConfig, UserInputError, train
from nlp_transfer import small_data

from conftest import crash_after, synthetic_rows, write_csv

pytestmark = pytest.mark.step_floor


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


def test_a_set_of_many_rows_per_class_keeps_its_split_but_still_gets_enough_steps(tiny_set, tmp_path, caplog):
    """No cliff at 50 rows per class: 60 per class keep the validation split, and the step floor still applies."""
    train_csv = write_csv(tmp_path / "train120.csv", synthetic_rows(120, seed=4))
    with caplog.at_level(logging.INFO, logger="nlp_transfer"):
        result = train(tiny_set(train_file=str(train_csv), validation_split=0.1))
    summary = result.summary
    assert summary["label_counts"]["validation"] == {"neg": 6, "pos": 6}  # the split is held out as usual
    assert summary["small_data"]["few_rows"] is False and summary["small_data"]["validation"] == ""
    # 108 rows at batch size 16 are 7 steps an epoch, 14 in 2 epochs: 2 passes per epoch make 28 >= 24.
    assert summary["small_data"]["passes_per_epoch"] == 2 and summary["optimizer_steps"] == 28
    assert "too few to hold out" not in caplog.text and "--strategy contrastive" not in caplog.text
    assert "2 passes over the 108 training rows per epoch" in caplog.text
    card = (Path(result.output_dir) / "README.md").read_text()
    assert "2 passes over the rows per epoch, for at least 24 optimizer steps" in card
    assert "fewer than 50 per class" not in card


def test_a_run_with_enough_steps_is_untouched_by_the_policy(tiny_set, tmp_path, monkeypatch):
    monkeypatch.setattr(small_data, "MIN_STEPS", 10)
    train_csv = write_csv(tmp_path / "train120.csv", synthetic_rows(120, seed=4))
    result = train(tiny_set(train_file=str(train_csv), validation_split=0.1))
    assert "small_data" not in result.summary and result.summary["optimizer_steps"] == 14
    assert "Small data" not in (Path(result.output_dir) / "README.md").read_text()


def test_the_step_floor_applies_to_a_regression_target(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(small_data, "MIN_STEPS", 12)
    rows = [(text, str(float(label == "pos") * 4 + 1)) for text, label in synthetic_rows(40, seed=5)]
    train_csv = write_csv(tmp_path / "scores.csv", rows, header=("text", "score"))
    result = train(TrainConfig(train_file=str(train_csv), label_column="score", task="regression", model=tiny_model_dir,
                               max_length=32, output_dir=str(tmp_path / "reg"), epochs=2, batch_size=16, seed=7))
    small = result.summary["small_data"]
    assert small["classes"] is None and small["few_rows"] is False and small["passes_per_epoch"] == 3
    assert result.summary["label_counts"]["validation"]  # a regression set keeps its split
    assert result.summary["optimizer_steps"] == 14  # 36 rows: 3 steps a pass, 3 passes (7 steps) per epoch


def test_a_run_of_several_passes_per_epoch_resumes_exactly_after_a_crash(tiny_set, tmp_path):
    """The repeated passes are one longer epoch: a crash inside the second pass resumes at the same batch."""
    train_csv = write_csv(tmp_path / "train120.csv", synthetic_rows(120, seed=4))
    config = dict(train_file=str(train_csv), validation_split=0.1, checkpoint_every=5)
    reference = train(tiny_set(output_dir=str(tmp_path / "reference"), **config))
    assert reference.summary["small_data"]["passes_per_epoch"] == 2  # 14 steps an epoch, 7 a pass
    handle = crash_after(11)  # epoch 1, second pass, after the checkpoint at step 10
    try:
        with pytest.raises(KeyboardInterrupt):
            train(tiny_set(**config))
    finally:
        handle.remove()
    resumed = train(tiny_set(resume="latest", **config))
    assert resumed.metrics == reference.metrics
    weights = [load_file(str(Path(r.output_dir) / "model.safetensors")) for r in (resumed, reference)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])
    assert resumed.summary["history"] == reference.summary["history"]


def test_the_floor_counts_each_process_s_steps(tiny_set, monkeypatch):
    """N processes each take a batch per step: the same rows give 1/N of the steps, so more passes are needed."""
    monkeypatch.setattr(small_data, "MIN_STEPS", 100)
    config = tiny_set(epochs=2, batch_size=8)
    plan = small_data.SmallData(rows=160, classes=2, rows_per_class=80.0, few_rows=False)
    # One process: 20 batches a pass, 40 steps in 2 epochs; 3 passes give 2 x 60 = 120 >= 100.
    assert small_data.passes_per_epoch(config, 160, plan) == 3
    # Two processes: 10 steps each a pass; 5 passes give 2 x 50 = 100.
    assert small_data.passes_per_epoch(config, 160, plan, processes=2) == 5
    assert small_data.passes_per_epoch(config, 160, None, processes=2) == 1  # --small-data off
