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


INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"learning_rate": INF}, r"learning_rate must be > 0 and at most 1; got inf"),
        ({"learning_rate": NAN}, r"learning_rate must be > 0 and at most 1; got nan"),
        ({"learning_rate": 1e6}, r"got 1000000.0\. AdamW .* \(a typo such as 1e6 for 1e-6"),
        ({"weight_decay": NAN}, r"weight_decay must be in \[0, 1\] \(a finite number\); got nan"),
        ({"weight_decay": INF}, r"weight_decay must be in \[0, 1\]"),
        ({"weight_decay": -0.1}, r"weight_decay must be in \[0, 1\]"),
        ({"max_grad_norm": INF}, r"max_grad_norm must be in \[0, 1e\+06\]"),
        ({"max_grad_norm": NAN}, r"max_grad_norm must be in"),
        ({"warmup_ratio": NAN}, r"warmup_ratio must be in \[0, 1\)"),
        ({"validation_split": NAN}, r"validation_split must be between 0 and 1"),
        ({"seed": -1}, r"seed must be an integer from 0 to 4294967295; got -1"),
        ({"seed": 2**32}, r"seed must be an integer from 0 to 4294967295; got 4294967296"),
        ({"seed": 1.5}, r"seed must be an integer"),
        ({"max_train_samples": 0}, r"max_train_samples must be at least 1"),
        ({"keep_checkpoints": True}, r"keep_checkpoints must be 0"),
        ({"strategy": "lora", "lora_alpha": INF}, r"--lora-alpha must be > 0"),
        ({"layer_lr_decay": NAN}, r"--layer-lr-decay must be in \(0, 1\]"),
    ],
)
def test_non_finite_and_absurd_numbers_are_refused(overrides, message):
    with pytest.raises(UserInputError, match=message):
        TrainConfig(train_file="train.csv", **overrides)


@pytest.mark.parametrize("argv, message", [
    (["--learning-rate", "inf"], "learning_rate must be > 0 and at most 1; got inf"),
    (["--learning-rate", "1e6"], "a typo such as 1e6 for 1e-6"),
    (["--weight-decay", "nan"], "weight_decay must be in"),
    (["--seed", "-3"], "seed must be an integer from 0 to 4294967295"),
])
def test_the_cli_refuses_them_with_one_line(argv, message, capsys):
    from nlp_transfer.cli import main

    assert main(["train", "train.csv", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
