"""Checked CSVs → labels, validation split and tokenized ``datasets.Dataset`` objects.

User data is checked here, at the boundary: every problem becomes a :class:`UserInputError`
that names what was found, what was expected and the fix. Files are read by
:mod:`nlp_transfer.csv_files` through ``datasets`` (Arrow on disk, memory-mapped), so a CSV larger
than memory still works; checks use Arrow compute on the columns instead of Python loops over rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
from datasets import Dataset

from .csv_files import read_csv, require_columns  # noqa: F401  (require_columns: part of this module's API)
from .errors import UserInputError
from .labels import (LabelReader, SingleLabels, blank_rows, column, describe_rows, label_reader,  # noqa: F401
                     label_values, sort_labels)  # column, label_values, sort_labels: re-exported
from .modeling import check_text_room
from .small_data import small_data_plan
from .long_text import LongText
from .windows import check_fits, encode_texts, head_tail_tokens

logger = logging.getLogger(__name__)

# Classes named in a message or warning; the rest are counted.
_NAMED_CLASSES = 10
# Single-label name → id, or a function from a batch of rows to their targets (labels.LabelReader.encoder).
LabelEncoding = Optional[Union[dict[str, int], Callable[[dict[str, list]], list]]]


def check_texts(ds: Dataset, column_name: str, role: str, path: str) -> None:
    """Refuse missing or blank texts in ``column_name``, naming the rows."""
    rows = blank_rows(ds, column_name)
    if len(rows):
        raise UserInputError(
            f"{role} file {path!r}: column {column_name!r} is empty in {len(rows)} row(s) (data rows {describe_rows(rows)}); "
            "drop or fill those rows."
        )


@dataclass
class TextColumns:
    """Which CSV columns hold the text(s) and the label."""

    text: str = "text"
    text_pair: Optional[str] = None
    label: Optional[str] = "label"

    @property
    def required(self) -> dict[str, str]:
        """Column name → the CLI option that names it."""
        named = {self.text: "--text-column", self.text_pair: "--text-pair-column", self.label: "--label-column"}
        return {column: option for column, option in named.items() if column is not None}


def load_split(path: str, role: str, columns: TextColumns, name: Optional[str] = None,
               label_columns: Optional[dict[str, str]] = None) -> Dataset:
    """Read one CSV and check its text columns (labels are checked by the caller).

    Args:
        path: the CSV file.
        role: ``training``, ``validation`` or ``test`` (for messages).
        columns: the columns to require.
        name: the argument or option that named the file (e.g. ``TEST_FILE`` for ``evaluate``);
            default by role (``TRAIN_FILE``, ``--validation-file``, ``--test-file``).
        label_columns: more required columns (name → option), e.g. a ``LabelReader``'s ``columns``.
    """
    ds = read_csv(path, role, {**columns.required, **(label_columns or {})}, name)
    check_texts(ds, columns.text, role, path)
    if columns.text_pair:
        check_texts(ds, columns.text_pair, role, path)
    return ds


def make_tokenize_fn(tokenizer: Any, columns: TextColumns, max_length: int, label2id: LabelEncoding,
                     long_text: LongText = LongText()):
    """A batched ``map`` function (with indices): texts → ``input_ids`` (unpadded), ``labels`` and ``length``.

    ``label2id`` maps single-label names to ids, or is a function from a batch of rows to their
    targets (:meth:`nlp_transfer.labels.LabelReader.encoder`); None leaves the labels out.

    With sliding windows a text gives several rows, each with its text's label, its row number in
    the split (``document``) and ``cut`` (True on the first window of a text capped at ``max_windows``).
    """

    def tokenize(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        pairs = batch[columns.text_pair] if columns.text_pair else None
        encoded = encode_texts(tokenizer, batch[columns.text], pairs, max_length, long_text)
        enc: dict[str, list] = dict(encoded.features)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        if label2id is not None:
            ids = label2id(batch) if callable(label2id) else [label2id[v.strip()] for v in batch[columns.label]]
            enc["labels"] = [ids[d] for d in encoded.documents]
        if long_text.windows:
            enc["document"] = [indices[d] for d in encoded.documents]
            enc["cut"] = encoded.cut
        return enc

    return tokenize


def tokenize(ds: Dataset, tokenizer: Any, columns: TextColumns, max_length: int,
             label2id: LabelEncoding, desc: str, long_text: LongText = LongText()) -> Dataset:
    """Tokenize ``ds`` once (cached by ``datasets`` next to the CSV's Arrow file), as ``long_text`` says."""
    fn = make_tokenize_fn(tokenizer, columns, max_length, label2id, long_text)
    return ds.map(fn, batched=True, batch_size=1000, with_indices=True, remove_columns=ds.column_names, desc=desc)


def first_rows(ds: Dataset) -> np.ndarray:
    """Positions of each text's first row: every row, unless sliding windows gave a text several."""
    if "document" not in ds.column_names:
        return np.arange(ds.num_rows)
    return np.unique(column(ds, "document").to_numpy(), return_index=True)[1]


def targets(ds: Dataset) -> np.ndarray:
    """The encoded ``labels`` column as an array with one entry per text (a text's windows count once):
    class ids, 0/1 rows (multi-label) or numbers (regression)."""
    labels = column(ds, "labels").combine_chunks()
    if pa.types.is_list(labels.type) or pa.types.is_fixed_size_list(labels.type):
        values = labels.flatten().to_numpy(zero_copy_only=False).reshape(len(labels), -1)
    else:
        values = labels.to_numpy(zero_copy_only=False)
    return values[first_rows(ds)]


def label_counts(ds: Dataset, labels: Sequence[str], reader: Optional[LabelReader] = None) -> dict[str, int]:
    """Texts per label name in a tokenized dataset (default: a ``labels`` column of class ids)."""
    return (reader or SingleLabels("label")).counts(targets(ds), labels)


@dataclass
class PreparedData:
    """Tokenized splits plus what the model and the model card need to know about them."""

    train: Dataset
    validation: Optional[Dataset]  # None: the small-data policy trains on every row (see small_data)
    test: Optional[Dataset]
    labels: list[str]
    label_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    truncated_fraction: float = 0.0
    validation_source: str = "file"
    small_data: Optional[Any] = None  # nlp_transfer.small_data.SmallData unless --small-data off
    long_text: dict[str, Any] = field(default_factory=dict)  # see long_text_record
    text_counts: dict[str, int] = field(default_factory=dict)  # texts per split (a multi-label text has several labels)


def prepare_data(config: Any, tokenizer: Any) -> PreparedData:
    """Read, check, split and tokenize the CSVs named in a :class:`TrainConfig`.

    The labels are read as the config's problem type says (:func:`nlp_transfer.labels.label_reader`);
    for classification the label set is the sorted set of training labels. A validation or test
    label never seen in training is an error (the model could never predict it), and so is a label
    left with no training rows.
    """
    reader = label_reader(config)
    columns = TextColumns(config.text_column, config.text_pair_column, None)
    check_text_room(config.max_length, tokenizer, pair=columns.text_pair is not None)
    long_text = LongText.from_config(config)
    check_fits(long_text, config.max_length, tokenizer)
    train_raw = load_split(config.train_file, "training", columns, label_columns=reader.columns)
    labels = reader.label_set(train_raw, config.train_file)
    others = _other_splits(config, columns, labels, reader)
    if config.max_train_samples is not None and config.max_train_samples < train_raw.num_rows:
        train_raw = train_raw.shuffle(seed=config.seed).select(range(config.max_train_samples))

    def tokenized(ds: Dataset, split: str) -> Dataset:
        ds = tokenize(ds, tokenizer, columns, config.max_length, reader.encoder(labels), f"Tokenizing {split} data",
                      long_text)
        return ds.cast_column("labels", reader.feature(labels))

    train = tokenized(train_raw, "training")
    if reader.stratified != "none":
        _refuse_labels_without_rows(train, labels, config, reader)
    source = "file"
    # Rows per class mean nothing for a regression target: only the step floor applies to one.
    small = small_data_plan(config, train.num_rows, len(labels) if reader.stratified != "none" else None)
    if "validation" in others:
        validation = tokenized(others["validation"], "validation")
    elif small is not None and small.few_rows:
        validation, source = None, small.validation
    else:
        train, validation, source = hold_out(train, labels, config.validation_split, config.seed, reader.stratified)
    test = tokenized(others["test"], "test") if "test" in others else None

    splits = {"train": train, "validation": validation, "test": test}
    counts = {name: label_counts(ds, labels, reader) for name, ds in splits.items() if ds is not None}
    truncated = _unread_fraction(train, config.max_length, long_text)
    record = long_text_record(long_text, {k: v for k, v in splits.items() if v is not None}, config.max_length, tokenizer)
    texts = {name: len(first_rows(ds)) for name, ds in splits.items() if ds is not None}
    return PreparedData(train, validation, test, labels, counts, truncated, source, small, record, texts)



def _unread_fraction(train: Dataset, max_length: int, long_text: LongText) -> float:
    """The share of training texts not read in full (cut, middle dropped, or windows capped); warns above 5%."""
    if long_text.windows:
        cut = column(train, "cut").to_numpy(zero_copy_only=False)
        fraction = float(cut.sum() / max(1, len(first_rows(train))))
        how = f"had more than --max-windows {long_text.max_windows} windows; the rest of them is not read"
    else:
        lengths = column(train, "length").to_numpy()
        fraction = float(np.mean(lengths >= max_length)) if len(lengths) else 0.0
        how = f"were cut at --max-length {max_length} tokens" + (
            " (their middle dropped)" if long_text.mode == "head-tail" else
            "; --long-text sliding-window or head-tail reads more of them")
    if fraction > 0.05:
        logger.warning("%.0f%% of training texts %s.", 100 * fraction, how)
    return fraction


def long_text_record(long_text: LongText, splits: dict[str, Dataset], max_length: int, tokenizer: Any) -> dict[str, Any]:
    """What ``training_summary.json`` (and the card) say about long texts: per split the texts, windows and
    texts capped at ``max_windows``; for head+tail the tokens kept from each end."""
    if long_text.windows:
        return {"mode": long_text.mode, "splits": {
            name: {"texts": len(first_rows(ds)), "windows": ds.num_rows,
                   "capped_texts": int(column(ds, "cut").to_numpy(zero_copy_only=False).sum())}
            for name, ds in splits.items()}}
    if long_text.mode == "head-tail":
        before, head, tail, after = head_tail_tokens(tokenizer, max_length, long_text.head_fraction)
        return {"mode": long_text.mode, "head_tokens": head, "tail_tokens": tail, "special_tokens_before": before,
                "special_tokens_after": after}
    return {}


def _other_splits(config: Any, columns: TextColumns, labels: list[str], reader: LabelReader) -> dict[str, Dataset]:
    """The validation and test files that are given, checked against the training labels."""
    others: dict[str, Dataset] = {}
    for role, path in (("validation", config.validation_file), ("test", config.test_file)):
        if path is None:
            continue
        ds = load_split(path, role, columns, label_columns=reader.columns)
        reader.check(ds, role, path, labels)
        others[role] = ds
    return others


def _name_classes(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_NAMED_CLASSES])
    return shown + (f" and {len(names) - _NAMED_CLASSES} more" if len(names) > _NAMED_CLASSES else "")


