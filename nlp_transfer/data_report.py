"""The data report: what is in the CSVs before a model is trained on them.

``nlp-transfer inspect`` prints it and ``train`` runs the same checks first. Per split: rows,
rows per label (with the imbalance ratio and the weights ``balanced`` class weighting would give
each class), empty, whitespace-only and duplicate texts, identical texts with conflicting labels,
and encoding oddities (control characters, U+FFFD replacement characters, mojibake). Across
splits: texts of the validation/test file that also occur in training (leakage) and labels that
training lacks. With a tokenizer, the token-length distribution, the share of texts cut at
``--max-length`` and a suggested value.

Texts are compared after normalisation (lower case, runs of whitespace as one space, trimmed),
so ``"Great film "`` and ``"great  film"`` count as the same text. The columns are processed with
Arrow compute on the memory-mapped ``datasets`` table and tokenized in streamed batches, so a
file of 100k rows takes seconds. Problems that make training impossible (the ones ``train``
refuses) are ``errors``; the rest are ``warnings``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .csv_files import read_csv
from .data import TextColumns, column, sort_labels
from .data_report_text import ROLES, findings, summary_lines
from .errors import UserInputError

logger = logging.getLogger(__name__)

# Examples (row numbers, texts) kept per finding: enough to find the rows, short enough to read.
EXAMPLES = 5
# Regexes (RE2, as Arrow runs them) for text that was damaged on its way into the file.
ODDITIES = {
    # C0 controls other than tab/newline/carriage return, DEL, and C1 controls (latin-1 read as UTF-8).
    "control_characters": r"[\x{00}-\x{08}\x{0B}\x{0C}\x{0E}-\x{1F}\x{7F}-\x{9F}]",
    "replacement_characters": r"\x{FFFD}",
    # UTF-8 bytes decoded as latin-1/cp1252: "Ã©" for é, "Â " for a no-break space, "â€™" for ’.
    "mojibake": r"Ã[\x{80}-\x{BF}]|Â[\x{80}-\x{BF}]|â€|â\x{80}",
}


@dataclass
class DataReport:
    """The findings of :func:`inspect_data`; :meth:`to_dict` is what ``inspect --json`` prints."""

    files: dict[str, str]
    columns: dict[str, Optional[str]]
    labels: list[str]
    splits: dict[str, dict[str, Any]]
    imbalance_ratio: Optional[float] = None
    balanced_weights: dict[str, float] = field(default_factory=dict)
    leakage: dict[str, dict[str, Any]] = field(default_factory=dict)
    unseen_labels: dict[str, dict[str, int]] = field(default_factory=dict)
    tokens: Optional[dict[str, Any]] = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every finding."""
        return asdict(self)


def inspect_data(train_file: str, validation_file: Optional[str] = None, test_file: Optional[str] = None,
                 columns: Optional[TextColumns] = None, tokenizer: Any = None, max_length: int = 256,
                 tokenizer_name: Optional[str] = None, progress: bool = False) -> DataReport:
    """Read the CSVs and report what a person should know before training on them.

    Args:
        train_file, validation_file, test_file: the CSVs (the last two optional).
        columns: the text, pair and label columns (default ``text`` and ``label``).
        tokenizer: a fast tokenizer for the token-length statistics; None skips them.
        max_length: the ``--max-length`` whose truncation share is reported.
        tokenizer_name: how to name the tokenizer in the report (e.g. the model id).
        progress: show a progress bar while tokenizing.

    Raises:
        UserInputError: a file cannot be read as a CSV or lacks a column (nothing to report on).
    """
    started = time.perf_counter()
    columns = columns or TextColumns()
    files = {split: path for split, path in (("train", train_file), ("validation", validation_file),
                                             ("test", test_file)) if path is not None}
    tables = {split: _read(path, ROLES[split], columns) for split, path in files.items()}
    report = DataReport(files=files, columns={"text": columns.text, "text_pair": columns.text_pair,
                                              "label": columns.label}, labels=[], splits={})
    norms = {}
    for split, table in tables.items():
        report.splits[split], norms[split] = _split_stats(table, columns)
    _labels(report)
    for split in tables:
        if split != "train":
            report.leakage[split] = _leakage(norms["train"], norms[split], tables["train"], tables[split], columns)
    if tokenizer is not None:
        report.tokens = token_lengths(tables, columns, tokenizer, max_length, tokenizer_name, progress)
    errors, warnings = findings(report)
    report.errors += errors
    report.warnings += warnings
    report.seconds = time.perf_counter() - started
    return report


