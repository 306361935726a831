"""The self-check of an ONNX export: the same texts scored by PyTorch and by ONNX Runtime.

The texts are those of ``--check-file`` (its labels too, when it has the model's label column, so
the check can report the accuracy of both), else a reproducible sample of texts made of the
tokenizer's own words, of every length up to past the truncation length. An fp32 export must give
the same probabilities within the tolerance (and so the same labels, except exact ties); a
quantized one is expected to differ a little, so its agreement rate and accuracy change are
reported, and it is refused only under ``min_agreement``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .csv_files import check_file, data_rows, read_header, require_columns
from .errors import UserInputError


@dataclass
class CheckTexts:
    """What the check scores: texts (and pairs), gold labels when known, and where they came from."""

    texts: list[str]
    pairs: Optional[list[str]]
    labels: Optional[list[str]]
    source: str


def check_texts(clf: Any, check_file_path: Optional[str], sample_size: int, label_column: str = "label") -> CheckTexts:
    """The texts of ``check_file_path`` (every row), else ``sample_size`` texts generated from the vocabulary.

    Args:
        clf: the PyTorch classifier (its columns and tokenizer are used).
        check_file_path: a CSV with the model's text column (and pair/label columns if it has them).
        sample_size: how many texts to generate when no file is given.
        label_column: the column of gold labels; used when the file has it.
    """
    if check_file_path is None:
        texts = vocabulary_texts(clf.tokenizer, sample_size, clf.max_length)
        pairs = vocabulary_texts(clf.tokenizer, sample_size, clf.max_length, seed=1) if clf.text_pair_column else None
        return CheckTexts(texts, pairs, None, f"{sample_size} texts generated from the tokenizer's vocabulary")
    path = check_file(check_file_path, "--check-file")
    header = read_header(path, "--check-file")
    wanted = {clf.text_column: "--check-file's text column"}
    if clf.text_pair_column:
        wanted[clf.text_pair_column] = "--check-file's text pair column"
    require_columns(header, wanted, "--check-file", path)
    columns = [clf.text_column, clf.text_pair_column, label_column if label_column in header.named else None]
    at = [header.named.index(c) if c else None for c in columns]
    with data_rows(path, header, "--check-file") as rows:
        table = [[row[i] if i is not None else None for i in at] for row in rows]
    if len(table) < 2:
        raise UserInputError(f"--check-file {str(path)!r} has {len(table)} data row(s); give at least 2 texts to compare.")
    texts, pairs, labels = (list(col) for col in zip(*table))
    return CheckTexts(texts, pairs if clf.text_pair_column else None, labels if at[2] is not None else None,
                      f"{len(texts)} rows of {Path(path).name}")


def vocabulary_texts(tokenizer: Any, count: int, max_length: int, seed: int = 0) -> list[str]:
    """``count`` reproducible texts of whole vocabulary words, from 1 word to about 1.5 × ``max_length``.

    Random words are not natural text, but they exercise every token position, truncation and
    padding, which is what can go wrong in an export; ``--check-file`` adds real texts and labels.
    """
    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.isascii() and len(w) > 1)
    if not words:
        raise UserInputError("the tokenizer has no plain words to build check texts from; pass --check-file.")
    rng = random.Random(seed)
    longest = max(2, int(max_length * 1.5))
    return [" ".join(rng.choices(words, k=1 + (i * 7919) % longest)) for i in range(count)]


def check_export(reference: Any, exported: Any, texts: CheckTexts, options: Any) -> dict[str, Any]:
    """Score ``texts`` with both classifiers and compare; refuse an export that fails the check.

    Args:
        reference: the PyTorch classifier.
        exported: the classifier running the exported ``model.onnx``.
        texts: what to score (see :func:`check_texts`).
        options: the export's ``quantize``, ``tolerance`` and ``min_agreement``.

    Raises:
        UserInputError: an fp32 export's probabilities differ beyond the tolerance, or a quantized
            export's label agreement is under ``min_agreement``.
    """
    expected = reference.predict_proba(texts.texts, texts.pairs)
    got = exported.predict_proba(texts.texts, texts.pairs)
    same = expected.argmax(axis=1) == got.argmax(axis=1)
    difference = float(np.abs(expected - got).max())
    report: dict[str, Any] = {"texts": texts.source, "compared": len(texts.texts), "label_agreement": round(float(same.mean()), 4),
                              "labels_differing": int((~same).sum()), "max_abs_probability_difference": difference,
                              "tolerance": None if options.quantize else options.tolerance}
    if texts.labels is not None:
        gold = np.asarray(texts.labels, dtype=object)
        names = np.asarray(reference.labels, dtype=object)
        report["accuracy_pytorch"] = round(float((names[expected.argmax(axis=1)] == gold).mean()), 4)
        report["accuracy_onnx"] = round(float((names[got.argmax(axis=1)] == gold).mean()), 4)
        report["accuracy_change"] = round(report["accuracy_onnx"] - report["accuracy_pytorch"], 4)
    if not options.quantize and difference > options.tolerance:
        raise UserInputError(
            f"the exported model does not match PyTorch: on {texts.source}, probabilities differ by up to {difference:.2g} "
            f"(tolerance {options.tolerance:g}) and {report['labels_differing']} of {len(texts.texts)} labels differ; "
            "nothing was written. Try without --optimize, or report the model type if plain export fails."
        )
    if options.quantize and options.min_agreement is not None and report["label_agreement"] < options.min_agreement:
        raise UserInputError(
            f"the int8 export agrees with PyTorch on {report['label_agreement']:.1%} of labels ({texts.source}), under "
            f"--min-agreement {options.min_agreement:.1%}; nothing was written. Export without --quantize for exact labels."
        )
    return report
