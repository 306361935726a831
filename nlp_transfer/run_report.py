"""The summary of a finished run that ``nlp-transfer report MODEL_DIR`` prints.

Read from the folder's ``training_config.json``, ``metrics.json`` and ``training_summary.json``:
what was trained on what, the epoch history with the best epoch marked, the scores of the
reported split with its weakest classes and most frequent confusions, and the warnings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .artifacts import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, read_json
from .errors import UserInputError

WORST_CLASSES = 3
TOP_CONFUSIONS = 3


def read_records(directory: str | Path) -> dict[str, dict[str, Any]]:
    """The three JSON records of a model folder (``config``, ``metrics``, ``summary``).

    Raises:
        UserInputError: the folder does not exist or was not written by ``nlp-transfer train``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise UserInputError(f"model folder {str(directory)!r} does not exist; pass the --output-dir of a finished run.")
    records = {}
    for key, name in (("config", CONFIG_FILE), ("metrics", METRICS_FILE), ("summary", SUMMARY_FILE)):
        if not (directory / name).is_file():
            raise UserInputError(f"{str(directory)!r} has no {name}; it is not a folder written by nlp-transfer train.")
        records[key] = read_json(directory / name, f"the model folder's {name}")
    return records


def _named(labels: list[str], shown: int = 8) -> str:
    return ", ".join(labels[:shown]) + (f", … ({len(labels) - shown} more)" if len(labels) > shown else "")


def render_run(directory: str | Path) -> str:
    """The run's summary as plain text."""
    records = read_records(directory)
    config, metrics, summary = records["config"], records["metrics"], records["summary"]
    labels = summary.get("labels", [])
    sizes = ", ".join(f"{split} {sum(counts.values())} rows" for split, counts in (summary.get("label_counts") or {}).items())
    metric = config.get("metric_for_best_model", "f1_macro")
    lines = [
        f"Run: {directory}",
        f"  base model {config.get('model')}, strategy {config.get('strategy', 'finetune')}, {len(labels)} labels "
        f"({_named(labels)})",
        f"  data: {sizes}; validation: {summary.get('validation_source', 'file')}",
        f"  training: {summary.get('epochs_run')} epoch(s), best epoch {summary.get('best_epoch')} by validation "
        f"{metric}; {summary.get('train_runtime_s', 0):.0f} s on {summary.get('hardware', 'unknown hardware')}, "
        f"{summary.get('train_samples_per_s', 0):.1f} rows/s",
        "",
    ]
    lines += _history(summary)
    split = "test" if metrics.get("test") else "validation"
    if metrics.get(split):
        lines += _scores(split, metrics[split])
    lines += [f"warning: {w}" for w in summary.get("warnings", [])]
    return "\n".join(lines)


def _history(summary: dict[str, Any]) -> list[str]:
    rows = [["epoch", "train loss", "val loss", "val accuracy", "val macro F1", ""]]
    for entry in summary.get("history", []):
        val = entry.get("validation") or {}
        rows.append([str(entry["epoch"]), f"{entry['train_loss']:.4f}",
                     f"{val['loss']:.4f}" if isinstance(val.get("loss"), float) else "-",
                     f"{val.get('accuracy', float('nan')):.4f}", f"{val.get('f1_macro', float('nan')):.4f}",
                     "← best" if entry["epoch"] == summary.get("best_epoch") else ""])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.rjust(w) for cell, w in zip(row, widths)).rstrip() for row in rows] + [""]


def _scores(split: str, report: dict[str, Any]) -> list[str]:
    loss = f", loss {report['loss']:.4f}" if isinstance(report.get("loss"), float) else ""
    lines = [f"  {split} ({report.get('num_samples')} rows): accuracy {report['accuracy']:.4f}, macro F1 "
             f"{report['f1_macro']:.4f}, weighted F1 {report['f1_weighted']:.4f}{loss}"]
    per_class = report.get("per_class") or {}
    present = {label: s for label, s in per_class.items() if s.get("support")}
    worst = sorted(present, key=lambda label: present[label]["f1"])[:WORST_CLASSES]
    if len(present) > WORST_CLASSES:
        lines.append("  weakest classes (F1): " + ", ".join(f"{label} {present[label]['f1']:.3f}" for label in worst))
    matrix = report.get("confusion_matrix") or {}
    names, cells = matrix.get("labels", []), matrix.get("matrix", [])
    confusions = sorted(((n, names[i], names[j]) for i, row in enumerate(cells) for j, n in enumerate(row)
                         if i != j and n), reverse=True)[:TOP_CONFUSIONS]
    if confusions:
        lines.append("  most confused: " + "; ".join(f"{true} → {predicted} ({n} rows)" for n, true, predicted in confusions))
    return lines + [""]