def _read(path: str, role: str, columns: TextColumns) -> pa.Table:
    ds = read_csv(path, role, columns.required)
    return pa.table({name: column(ds, name) for name in columns.required})


def normalized(texts: pa.ChunkedArray) -> pa.ChunkedArray:
    """Texts as compared for duplicates and leakage: lower case, whitespace runs as one space, trimmed."""
    spaced = pc.replace_substring_regex(pc.utf8_lower(pc.fill_null(texts, "")), r"[\s\pZ\x{0B}\x{1C}-\x{1F}\x{85}]+", " ")
    return pc.utf8_trim_whitespace(spaced)


def _text_key(table: pa.Table, columns: TextColumns) -> pa.ChunkedArray:
    """The normalised text of each row (both texts of a pair, joined by a unit separator)."""
    key = normalized(table[columns.text])
    if columns.text_pair:
        key = pc.binary_join_element_wise(key, normalized(table[columns.text_pair]), "\x1f")
    return key


def _rows(mask: Any) -> np.ndarray:
    """Data row numbers (1-based, as a spreadsheet shows them below the header) where ``mask`` is true."""
    return np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False)) + 1


def _finding(mask: Any) -> dict[str, Any]:
    rows = _rows(mask)
    return {"rows": int(len(rows)), "examples": [int(r) for r in rows[:EXAMPLES]]}


def _split_stats(table: pa.Table, columns: TextColumns) -> tuple[dict[str, Any], pa.ChunkedArray]:
    """Counts of one split, and its normalised texts (empty ones as null)."""
    texts = [table[columns.text]] + ([table[columns.text_pair]] if columns.text_pair else [])
    missing = _any(pc.or_kleene(pc.is_null(t), pc.equal(t, "")) for t in texts)
    blank = _any(pc.equal(pc.utf8_trim_whitespace(t), "") for t in texts)
    labels = pc.utf8_trim_whitespace(pc.fill_null(table[columns.label], ""))
    stats: dict[str, Any] = {
        "rows": table.num_rows,
        "label_counts": {},
        "empty_labels": _finding(pc.equal(labels, "")),
        "empty_texts": _finding(missing),
        "whitespace_only_texts": _finding(pc.and_(blank, pc.invert(missing))),
        "blank_texts": _finding(blank),  # either of the two: what training refuses
    }
    present = pc.invert(pc.equal(labels, ""))
    counts = pc.value_counts(pc.filter(labels, present))
    stats["label_counts"] = {v.as_py(): int(n.as_py()) for v, n in zip(counts.field("values"), counts.field("counts"))}
    key = pc.if_else(blank, pa.scalar(None, pa.string()), _text_key(table, columns))
    stats.update(_duplicates(key, labels, table, columns))
    for name, pattern in ODDITIES.items():
        stats[name] = _finding(_any(pc.match_substring_regex(t, pattern) for t in texts))
    return stats, key


def _any(masks: Any) -> Any:
    result = None
    for mask in masks:
        result = mask if result is None else pc.or_(result, mask)
    return pc.fill_null(result, True)


