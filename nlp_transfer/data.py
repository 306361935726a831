"""CSV files → checked, tokenized ``datasets.Dataset`` objects.

User data is checked here, at the boundary: every problem becomes a :class:`UserInputError`
that names what was found, what was expected and the fix. Files are read by ``datasets`` (Arrow
on disk, memory-mapped), so a CSV larger than memory still works; checks use Arrow compute on
the columns instead of Python loops over rows.
"""

from __future__ import annotations

import codecs
import csv
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pyarrow.compute as pc
from datasets import ClassLabel, Dataset, Features, Value, load_dataset

from .errors import UserInputError

logger = logging.getLogger(__name__)

_INT_RE = re.compile(r"^[+-]?\d+$")
_NUMBER_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
# Pandas would otherwise turn texts such as "NA", "null" or "None" into missing values.
_NA_VALUES = [""]
_UTF8_CHUNK = 1 << 20


def _check_file(path: str | os.PathLike, role: str) -> Path:
    """Check that ``path`` is a readable, non-empty UTF-8 text file; return it as a Path."""
    p = Path(path)
    flag = {"training": "TRAIN_CSV", "input": "INPUT_CSV"}.get(role, f"--{role}-file")
    if not p.exists():
        raise UserInputError(f"{role} file {str(p)!r} does not exist; check the path given as {flag}.")
    if p.is_dir():
        raise UserInputError(f"{role} file {str(p)!r} is a directory; pass the CSV file inside it as {flag}.")
    if not os.access(p, os.R_OK):
        raise UserInputError(f"{role} file {str(p)!r} is not readable (permissions); run chmod u+r on it.")
    if p.stat().st_size == 0:
        raise UserInputError(f"{role} file {str(p)!r} is empty; expected a CSV with a header row and data rows.")
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    offset = 0
    with p.open("rb") as fh:
        while chunk := fh.read(_UTF8_CHUNK):
            if offset == 0 and chunk[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
                raise UserInputError(
                    f"{role} file {str(p)!r} is UTF-16 encoded; re-save it as UTF-8, "
                    f"e.g. `iconv -f utf-16 -t utf-8 {p.name} > {p.stem}.utf8.csv`."
                )
            if offset == 0 and b"\x00" in chunk[:8192]:
                raise UserInputError(
                    f"{role} file {str(p)!r} looks binary (it contains NUL bytes); expected a UTF-8 CSV text file."
                )
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                raise UserInputError(
                    f"{role} file {str(p)!r} is not valid UTF-8 (byte {offset + err.start}); re-save it as UTF-8, "
                    f"e.g. `iconv -f latin1 -t utf-8 {p.name} > {p.stem}.utf8.csv`."
                ) from None
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise UserInputError(f"{role} file {str(p)!r} ends in the middle of a UTF-8 character; re-save it as UTF-8.") from None
    return p


def _read_header(path: Path, role: str) -> list[str]:
    with path.open("r", encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, [])
            has_rows = any(any(cell.strip() for cell in row) for row in reader)
        except csv.Error as err:
            if "field limit" in str(err):
                # Usually an unclosed quote that swallowed the rest of the file, or no line breaks at all.
                raise UserInputError(
                    f"{role} file {str(path)!r} has a field longer than {csv.field_size_limit()} characters (near line "
                    f"{reader.line_num}); check for an unclosed quote or missing line breaks. Texts are cut at "
                    "--max-length tokens anyway, so shorten very long ones."
                ) from None
            raise UserInputError(f"{role} file {str(path)!r}: cannot parse the CSV ({err}).") from None
    header = [h.strip() for h in header]
    if not header or all(h == "" for h in header):
        raise UserInputError(f"{role} file {str(path)!r} has no header row; expected column names such as 'text,label'.")
    seen: set[str] = set()
    dupes = sorted({h for h in header if h in seen or seen.add(h)})
    if dupes:
        raise UserInputError(
            f"{role} file {str(path)!r} has duplicate column names: {', '.join(map(repr, dupes))}; rename them so each is unique."
        )
    if not has_rows:
        raise UserInputError(f"{role} file {str(path)!r} has a header but no data rows.")
    return header


def require_columns(header: Sequence[str], required: Mapping[str, str], role: str, path: Path) -> None:
    """Refuse a header that lacks a required column, listing the columns it has.

    Args:
        header: the CSV's column names.
        required: column name → the CLI option that names it (used in the fix).
        role, path: which file, for the message.
    """
    for column, option in required.items():
        if column in header:
            continue
        if len(header) == 1 and any(d in header[0] for d in (";", "\t", "|")):
            hint = " The header looks delimited by something other than commas; save the file as comma-separated."
        else:
            spare = [h for h in header if h not in required]
            hint = f" Pass the right name with {option}" + (f" (e.g. {option} {spare[0]})." if spare else ".")
        raise UserInputError(
            f"column {column!r} not found in {role} file {str(path)!r}; columns are: {', '.join(header)}.{hint}"
        )


def read_csv(path: str | os.PathLike, role: str, required: Mapping[str, str] | None = None) -> Dataset:
    """Load a CSV into a ``Dataset`` with every column read as a string.

    Args:
        path: the CSV file.
        role: what the file is for (``training``, ``validation``, ``test``, ``input``); used in messages.
        required: columns that must exist, each with the CLI option that names it; the error lists
            the columns that do exist.
    """
    p = _check_file(path, role)
    header = _read_header(p, role)
    require_columns(header, required or {}, role, p)
    features = Features({name: Value("string") for name in header})
    try:
        ds = load_dataset(
            "csv",
            data_files=str(p.resolve()),
            split="train",
            features=features,
            encoding="utf-8-sig",
            na_values=_NA_VALUES,
            keep_default_na=False,
        )
    except Exception as err:  # pandas/arrow parse errors arrive wrapped; report the root cause
        cause = err
        while (cause.__cause__ or cause.__context__) is not None:
            cause = cause.__cause__ or cause.__context__
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise UserInputError(
            f"{role} file {str(p)!r} could not be parsed as CSV: {detail}. "
            "Check the quoting and that every row has as many fields as the header."
        ) from None
    if ds.num_rows == 0:
        raise UserInputError(f"{role} file {str(p)!r} has a header but no data rows.")
    return ds


def column(ds: Dataset, name: str) -> Any:
    """One column as a pyarrow ``ChunkedArray``, honouring the dataset's index mapping (splits, selections)."""
    return ds.with_format("arrow")[name]


def _null_rows(ds: Dataset, column_name: str) -> np.ndarray:
    """Row numbers (0-based) where ``column_name`` is missing or blank."""
    col = column(ds, column_name)
    blank = pc.or_kleene(pc.is_null(col), pc.equal(pc.utf8_trim_whitespace(col), ""))
    blank = pc.fill_null(blank, True)
    return np.flatnonzero(blank.to_numpy(zero_copy_only=False))


def _describe_rows(rows: np.ndarray) -> str:
    # Data rows are numbered from 1, as a spreadsheet shows them below the header.
    shown = ", ".join(str(r + 1) for r in rows[:5])
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return f"{shown}{more}"


def check_texts(ds: Dataset, column_name: str, role: str, path: str) -> None:
    """Refuse missing or blank texts in ``column_name``, naming the rows."""
    rows = _null_rows(ds, column_name)
    if len(rows):
        raise UserInputError(
            f"{role} file {path!r}: column {column_name!r} is empty in {len(rows)} row(s) (data rows {_describe_rows(rows)}); "
            "drop or fill those rows."
        )


def label_values(ds: Dataset, column_name: str, role: str, path: str) -> list[str]:
    """The distinct labels of ``column_name`` (stripped strings), refusing missing ones."""
    rows = _null_rows(ds, column_name)
    if len(rows):
        raise UserInputError(
            f"{role} file {path!r}: label column {column_name!r} is empty in {len(rows)} row(s) (data rows {_describe_rows(rows)}); "
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
                "class ids. Use integer ids or names."
            )
        return sorted(values, key=int)
    return sorted(values)


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


def load_split(path: str, role: str, columns: TextColumns) -> Dataset:
    """Read one CSV and check its text columns (labels are checked by the caller)."""
    ds = read_csv(path, role, columns.required)
    check_texts(ds, columns.text, role, path)
    if columns.text_pair:
        check_texts(ds, columns.text_pair, role, path)
    return ds


def make_tokenize_fn(tokenizer: Any, columns: TextColumns, max_length: int, label2id: Optional[dict[str, int]]):
    """A batched ``map`` function: texts → ``input_ids`` (unpadded), ``labels`` and ``length``."""

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        pairs = batch[columns.text_pair] if columns.text_pair else None
        enc = tokenizer(batch[columns.text], pairs, truncation=True, max_length=max_length)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        if label2id is not None:
            enc["labels"] = [label2id[v.strip()] for v in batch[columns.label]]
        return enc

    return tokenize


def tokenize(ds: Dataset, tokenizer: Any, columns: TextColumns, max_length: int,
             label2id: Optional[dict[str, int]], desc: str) -> Dataset:
    """Tokenize ``ds`` once (cached by ``datasets`` next to the CSV's Arrow file)."""
    fn = make_tokenize_fn(tokenizer, columns, max_length, label2id)
    return ds.map(fn, batched=True, batch_size=1000, remove_columns=ds.column_names, desc=desc)


def label_counts(ds: Dataset, labels: Sequence[str]) -> dict[str, int]:
    """Rows per label name in a tokenized dataset (``labels`` column of ids)."""
    counts = np.bincount(np.asarray(column(ds, "labels").to_numpy(), dtype=np.int64), minlength=len(labels))
    return {name: int(n) for name, n in zip(labels, counts)}


@dataclass
class PreparedData:
    """Tokenized splits plus what the model and the model card need to know about them."""

    train: Dataset
    validation: Dataset
    test: Optional[Dataset]
    labels: list[str]
    label_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    truncated_fraction: float = 0.0
    validation_source: str = "file"


def prepare_data(config: Any, tokenizer: Any) -> PreparedData:
    """Read, check, split and tokenize the CSVs named in a :class:`TrainConfig`.

    The label set is the sorted set of training labels; a validation or test label never seen
    in training is an error (the model could never predict it).
    """
    columns = TextColumns(config.text_column, config.text_pair_column, config.label_column)
    train_raw = load_split(config.train_file, "training", columns)
    labels = sort_labels(label_values(train_raw, columns.label, "training", config.train_file))
    if len(labels) < 2:
        raise UserInputError(
            f"training file {config.train_file!r} has only one label ({labels[0]!r}) in column {columns.label!r}; "
            "a classifier needs at least two classes."
        )
    label2id = {name: i for i, name in enumerate(labels)}

    others: dict[str, Dataset] = {}
    for role, path in (("validation", config.validation_file), ("test", config.test_file)):
        if path is None:
            continue
        ds = load_split(path, role, columns)
        unseen = [v for v in label_values(ds, columns.label, role, path) if v not in label2id]
        if unseen:
            raise UserInputError(
                f"{role} file {path!r} has label(s) never seen in training: {', '.join(map(repr, unseen[:5]))}; "
                f"training labels are: {', '.join(labels)}. Remove those rows or add examples of them to the training data."
            )
        others[role] = ds

    if config.max_train_samples is not None and config.max_train_samples < train_raw.num_rows:
        train_raw = train_raw.shuffle(seed=config.seed).select(range(config.max_train_samples))

    train = tokenize(train_raw, tokenizer, columns, config.max_length, label2id, "Tokenizing training data")
    train = train.cast_column("labels", ClassLabel(names=labels))
    source = "file"
    if "validation" in others:
        validation = tokenize(others["validation"], tokenizer, columns, config.max_length, label2id,
                              "Tokenizing validation data")
    else:
        source = f"{config.validation_split:g} of the training file (stratified, seed {config.seed})"
        split = _split(train, config.validation_split, config.seed)
        train, validation = split["train"], split["test"]
    test = None
    if "test" in others:
        test = tokenize(others["test"], tokenizer, columns, config.max_length, label2id, "Tokenizing test data")

    lengths = column(train, "length").to_numpy()
    truncated = float(np.mean(lengths >= config.max_length)) if len(lengths) else 0.0
    if truncated > 0.05:
        logger.warning("%.0f%% of training texts were cut at --max-length %d tokens.", 100 * truncated, config.max_length)
    counts = {"train": label_counts(train, labels), "validation": label_counts(validation, labels)}
    if test is not None:
        counts["test"] = label_counts(test, labels)
    return PreparedData(train, validation, test, labels, counts, truncated, source)


def _split(ds: Dataset, fraction: float, seed: int) -> Any:
    n_val = max(1, round(ds.num_rows * fraction))
    if ds.num_rows - n_val < 1:
        raise UserInputError(
            f"only {ds.num_rows} training rows: too few to hold out a validation split; pass --validation-file."
        )
    counts = np.bincount(column(ds, "labels").to_numpy())
    if (counts[counts > 0] >= 2).all() and n_val >= np.count_nonzero(counts):
        return ds.train_test_split(test_size=n_val, stratify_by_column="labels", seed=seed)
    logger.warning("Some classes are too rare for a stratified validation split; using a random split.")
    return ds.train_test_split(test_size=n_val, seed=seed)