def _refuse_labels_without_rows(train: Dataset, labels: list[str], config: Any, reader: LabelReader) -> None:
    """A label that no training row has could never be learned (sampled away, or an all-0 label column)."""
    counts = label_counts(train, labels, reader)
    empty = [name for name in labels if counts[name] == 0]
    if not empty:
        return
    if config.max_train_samples is not None:
        raise UserInputError(
            f"--max-train-samples {config.max_train_samples} leaves {len(empty)} label(s) of training file "
            f"{config.train_file!r} with no training rows ({_name_classes(empty)}); raise --max-train-samples, or drop "
            "those rows from the file."
        )
    raise UserInputError(
        f"training file {config.train_file!r}: {len(empty)} label(s) have no positive training row "
        f"({_name_classes(empty)}), so the model could never learn them; drop those label columns or add examples."
    )


def hold_out(ds: Dataset, labels: Sequence[str], fraction: float, seed: int,
             stratified: str) -> tuple[Dataset, Dataset, str]:
    """Hold out ``fraction`` of ``ds`` for validation; return (train, validation, description).

    ``stratified`` is ``"label"`` (per class, :func:`split_validation`), ``"label_set"`` (iterative
    stratification of multi-label rows, :func:`nlp_transfer.splits.iterative_split`) or ``"none"``
    (a plain seeded split, for regression).
    """
    if stratified == "label":
        return split_validation(ds, labels, fraction, seed)
    from .splits import iterative_split, random_split

    texts = first_rows(ds)  # the split draws texts; a text's windows stay together
    if stratified == "label_set":
        train_texts, val_texts = iterative_split(targets(ds), fraction, seed)
        how = "iterative stratification by label set"
    else:
        train_texts, val_texts = random_split(len(texts), fraction, seed)
        how = "plain seeded random split"
    description = f"{fraction:g} of the training file, {how}, seed {seed}"
    return _rows_of(ds, texts, train_texts), _rows_of(ds, texts, val_texts), description