def _duplicates(key: pa.ChunkedArray, labels: pa.ChunkedArray, table: pa.Table,
                columns: TextColumns) -> dict[str, Any]:
    """Rows repeating an earlier row's text, and texts that carry more than one label."""
    grouped = pa.table({"key": key, "label": labels}).filter(pc.is_valid(key)).group_by("key").aggregate(
        [("label", "count"), ("label", "count_distinct")])
    repeated = grouped.filter(pc.greater(grouped["label_count"], 1))
    conflicting = repeated.filter(pc.greater(repeated["label_count_distinct"], 1))
    examples = []
    for text in conflicting["key"].to_pylist()[:EXAMPLES]:
        rows = _rows(pc.equal(key, text))
        examples.append({"text": _shown(table[columns.text][int(rows[0]) - 1].as_py()),
                         "rows": [int(r) for r in rows[:EXAMPLES]],
                         "labels": sorted({labels[int(r) - 1].as_py() for r in rows})})
    duplicate_examples = []
    for text in repeated["key"].to_pylist()[:EXAMPLES]:
        rows = _rows(pc.equal(key, text))
        duplicate_examples.append({"text": _shown(table[columns.text][int(rows[0]) - 1].as_py()),
                                   "rows": [int(r) for r in rows[:EXAMPLES]]})
    return {
        "duplicate_rows": int(pc.sum(repeated["label_count"]).as_py() or 0) - repeated.num_rows,
        "duplicated_texts": repeated.num_rows,
        "duplicate_examples": duplicate_examples,
        "conflicting_texts": conflicting.num_rows,
        "conflicting_rows": int(pc.sum(conflicting["label_count"]).as_py() or 0),
        "conflict_examples": examples,
    }


def _shown(text: Optional[str], width: int = 80) -> str:
    one_line = " ".join((text or "").split())
    return one_line if len(one_line) <= width else one_line[: width - 1] + "…"


def _leakage(train_key: pa.ChunkedArray, other_key: pa.ChunkedArray, train: pa.Table, other: pa.Table,
             columns: TextColumns) -> dict[str, Any]:
    """Rows of a validation/test split whose text also occurs in training."""
    seen = pc.unique(pc.drop_null(train_key))
    leaked = pc.fill_null(pc.is_in(other_key, value_set=seen), False)
    rows = _rows(leaked)
    examples = []
    for row in rows[:EXAMPLES]:
        text = other_key[int(row) - 1]
        first = _rows(pc.equal(train_key, text))[0]
        examples.append({"text": _shown(other[columns.text][int(row) - 1].as_py()), "row": int(row),
                         "train_row": int(first)})
    texts = pc.count_distinct(pc.filter(other_key, leaked)).as_py() if len(rows) else 0
    share = len(rows) / other.num_rows if other.num_rows else 0.0
    return {"rows": int(len(rows)), "texts": int(texts), "share": share, "examples": examples}


def _labels(report: DataReport) -> None:
    """The label set (sorted as training sorts it), class weights, imbalance and unseen labels."""
    train_counts = report.splits["train"]["label_counts"]
    try:
        labels = sort_labels(sorted(train_counts))
    except UserInputError as err:
        report.errors.append(f"training file {report.files['train']!r}: {err}")
        labels = sorted(train_counts)
    report.labels = labels
    for split in report.splits.values():
        counts = split["label_counts"]
        split["label_counts"] = {**{label: counts.get(label, 0) for label in labels},
                                 **{label: n for label, n in sorted(counts.items()) if label not in train_counts}}
    if labels:
        total, k = sum(train_counts.values()), len(labels)
        # sklearn's "balanced": n_samples / (n_classes * rows of the class); a class of 1 row weighs k·mean.
        report.balanced_weights = {label: total / (k * train_counts[label]) for label in labels}
        report.imbalance_ratio = max(train_counts.values()) / min(train_counts.values())
    for split, stats in report.splits.items():
        unseen = {label: n for label, n in stats["label_counts"].items() if label not in train_counts and n}
        if split != "train" and unseen:
            report.unseen_labels[split] = unseen


