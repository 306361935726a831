"""Settings of the problem type (issue 16): checked at construction, with no heavy imports.

``TrainConfig`` names the kind of problem with a few fields — ``task`` (classification or
regression), ``multi_label`` with ``label_separator`` or ``label_columns``, ``regression_loss``,
``threshold`` and ``class_weights``. This module holds their choices, refuses the combinations
that make no sense (in one sentence, before any data is read) and fills in the task's default
metric for picking the best epoch. It is imported by :mod:`nlp_transfer.config`, so it imports
nothing heavy (``nlp-transfer --help`` stays instant).
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional

from .errors import UserInputError

TASK_KINDS = ("classification", "regression")
REGRESSION_LOSSES = ("mse", "huber")
# Validation metrics that can pick the best epoch (all: higher is better).
CLASSIFICATION_METRICS = ("accuracy", "f1_macro", "f1_micro", "f1_weighted", "precision_macro", "recall_macro")
# R² ranks epochs exactly as MSE and RMSE do (it is 1 - MSE / variance of the same validation targets).
REGRESSION_METRICS = ("r2", "pearson", "spearman")
METRIC_NAMES = CLASSIFICATION_METRICS + REGRESSION_METRICS
DEFAULT_METRIC = {"classification": "f1_macro", "regression": "r2"}


def label_column_list(value: Optional[str]) -> list[str]:
    """``--label-columns a,b,c`` as a list of column names (empty when not given)."""
    if value is None:
        return []
    return [name.strip() for name in value.split(",")]


def parse_class_weights(value: str) -> Optional[dict[str, float] | str]:
    """``--class-weights``: ``"none"`` → None, ``"balanced"``, or a JSON object label → positive weight.

    Raises:
        UserInputError: not one of those forms, or a weight that is not a positive finite number.
    """
    if not isinstance(value, str):
        raise UserInputError(f"class_weights must be 'none', 'balanced' or a JSON object; got {value!r}.")
    text = value.strip()
    if text.lower() == "none":
        return None
    if text.lower() == "balanced":
        return "balanced"
    try:
        weights = json.loads(text)
    except json.JSONDecodeError:
        weights = None
    if not isinstance(weights, dict) or not weights:
        raise UserInputError(
            f"--class-weights {value!r} is neither 'none', 'balanced' nor a JSON object of label weights; pass e.g. "
            "--class-weights '{\"spam\": 5, \"ham\": 1}' (labels not named get weight 1)."
        )
    bad = {k: v for k, v in weights.items()
           if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0}
    if bad:
        raise UserInputError(f"--class-weights gives {bad} ; every weight must be a positive finite number.")
    return {str(k): float(v) for k, v in weights.items()}


def check_task_settings(config: Any) -> None:
    """Refuse problem-type settings that contradict each other; fill ``metric_for_best_model``.

    ``label_columns`` implies ``multi_label`` (several 0/1 columns are a multi-label set). Called
    from ``TrainConfig.__post_init__``.
    """
    if config.task not in TASK_KINDS:
        raise UserInputError(f"task {config.task!r} is unknown; choose one of: {', '.join(TASK_KINDS)}.")
    regression = config.task == "regression"
    columns = label_column_list(config.label_columns)
    if config.label_columns is not None:
        if len(columns) < 2 or not all(columns) or len(set(columns)) != len(columns):
            raise UserInputError(
                f"--label-columns {config.label_columns!r} must name two or more distinct columns separated by "
                "commas, e.g. --label-columns sports,politics,tech."
            )
        clash = [c for c in columns if c in (config.text_column, config.text_pair_column)]
        if clash:
            raise UserInputError(f"--label-columns names the text column {clash[0]!r}; label columns hold 0/1 values.")
        config.multi_label = True
    if config.multi_label and regression:
        raise UserInputError("--multi-label and --task regression do not go together: a regression model predicts "
                             "one number per text; drop one of them.")
    if not isinstance(config.label_separator, str) or not config.label_separator:
        raise UserInputError(f"--label-separator must be a non-empty string (e.g. ','); got {config.label_separator!r}.")
    if config.regression_loss not in REGRESSION_LOSSES:
        raise UserInputError(f"regression_loss {config.regression_loss!r} is unknown; choose one of: "
                             f"{', '.join(REGRESSION_LOSSES)}.")
    if config.regression_loss != "mse" and not regression:
        raise UserInputError(f"--regression-loss {config.regression_loss} applies to --task regression only.")
    check_threshold(config.threshold, config.multi_label)
    weights = parse_class_weights(config.class_weights)
    if weights is not None and regression:
        raise UserInputError("--class-weights applies to classification; a regression model has no classes. "
                             "Drop --class-weights.")
    _resolve_metric(config)


def check_threshold(threshold: Any, multi_label: bool) -> None:
    """Refuse a ``--threshold`` outside (0, 1), or one for a model that is not multi-label."""
    if threshold is None:
        return
    ok = isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and math.isfinite(threshold)
    if not ok or not 0 < threshold < 1:
        raise UserInputError(f"--threshold must be a probability strictly between 0 and 1 (e.g. 0.5); got {threshold!r}.")
    if not multi_label:
        raise UserInputError("--threshold applies to multi-label models (--multi-label or --label-columns), whose "
                             "labels are each on or off; a single-label model answers its most likely label.")


def _resolve_metric(config: Any) -> None:
    kind = config.task
    if config.metric_for_best_model is None:
        config.metric_for_best_model = DEFAULT_METRIC[kind]
        return
    allowed = REGRESSION_METRICS if kind == "regression" else CLASSIFICATION_METRICS
    if config.metric_for_best_model in METRIC_NAMES and config.metric_for_best_model not in allowed:
        raise UserInputError(
            f"metric_for_best_model {config.metric_for_best_model!r} is not a {kind} metric; choose one of: "
            f"{', '.join(allowed)}."
        )
