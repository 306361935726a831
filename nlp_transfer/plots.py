"""Plots of a finished run, saved in the model folder and shown in its card.

- ``training_curves.png``: training loss (per logged step and per epoch) and validation loss on
  the left, the validation metrics per epoch on the right, the best epoch marked;
- ``confusion_matrix.png``: the test (else validation) confusion matrix, colour = share of the true
  label's rows (row-normalised), number = rows, label names on both axes; the figure grows with
  the number of labels so that 50 labels stay legible.

Everything is read from ``metrics.json`` and ``training_summary.json``, so ``nlp-transfer report``
redraws the same pictures at any time. matplotlib is an optional extra (``nlp-transfer[plots]``),
used through its object API with the Agg canvas: no display, no global backend switched.
"""

from __future__ import annotations

import importlib.util
import io
import logging
from pathlib import Path
from typing import Any, Optional

from .artifacts import CONFIG_FILE, CONFUSION_FILE, CURVES_FILE, METRICS_FILE, SUMMARY_FILE, read_json, write_bytes
from .errors import UserInputError

logger = logging.getLogger(__name__)

PLOTS_HINT = "pip install 'nlp-transfer[plots]' (matplotlib), then `nlp-transfer report MODEL_DIR` draws them"
PLOT_TITLES = {CURVES_FILE: "Training curves", CONFUSION_FILE: "Confusion matrix"}
DPI = 110
_LABEL_CHARS = 24  # longer label names are shortened on the axes (metrics.json has them whole)
_ANNOTATE_UP_TO = 60  # cells get their count written in them up to this many labels
_METRIC_NAMES = {"accuracy": "accuracy", "f1_macro": "macro F1", "f1_weighted": "weighted F1",
                 "f1_micro": "micro F1", "precision_macro": "macro precision", "recall_macro": "macro recall"}


def plots_available() -> bool:
    """Whether matplotlib is installed (checked without importing it)."""
    return importlib.util.find_spec("matplotlib") is not None


def draw_plots(directory: str | Path) -> list[Path]:
    """Draw the plots of a model folder from its JSON records; return the files written.

    Raises:
        UserInputError: matplotlib is not installed, or the folder lacks its records.
    """
    if not plots_available():
        raise UserInputError(f"drawing plots needs matplotlib, which is not installed; {PLOTS_HINT}.")
    directory = Path(directory)
    for name in (METRICS_FILE, SUMMARY_FILE):
        if not (directory / name).is_file():
            raise UserInputError(f"{str(directory)!r} has no {name}; it is not a folder written by nlp-transfer train.")
    metrics = read_json(directory / METRICS_FILE, "the model folder's metrics.json")
    summary = read_json(directory / SUMMARY_FILE, "the model folder's training_summary.json")
    written = []
    if summary.get("history"):
        config = read_json(directory / CONFIG_FILE, "the model folder's training_config.json") \
            if (directory / CONFIG_FILE).is_file() else {}
        curves = training_curves({"metric_for_best_model": config.get("metric_for_best_model"), **summary})
        written.append(write_bytes(directory / CURVES_FILE, _png(curves)))
    split = "test" if metrics.get("test") else "validation"
    matrix = (metrics.get(split) or {}).get("confusion_matrix")
    if matrix and matrix.get("matrix"):
        title = f"{split} set, {metrics[split].get('num_samples', '?')} rows"
        written.append(write_bytes(directory / CONFUSION_FILE, _png(confusion_matrix(matrix, title))))
    return written


def draw_plots_after_training(directory: Path) -> list[Path]:
    """:func:`draw_plots` for a run that just finished: without matplotlib, one line saying how to get them."""
    if not plots_available():
        logger.warning("plots not drawn: matplotlib is not installed; %s.", PLOTS_HINT)
        return []
    return draw_plots(directory)


def plot_links(directory: str | Path) -> list[dict[str, str]]:
    """The plots present in a model folder, as the card links them (relative, so they render on the Hub)."""
    return [{"title": title, "file": name} for name, title in PLOT_TITLES.items() if (Path(directory) / name).is_file()]


