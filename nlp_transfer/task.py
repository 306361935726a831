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

import torch
from torch import nn

from .metrics import ClassificationReport

# Metrics a single-label report offers for picking the best epoch (all: higher is better).
SINGLE_LABEL_METRICS = ("accuracy", "f1_macro", "f1_micro", "f1_weighted", "precision_macro", "recall_macro")


class Task:
    """The kind of problem a classifier solves. Subclasses set the class attributes and methods.

    Args:
        labels: label names in id order (the rows of the classification head).
    """

    name: ClassVar[str] = ""
    problem_type: ClassVar[str] = ""
    metric_names: ClassVar[tuple[str, ...]] = ()
    card_template: ClassVar[str] = ""  # a file of nlp_transfer.model_cards, rendered into the card

    def __init__(self, labels: Sequence[str]):
        self.labels = [str(label) for label in labels]
        self.label2id = {label: i for i, label in enumerate(self.labels)}

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
        return nn.functional.cross_entropy(logits.view(-1, self.num_outputs), labels.view(-1))

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=-1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=-1)

    def new_report(self) -> ClassificationReport:
        return ClassificationReport(self.labels)

    def card_context(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        from .card_tables import MAX_MATRIX_LABELS, capped, escape_cell, table_row

        shown, more = capped(list(enumerate(self.labels)), "labels", "config.json (id2label)")
        splits = []
        for name in ("test", "validation"):
            report = metrics.get(name)
            if not report:
                continue
            rows = [table_row([escape_cell(label), *(f"{report['per_class'][label][k]:.4f}" for k in
                                                     ("precision", "recall", "f1")),
                               report["per_class"][label]["support"]]) for _, label in shown]
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


TASKS: dict[str, type[Task]] = {SingleLabelClassification.name: SingleLabelClassification}


def task_for_model(model_config: Any) -> Task:
    """The task of a saved classifier, from its ``config.json`` (``problem_type`` and ``id2label``)."""
    id2label = {int(i): str(name) for i, name in (model_config.id2label or {}).items()}
    labels = [id2label[i] for i in range(len(id2label))]
    problem_type: Optional[str] = getattr(model_config, "problem_type", None)
    task = TASKS.get(problem_type or SingleLabelClassification.name, SingleLabelClassification)
    return task(labels)
