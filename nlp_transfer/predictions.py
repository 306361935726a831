"""What ``nlp-transfer predict`` appends to each CSV row, per problem type.

Single-label: ``predicted_label`` and ``score``; multi-label: ``predicted_labels`` and ``scores``
(the labels at or above their thresholds, joined by the training ``label_separator``);
regression: ``predicted_value``. Classifiers may add the ``top_k`` ranked labels
(``label_1``, ``score_1``, ...). Scores are written as the shortest text that round-trips their
float32 value.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

PREDICTION_COLUMNS = ("predicted_label", "score")
MULTI_LABEL_COLUMNS = ("predicted_labels", "scores")
REGRESSION_COLUMN = "predicted_value"


def top_k_labels(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Label ids and probabilities of the ``k`` best labels per row, best first (ties: lower id first)."""
    ranked = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return ranked, np.take_along_axis(probs, ranked, axis=1)


def prediction_columns(top_k: int, problem_type: str = "single_label_classification") -> list[str]:
    """The columns ``predict_csv`` appends: ``predicted_label``, ``score`` and, for top-k, ``label_1``, ``score_1``...

    A multi-label model writes ``predicted_labels`` and ``scores`` (its labels at or above their
    thresholds and their probabilities, joined by the training ``label_separator``); a regression
    model writes ``predicted_value``.
    """
    if problem_type == "regression":
        return [REGRESSION_COLUMN]
    first = MULTI_LABEL_COLUMNS if problem_type == "multi_label_classification" else PREDICTION_COLUMNS
    extra = [f"{kind}_{rank}" for rank in range(1, top_k + 1) for kind in ("label", "score")] if top_k > 1 else []
    return [*first, *extra]


def output_rows(clf: Any, chunk: list[list[str]], probs: np.ndarray, top_k: int) -> Iterator[list[str]]:
    """Input rows with the columns of :func:`prediction_columns` appended, as strings.

    Args:
        clf: the :class:`~nlp_transfer.inference.Classifier` (its task, labels and label separator).
        chunk: the input rows.
        probs: their :meth:`~nlp_transfer.inference.Classifier.predict_proba` scores.
        top_k: how many ranked labels to append (1: none beyond the prediction).
    """
    if clf.task.problem_type == "regression":
        return (row + [value] for row, value in zip(chunk, probs[:, 0].astype(str)))
    if clf.task.problem_type == "multi_label_classification":
        return _multi_label_rows(clf, chunk, probs, top_k)
    ranked, scores = top_k_labels(probs, top_k)
    labels = np.asarray(clf.labels, dtype=object)[ranked]
    score_text = scores.astype(str)  # shortest repr that round-trips the float32 value
    if ranked.shape[1] == 1:
        return (row + [label[0], score[0]] for row, label, score in zip(chunk, labels, score_text))
    interleaved = np.empty((len(chunk), 2 * ranked.shape[1]), dtype=object)
    interleaved[:, 0::2], interleaved[:, 1::2] = labels, score_text
    return (row + [label[0], score[0], *extra] for row, label, score, extra in zip(chunk, labels, score_text, interleaved.tolist()))


def _multi_label_rows(clf: Any, chunk: list[list[str]], probs: np.ndarray, top_k: int) -> Iterator[list[str]]:
    """Rows with the labels at or above their thresholds and their probabilities, joined (and the top-k)."""
    sep = clf.label_separator
    answers = clf.task.decide(probs)
    ranked, scores = top_k_labels(probs, top_k)
    for row, answer, ids, row_scores in zip(chunk, answers, ranked, scores.astype(str)):
        extra = [cell for i, score in zip(ids, row_scores) for cell in (clf.labels[i], score)] if top_k > 1 else []
        yield row + [sep.join(a["label"] for a in answer), sep.join(str(np.float32(a["score"])) for a in answer), *extra]
