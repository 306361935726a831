"""End-to-end training on the tiny model: outputs, pipeline parity, reproducibility, safety."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import pipeline

from nlp_transfer import UserInputError, evaluate_model, train
from nlp_transfer.metrics import compute_report

from conftest import synthetic_rows, write_csv


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """One tiny run shared by the read-only checks below."""
    from nlp_transfer import TrainConfig

    root = tmp_path_factory.mktemp("trained")
    config = TrainConfig(
        train_file=str(write_csv(root / "train.csv", synthetic_rows(240, seed=1))),
        test_file=str(write_csv(root / "test.csv", synthetic_rows(80, seed=3))),
        model=tiny_model_dir, output_dir=str(root / "model"), epochs=4, batch_size=16,
        learning_rate=2e-3, max_length=32, seed=7, validation_split=0.2,
    )
    return config, train(config)


def test_output_folder_is_complete(trained):
    config, result = trained
    out = Path(result.output_dir)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "metrics.json", "training_config.json", "training_summary.json", "README.md"):
        assert (out / name).is_file(), name
    model_config = json.loads((out / "config.json").read_text())
    assert model_config["id2label"] == {"0": "neg", "1": "pos"}
    assert model_config["label2id"] == {"neg": 0, "pos": 1}
    saved = json.loads((out / "training_config.json").read_text())
    # The folder is published: data files and the output folder go by name, not by this machine's paths.
    expected = {**config.to_dict(), "train_file": "train.csv", "test_file": "test.csv", "output_dir": "model",
                "model": Path(config.model).name}
    assert saved == expected
    assert not list(out.parent.glob(".*incomplete*")), "staging folder left behind"


def test_metrics_json_has_every_field(trained):
    _, result = trained
    metrics = json.loads((Path(result.output_dir) / "metrics.json").read_text())
    assert set(metrics) == {"validation", "test"}
    for split, n in (("validation", 48), ("test", 80)):
        report = metrics[split]
        for key in ("accuracy", "f1_macro", "f1_micro", "f1_weighted", "precision_macro", "recall_macro"):
            assert 0.0 <= report[key] <= 1.0
        assert report["num_samples"] == n
        assert set(report["per_class"]) == {"neg", "pos"}
        assert set(report["per_class"]["pos"]) == {"precision", "recall", "f1", "support"}
        assert report["confusion_matrix"]["labels"] == ["neg", "pos"]
        assert sum(map(sum, report["confusion_matrix"]["matrix"])) == n


def test_model_learns_the_task(trained):
    _, result = trained
    # Balanced classes: the majority baseline is 0.5.
    assert result.metrics["test"]["accuracy"] >= 0.85


def test_pipeline_predictions_equal_evaluate(trained):
    config, result = trained
    clf = pipeline("text-classification", model=result.output_dir, device="cpu")
    rows = synthetic_rows(80, seed=3)
    predictions = clf([text for text, _ in rows], truncation=True, batch_size=16)
    assert {p["label"] for p in predictions} <= {"neg", "pos"}
    label2id = {"neg": 0, "pos": 1}
    from_pipeline = compute_report([label2id[p["label"]] for p in predictions],
                                   [label2id[label] for _, label in rows], ["neg", "pos"])
    from_evaluate = evaluate_model(result.output_dir, config.test_file)
    assert from_evaluate == from_pipeline
    assert from_evaluate == result.metrics["test"]


def test_same_seed_same_metrics(tiny_config):
    first = train(tiny_config(output_dir=str(Path(tiny_config().output_dir).parent / "a"), epochs=2))
    second = train(tiny_config(output_dir=str(Path(tiny_config().output_dir).parent / "b"), epochs=2))
    assert first.metrics == second.metrics
    assert first.summary["history"] == second.summary["history"]


def test_refuses_to_overwrite_a_model_unless_asked(tiny_config):
    config = tiny_config(epochs=1)
    train(config)
    with pytest.raises(UserInputError, match="already holds a model; pass --overwrite"):
        train(config)
    train(tiny_config(epochs=1, overwrite=True))


def test_nothing_written_when_the_data_is_bad(tiny_config, tmp_path):
    bad_test = write_csv(tmp_path / "bad_test.csv", [("good great", "pos"), ("meh", "neutral")])
    config = tiny_config(test_file=str(bad_test))
    with pytest.raises(UserInputError, match="never seen in training: 'neutral'"):
        train(config)
    assert not Path(config.output_dir).exists()
    assert not list(Path(config.output_dir).parent.glob(".model*"))


def test_max_length_above_model_limit_is_refused(tiny_config):
    with pytest.raises(UserInputError, match=r"--max-length 4096 is above the limit .* \(128 tokens\)"):
        train(tiny_config(max_length=4096))


def test_validation_split_is_stratified_and_seeded(tiny_config):
    result = train(tiny_config(validation_file=None, validation_split=0.25, epochs=1))
    counts = result.summary["label_counts"]
    assert counts["validation"] == {"neg": 30, "pos": 30}
    assert counts["train"] == {"neg": 90, "pos": 90}


def test_gradient_accumulation_and_no_grouping_still_learn(tiny_config):
    result = train(tiny_config(gradient_accumulation_steps=2, batch_size=8, group_by_length=False, epochs=4))
    assert result.metrics["test"]["accuracy"] >= 0.85


def test_integer_labels_are_sorted_numerically(tiny_config, tmp_path):
    rows = [(text, {"neg": "10", "pos": "9"}[label]) for text, label in synthetic_rows(120, seed=4)]
    train_csv = write_csv(tmp_path / "int_train.csv", rows)
    result = train(tiny_config(train_file=str(train_csv), validation_file=None, test_file=None, epochs=1))
    assert result.summary["labels"] == ["9", "10"]
    assert result.metrics["test"] is None


def test_dynamic_padding_does_not_change_predictions(trained):
    # Length-sorted, dynamically padded batches must score exactly like one text at a time.
    config, result = trained
    one_by_one = evaluate_model(result.output_dir, config.test_file, batch_size=1)
    assert one_by_one == result.metrics["test"]


def test_length_grouping_cuts_padding_without_hurting_accuracy(tiny_config, tmp_path):
    from conftest import FILLER

    # Texts from 2 to 40 words: random batches would be mostly padding.
    rows = [(" ".join(FILLER[: 2 + i % 13] * (1 + i % 3)) + (" good great" if i % 2 else " bad awful"),
             "pos" if i % 2 else "neg") for i in range(400)]
    files = {name: str(write_csv(tmp_path / f"{name}.csv", part))
             for name, part in (("train", rows[:320]), ("validation", rows[320:360]), ("test", rows[360:]))}
    common = dict(train_file=files["train"], validation_file=files["validation"], test_file=files["test"], max_length=64)
    grouped = train(tiny_config(output_dir=str(tmp_path / "g"), **common))
    plain = train(tiny_config(output_dir=str(tmp_path / "p"), group_by_length=False, **common))
    assert grouped.summary["padding_fraction"] < 0.5 * plain.summary["padding_fraction"]
    assert grouped.metrics["test"]["accuracy"] >= 0.85 and plain.metrics["test"]["accuracy"] >= 0.85


@pytest.mark.parametrize("max_norm", [1e-3, 1e6])  # clipped, and left as it is
def test_cpu_clipping_is_bit_identical_to_accelerate(tiny_model_dir, max_norm):
    import torch
    from accelerate import Accelerator
    from transformers import AutoModelForSequenceClassification

    from nlp_transfer.loop import clip_gradients as _clip_gradients

    def gradients(clip):
        torch.manual_seed(0)
        accelerator = Accelerator(cpu=True)
        model = accelerator.prepare(AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2))
        ids = torch.randint(5, 99, (4, 12))
        accelerator.backward(model(input_ids=ids, labels=torch.tensor([0, 1, 1, 0])).loss)
        clip(accelerator, model)
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    ours = gradients(lambda acc, model: _clip_gradients(acc, model, torch.optim.SGD(model.parameters()), max_norm))
    reference = gradients(lambda acc, model: acc.clip_grad_norm_(model.parameters(), max_norm))
    unclipped = gradients(lambda acc, model: None)
    assert all(torch.equal(a, b) for a, b in zip(ours, reference))
    assert all(torch.equal(a, b) for a, b in zip(ours, unclipped)) == (max_norm > 1)


def test_files_are_readable_by_others_under_the_usual_umask(tiny_config):
    import os
    import stat

    previous = os.umask(0o022)
    try:
        out = Path(train(tiny_config(epochs=1)).output_dir)
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes and all(mode == 0o644 for mode in modes.values()), modes
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


def test_a_model_that_learned_nothing_is_flagged(tiny_config, tmp_path):
    # The same text in every row, 80% one label: the model can only learn the prior.
    rows = [("the movie was a film", "common" if i % 5 else "rare") for i in range(200)]
    files = {name: str(write_csv(tmp_path / f"{name}.csv", part)) for name, part in
             (("train", rows[:120]), ("validation", rows[120:160]), ("test", rows[160:]))}
    result = train(tiny_config(train_file=files["train"], validation_file=files["validation"],
                               test_file=files["test"], epochs=2))
    assert any("predicts a single label ('common')" in w for w in result.summary["warnings"])
    assert "## Warnings" in (Path(result.output_dir) / "README.md").read_text()
