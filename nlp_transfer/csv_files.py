"""CSV files in, checked at the boundary: one rule set for ``train``, ``evaluate`` and ``predict``.

Every problem becomes a :class:`UserInputError` that names what was found, what was expected and
the fix. The same rules hold for every command:

- the file must be a readable, non-empty UTF-8 text file (:func:`check_file`);
- header names are stripped of surrounding spaces (``text , label`` is ``text`` and ``label``),
  must be unique, and at least one must be non-empty (:func:`read_header`);
- a column with no name (what a trailing comma on every line, as spreadsheets write, makes) is
  dropped when it is empty in every row; when it holds values, the message says so;
- a header field may be at most :data:`HEADER_FIELD_LIMIT` characters (a longer one is a file
  without line breaks or an unclosed quote); data fields have no limit, since long texts are
  simply cut at ``--max-length`` tokens.

``train`` and ``evaluate`` read through ``datasets`` (Arrow on disk, memory-mapped, so a CSV
larger than memory works); ``predict`` streams rows with :func:`data_rows`.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from .artifacts import filesystem_error
from .errors import UserInputError

HEADER_FIELD_LIMIT = 131072  # the csv module's default, kept for the header only
# Pandas would otherwise turn texts such as "NA", "null" or "None" into missing values.
_NA_VALUES = [""]
_UTF8_CHUNK = 1 << 20
# How a file is named in messages when the caller does not say: the CLI's argument or option.
_DEFAULT_NAMES = {"training": "TRAIN_FILE", "validation": "--validation-file", "test": "--test-file",
                  "input": "INPUT_FILE"}


def check_file(path: str | os.PathLike, role: str, name: Optional[str] = None) -> Path:
    """Check that ``path`` is a readable, non-empty UTF-8 text file; return it as a Path.

    Args:
        path: the file.
        role: what it is for (``training``, ``validation``, ``test``, ``input``), used in messages.
        name: the argument or option that named it (e.g. ``TEST_FILE``, ``--test-file``); default by role.
    """
    p = Path(path)
    flag = name or _DEFAULT_NAMES.get(role, f"--{role}-file")
    if not p.exists():
        raise UserInputError(f"{role} file {str(p)!r} does not exist; check the path given as {flag}.")
    if p.is_dir():
        raise UserInputError(f"{role} file {str(p)!r} is a directory; pass the CSV file inside it as {flag}.")
    if not os.access(p, os.R_OK):
        raise UserInputError(f"{role} file {str(p)!r} is not readable (permissions); run chmod u+r on it.")
    if p.stat().st_size == 0:
        raise UserInputError(f"{role} file {str(p)!r} is empty; expected a CSV with a header row and data rows.")
    try:
        _check_utf8(p, role)
    except OSError as err:
        raise filesystem_error(err, p, "read") from None
    return p


def _check_utf8(p: Path, role: str) -> None:
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


@contextlib.contextmanager
def _field_limit(limit: Optional[int]) -> Iterator[None]:
    """Set the csv module's field size limit (process-wide, so restored on exit); None: no limit."""
    previous = csv.field_size_limit(min(sys.maxsize, 2**31 - 1) if limit is None else limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


@dataclass
class CsvHeader:
    """The column names of a CSV, stripped; ``""`` marks a column without a name."""

    names: list[str]

    @property
    def unnamed(self) -> list[int]:
        """Positions of the columns that have no name."""
        return [i for i, name in enumerate(self.names) if not name]

    @property
    def named(self) -> list[str]:
        """The names of the named columns, in file order."""
        return [name for name in self.names if name]


def _ragged(role: str, path: Path, line: int, fields: int, width: int) -> UserInputError:
    return UserInputError(
        f"{role} file {str(path)!r}: the row ending on line {line} has {fields} field(s) but the header has {width}; "
        "check the quoting and the delimiters of that row."
    )


def read_header(path: Path, role: str) -> CsvHeader:
    """Read and check the header row (and that a data row follows it).

    A first data row with more fields than the header, the extra ones empty, is a trailing comma
    on the data lines only: the extra columns count as unnamed (and empty) columns.
    """
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            with _field_limit(HEADER_FIELD_LIMIT):
                header = _next_row(reader, role, path)
            with _field_limit(None):
                first = next((row for row in reader if any(cell.strip() for cell in row)), None)
            line = reader.line_num
    except csv.Error as err:
        raise UserInputError(f"{role} file {str(path)!r}: cannot parse the CSV ({err}).") from None
    except OSError as err:
        raise filesystem_error(err, path, "read") from None
    names = [h.strip() for h in header or []]
    if not names or all(h == "" for h in names):
        raise UserInputError(f"{role} file {str(path)!r} has no header row; expected column names such as 'text,label'.")
    seen: set[str] = set()
    dupes = sorted({h for h in names if h and (h in seen or seen.add(h))})
    if dupes:
        raise UserInputError(
            f"{role} file {str(path)!r} has duplicate column names: {', '.join(map(repr, dupes))}; rename them so each is unique."
        )
    if first is None:
        raise UserInputError(f"{role} file {str(path)!r} has a header but no data rows.")
    if len(first) > len(names):
        if any(cell.strip() for cell in first[len(names):]):
            raise _ragged(role, path, line, len(first), len(names))
        names += [""] * (len(first) - len(names))
    return CsvHeader(names)


def _next_row(reader: Any, role: str, path: Path) -> list[str]:
    try:
        return next(reader, [])
    except csv.Error as err:
        if "field larger than field limit" not in str(err):
            raise
        # Usually an unclosed quote that swallowed the rest of the file, or no line breaks at all.
        raise UserInputError(
            f"{role} file {str(path)!r} has a field longer than {HEADER_FIELD_LIMIT} characters (near line "
            f"{reader.line_num}); check for an unclosed quote or missing line breaks in the header row."
        ) from None


def require_columns(header: CsvHeader | list[str], required: Mapping[str, str], role: str, path: Path) -> None:
    """Refuse a header that lacks a required column, listing the columns it has.

    Args:
        header: the CSV's header (or its column names).
        required: column name → the CLI option that names it (used in the fix).
        role, path: which file, for the message.
    """
    names = header.named if isinstance(header, CsvHeader) else list(header)
    for column, option in required.items():
        if column in names:
            continue
        if len(names) == 1 and any(d in names[0] for d in (";", "\t", "|")):
            hint = " The header looks delimited by something other than commas; save the file as comma-separated."
        else:
            spare = [h for h in names if h not in required]
            hint = f" Pass the right name with {option}" + (f" (e.g. {option} {spare[0]})." if spare else ".")
        raise UserInputError(
            f"column {column!r} not found in {role} file {str(path)!r}; columns are: {', '.join(names)}.{hint}"
        )


def _unnamed_value(role: str, path: Path, position: int, where: str) -> UserInputError:
    return UserInputError(
        f"{role} file {str(path)!r}: column {position + 1} has no name in the header but holds a value in {where}; "
        "give it a name in the header row, or delete the values (a trailing comma on every line is fine)."
    )


def read_csv(path: str | os.PathLike, role: str, required: Mapping[str, str] | None = None,
             name: Optional[str] = None) -> Any:
    """Load a CSV into a ``datasets.Dataset`` with every column read as a string.

    Args:
        path: the CSV file.
        role: what the file is for (``training``, ``validation``, ``test``, ``input``); used in messages.
        required: columns that must exist, each with the CLI option that names it; the error lists
            the columns that do exist.
        name: the argument or option that named the file, for messages (default by role).
    """
    import pyarrow.compute as pc
    from datasets import Features, Value

    p = check_file(path, role, name)
    header = read_header(p, role)
    require_columns(header, required or {}, role, p)
    # The stripped names replace the file's own, so `text , label` reads as `text` and `label`.
    names = [column or f"__unnamed_{i}" for i, column in enumerate(header.names)]
    ds = _load(p, role, names, Features({column: Value("string") for column in names}))
    if ds.num_rows == 0:
        raise UserInputError(f"{role} file {str(p)!r} has a header but no data rows.")
    for position in header.unnamed:
        column = ds.with_format("arrow")[names[position]]
        filled = pc.fill_null(pc.invert(pc.equal(pc.utf8_trim_whitespace(column), "")), False)
        if pc.any(filled).as_py():
            row = int(pc.index(filled, True).as_py()) + 1
            raise _unnamed_value(role, p, position, f"data row {row}")
    return ds.remove_columns([names[i] for i in header.unnamed]) if header.unnamed else ds


def _load(p: Path, role: str, names: list[str], features: Any) -> Any:
    """``load_dataset("csv")`` with parse errors as one sentence and filesystem faults as what they are."""
    import pandas as pd
    import pyarrow as pa
    from datasets import load_dataset
    from datasets.exceptions import DatasetGenerationError

    parse_errors = (pd.errors.ParserError, pd.errors.EmptyDataError, pa.ArrowInvalid, csv.Error, UnicodeDecodeError)
    try:
        return load_dataset(
            "csv", data_files=str(p.resolve()), split="train", features=features, encoding="utf-8-sig",
            header=0, names=names, index_col=False, na_values=_NA_VALUES, keep_default_na=False,
        )
    except (DatasetGenerationError, *parse_errors, OSError) as err:
        cause: BaseException = err
        while not isinstance(cause, (*parse_errors, OSError)) and (cause.__cause__ or cause.__context__):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, OSError):
            target = getattr(cause, "filename", None) or p
            raise filesystem_error(cause, target, "read" if Path(target) == p else "write") from None
        if not isinstance(cause, parse_errors):
            raise
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise UserInputError(
            f"{role} file {str(p)!r} could not be parsed as CSV: {detail}. "
            "Check the quoting and that every row has as many fields as the header."
        ) from None


@contextlib.contextmanager
def data_rows(path: Path, header: CsvHeader, role: str = "input") -> Iterator[Iterator[list[str]]]:
    """The data rows of a checked CSV, streamed, with the unnamed (empty) columns left out.

    Blank lines are skipped; a row with another number of fields than the header is refused
    (it may leave out trailing unnamed columns). Fields have no size limit, as in ``read_csv``.
    """
    keep = [i for i, name in enumerate(header.names) if name]
    width, named_width = len(header.names), max(keep) + 1

    def rows(reader: Any) -> Iterator[list[str]]:
        next(reader)  # the header
        for row in reader:
            if not row:
                continue
            if not named_width <= len(row) <= width:
                raise _ragged(role, path, reader.line_num, len(row), width)
            if len(keep) < len(row):
                extra = next((i for i in range(len(row)) if i not in keep and row[i].strip()), None)
                if extra is not None:
                    raise _unnamed_value(role, path, extra, f"the row ending on line {reader.line_num}")
                row = [row[i] for i in keep]
            yield row

    with path.open("r", encoding="utf-8-sig", newline="") as fh, _field_limit(None):
        yield rows(csv.reader(fh))
