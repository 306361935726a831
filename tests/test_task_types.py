"""Multi-label and regression tasks, their metrics, thresholds, class weights and settings (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig

from nlp_transfer import TrainConfig, UserInputError
from nlp_transfer.multilabel_metrics import MultiLabelReport, multilabel_scores, tune_thresholds
from nlp_transfer.regression_metrics import RegressionReport
from nlp_transfer.task import (THRESHOLDS_KEY, MultiLabelClassification, Regression, SingleLabelClassification,
                               resolve_class_weights, task_for_model)


def _f1(scores, truth, t):
    pred = scores >= t
    tp = (pred & truth).sum()
    return 2 * tp / (pred.sum() + truth.sum()) if pred.sum() + truth.sum() else 0.0


def test_tuned_threshold_maximises_f1_on_a_constructed_case():
    # Label 0: a cut between 0.35 and 0.30 catches all 3 positives at the cost of no false positive.
    # Label 1: the best F1 (0.8) needs the positive at 0.2, accepting one false positive at 0.3.
    scores = np.array([[0.9, 0.1], [0.8, 0.4], [0.35, 0.3], [0.3, 0.2], [0.1, 0.05]])
    truth = np.array([[1, 0], [1, 1], [1, 0], [0, 1], [0, 0]]).astype(bool)
    tuned = tune_thresholds(scores, truth)
    assert tuned == pytest.approx([0.325, 0.15])
    for j in range(2):  # no threshold on a fine grid does better
        best = max(_f1(scores[:, j], truth[:, j], t) for t in np.linspace(0, 1, 1001))
        assert _f1(scores[:, j], truth[:, j], tuned[j]) == pytest.approx(best)
        assert _f1(scores[:, j], truth[:, j], tuned[j]) > _f1(scores[:, j], truth[:, j], 0.5)


def test_a_label_without_positives_keeps_one_half():
    assert tune_thresholds(np.array([[0.9], [0.1]]), np.array([[0], [0]])).tolist() == [0.5]


def test_multilabel_metrics_against_hand_counts():
    scores = np.array([[0.9, 0.6], [0.2, 0.7], [0.6, 0.1]])
    truth = np.array([[1, 0], [0, 1], [0, 0]])
    m = multilabel_scores(scores, truth, np.array([0.5, 0.5]))
    # predicted: [1,1], [0,1], [1,0] → tp 2, fp 2, fn 0
    assert m["accuracy"] == pytest.approx(1 / 3) and m["hamming_loss"] == pytest.approx(2 / 6)
    assert m["precision_micro"] == pytest.approx(0.5) and m["recall_micro"] == 1.0
    assert m["f1_micro"] == pytest.approx(2 / 3) and m["f1_macro"] == pytest.approx(2 / 3)


def test_report_tunes_on_validation_and_applies_given_thresholds():
    scores, truth = np.array([[0.3, 0.9], [0.2, 0.8], [0.1, 0.2]]), np.array([[1, 1], [1, 1], [0, 0]])
    tuned = MultiLabelReport(["a", "b"])
    tuned.add_batch(torch.tensor(scores), torch.tensor(truth))
    report = tuned.compute()
    assert report["f1_macro"] == 1.0 and report["at_0.5"]["f1_macro"] == pytest.approx(0.5)
    assert report["thresholds"]["a"] == pytest.approx(0.15)
    fixed = MultiLabelReport(["a", "b"], thresholds=[0.5, 0.5], source="--threshold 0.5")
    fixed.add_batch(scores, truth)
    assert fixed.compute()["f1_macro"] == pytest.approx(0.5)


def test_thresholds_round_trip_through_the_model_config():
    task = MultiLabelClassification(["x", "y"])
    task.adopt({"thresholds": {"x": 0.3, "y": 0.7}})
    config = BertConfig(id2label={0: "x", 1: "y"}, problem_type="multi_label_classification",
                        **task.config_entries())
    again = task_for_model(BertConfig.from_dict(config.to_dict()))
    assert isinstance(again, MultiLabelClassification) and again.thresholds == [0.3, 0.7]
    assert getattr(config, THRESHOLDS_KEY) == {"x": 0.3, "y": 0.7}
    answers = again.decide(np.array([[0.35, 0.69], [0.1, 0.9], [0.0, 0.0]]))
    assert answers == [[{"label": "x", "score": 0.35}], [{"label": "y", "score": 0.9}], []]


def test_class_weights_change_the_loss_as_computed_by_hand():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    weighted = SingleLabelClassification(["a", "b"], class_weights=[1.0, 3.0]).loss(logits, labels)
    nll = -torch.log_softmax(logits, -1)[torch.arange(3), labels]
    w = torch.tensor([1.0, 3.0, 3.0])
    assert weighted == pytest.approx(float((w * nll).sum() / w.sum()), rel=1e-6)
    assert weighted != pytest.approx(float(SingleLabelClassification(["a", "b"]).loss(logits, labels)))

    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    pos_weight = torch.tensor([2.0, 0.5])
    multi = MultiLabelClassification(["a", "b"], class_weights=pos_weight.tolist()).loss(logits, targets)
    p = torch.sigmoid(logits)
    by_hand = -(pos_weight * targets * torch.log(p) + (1 - targets) * torch.log(1 - p)).mean()
    assert multi == pytest.approx(float(by_hand), rel=1e-5)


def test_balanced_and_json_class_weights():
    counts = {"ham": 90, "spam": 10}
    assert resolve_class_weights("balanced", ["ham", "spam"], counts, 100, False) == pytest.approx([100 / 180, 100 / 20])
    assert resolve_class_weights("balanced", ["ham", "spam"], counts, 100, True) == pytest.approx([10 / 90, 90 / 10])
    assert resolve_class_weights('{"spam": 4}', ["ham", "spam"], counts, 100, False) == [1.0, 4.0]
    assert resolve_class_weights("none", ["ham", "spam"], counts, 100, False) is None
    with pytest.raises(UserInputError, match=r"names label\(s\) the training data does not have: 'spma'"):
        resolve_class_weights('{"spma": 4}', ["ham", "spam"], counts, 100, False)


def test_regression_loss_metrics_and_answers():
    task = Regression(["score"])
    logits, targets = torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([1.5, 2.0, 2.0])
    assert task.loss(logits, targets) == pytest.approx((0.25 + 0 + 4) / 3)
    huber = Regression(["score"], loss="huber").loss(logits, targets)
    assert huber == pytest.approx((0.125 + 0 + 1.5) / 3)
    assert task.decide(np.array([[0.5], [-1.0]])) == [0.5, -1.0]
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    true = np.round(rng.normal(size=200), 1)  # rounded: ties for Spearman
    pred = true + rng.normal(scale=0.5, size=200)
    report = RegressionReport()
    report.add_batch(pred[:50], true[:50])
    report.add_batch(pred[50:], true[50:])
    r = report.compute()
    assert r["pearson"] == pytest.approx(scipy_stats.pearsonr(pred, true)[0])
    assert r["spearman"] == pytest.approx(scipy_stats.spearmanr(pred, true)[0])
    assert r["mse"] == pytest.approx(np.mean((pred - true) ** 2)) and r["rmse"] == pytest.approx(np.sqrt(r["mse"]))
    assert r["r2"] == pytest.approx(1 - np.sum((pred - true) ** 2) / np.sum((true - true.mean()) ** 2))
    assert r["mae"] == pytest.approx(np.mean(np.abs(pred - true)))


def test_a_regression_model_predicting_a_constant_is_flagged():
    task = Regression(["score"])
    report = task.new_report()
    report.add_batch(torch.zeros(4), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    computed = report.compute()
    assert computed["pearson"] == 0.0  # undefined correlation reported as 0, never NaN
    (warning,) = task.warnings(computed, "validation")
    assert "about the same value for every validation row" in warning


@pytest.mark.parametrize(("settings", "message"), [
    ({"multi_label": True, "task": "regression"}, "--multi-label and --task regression do not go together"),
    ({"class_weights": "{spam: 2}"}, "is neither 'none', 'balanced' nor a JSON object"),
    ({"class_weights": '{"spam": -1}'}, "must be a positive finite number"),
    ({"task": "regression", "class_weights": "balanced"}, "--class-weights applies to classification"),
    ({"threshold": 0.4}, "--threshold applies to multi-label models"),
    ({"multi_label": True, "threshold": 1.5}, "strictly between 0 and 1"),
    ({"task": "regression", "metric_for_best_model": "f1_macro"}, "'f1_macro' is not a regression metric"),
    ({"metric_for_best_model": "r2"}, "'r2' is not a classification metric"),
    ({"regression_loss": "huber"}, "applies to --task regression only"),
    ({"label_columns": "a"}, "must name two or more distinct columns"),
    ({"task": "ordinal"}, "task 'ordinal' is unknown"),
])
def test_contradictory_settings_are_refused_at_construction(settings, message):
    with pytest.raises(UserInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(train_file="train.csv", **settings)


def test_defaults_follow_the_task():
    assert TrainConfig(train_file="t.csv").metric_for_best_model == "f1_macro"
    assert TrainConfig(train_file="t.csv", task="regression").metric_for_best_model == "r2"
    assert TrainConfig(train_file="t.csv", label_columns="a, b").multi_label is True
