"""How a CSV holds its labels, for each kind of problem: reading, checking and encoding them.

A :class:`LabelReader` knows which columns carry the labels of a labelled file, finds the label
set in the training file, refuses what a model could not learn or be scored on (a label unseen
in training, a multi-label cell made of separators only, a non-numeric regression target) with
the row numbers, and turns a batch of rows into training targets:

- :class:`SingleLabels`: one class name per row → class id;
- :class:`SeparatedLabels`: ``sports,politics`` in one column (empty: no label) → a 0/1 vector;
- :class:`IndicatorColumns`: one 0/1 column per label → a 0/1 vector;
- :class:`NumericLabel`: one number per row → that number (regression).

:func:`label_reader` picks the reader for a ``TrainConfig`` or a saved ``training_config.json``.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import ClassLabel, Dataset, Sequence as SequenceFeature, Value

from .errors import UserInputError
from .task_config import label_column_list

_INT_RE = re.compile(r"^[+-]?\d+$")
_NUMBER_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_BINARY = pa.array(["0", "1", "0.0", "1.0"])


def column(ds: Dataset, name: str) -> Any:
    """One column as a pyarrow ``ChunkedArray``, honouring the dataset's index mapping (splits, selections)."""
    return ds.with_format("arrow")[name]


def blank_rows(ds: Dataset, name: str) -> np.ndarray:
    """Row numbers (0-based) where column ``name`` is missing or blank."""
    col = column(ds, name)
    blank = pc.fill_null(pc.or_kleene(pc.is_null(col), pc.equal(pc.utf8_trim_whitespace(col), "")), True)
    return np.flatnonzero(blank.to_numpy(zero_copy_only=False))


def describe_rows(rows: Sequence[int]) -> str:
    """The first row numbers for a message, counted from 1 as a spreadsheet shows them below the header."""
    shown = ", ".join(str(r + 1) for r in rows[:5])
    return shown + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")


def label_values(ds: Dataset, column_name: str, role: str, path: str) -> list[str]:
    """The distinct labels of ``column_name`` (stripped strings), refusing missing ones."""
    rows = blank_rows(ds, column_name)
    if len(rows):
        raise UserInputError(
            f"{role} file {path!r}: label column {column_name!r} is empty in {len(rows)} row(s) (data rows {describe_rows(rows)}); "
            "every row needs a label — drop or fill those rows."
        )
    uniques = pc.unique(pc.utf8_trim_whitespace(column(ds, column_name))).to_pylist()
    return sorted(uniques)


def sort_labels(values: Sequence[str]) -> list[str]:
    """Sort labels: numerically when all are integers, alphabetically otherwise.

    Raises:
        UserInputError: when numbers and words are mixed (usually a shifted column).
    """
    numeric = [v for v in values if _NUMBER_RE.match(v)]
    if numeric and len(numeric) != len(values):
        words = [v for v in values if not _NUMBER_RE.match(v)]
        raise UserInputError(
            f"the label column mixes numbers ({', '.join(numeric[:3])}) and words ({', '.join(words[:3])}); "
            "expected one kind of label. Check for a shifted column or fix the odd rows."
        )
    if numeric:
        if not all(_INT_RE.match(v) for v in values):
            raise UserInputError(
                f"labels look like real numbers ({', '.join(values[:3])}); classification needs class names or integer "
                "class ids. Use integer ids or names, or pass --task regression for a numeric target."
            )
        return sorted(values, key=int)
    return sorted(values)


def _cells(ds: Dataset, name: str) -> list[Optional[str]]:
    return column(ds, name).to_pylist()


class LabelReader:
    """The label columns of a labelled CSV and how their cells become training targets.

    Attributes:
        columns: column name → the CLI option that names it (required in every labelled file).
        stratified: how :func:`nlp_transfer.data.prepare_data` holds out validation rows:
            ``"label"`` (per class), ``"label_set"`` (iterative, multi-label) or ``"none"``.
    """

    columns: dict[str, str] = {}
    stratified = "none"

    def label_set(self, ds: Dataset, path: str) -> list[str]:
        """The labels of the training file, in id order (the model's ``id2label``)."""
        raise NotImplementedError

    def check(self, ds: Dataset, role: str, path: str, labels: Sequence[str]) -> None:
        """Refuse labels of a validation/test file that the model cannot have (role names the file)."""
        raise NotImplementedError

    def encoder(self, labels: Sequence[str]) -> Callable[[dict[str, list]], list]:
        """A function from a batch of raw rows (column → values) to the targets of those rows."""
        raise NotImplementedError

    def feature(self, labels: Sequence[str]) -> Any:
        """The ``datasets`` feature of the encoded ``labels`` column."""
        raise NotImplementedError

    def counts(self, targets: np.ndarray, labels: Sequence[str]) -> dict[str, int]:
        """Rows per label (multi-label: rows having it; regression: all rows) of encoded targets."""
        raise NotImplementedError


