"""Multi-label metrics (``evaluate.Metric``) and the per-label decision thresholds tuned on validation.

A multi-label model gives each label an independent probability; a label is predicted when its
probability reaches the label's threshold. Peers use 0.5 for every label, which under-predicts
rare labels. :func:`tune_thresholds` picks, for each label, the threshold that maximises that
label's F1 on the validation rows; :class:`MultiLabelReport` reports every metric at the
thresholds in use and, for comparison, at the plain 0.5.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import datasets
import evaluate
import numpy as np

from .metrics import _divide, _to_numpy

PLAIN_THRESHOLD = 0.5


def tune_thresholds(scores: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Per label, the probability threshold that maximises its F1 on these rows.

    Every distinct score is a candidate cut; the threshold is set halfway between the lowest
    score kept and the next lower one, so it does not sit on a training-set value. Among equal
    F1 values the highest threshold wins (fewer false positives). A label without positive rows
    keeps :data:`PLAIN_THRESHOLD` (any threshold gives it F1 0).

    Args:
        scores: ``(rows, labels)`` probabilities.
        references: ``(rows, labels)`` 0/1 truth.
    """
    scores, references = np.asarray(scores, dtype=np.float64), np.asarray(references) > 0.5
    thresholds = np.full(scores.shape[1], PLAIN_THRESHOLD)
    for j in range(scores.shape[1]):
        positives = int(references[:, j].sum())
        if positives == 0:
            continue
        order = np.argsort(-scores[:, j], kind="stable")
        ranked, truth = scores[order, j], references[order, j]
        f1 = 2 * np.cumsum(truth) / (np.arange(1, len(ranked) + 1) + positives)
        cut = np.append(ranked[:-1] > ranked[1:], True)  # a threshold can only fall between distinct scores
        best = int(np.argmax(np.where(cut, f1, -1.0)))
        below = ranked[best + 1] if best + 1 < len(ranked) else 0.0
        thresholds[j] = (ranked[best] + below) / 2
    return thresholds


def multilabel_scores(scores: np.ndarray, references: np.ndarray, thresholds: np.ndarray) -> dict[str, Any]:
    """Overall and per-label metrics of ``scores >= thresholds`` against 0/1 ``references``."""
    predicted = np.asarray(scores) >= np.asarray(thresholds)[None, :]
    truth = np.asarray(references) > 0.5
    tp = (predicted & truth).sum(axis=0).astype(np.float64)
    predicted_n, support = predicted.sum(axis=0).astype(np.float64), truth.sum(axis=0).astype(np.float64)
    precision, recall = _divide(tp, predicted_n), _divide(tp, support)
    f1 = _divide(2 * precision * recall, precision + recall)
    micro_p = float(_divide(tp.sum(keepdims=True), predicted_n.sum(keepdims=True))[0])
    micro_r = float(_divide(tp.sum(keepdims=True), support.sum(keepdims=True))[0])
    out: dict[str, Any] = {
        "accuracy": float((predicted == truth).all(axis=1).mean()) if len(truth) else 0.0,
        "hamming_loss": float((predicted != truth).mean()) if truth.size else 0.0,
        "f1_micro": 2 * micro_p * micro_r / (micro_p + micro_r) if micro_p + micro_r else 0.0,
        "precision_micro": micro_p, "recall_micro": micro_r,
    }
    for name, values in (("f1", f1), ("precision", precision), ("recall", recall)):
        out[f"{name}_macro"] = float(values.mean()) if len(values) else 0.0
        out[f"{name}_weighted"] = float((values * support).sum() / support.sum()) if support.sum() else 0.0
    out["per_label"] = {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
                        "support": support.astype(int).tolist()}
    return out


class MultiLabelMetrics(evaluate.Metric):
    """Subset accuracy, Hamming loss and micro/macro/weighted precision, recall and F1 of multi-label scores.

    ``compute(predictions=probabilities, references=0/1 rows, thresholds=None)``; without thresholds
    every label is cut at 0.5.
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=self.__doc__ or "", citation="",
            inputs_description="predictions: per-row label probabilities; references: per-row 0/1 labels; "
            "thresholds: one per label (default 0.5).",
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float32")),
                                        "references": datasets.Sequence(datasets.Value("int32"))}),
        )

    def _compute(self, predictions, references, thresholds: Optional[Sequence[float]] = None):
        scores, truth = np.asarray(predictions, dtype=np.float64), np.asarray(references)
        cut = np.full(scores.shape[1], PLAIN_THRESHOLD) if thresholds is None else np.asarray(thresholds, np.float64)
        return multilabel_scores(scores, truth, cut)


class MultiLabelReport:
    """Accumulates probabilities batch by batch; ``compute()`` gives the multi-label report.

    Args:
        labels: label names in id order.
        thresholds: one per label; None tunes them on the data being scored (validation).
        source: how the thresholds were chosen, recorded in the report.
    """

    def __init__(self, labels: Sequence[str], thresholds: Optional[Sequence[float]] = None, source: str = ""):
        self.labels, self.thresholds, self.source = list(labels), thresholds, source
        self._scores: list[np.ndarray] = []
        self._references: list[np.ndarray] = []
        self._metric = MultiLabelMetrics(keep_in_memory=True)

    def add_batch(self, predictions: Any, references: Any) -> None:
        """Add a batch of ``(rows, labels)`` probabilities and 0/1 references."""
        k = len(self.labels)
        self._scores.append(np.asarray(_to_numpy(predictions), dtype=np.float32).reshape(-1, k))
        self._references.append(np.asarray(_to_numpy(references), dtype=np.float32).reshape(-1, k))

    def compute(self) -> dict[str, Any]:
        """The report at the thresholds in use, ``at_0.5`` for comparison, and the ``thresholds``; resets."""
        k = len(self.labels)
        scores = np.concatenate(self._scores) if self._scores else np.zeros((0, k), np.float32)
        truth = np.concatenate(self._references) if self._references else np.zeros((0, k), np.float32)
        self._scores, self._references = [], []
        tuned = self.thresholds is None
        cut = tune_thresholds(scores, truth) if tuned else np.asarray(self.thresholds, dtype=np.float64)
        report = self._metric.compute(predictions=scores, references=truth.astype(np.int32), thresholds=cut)
        plain = self._metric.compute(predictions=scores, references=truth.astype(np.int32))
        per_label = report.pop("per_label")
        plain.pop("per_label")
        report["per_class"] = {label: {"precision": per_label["precision"][i], "recall": per_label["recall"][i],
                                       "f1": per_label["f1"][i], "support": per_label["support"][i],
                                       "threshold": float(cut[i])} for i, label in enumerate(self.labels)}
        report["thresholds"] = {label: float(t) for label, t in zip(self.labels, cut)}
        report["threshold_source"] = "tuned on these rows (per-label F1)" if tuned else self.source
        report["at_0.5"] = plain
        report["predicted_none"] = float((scores < cut[None, :]).all(axis=1).mean()) if len(scores) else 0.0
        report["num_samples"] = int(len(truth))
        return report
