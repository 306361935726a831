"""Regression metrics as an ``evaluate.Metric``: MSE, RMSE, MAE, R², Pearson and Spearman.

Computed in memory from gathered predictions, so every process of a distributed run gets the
same numbers. Correlations of a constant series are undefined; they are reported as 0 (no
linear or rank relation is visible), so that picking the best epoch never meets a NaN.
"""

from __future__ import annotations

from typing import Any, Sequence

import datasets
import evaluate
import numpy as np

from .metrics import _to_numpy


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank (as Spearman's coefficient needs)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.append(True, sorted_values[1:] != sorted_values[:-1]))
    ends = np.append(starts[1:], len(values))
    average = (starts + ends + 1) / 2  # mean of the 1-based positions start+1 .. end
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


class RegressionMetrics(evaluate.Metric):
    """MSE, RMSE, MAE, R², Pearson and Spearman correlation of predicted against true values."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=self.__doc__ or "", citation="",
            inputs_description="predictions, references: one number per row.",
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64")}),
        )

    def _compute(self, predictions, references):
        pred, true = np.asarray(predictions, dtype=np.float64), np.asarray(references, dtype=np.float64)
        if not len(true):
            return {name: 0.0 for name in ("mse", "rmse", "mae", "r2", "pearson", "spearman")}
        error = pred - true
        mse = float((error ** 2).mean())
        variance = float(((true - true.mean()) ** 2).mean())
        return {
            "mse": mse, "rmse": float(np.sqrt(mse)), "mae": float(np.abs(error).mean()),
            "r2": 1 - mse / variance if variance > 0 else 0.0,
            "pearson": _pearson(pred, true), "spearman": _pearson(_ranks(pred), _ranks(true)),
        }


class RegressionReport:
    """Accumulates predicted and true values batch by batch; ``compute()`` gives the report and resets."""

    def __init__(self, labels: Sequence[str] = ("value",)):
        self.labels = list(labels)
        self._pred: list[np.ndarray] = []
        self._true: list[np.ndarray] = []
        self._metric = RegressionMetrics(keep_in_memory=True)

    def add_batch(self, predictions: Any, references: Any) -> None:
        """Add a batch of predicted and true values."""
        self._pred.append(np.asarray(_to_numpy(predictions), dtype=np.float64).reshape(-1))
        self._true.append(np.asarray(_to_numpy(references), dtype=np.float64).reshape(-1))

    def compute(self) -> dict[str, Any]:
        """``mse``, ``rmse``, ``mae``, ``r2``, ``pearson``, ``spearman``, the spread of the predictions, ``num_samples``."""
        pred = np.concatenate(self._pred) if self._pred else np.zeros(0)
        true = np.concatenate(self._true) if self._true else np.zeros(0)
        self._pred, self._true = [], []
        report: dict[str, Any] = dict(self._metric.compute(predictions=pred, references=true))
        report["prediction_std"] = float(pred.std()) if len(pred) else 0.0
        report["target_std"] = float(true.std()) if len(true) else 0.0
        report["num_samples"] = int(len(true))
        return report