def _rows_of(ds: Dataset, texts: np.ndarray, chosen: Any) -> Dataset:
    """The rows of the chosen texts (indices into ``texts``): with sliding windows, every window of each."""
    if "document" not in ds.column_names:
        return ds.select(chosen)
    documents = column(ds, "document").to_numpy()
    return ds.select(np.flatnonzero(np.isin(documents, documents[texts[np.asarray(chosen, dtype=np.int64)]])))


def split_validation(ds: Dataset, labels: Sequence[str], fraction: float, seed: int) -> tuple[Dataset, Dataset, str]:
    """Hold out ``fraction`` of ``ds`` for validation, stratified by label; return (train, validation, description).

    Each class gives its share of rows (largest remainders round the shares to whole rows), so
    the class proportions of both parts follow the file's. A class with fewer than 2 rows cannot
    be in both parts and stays in training only; every class keeps at least one training row.
    The rows are drawn with ``seed``: same file and seed, same split.

    Raises:
        UserInputError: too few rows to hold anything out.
    """
    # A text's windows stay together: the split draws texts (their first rows), then takes all their rows.
    firsts = first_rows(ds)
    ids = np.asarray(column(ds, "labels").to_numpy(), dtype=np.int64)[firsts]
    counts = np.bincount(ids, minlength=len(labels))
    rare = [labels[i] for i in np.flatnonzero((counts > 0) & (counts < 2))]
    pool = np.where(counts >= 2, counts, 0)
    n_val = max(1, round(int(pool.sum()) * fraction))
    if not pool.any() or len(firsts) - n_val < 1:
        raise UserInputError(
            f"only {len(firsts)} training rows ({'no class has' if not pool.any() else 'too few, even with'} 2 or more "
            "rows): too few to hold out a validation split; pass --validation-file."
        )
    quota = _shares(pool, fraction, min(n_val, int((pool - 1).clip(min=0).sum())))
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(ids == k))[:quota[k]] for k in range(len(labels))]
    val_rows = np.sort(np.concatenate(chosen))
    if "document" in ds.column_names:  # texts → all their rows
        documents = column(ds, "document").to_numpy()
        in_validation = np.isin(documents, documents[firsts[val_rows]])
        val_rows, train_rows = np.flatnonzero(in_validation), np.flatnonzero(~in_validation)
    else:
        train_rows = np.setdiff1d(np.arange(ds.num_rows), val_rows, assume_unique=True)
    description = f"{fraction:g} of the training file, stratified by label, seed {seed}"
    if rare:
        description += f"; {len(rare)} class(es) with fewer than 2 rows ({_name_classes(rare)}) kept in training only"
        logger.warning("Validation split: %d class(es) with fewer than 2 rows stay in training only and are not "
                       "validated: %s.", len(rare), _name_classes(rare))
    unseen = [labels[k] for k in range(len(labels)) if pool[k] and not quota[k]]
    if unseen:
        description += f"; {len(unseen)} class(es) too small for a validation row ({_name_classes(unseen)})"
        logger.warning("Validation split: %d class(es) are too small to get a validation row at --validation-split "
                       "%g: %s.", len(unseen), fraction, _name_classes(unseen))
    return ds.select(train_rows), ds.select(val_rows), description


def _shares(counts: np.ndarray, fraction: float, total: int) -> np.ndarray:
    """Whole rows per class summing to ``total``: floors of ``counts * fraction``, then largest remainders.

    No class gives all its rows (each keeps one for training). Ties go to the larger class, then
    to the lower label id, so the result is deterministic.
    """
    cap = (counts - 1).clip(min=0)
    exact = counts * fraction
    quota = np.minimum(np.floor(exact).astype(np.int64), cap)
    order = np.lexsort((np.arange(len(counts)), -counts, -(exact - np.floor(exact))))
    while quota.sum() < total:
        open_ = [k for k in order if quota[k] < cap[k]]
        for k in open_[: total - int(quota.sum())]:
            quota[k] += 1
    return quota