def token_lengths(tables: dict[str, pa.Table], columns: TextColumns, tokenizer: Any, max_length: int,
                  tokenizer_name: Optional[str] = None, progress: bool = False,
                  batch_size: int = 2000) -> dict[str, Any]:
    """Token counts per split (special tokens included, as the model sees them) and the suggested max length."""
    from huggingface_hub.utils import tqdm  # the bars `nlp-transfer -q` switches off

    per_split = {}
    train_lengths = None
    bar = tqdm(total=sum(t.num_rows for t in tables.values()), desc="Counting tokens", unit=" rows",
               disable=not progress, leave=False)
    for split, table in tables.items():
        lengths = []
        for batch in table.to_batches(batch_size):
            bar.update(batch.num_rows)
            texts = [t or "" for t in batch.column(columns.text).to_pylist()]
            pairs = [t or "" for t in batch.column(columns.text_pair).to_pylist()] if columns.text_pair else None
            encoded = tokenizer(texts, pairs, truncation=False, return_attention_mask=False,
                                return_token_type_ids=False, verbose=False)
            lengths.extend(len(ids) for ids in encoded["input_ids"])
        array = np.asarray(lengths, dtype=np.int64)
        per_split[split] = _length_stats(array, max_length)
        train_lengths = array if split == "train" else train_lengths
    bar.close()
    limit = _model_limit(tokenizer)
    p95 = int(np.ceil(np.percentile(train_lengths, 95))) if len(train_lengths) else 0
    suggested = min(limit, max(32, int(np.ceil(p95 / 32) * 32)))
    return {"tokenizer": tokenizer_name, "max_length": max_length, "model_limit": limit, "splits": per_split,
            "suggested_max_length": suggested,
            "suggested_covers": float(np.mean(train_lengths <= suggested)) if len(train_lengths) else 1.0}


def _length_stats(lengths: np.ndarray, max_length: int) -> dict[str, Any]:
    if not len(lengths):
        return {"texts": 0, "min": 0, "median": 0, "p95": 0, "max": 0, "truncated": 0, "truncated_share": 0.0}
    cut = int(np.sum(lengths > max_length))
    return {"texts": int(len(lengths)), "min": int(lengths.min()), "median": float(np.median(lengths)),
            "p95": int(np.ceil(np.percentile(lengths, 95))), "max": int(lengths.max()), "truncated": cut,
            "truncated_share": cut / len(lengths)}


def _model_limit(tokenizer: Any) -> int:
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if isinstance(limit, int) and 0 < limit < 100_000 else 512


def check_before_training(config: Any, log: bool = True) -> Optional[DataReport]:
    """The data report of a :class:`~nlp_transfer.config.TrainConfig`'s files, before any model is loaded.

    Token lengths are left out (data preparation reports truncation). Warnings are logged and
    training goes on; an error stops it.

    Args:
        config: the run's settings (files and columns).
        log: log the summary and the warnings (the main process does; the others stay quiet).

    Returns None for multi-label and regression runs, whose labels the report does not read.

    Raises:
        UserInputError: the first problem that makes training impossible (and how many more there are).
    """
    if getattr(config, "task", "classification") != "classification" or getattr(config, "multi_label", False) \
            or getattr(config, "label_columns", None):
        # The report reads one class name per row; multi-label and numeric targets are checked, row by
        # row and in one line, by their label reader when the data are prepared (nlp_transfer.labels).
        return None
    columns = TextColumns(config.text_column, config.text_pair_column, config.label_column)
    report = inspect_data(config.train_file, config.validation_file, config.test_file, columns)
    if report.errors:
        more = len(report.errors) - 1
        raise UserInputError(report.errors[0] + (f" ({more} more problem(s): `nlp-transfer inspect` lists them all.)"
                                                 if more else ""))
    if log:
        first, *warnings = summary_lines(report)
        logger.info("%s", first)
        for warning in warnings:
            logger.warning("%s", warning)
    return report
