"""--strategy dann on the tiny BERT: gradient reversal, the weighted losses, what is saved, exact resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import pipeline

from nlp_transfer import TrainConfig, UserInputError, evaluate_model, train
from nlp_transfer.checkpoint import CHECKPOINTS_DIR, list_checkpoints
from nlp_transfer.cli import main
from nlp_transfer.domain import grl_coefficient, join_batches, make_discriminator, reverse_gradient

from conftest import crash_after, synthetic_rows, write_csv


@pytest.fixture
def target_csv(tmp_path) -> Path:
    """Target-domain texts (other fillers, other draws), a third of them labelled, the rest blank."""
    rows = synthetic_rows(90, seed=11)
    return write_csv(tmp_path / "target.csv", [(text.replace("movie", "phone").replace("film", "camera"),
                                                label if i % 3 == 0 else "") for i, (text, label) in enumerate(rows)])


def _weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(path) / "model.safetensors"))


def _same_weights(a, b) -> bool:
    ours, theirs = _weights(a), _weights(b)
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_gradient_reversal_flips_the_discriminators_gradient_numerically():
    torch.manual_seed(0)
    discriminator = make_discriminator(6, 5, seed=3).double()
    features = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    domains = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)

    def loss_of(x):
        return torch.nn.functional.binary_cross_entropy_with_logits(discriminator(x).squeeze(-1), domains)

    coefficient = 0.37
    loss_of(reverse_gradient(features, coefficient)).backward()
    # Central differences of the loss without reversal: the gradient a plain discriminator would send back.
    numerical = torch.zeros_like(features)
    eps = 1e-6
    with torch.no_grad():
        for index in torch.cartesian_prod(torch.arange(4), torch.arange(6)).tolist():
            up, down = features.detach().clone(), features.detach().clone()
            up[tuple(index)] += eps
            down[tuple(index)] -= eps
            numerical[tuple(index)] = (loss_of(up) - loss_of(down)) / (2 * eps)
    assert numerical.abs().max() > 1e-3
    torch.testing.assert_close(features.grad, -coefficient * numerical, rtol=1e-6, atol=1e-9)
    # The discriminator itself gets the plain gradient: its parameters see no reversal.
    weights = discriminator[0].weight
    reversed_grad = weights.grad.clone()
    discriminator.zero_grad()
    loss_of(features.detach()).backward()
    torch.testing.assert_close(reversed_grad, weights.grad)


def test_reversal_schedule():
    assert grl_coefficient(0.0, "ganin") == 0.0
    assert grl_coefficient(1.0, "ganin") == pytest.approx(2 / (1 + torch.exp(torch.tensor(-10.0)).item()) - 1)
    assert 0.98 < grl_coefficient(0.5, "ganin") < 0.99
    assert grl_coefficient(0.0, "constant") == grl_coefficient(0.7, "constant") == 1.0


def test_join_batches_pads_to_the_longer_batch():
    first = {"input_ids": torch.tensor([[101, 7, 102]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    second = {"input_ids": torch.tensor([[101, 102], [101, 102]]), "attention_mask": torch.ones(2, 2, dtype=torch.long)}
    joined = join_batches(first, second, pad_id=0)
    assert joined["input_ids"].tolist() == [[101, 7, 102], [101, 102, 0], [101, 102, 0]]
    assert joined["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0], [1, 1, 0]]


def test_zero_target_and_adversarial_weights_equal_source_only(tiny_config, target_csv, tmp_path):
    source_only = train(tiny_config(output_dir=str(tmp_path / "plain"), epochs=2))
    dann = train(tiny_config(output_dir=str(tmp_path / "dann"), epochs=2, strategy="dann", target_file=str(target_csv),
                             target_weight=0.0, adversarial_weight=0.0))
    assert _same_weights(source_only.output_dir, dann.output_dir)
    assert dann.metrics == source_only.metrics
    # With the adversarial loss on, the same seed trains a different model.
    adversarial = train(tiny_config(output_dir=str(tmp_path / "adv"), epochs=2, strategy="dann",
                                    target_file=str(target_csv), target_weight=0.0, adversarial_weight=0.5))
    assert not _same_weights(source_only.output_dir, adversarial.output_dir)


def test_dann_run_saves_a_plain_classifier_and_reports_the_discriminator(tiny_config, target_csv, sentiment_csvs):
    result = train(tiny_config(strategy="dann", target_file=str(target_csv), adversarial_weight=0.5,
                               grl_schedule="constant"))
    out = Path(result.output_dir)
    names = _weights(out).keys()
    assert not [k for k in names if "discriminator" in k or k.startswith(("0.", "2."))]
    assert all(k.startswith(("bert.", "classifier.")) for k in names)
    assert result.metrics["test"]["accuracy"] >= 0.85
    # pipeline() reads the folder without nlp-transfer and agrees with `nlp-transfer evaluate`.
    test_rows = [row for row in __import__("csv").DictReader(open(sentiment_csvs["test"], encoding="utf-8"))]
    predicted = pipeline("text-classification", model=str(out), device="cpu")([r["text"] for r in test_rows],
                                                                               truncation=True)
    accuracy = sum(p["label"] == r["label"] for p, r in zip(predicted, test_rows)) / len(test_rows)
    assert accuracy == pytest.approx(evaluate_model(str(out), str(sentiment_csvs["test"]))["accuracy"])
    history = result.summary["history"]
    assert all(0.0 <= entry["objective"]["discriminator_accuracy"] <= 1.0 for entry in history)
    assert all({"loss_source", "loss_target", "loss_adversarial"} <= entry["train_logs"].keys() for entry in history)
    assert history[-1]["train_logs"]["loss_target"] < history[0]["train_logs"]["loss_target"]  # labelled target rows train
    objective = result.summary["objective"]
    assert objective["target_rows"] == {"train": 81, "held_out": 9, "labelled": 30}
    assert objective["discriminator_accuracy_per_epoch"] == [round(e["objective"]["discriminator_accuracy"], 4)
                                                             for e in history]
    assert objective["loss"] == "1·L_src + 1·L_tgt + 0.5·L_adv"
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "domain-adversarial" in card and "discriminator_accuracy_per_epoch" in card
    config = json.loads((out / "training_config.json").read_text())
    assert config["target_file"] == "target.csv"  # published by name, like the other data files


def test_pseudo_labels_join_the_target_loss(tiny_config, tmp_path):
    unlabelled = write_csv(tmp_path / "unlabelled.csv", [(t, "") for t, _ in synthetic_rows(60, seed=12)])
    result = train(tiny_config(strategy="dann", target_file=str(unlabelled), pseudo_label_threshold=0.6,
                               adversarial_weight=0.0))
    logs = [entry["train_logs"] for entry in result.summary["history"]]
    assert logs[0]["pseudo_labelled_fraction"] < logs[-1]["pseudo_labelled_fraction"]  # more rows once it learned
    assert logs[-1]["loss_target"] > 0 and "pseudo_labels" in result.summary["objective"]
    assert result.metrics["test"]["accuracy"] >= 0.85


def test_dann_resumes_exactly_after_a_crash(tiny_config, target_csv, tmp_path):
    settings = dict(strategy="dann", target_file=str(target_csv), epochs=2, checkpoint_every=4, adversarial_weight=0.5)
    reference = train(tiny_config(output_dir=str(tmp_path / "reference"), **settings))
    out = tmp_path / "crashed"
    handle = crash_after(22)  # 15 steps per epoch: mid epoch 2, after the checkpoint of step 20
    try:
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(output_dir=str(out), **settings))
    finally:
        handle.remove()
    kept = list_checkpoints(tmp_path / ".crashed.incomplete" / CHECKPOINTS_DIR)
    assert kept and kept[-1].name == "checkpoint-20"
    assert (kept[-1] / "model_1.safetensors").is_file()  # the discriminator is checkpointed
    resumed = train(tiny_config(output_dir=str(out), resume="latest", **settings))
    assert _same_weights(resumed.output_dir, reference.output_dir)
    assert resumed.summary["history"] == reference.summary["history"]
    assert resumed.summary["objective"] == reference.summary["objective"]
    assert resumed.metrics == reference.metrics


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"target_file": "t.csv"}, r"--target-file does not apply to --strategy finetune; it is used by --strategy dann"),
        ({"adversarial_weight": 0.1}, r"--adversarial-weight does not apply to --strategy finetune"),
        ({"strategy": "dann"}, r"--strategy dann needs --target-file FILE"),
        ({"strategy": "dann", "target_file": "t.csv", "adversarial_weight": -0.1},
         r"--adversarial-weight must be a finite number of 0 or more"),
        ({"strategy": "dann", "target_file": "t.csv", "source_weight": float("nan")}, r"--source-weight must be a finite"),
        ({"strategy": "dann", "target_file": "t.csv", "source_weight": 0.0, "target_weight": 0.0},
         r"leave no supervised loss"),
        ({"strategy": "dann", "target_file": "t.csv", "grl_schedule": "linear"}, r"--grl-schedule 'linear' is unknown"),
        ({"strategy": "dann", "target_file": "t.csv", "discriminator_hidden": 0}, r"--discriminator-hidden must be"),
        ({"strategy": "dann", "target_file": "t.csv", "pseudo_label_threshold": 1.0},
         r"--pseudo-label-threshold must be in \[0.5, 1\)"),
    ],
)
def test_bad_dann_settings_are_refused(overrides, message):
    with pytest.raises(UserInputError, match=message):
        TrainConfig(train_file="train.csv", **overrides)


def test_dann_defaults_are_filled_in_and_round_trip():
    config = TrainConfig(train_file="t.csv", strategy="dann", target_file="target.csv", text_column="review")
    assert (config.source_weight, config.target_weight, config.adversarial_weight) == (1.0, 1.0, 0.1)
    assert (config.grl_schedule, config.discriminator_hidden, config.target_text_column) == ("ganin", 256, "review")
    assert TrainConfig.from_dict(config.to_dict()) == config


def _bad_target(tmp_path, name: str) -> Path:
    if name == "missing":
        return tmp_path / "nowhere.csv"
    if name == "empty":
        return write_csv(tmp_path / "t.csv", [])
    if name == "no text column":
        return write_csv(tmp_path / "t.csv", [("good phone", "pos")], header=("review", "label"))
    if name == "unknown label":
        return write_csv(tmp_path / "t.csv", [("good phone", "pos"), ("meh phone", "neutral"), ("bad", "")])
    return write_csv(tmp_path / "t.csv", [("good phone", "")])  # one row


@pytest.mark.parametrize(("case", "message"), [
    ("missing", "nowhere.csv"),
    ("empty", "no data rows"),
    ("no text column", r"'text'"),
    ("unknown label", r"label\(s\) that the source training data does not have in column 'label': 'neutral'"),
    ("one row", "at least 2 target texts"),
])
def test_bad_target_files_exit_2_and_write_nothing(case, message, tiny_model_dir, sentiment_csvs, tmp_path, capsys):
    import re

    target = _bad_target(tmp_path, case)
    out = tmp_path / "model"
    code = main(["-q", "train", str(sentiment_csvs["train"]), "--model", tiny_model_dir, "--output-dir", str(out),
                 "--epochs", "1", "--max-length", "32", "--strategy", "dann", "--target-file", str(target)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and re.search(message, err[0]), err
    assert not out.exists() and not (tmp_path / ".model.incomplete").exists()