class SingleLabels(LabelReader):
    """One class name (or integer id) per row in ``column``."""

    stratified = "label"

    def __init__(self, column: str):
        self.column = column
        self.columns = {column: "--label-column"}

    def label_set(self, ds: Dataset, path: str) -> list[str]:
        labels = sort_labels(label_values(ds, self.column, "training", path))
        if len(labels) < 2:
            raise UserInputError(
                f"training file {path!r} has only one label ({labels[0]!r}) in column {self.column!r}; "
                "a classifier needs at least two classes."
            )
        return labels

    def check(self, ds: Dataset, role: str, path: str, labels: Sequence[str]) -> None:
        unseen = [v for v in label_values(ds, self.column, role, path) if v not in labels]
        if unseen:
            raise UserInputError(
                f"{role} file {path!r} has label(s) never seen in training: {', '.join(map(repr, unseen[:5]))}; "
                f"training labels are: {', '.join(labels)}. Remove those rows or add examples of them to the training data."
            )

    def encoder(self, labels: Sequence[str]) -> Callable[[dict[str, list]], list]:
        label2id = {name: i for i, name in enumerate(labels)}
        return lambda batch: [label2id[v.strip()] for v in batch[self.column]]

    def feature(self, labels: Sequence[str]) -> Any:
        return ClassLabel(names=list(labels))

    def counts(self, targets: np.ndarray, labels: Sequence[str]) -> dict[str, int]:
        found = np.bincount(targets.astype(np.int64), minlength=len(labels))
        return {name: int(n) for name, n in zip(labels, found)}


class _MultiHot(LabelReader):
    """Shared by the two multi-label layouts: targets are 0/1 float vectors, one entry per label."""

    stratified = "label_set"

    def feature(self, labels: Sequence[str]) -> Any:
        return SequenceFeature(Value("float32"), length=len(labels))

    def counts(self, targets: np.ndarray, labels: Sequence[str]) -> dict[str, int]:
        found = targets.reshape(-1, len(labels)).sum(axis=0) if len(targets) else np.zeros(len(labels))
        return {name: int(n) for name, n in zip(labels, found)}


class SeparatedLabels(_MultiHot):
    """Zero or more labels per row in ``column``, joined by ``separator`` (``sports,politics``; empty: none)."""

    def __init__(self, column: str, separator: str):
        self.column, self.separator = column, separator
        self.columns = {column: "--label-column"}

    def _split(self, ds: Dataset, role: str, path: str) -> list[list[str]]:
        rows, bad = [], []
        for i, cell in enumerate(_cells(ds, self.column)):
            text = (cell or "").strip()
            parts = [p.strip() for p in text.split(self.separator)] if text else []
            names = [p for p in parts if p]
            if text and not names:
                bad.append(i)
            rows.append(names)
        if bad:
            raise UserInputError(
                f"{role} file {path!r}: label column {self.column!r} holds only separators ({self.separator!r}) in "
                f"{len(bad)} row(s) (data rows {describe_rows(bad)}); leave the cell empty for a text with no label, or name "
                "its labels."
            )
        return rows

    def label_set(self, ds: Dataset, path: str) -> list[str]:
        labels = sorted({name for names in self._split(ds, "training", path) for name in names})
        if not labels:
            raise UserInputError(f"training file {path!r} has no labels at all in column {self.column!r}; every cell "
                                 "is empty. A multi-label classifier needs labelled rows.")
        return labels

    def check(self, ds: Dataset, role: str, path: str, labels: Sequence[str]) -> None:
        known = set(labels)
        unseen = sorted({name for names in self._split(ds, role, path) for name in names} - known)
        if unseen:
            raise UserInputError(
                f"{role} file {path!r} has label(s) never seen in training: {', '.join(map(repr, unseen[:5]))}; "
                f"training labels are: {', '.join(labels)}. Fix the spelling, remove those labels, or add examples "
                "of them to the training data."
            )

    def encoder(self, labels: Sequence[str]) -> Callable[[dict[str, list]], list]:
        index = {name: i for i, name in enumerate(labels)}

        def encode(batch: dict[str, list]) -> list:
            out = []
            for cell in batch[self.column]:
                vector = [0.0] * len(labels)
                for part in (cell or "").split(self.separator):
                    if part.strip():
                        vector[index[part.strip()]] = 1.0
                out.append(vector)
            return out

        return encode


