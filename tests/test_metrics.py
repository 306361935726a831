"""The shipped evaluate metrics agree with each other and with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from nlp_transfer.metrics import F1, Accuracy, Precision, Recall, compute_report


def test_report_by_hand():
    report = compute_report([0, 1, 1, 2, 0], [0, 1, 2, 2, 1], ["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(0.6)
    assert report["per_class"]["a"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert report["f1_macro"] == pytest.approx((2 / 3 + 0.5 + 2 / 3) / 3)
    assert report["f1_micro"] == pytest.approx(0.6)
    assert report["confusion_matrix"] == {"labels": ["a", "b", "c"], "matrix": [[1, 0, 0], [1, 1, 0], [0, 1, 1]]}
    assert report["num_samples"] == 5


def test_absent_class_scores_zero_not_nan():
    report = compute_report([0, 0], [0, 0], ["a", "b"])
    assert report["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_metrics_are_evaluate_metrics_with_add_batch():
    metric = F1(keep_in_memory=True)
    metric.add_batch(predictions=[0, 1], references=[0, 0])
    metric.add_batch(predictions=[1], references=[1])
    assert metric.compute(num_labels=2, average="micro")["f1"] == pytest.approx(2 / 3)


def test_agrees_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 5, 500)
    preds = np.where(rng.random(500) < 0.6, refs, rng.integers(0, 5, 500))
    report = compute_report(preds, refs, list("abcde"))
    assert report["accuracy"] == pytest.approx(metrics.accuracy_score(refs, preds))
    for average in ("macro", "micro", "weighted"):
        assert report[f"f1_{average}"] == pytest.approx(metrics.f1_score(refs, preds, average=average))
        kw = dict(predictions=preds, references=refs, num_labels=5, average=average)
        assert Precision(keep_in_memory=True).compute(**kw)["precision"] == pytest.approx(
            metrics.precision_score(refs, preds, average=average))
        assert Recall(keep_in_memory=True).compute(**kw)["recall"] == pytest.approx(
            metrics.recall_score(refs, preds, average=average))
    assert Accuracy(keep_in_memory=True).compute(predictions=preds, references=refs)["accuracy"] == report["accuracy"]
    assert report["confusion_matrix"]["matrix"] == metrics.confusion_matrix(refs, preds).tolist()
