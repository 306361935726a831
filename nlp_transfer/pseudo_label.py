"""Self-training for domain adaptation: a trained classifier labels the target texts it is sure of.

``nlp-transfer pseudo-label MODEL_DIR TARGET.csv --output picked.csv`` runs the model over the
target texts and writes the ones it classifies with probability ≥ ``--threshold`` (0.7), with
the predicted label, **the same number for every class**: the ``k`` most confident rows of each
predicted class, where ``k`` is what the class with the fewest confident rows has. A model
trained on another domain is usually sure of one class far more often than of the others on the
target; taking all its confident rows would teach the next run that bias.

The file then trains as labelled target rows (``L_tgt``)::

    nlp-transfer train source.csv --strategy dann --target-file picked.csv --adversarial-weight 0

which is the ``self-training`` arm of ``scripts/bench_domain.py`` (the source-only model of the
seed labels the target texts, then a run on both).
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .artifacts import check_output_file, write_text
from .csv_files import check_file, data_rows, read_header, require_columns
from .errors import UserInputError, check_positive_int

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.7  # movie → Amazon reviews, 3 seeds: +4.0 points over source-only at 0.7, +2.4 at 0.9


def check_threshold(threshold: float) -> None:
    """Refuse a threshold that is not a probability in [0.5, 1)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.5 <= threshold < 1:
        raise UserInputError(f"--threshold must be a probability in [0.5, 1), e.g. 0.7; got {threshold!r}.")


def balanced_confident(probabilities: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows to keep, their predicted class, and ``k``: the ``k`` most confident rows of every predicted class.

    ``k`` is the smallest number of rows any class has with probability ≥ ``threshold`` (0 when a
    class has none). The kept rows are in input order.
    """
    predicted, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    confident = [np.flatnonzero((predicted == c) & (confidence >= threshold)) for c in range(probabilities.shape[1])]
    k = min(len(rows) for rows in confident)
    # A stable sort: among equally confident rows the earlier one is kept.
    keep = np.sort(np.concatenate([rows[np.argsort(-confidence[rows], kind="stable")][:k] for rows in confident]))
    return keep.astype(np.int64), predicted[keep], int(k)


def _read_texts(path: Path, text_column: str) -> list[str]:
    """The ``text_column`` of every data row of the checked CSV ``path``."""
    header = read_header(path, "target")
    require_columns(header, {text_column: "--text-column"}, "target", path)
    at = header.named.index(text_column)
    with data_rows(path, header, "target") as rows:
        texts = [row[at] for row in rows]
    if not texts:
        raise UserInputError(f"target file {str(path)!r} has a header but no data rows.")
    return texts


def _probabilities(clf: Any, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
    """``clf.predict_proba`` over ``texts``, a chunk at a time under a progress bar."""
    from tqdm.auto import tqdm

    chunk = max(batch_size, 1024)
    parts = []
    with tqdm(total=len(texts), desc="Labelling target texts", unit="text", disable=not progress) as bar:
        for start in range(0, len(texts), chunk):
            parts.append(clf.predict_proba(texts[start:start + chunk], batch_size=batch_size))
            bar.update(len(parts[-1]))
    return np.concatenate(parts)


def pseudo_label(model: str, text_file: str, output: str, threshold: float = DEFAULT_THRESHOLD,
                 text_column: Optional[str] = None, label_column: str = "label", batch_size: int = 64,
                 overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Write the target texts ``model`` is sure of, class-balanced, with their predicted labels.

    Args:
        model: a trained single-label classifier folder (or Hub id).
        text_file: CSV of target texts.
        output: the CSV to write (``text_column`` and ``label_column``); written whole or not at all.
        threshold: the least probability of a kept row's predicted label.
        text_column: the texts' column (default: the one the model was trained on).
        label_column: the label column of the output (the ``--label-column`` of the run that reads it).
        batch_size: texts per forward pass.
        overwrite: replace an existing ``output``.
        progress: show a progress bar over the texts.

    Returns:
        ``{"output", "texts", "kept", "per_class", "threshold", "confident_per_class"}``.

    Raises:
        UserInputError: bad settings or files, a model that is not a single-label classifier, an
            existing output without ``overwrite``, or a class with no confident text (nothing is written).
    """
    from .inference import load_classifier

    check_threshold(threshold)
    check_positive_int(batch_size, "--eval-batch-size")
    path = check_file(text_file, "target", "TEXTS")
    out = check_output_file(output, [path])
    if out.exists() and not overwrite:
        raise UserInputError(f"--output {str(out)!r} already exists; pass --overwrite to replace it, or another path.")
    clf = load_classifier(model)
    if clf.task.problem_type != "single_label_classification" or len(clf.labels) < 2:
        raise UserInputError(f"{model!r} is a {clf.task.problem_type} model; pseudo-labels need a single-label "
                             "classifier (one class per text).")
    if clf.text_pair_column:
        raise UserInputError(f"{model!r} was trained on text pairs; pseudo-labels are for single-text target files.")
    text_column = text_column or clf.text_column
    texts = _read_texts(path, text_column)
    probabilities = _probabilities(clf, texts, batch_size, progress)
    keep, predicted, k = balanced_confident(probabilities, threshold)
    counts = {label: int(((probabilities.argmax(1) == c) & (probabilities.max(1) >= threshold)).sum())
              for c, label in enumerate(clf.labels)}
    if k == 0:
        missing = [label for label, n in counts.items() if n == 0]
        raise UserInputError(f"no text of {str(path)!r} is predicted as {', '.join(map(repr, missing))} with "
                             f"probability ≥ {threshold:g} (confident texts per class: {counts}); lower --threshold.")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([text_column, label_column])
    writer.writerows([texts[i], clf.labels[int(c)]] for i, c in zip(keep, predicted))
    write_text(out, buffer.getvalue())
    logger.info("pseudo-label: kept %d of %d texts (%d per class, probability ≥ %g)", len(keep), len(texts), k, threshold)
    return {"output": str(Path(out)), "texts": len(texts), "kept": int(len(keep)), "per_class": k,
            "threshold": threshold, "confident_per_class": counts}