class IndicatorColumns(_MultiHot):
    """One column per label holding 1 (the text has the label) or 0."""

    def __init__(self, columns: Sequence[str]):
        self.names = list(columns)
        self.columns = {name: "--label-columns" for name in self.names}

    def _check_values(self, ds: Dataset, role: str, path: str) -> None:
        for name in self.names:
            cells = pc.utf8_trim_whitespace(pc.cast(column(ds, name), "string"))
            ok = pc.fill_null(pc.is_in(cells, value_set=_BINARY), False).to_numpy(zero_copy_only=False)
            bad = np.flatnonzero(~ok)
            if len(bad):
                value = cells[int(bad[0])].as_py()
                raise UserInputError(
                    f"{role} file {path!r}: label column {name!r} holds {value!r} in {len(bad)} row(s) (data rows "
                    f"{describe_rows(bad)}); --label-columns expects 1 (has the label) or 0 in every row."
                )

    def label_set(self, ds: Dataset, path: str) -> list[str]:
        self._check_values(ds, "training", path)
        return list(self.names)

    def check(self, ds: Dataset, role: str, path: str, labels: Sequence[str]) -> None:
        self._check_values(ds, role, path)

    def encoder(self, labels: Sequence[str]) -> Callable[[dict[str, list]], list]:
        return lambda batch: [[float(str(batch[name][i]).strip() in ("1", "1.0")) for name in self.names]
                              for i in range(len(batch[self.names[0]]))]


class NumericLabel(LabelReader):
    """One finite number per row in ``column`` (regression); the label set is the column's name."""

    def __init__(self, column: str):
        self.column = column
        self.columns = {column: "--label-column"}

    def _values(self, ds: Dataset, role: str, path: str) -> list[float]:
        values, bad = [], []
        for i, cell in enumerate(_cells(ds, self.column)):
            try:
                value = float(str(cell).strip()) if cell is not None else math.nan
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                bad.append(i)
            values.append(value)
        if bad:
            shown = _cells(ds.select(bad[:1]), self.column)[0]
            raise UserInputError(
                f"{role} file {path!r}: --task regression needs a finite number in label column {self.column!r}, but "
                f"{len(bad)} row(s) hold something else (data rows {describe_rows(bad)}; e.g. {shown!r}); fix or drop those rows."
            )
        return values

    def label_set(self, ds: Dataset, path: str) -> list[str]:
        self._values(ds, "training", path)
        return [self.column]

    def check(self, ds: Dataset, role: str, path: str, labels: Sequence[str]) -> None:
        self._values(ds, role, path)

    def encoder(self, labels: Sequence[str]) -> Callable[[dict[str, list]], list]:
        return lambda batch: [float(str(v).strip()) for v in batch[self.column]]

    def feature(self, labels: Sequence[str]) -> Any:
        return Value("float32")

    def counts(self, targets: np.ndarray, labels: Sequence[str]) -> dict[str, int]:
        return {labels[0]: int(len(targets))}


def label_reader(settings: Any) -> LabelReader:
    """The reader for a ``TrainConfig`` or the dict of a saved ``training_config.json``.

    Settings missing from an older file take their defaults (single-label classification).
    """
    get = settings.get if isinstance(settings, Mapping) else (lambda key, default=None: getattr(settings, key, default))
    column = get("label_column") or "label"
    if get("task", "classification") == "regression":
        return NumericLabel(column)
    if get("label_columns"):
        return IndicatorColumns(label_column_list(get("label_columns")))
    if get("multi_label", False):
        return SeparatedLabels(column, get("label_separator") or ",")
    return SingleLabels(column)
