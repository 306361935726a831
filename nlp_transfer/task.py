"""Tasks: what the labels are and how the model's outputs are read.

A :class:`Task` owns everything that depends on the kind of problem: the label set and its
encoding, the ``problem_type`` and head size written into the model config, the loss, turning
logits into predictions and probabilities, the metrics report, the sanity checks on a
validation report, and the task's section of the model card. Training, evaluation, inference,
feature extraction and the card all go through it, so a new kind of problem (multi-label,
regression) is a new subclass registered in :data:`TASKS`, not an ``if`` in five modules.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .errors import UserInputError
from .metrics import ClassificationReport
from .multilabel_metrics import PLAIN_THRESHOLD, MultiLabelReport
from .regression_metrics import RegressionReport
from .task_config import CLASSIFICATION_METRICS, REGRESSION_METRICS, parse_class_weights

# Metrics a single-label report offers for picking the best epoch (all: higher is better).
SINGLE_LABEL_METRICS = CLASSIFICATION_METRICS
# The config.json entry holding a multi-label model's decision thresholds (label → probability).
THRESHOLDS_KEY = "label_thresholds"


class Task:
    """The kind of problem a classifier solves. Subclasses set the class attributes and methods.

    The life of a task: :func:`make_task` builds it for training (class weights resolved from the
    training counts); every epoch's validation report comes from :meth:`new_report`; once training
    ends, :meth:`adopt` takes what the best validation report tuned (multi-label thresholds), so
    the test set is scored with it and :meth:`config_entries` writes it into ``config.json``;
    :func:`task_for_model` rebuilds the task from a saved folder (:meth:`from_model_config`) for
    ``evaluate``, ``predict`` and :func:`~nlp_transfer.inference.load_classifier`, where
    :meth:`probabilities` gives the pipeline's scores and :meth:`decide` turns them into answers.

    Args:
        labels: label names in id order (the rows of the classification head).
        class_weights: one loss weight per label (None: all 1); see :func:`resolve_class_weights`.
    """

    name: ClassVar[str] = ""
    problem_type: ClassVar[str] = ""
    metric_names: ClassVar[tuple[str, ...]] = ()
    card_template: ClassVar[str] = ""  # a file of nlp_transfer.model_cards, rendered into the card
    history_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "f1_macro")  # columns of the card's epoch table
    pipeline_kwargs: ClassVar[str] = ""  # extra pipeline() arguments the card's usage snippet shows
    card_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro")

    def __init__(self, labels: Sequence[str], class_weights: Optional[Sequence[float]] = None):
        self.labels = [str(label) for label in labels]
        self.label2id = {label: i for i, label in enumerate(self.labels)}
        self.class_weights = None if class_weights is None else torch.tensor(list(class_weights), dtype=torch.float32)

    @classmethod
    def from_model_config(cls, labels: Sequence[str], model_config: Any) -> "Task":
        """The task of a saved model whose ``config.json`` says ``problem_type == cls.problem_type``."""
        return cls(labels)

    def adopt(self, validation: Mapping[str, Any]) -> None:
        """Keep what the best epoch's validation report tuned, for the test set and the saved model."""

    def config_entries(self) -> dict[str, Any]:
        """Entries added to the saved ``config.json`` besides :meth:`model_config` (e.g. thresholds)."""
        return {}

    def decide(self, scores: np.ndarray) -> list[Any]:
        """One answer per row of :meth:`probabilities` scores (what ``Classifier.predict`` returns)."""
        best = scores.argmax(axis=1)
        return [{"label": self.labels[i], "score": float(scores[row, i])} for row, i in enumerate(best)]

    def _weights(self, logits: torch.Tensor) -> Optional[torch.Tensor]:
        return None if self.class_weights is None else self.class_weights.to(logits.device, torch.float32)

    @property
    def num_outputs(self) -> int:
        """Width of the classification head."""
        return len(self.labels)

    def model_config(self) -> dict[str, Any]:
        """Keyword arguments for ``from_pretrained``: head size, label names, problem type."""
        id2label = dict(enumerate(self.labels))
        return {"num_labels": self.num_outputs, "id2label": id2label,
                "label2id": {label: i for i, label in id2label.items()}, "problem_type": self.problem_type}

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch (mean over rows)."""
        raise NotImplementedError

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        """What the metrics compare with the references."""
        raise NotImplementedError

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Scores in [0, 1] per label, as ``pipeline("text-classification")`` computes them."""
        raise NotImplementedError

    def new_report(self) -> Any:
        """An accumulator with ``add_batch(predictions, references)`` and ``compute()``."""
        raise NotImplementedError

    def headline(self, report: Mapping[str, Any]) -> dict[str, float]:
        """The scalar metrics of a report (for the epoch history and the printed summary)."""
        return {k: v for k, v in report.items() if isinstance(v, float)}

    def warnings(self, report: Mapping[str, Any], split: str) -> list[str]:
        """Signs that a model is useless although training finished (e.g. it predicts one class)."""
        return []

    def card_context(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Template variables of the task's card section (:attr:`card_template`)."""
        return {}

    def card_section(self) -> str:
        """The task's Markdown template (Jinja), rendered into the model card's results section."""
        return resources.files("nlp_transfer.model_cards").joinpath(self.card_template).read_text(encoding="utf-8")


class SingleLabelClassification(Task):
    """One label per text out of two or more: cross-entropy, argmax, softmax."""

    name = "single_label_classification"
    problem_type = "single_label_classification"
    metric_names = SINGLE_LABEL_METRICS
    card_template = "single_label.md"

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits.view(-1, self.num_outputs), labels.view(-1),
                                           weight=self._weights(logits))

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=-1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=-1)

    def new_report(self) -> ClassificationReport:
        return ClassificationReport(self.labels)

    def card_context(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        from .card_tables import MAX_MATRIX_LABELS, capped, escape_cell, per_class_rows, table_row

        shown, more = capped(list(enumerate(self.labels)), "labels", "config.json (id2label)")
        splits = []
        for name in ("test", "validation"):
            report = metrics.get(name)
            if not report:
                continue
            rows = per_class_rows(report, [label for _, label in shown], ("precision", "recall", "f1"))
            matrix = report["confusion_matrix"]
            small = len(matrix["labels"]) <= MAX_MATRIX_LABELS
            splits.append({
                "name": name, "metrics": report, "per_class_rows": rows,
                "matrix_header": table_row(["true \\ predicted", *map(escape_cell, matrix["labels"])]) if small else "",
                "matrix_separator": "|---|" + "---|" * len(matrix["labels"]) if small else "",
                "matrix_rows": [table_row([f"**{escape_cell(label)}**", *row])
                                for label, row in zip(matrix["labels"], matrix["matrix"])] if small else [],
            })
        named = ", ".join(escape_cell(label) for label in self.labels[:10]) + (", …" if len(self.labels) > 10 else "")
        return {"label_rows": [table_row([i, escape_cell(label)]) for i, label in shown], "label_note": more,
                "result_splits": splits, "matrix_limit": MAX_MATRIX_LABELS,
                "task_sentence": f"predicts one of {len(self.labels)} labels: {named}.",
                "limitation_labels": f"The model only knows the {len(self.labels)} labels above and always answers "
                                     "with one of them, also for text unlike its training data; check the scores."}

    def warnings(self, report: Mapping[str, Any], split: str) -> list[str]:
        matrix = report.get("confusion_matrix", {}).get("matrix") or []
        predicted = [sum(column) for column in zip(*matrix)] if matrix else []
        present = sum(1 for row in matrix if sum(row) > 0)
        used = [self.labels[i] for i, n in enumerate(predicted) if n > 0]
        if len(used) == 1 and present > 1:
            return [
                f"the model predicts a single label ({used[0]!r}) for every {split} row although the {split} data has "
                f"{present} labels: it learned nothing beyond the majority class. Try more epochs, another "
                "--learning-rate (usually lower), or check the labels."
            ]
        return []


class MultiLabelClassification(Task):
    """Zero or more labels per text: BCE loss, sigmoid, per-label thresholds tuned on validation.

    Args:
        labels, class_weights: as :class:`Task` (class weights are BCE's ``pos_weight``).
        thresholds: one per label; None tunes them on each validation report.
        threshold_source: how given thresholds were chosen (shown in reports).
    """

    name = "multi_label_classification"
    problem_type = "multi_label_classification"
    metric_names = SINGLE_LABEL_METRICS
    card_template = "multi_label.md"
    history_metrics = ("f1_micro", "f1_macro")
    card_metrics = ("f1_micro", "f1_macro", "f1_weighted", "accuracy")
    pipeline_kwargs = ", top_k=None"

    def __init__(self, labels: Sequence[str], class_weights: Optional[Sequence[float]] = None,
                 thresholds: Optional[Sequence[float]] = None, threshold_source: str = "given"):
        super().__init__(labels, class_weights)
        self.thresholds = None if thresholds is None else [float(t) for t in thresholds]
        self.threshold_source = threshold_source

    @classmethod
    def from_model_config(cls, labels: Sequence[str], model_config: Any) -> "MultiLabelClassification":
        saved = getattr(model_config, THRESHOLDS_KEY, None) or {}
        thresholds = [float(saved.get(label, PLAIN_THRESHOLD)) for label in labels]
        source = f"saved in config.json ({THRESHOLDS_KEY})" if saved else "0.5 (none saved in config.json)"
        return cls(labels, thresholds=thresholds, threshold_source=source)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float().view_as(logits),
                                                              pos_weight=self._weights(logits))

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float())  # the report cuts them at the thresholds (or tunes them)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float())

    def new_report(self) -> MultiLabelReport:
        return MultiLabelReport(self.labels, self.thresholds, self.threshold_source)

    def adopt(self, validation: Mapping[str, Any]) -> None:
        if self.thresholds is None:
            self.thresholds = [float(validation["thresholds"][label]) for label in self.labels]
            self.threshold_source = "tuned on the validation set (per-label F1)"

    def config_entries(self) -> dict[str, Any]:
        return {} if self.thresholds is None else {THRESHOLDS_KEY: dict(zip(self.labels, self.thresholds))}

    def decide(self, scores: np.ndarray) -> list[Any]:
        cut = np.asarray(self.thresholds if self.thresholds is not None else [PLAIN_THRESHOLD] * len(self.labels))
        answers = []
        for row in scores:
            chosen = np.flatnonzero(row >= cut)
            chosen = chosen[np.argsort(-row[chosen], kind="stable")]
            answers.append([{"label": self.labels[i], "score": float(row[i])} for i in chosen])
        return answers

    def card_context(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        from .card_tables import multi_label_card_context

        return multi_label_card_context(self, metrics)

    def warnings(self, report: Mapping[str, Any], split: str) -> list[str]:
        if report.get("predicted_none", 0.0) >= 1.0 and report.get("num_samples"):
            return [f"the model predicts no label at all for every {split} row: it learned nothing useful. Try more "
                    "epochs, another --learning-rate, or --class-weights balanced for rare labels."]
        return []


class Regression(Task):
    """One number per text: MSE (or Huber) loss on the single output, which is the prediction.

    Args:
        labels: one name, the label column's (the pipeline reports it as the ``label``).
        loss: ``"mse"`` or ``"huber"``.
    """

    name = "regression"
    problem_type = "regression"
    metric_names = REGRESSION_METRICS
    card_template = "regression.md"
    history_metrics = ("rmse", "pearson", "r2")
    card_metrics = ("rmse", "mae", "r2", "pearson", "spearman")

    def __init__(self, labels: Sequence[str], class_weights: Optional[Sequence[float]] = None, loss: str = "mse"):
        super().__init__(labels[:1], None)
        self.loss_name = loss

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        values, targets = logits.float().view(-1), labels.float().view(-1)
        if self.loss_name == "huber":
            return nn.functional.huber_loss(values, targets)
        return nn.functional.mse_loss(values, targets)

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().view(-1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().view(-1, 1)  # the raw value: what pipeline() returns as the score

    def new_report(self) -> RegressionReport:
        return RegressionReport(self.labels)

    def decide(self, scores: np.ndarray) -> list[Any]:
        return [float(value) for value in np.asarray(scores).reshape(-1)]

    def card_context(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        splits = [{"name": name, "metrics": metrics[name]} for name in ("test", "validation") if metrics.get(name)]
        return {"result_splits": splits, "label_rows": [], "label_note": "",
                "task_sentence": f"predicts a number, `{self.labels[0]}`.",
                "limitation_labels": "The model answers with a number for any text, also for text unlike its "
                                     "training data, and rarely far outside the range of its training targets."}

    def warnings(self, report: Mapping[str, Any], split: str) -> list[str]:
        if report.get("num_samples", 0) > 1 and report.get("target_std", 0) > 0 and \
                report.get("prediction_std", 0) < 1e-3 * report["target_std"]:
            return [f"the model predicts about the same value for every {split} row: it learned nothing beyond the "
                    "mean. Try more epochs or another --learning-rate."]
        return []


TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (SingleLabelClassification, MultiLabelClassification,
                                                          Regression)}


def task_for_model(model_config: Any) -> Task:
    """The task of a saved model, from its ``config.json`` (``problem_type``, ``id2label``, thresholds)."""
    id2label = {int(i): str(name) for i, name in (model_config.id2label or {}).items()}
    labels = [id2label[i] for i in range(len(id2label))]
    problem_type: Optional[str] = getattr(model_config, "problem_type", None)
    task = TASKS.get(problem_type or SingleLabelClassification.name, SingleLabelClassification)
    return task.from_model_config(labels, model_config)


def make_task(config: Any, labels: Sequence[str], train_counts: Mapping[str, int], rows: int) -> Task:
    """The task a ``TrainConfig`` trains, with its class weights resolved from the training counts."""
    if config.task == "regression":
        return Regression(labels, loss=config.regression_loss)
    weights = resolve_class_weights(config.class_weights, labels, train_counts, rows, config.multi_label)
    if config.multi_label:
        fixed = None if config.threshold is None else [config.threshold] * len(labels)
        return MultiLabelClassification(labels, weights, fixed, f"--threshold {config.threshold}")
    return SingleLabelClassification(labels, weights)


def resolve_class_weights(setting: str, labels: Sequence[str], counts: Mapping[str, int], rows: int,
                          multi_label: bool) -> Optional[list[float]]:
    """``--class-weights`` as one loss weight per label, or None.

    ``balanced`` weighs class c by ``rows / (classes × rows of c)`` (scikit-learn's rule); for
    multi-label it is BCE's ``pos_weight`` = negatives / positives of each label. A JSON object
    names weights by label; labels it does not name weigh 1.

    Raises:
        UserInputError: the JSON names labels the training data does not have.
    """
    parsed = parse_class_weights(setting)
    if parsed is None:
        return None
    if parsed == "balanced":  # every label has training rows (data.prepare_data refuses one without)
        if multi_label:
            return [(rows - counts[label]) / max(1, counts[label]) for label in labels]
        return [rows / (len(labels) * max(1, counts[label])) for label in labels]
    unknown = sorted(set(parsed) - set(labels))
    if unknown:
        raise UserInputError(f"--class-weights names label(s) the training data does not have: "
                             f"{', '.join(map(repr, unknown))}; the labels are: {', '.join(labels)}.")
    return [parsed.get(label, 1.0) for label in labels]
