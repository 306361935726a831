"""Markdown tables of the model card, built from the run's records.

Cells that come from the user's data are escaped (a label may contain ``|``, a newline, or
Markdown), rows never end in a space, and long tables are capped at :data:`MAX_ROWS` rows with a
line saying how many were left out and where the full record is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

MAX_ROWS = 50  # labels listed in a card table; the rest are counted
MAX_MATRIX_LABELS = 20  # a confusion matrix wider than this is unreadable in Markdown
_MARKDOWN = re.compile(r"([\\`*_{}\[\]<>#|!~])")


def escape_cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell: one line, Markdown and pipes escaped."""
    one_line = " ".join(str(text).split())
    return _MARKDOWN.sub(r"\\\1", one_line) or "(empty)"


def table_row(cells: Sequence[Any]) -> str:
    """One Markdown table row, ``| a | b |`` (no trailing space)."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def capped(items: Sequence[Any], what: str, where: str) -> tuple[list[Any], str]:
    """The first :data:`MAX_ROWS` items and a note on the rest (empty when nothing was left out)."""
    if len(items) <= MAX_ROWS:
        return list(items), ""
    return list(items[:MAX_ROWS]), f"… and {len(items) - MAX_ROWS} more {what} (all of them are in {where})."


def card_rows(task: Any, config: dict[str, Any], metrics: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Template variables shared by every task: data files, columns, rows per label per split, results."""
    counts: dict[str, dict[str, int]] = summary.get("label_counts") or {}
    splits = list(counts)
    labels, more = capped(summary["labels"], "labels", "training_summary.json")
    count_rows = [table_row([escape_cell(label), *(counts[s].get(label, 0) for s in splits)]) for label in labels]
    # Texts per split: a multi-label text counts once in the total, however many labels it has.
    texts = summary.get("text_counts") or {s: sum(counts[s].values()) for s in splits}
    count_rows.append(table_row(["**texts**", *(f"**{texts.get(s, sum(counts[s].values()))}**" for s in splits)]))
    files = {split: Path(config[key]).name for split, key in
             (("train", "train_file"), ("validation", "validation_file"), ("test", "test_file")) if config.get(key)}
    return {
        "labels": summary["labels"],
        "data_files": {split: escape_cell(name) for split, name in files.items()},
        "count_header": table_row(["label", *splits]),
        "count_separator": "|---|" + "---|" * len(splits),
        "count_rows": count_rows,
        "count_note": more,
        "validation_source": summary.get("validation_source", "file"),
        "text_column": config["text_column"],
        "text_pair_column": config.get("text_pair_column"),
        "label_column": config["label_column"],
        "has_test": bool(metrics.get("test")),
        **task.card_context(metrics),
    }



def per_class_rows(report: dict[str, Any], labels: Sequence[str], columns: Sequence[str]) -> list[str]:
    """Table rows of a report's per-class results: the label, ``columns`` to 4 decimals, the support."""
    return [table_row([escape_cell(label), *(f"{report['per_class'][label][k]:.4f}" for k in columns),
                       report["per_class"][label]["support"]]) for label in labels]

def multi_label_card_context(task: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """Template variables of ``multi_label.md``: labels with their thresholds, per-label results per split."""
    shown, more = capped(list(enumerate(task.labels)), "labels", "config.json (id2label)")
    validation = metrics.get("validation") or {}
    thresholds = validation.get("thresholds") or {}
    if task.thresholds is not None:  # a model rebuilt from config.json knows the thresholds it uses
        thresholds = dict(zip(task.labels, task.thresholds))
    splits = []
    for name in ("test", "validation"):
        report = metrics.get(name)
        if not report:
            continue
        rows = per_class_rows(report, [label for _, label in shown], ("threshold", "precision", "recall", "f1"))
        splits.append({"name": name, "metrics": report, "plain": report.get("at_0.5") or {}, "per_class_rows": rows})
    named = ", ".join(escape_cell(label) for label in task.labels[:10]) + (", …" if len(task.labels) > 10 else "")
    return {"label_rows": [table_row([i, escape_cell(label), f"{thresholds.get(label, 0.5):.4f}"]) for i, label in shown],
            "label_note": more, "result_splits": splits,
            "threshold_source": validation.get("threshold_source", ""),
            "task_sentence": f"gives each of {len(task.labels)} labels ({named}) a probability and answers every "
                             "label whose probability reaches that label's threshold — none, one or several.",
            "limitation_labels": f"The model only knows the {len(task.labels)} labels above; its thresholds were "
                                 "tuned on the validation data and may need adjusting (--threshold) on other data."}