def _png(figure: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    return buffer.getvalue()


def training_curves(summary: dict[str, Any]) -> Any:
    """The loss and validation-metric curves of ``training_summary.json`` as a matplotlib Figure."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    history = summary["history"]
    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(11, 4.4), layout="constrained")
    loss, scores = figure.subplots(1, 2)
    curve = summary.get("loss_curve") or []
    if curve:
        loss.plot([p[0] for p in curve], [p[1] for p in curve], color="tab:blue", alpha=0.35, linewidth=1,
                  label="training loss (logged steps)")
    loss.plot(epochs, [row["train_loss"] for row in history], "o-", color="tab:blue", label="training loss (epoch mean)")
    val_loss = [(row["validation"] or {}).get("loss") for row in history]
    if all(v is not None for v in val_loss):
        loss.plot(epochs, val_loss, "s-", color="tab:orange", label="validation loss")
    loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    markers = iter("o^sDv<>")
    for name, shown in _METRIC_NAMES.items():
        values = [(row["validation"] or {}).get(name) for row in history]
        if name in ("accuracy", "f1_macro", summary.get("metric_for_best_model")) and all(
                isinstance(v, (int, float)) for v in values):
            scores.plot(epochs, values, next(markers) + "-", label=f"validation {shown}")
    best = summary.get("best_epoch")
    if best:
        scores.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best})")
    scores.set(title="Validation metrics", xlabel="epoch", ylabel="score")
    low, high = scores.get_ylim()
    if high - low < 0.1:  # a flat or single-epoch curve: no zoom that makes noise look like a trend
        middle = (low + high) / 2
        scores.set_ylim(middle - 0.05, middle + 0.05)
    for axes in (loss, scores):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlim(0 if curve else min(epochs) - 0.25, max(epochs) + 0.25)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=9, loc="best")
    figure.suptitle(f"{summary.get('epochs_run', len(history))} epoch(s), best epoch {best}", fontsize=11)
    return figure


def _short(label: str) -> str:
    label = " ".join(str(label).split())
    return label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1] + "…"


def confusion_matrix(matrix: dict[str, Any], title: Optional[str] = None) -> Any:
    """A row-normalised confusion matrix with counts, from ``metrics.json``'s ``confusion_matrix`` entry.

    Args:
        matrix: ``{"labels": [...], "matrix": [[...], ...]}`` (rows: true label, columns: predicted).
        title: what the matrix was computed on (e.g. ``test set, 444 rows``).
    """
    import numpy as np
    from matplotlib.figure import Figure

    labels, counts = [_short(label) for label in matrix["labels"]], np.asarray(matrix["matrix"], dtype=np.int64)
    n = len(labels)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    longest = max(len(label) for label in labels)
    cell = 0.42 if n > 10 else 0.9  # inches per cell: room for a 4-digit count (8 pt) or "1234\n100%" (10 pt)
    side = min(40.0, cell * n)
    margin = 0.09 * longest + 0.8  # the label names
    figure = Figure(figsize=(side + margin + 1.6, side + margin + 0.9), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = np.arange(n)
    axes.set_xticks(ticks, labels, rotation=90 if n > 6 else 30, ha="center" if n > 6 else "right", fontsize=9)
    axes.set_yticks(ticks, labels, fontsize=9)
    axes.set_xlabel("predicted label")
    axes.set_ylabel("true label")
    if n <= _ANNOTATE_UP_TO:
        size = 10 if n <= 10 else 8 if n <= 30 else 7
        for i in range(n):
            for j in range(n):
                if counts[i, j] == 0 and n > 10:
                    continue  # empty cells stay blank in a large matrix: the non-zero ones stand out
                text = f"{counts[i, j]}\n{shares[i, j]:.0%}" if n <= 10 else str(counts[i, j])
                axes.text(j, i, text, ha="center", va="center", fontsize=size,
                          color="white" if shares[i, j] > 0.55 else "black")
    bar = figure.colorbar(image, ax=axes, shrink=0.5 if n > 10 else 0.9, pad=0.02)
    bar.set_label("share of the true label's rows")
    numbers = "number: rows" if n <= _ANNOTATE_UP_TO else "rows are in metrics.json"
    axes.set_title(f"Confusion matrix{f' ({title})' if title else ''}\ncolour: share of the true label's rows; "
                   f"{numbers}", fontsize=11 if n <= 10 else 14)
    return figure
