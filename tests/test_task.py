"""The Task: loss, predictions, probabilities, reports and warnings of single-label classification."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig

from nlp_transfer.task import TASKS, SingleLabelClassification, task_for_model


def test_loss_predictions_and_probabilities():
    task = SingleLabelClassification(["a", "b", "c"])
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
    labels = torch.tensor([0, 1])
    assert torch.allclose(task.loss(logits, labels), torch.nn.functional.cross_entropy(logits, labels))
    assert task.predictions(logits).tolist() == [0, 2]
    probs = task.probabilities(logits)
    assert torch.allclose(probs.sum(-1), torch.ones(2)) and torch.allclose(probs, torch.softmax(logits, -1))


def test_model_config_carries_the_label_names():
    settings = SingleLabelClassification(["neg", "pos"]).model_config()
    assert settings == {"num_labels": 2, "id2label": {0: "neg", 1: "pos"}, "label2id": {"neg": 0, "pos": 1},
                        "problem_type": "single_label_classification"}


def test_task_of_a_saved_model_comes_from_its_config():
    config = BertConfig(id2label={0: "x", 1: "y"}, problem_type="single_label_classification")
    task = task_for_model(config)
    assert isinstance(task, SingleLabelClassification) and task.labels == ["x", "y"]
    assert set(TASKS) == {"single_label_classification", "multi_label_classification", "regression"}


def _report(task, predictions, references):
    report = task.new_report()
    report.add_batch(torch.tensor(predictions), torch.tensor(references))
    return report.compute()


def test_a_model_that_predicts_one_label_is_flagged():
    task = SingleLabelClassification(["ham", "spam"])
    collapsed = _report(task, [0, 0, 0, 0], [0, 1, 0, 1])
    (warning,) = task.warnings(collapsed, "validation")
    assert "predicts a single label ('ham') for every validation row" in warning
    assert task.warnings(_report(task, [0, 1, 0, 0], [0, 1, 0, 1]), "test") == []
    assert task.warnings(_report(task, [1, 1], [1, 1]), "test") == []  # a one-class test set is no collapse


@pytest.mark.parametrize("metric", ["accuracy", "f1_macro"])
def test_headline_keeps_the_scalars(metric):
    task = SingleLabelClassification(["a", "b"])
    headline = task.headline(_report(task, [0, 1, 1], [0, 1, 0]))
    assert metric in headline and "per_class" not in headline and "confusion_matrix" not in headline
