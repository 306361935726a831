"""Classification metrics as ``evaluate.Metric`` implementations shipped with the package.

``evaluate.load("accuracy")`` downloads a script from the Hub, which fails offline; these
classes are the same kind of object (``add_batch`` / ``compute``), built on one confusion
matrix so every number in a report agrees with every other.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import datasets
import evaluate
import numpy as np

_FEATURES = datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")})
AVERAGES = ("macro", "micro", "weighted")


def confusion_matrix(predictions: Sequence[int], references: Sequence[int], num_labels: int) -> np.ndarray:
    """``cm[i, j]`` = rows whose true class is ``i`` and predicted class is ``j``."""
    refs = np.asarray(references, dtype=np.int64)
    preds = np.asarray(predictions, dtype=np.int64)
    return np.bincount(refs * num_labels + preds, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # Zero support or zero predictions give 0, as scikit-learn's zero_division=0 does.
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix."""
    tp = np.diag(cm).astype(np.float64)
    precision = _divide(tp, cm.sum(axis=0).astype(np.float64))
    recall = _divide(tp, cm.sum(axis=1).astype(np.float64))
    f1 = _divide(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": cm.sum(axis=1)}


def _average(name: str, cm: np.ndarray, average: Optional[str]) -> Any:
    scores = per_class_scores(cm)
    if average is None:
        return scores[name].tolist()
    if average == "micro":
        # Single-label classification: micro precision = micro recall = micro F1 = accuracy.
        return float(np.trace(cm) / cm.sum()) if cm.sum() else 0.0
    if average == "macro":
        return float(scores[name].mean())
    if average == "weighted":
        support = scores["support"]
        return float((scores[name] * support).sum() / support.sum()) if support.sum() else 0.0
    raise ValueError(f"average must be one of {AVERAGES} or None; got {average!r}")


class _ConfusionMetric(evaluate.Metric):
    """Base for metrics computed from the confusion matrix of integer class ids."""

    score_name = ""
    description = ""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=self.description,
            citation="",
            inputs_description="predictions, references: integer class ids; num_labels: number of classes; "
            "average: macro, micro, weighted or None (per class).",
            features=_FEATURES,
        )

    def _matrix(self, predictions, references, num_labels: Optional[int]) -> np.ndarray:
        if num_labels is None:
            num_labels = int(max(max(predictions, default=0), max(references, default=0))) + 1
        return confusion_matrix(predictions, references, num_labels)

    def _compute(self, predictions, references, num_labels: Optional[int] = None, average: Optional[str] = "macro"):
        cm = self._matrix(predictions, references, num_labels)
        return {self.score_name: _average(self.score_name, cm, average)}


class Accuracy(_ConfusionMetric):
    """Fraction of rows whose predicted class equals the reference class."""

    description = "Accuracy: correct predictions / all predictions."

    def _compute(self, predictions, references, num_labels: Optional[int] = None):
        cm = self._matrix(predictions, references, num_labels)
        return {"accuracy": float(np.trace(cm) / cm.sum()) if cm.sum() else 0.0}


class Precision(_ConfusionMetric):
    score_name = "precision"
    description = "Precision: true positives / predicted positives, per class then averaged."


class Recall(_ConfusionMetric):
    score_name = "recall"
    description = "Recall: true positives / actual positives, per class then averaged."


class F1(_ConfusionMetric):
    score_name = "f1"
    description = "F1: harmonic mean of precision and recall, per class then averaged."


class ConfusionMatrix(_ConfusionMetric):
    description = "Confusion matrix: rows are true classes, columns predicted classes."

    def _compute(self, predictions, references, num_labels: Optional[int] = None):
        return {"confusion_matrix": self._matrix(predictions, references, num_labels).tolist()}


class ClassificationReport:
    """Accumulates predictions batch by batch and computes the full metrics report.

    The metrics run in memory (no cache files), so every process of a distributed run can
    compute the same report from gathered predictions and take the same early-stopping decision.
    """

    def __init__(self, labels: Sequence[str]):
        self.labels = list(labels)
        self._predictions: list[np.ndarray] = []
        self._references: list[np.ndarray] = []
        self._metrics = {cls: cls(keep_in_memory=True) for cls in (Accuracy, Precision, Recall, F1, ConfusionMatrix)}

    def add_batch(self, predictions: Any, references: Any) -> None:
        """Add one batch of predicted and reference class ids (tensors, arrays or lists)."""
        self._predictions.append(np.asarray(_to_numpy(predictions), dtype=np.int64).reshape(-1))
        self._references.append(np.asarray(_to_numpy(references), dtype=np.int64).reshape(-1))

    def compute(self) -> dict[str, Any]:
        """The report: overall scores, ``per_class``, ``confusion_matrix`` and ``num_samples``.

        Resets the accumulated predictions.
        """
        inputs = {
            "predictions": np.concatenate(self._predictions) if self._predictions else np.zeros(0, np.int64),
            "references": np.concatenate(self._references) if self._references else np.zeros(0, np.int64),
            "num_labels": len(self.labels),
        }
        self._predictions, self._references = [], []
        m = self._metrics
        report: dict[str, Any] = dict(m[Accuracy].compute(**inputs))
        per_class: dict[str, list] = {}
        for cls in (F1, Precision, Recall):
            for average in AVERAGES:
                report[f"{cls.score_name}_{average}"] = m[cls].compute(**inputs, average=average)[cls.score_name]
            per_class[cls.score_name] = m[cls].compute(**inputs, average=None)[cls.score_name]
        cm = m[ConfusionMatrix].compute(**inputs)["confusion_matrix"]
        support = np.asarray(cm).sum(axis=1) if cm else np.zeros(len(self.labels), np.int64)
        report["per_class"] = {
            label: {
                "precision": float(per_class["precision"][i]),
                "recall": float(per_class["recall"][i]),
                "f1": float(per_class["f1"][i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(self.labels)
        }
        report["confusion_matrix"] = {"labels": self.labels, "matrix": cm}
        report["num_samples"] = int(len(inputs["references"]))
        return report


def _to_numpy(values: Any) -> Any:
    if hasattr(values, "detach"):
        return values.detach().cpu().numpy()
    return values


def compute_report(predictions: Sequence[int], references: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """One-shot report for lists of predicted and reference class ids."""
    report = ClassificationReport(labels)
    report.add_batch(predictions, references)
    return report.compute()
