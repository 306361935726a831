"""TrainConfig: validated at construction, saved and loaded as JSON."""

from __future__ import annotations

import pytest

from nlp_transfer import DEFAULT_MODEL, TrainConfig, UserInputError


def test_defaults_and_json_round_trip(tmp_path):
    config = TrainConfig(train_file="train.csv")
    assert config.model == DEFAULT_MODEL
    assert config.metric_for_best_model == "f1_macro"
    config.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == config


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"batch_size": -1}, "batch_size must be a positive integer"),
        ({"learning_rate": 0}, "learning_rate must be > 0"),
        ({"validation_split": 1.5}, "validation_split must be between 0 and 1"),
        ({"warmup_ratio": 1.0}, r"warmup_ratio must be in \[0, 1\)"),
        ({"metric_for_best_model": "auc"}, "metric_for_best_model 'auc' is unknown; choose one of: accuracy"),
        ({"mixed_precision": "fp8"}, "mixed_precision 'fp8' is unknown"),
        ({"text_pair_column": "text"}, "the pair column must be a second column"),
        ({"label_column": "text"}, "also used as a text column"),
        ({"early_stopping_patience": 0}, "early_stopping_patience must be at least 1"),
    ],
)
def test_invalid_settings_are_refused(overrides, message):
    with pytest.raises(UserInputError, match=message):
        TrainConfig(train_file="train.csv", **overrides)


def test_unknown_keys_are_refused():
    with pytest.raises(UserInputError, match="unknown TrainConfig settings: epoch"):
        TrainConfig.from_dict({"train_file": "x.csv", "epoch": 3})
