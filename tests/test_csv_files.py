"""CSV files: one rule set for train, evaluate and predict (header spaces, trailing commas, long fields)."""

from __future__ import annotations

import csv

import pytest

from nlp_transfer.csv_files import HEADER_FIELD_LIMIT, data_rows, read_csv, read_header
from nlp_transfer.errors import UserInputError

REQUIRED = {"text": "--text-column", "label": "--label-column"}


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def _streamed(path):
    header = read_header(path, "input")
    with data_rows(path, header) as rows:
        return header.named, list(rows)


def test_spaces_around_header_names_are_stripped_by_every_reader(tmp_path):
    path = _write(tmp_path / "a.csv", " text , label \nhello there,pos\nbad day,neg\n")
    ds = read_csv(path, "training", REQUIRED)
    assert ds.column_names == ["text", "label"] and ds["label"] == ["pos", "neg"]
    assert _streamed(path) == (["text", "label"], [["hello there", "pos"], ["bad day", "neg"]])


@pytest.mark.parametrize("content", [
    "text,label,\nhello there,pos,\nbad day,neg,\n",  # a trailing comma on every line, as spreadsheets write
    "text,label\nhello there,pos,\nbad day,neg,\n",  # on the data lines only
    "text,label,,\nhello there,pos,,\nbad day,neg\n",  # two, and a row that leaves them out
    "text,,label\nhello there,,pos\nbad day,,neg\n",  # an empty unnamed column in the middle
])
def test_empty_unnamed_columns_are_dropped(tmp_path, content):
    path = _write(tmp_path / "a.csv", content)
    ds = read_csv(path, "training", REQUIRED)
    assert ds.column_names == ["text", "label"]
    assert ds["text"] == ["hello there", "bad day"] and ds["label"] == ["pos", "neg"]
    assert _streamed(path) == (["text", "label"], [["hello there", "pos"], ["bad day", "neg"]])


def test_an_unnamed_column_with_values_is_named_as_the_problem(tmp_path):
    path = _write(tmp_path / "a.csv", "text,label,\nhello,pos,\nbye,neg,note\n")
    message = r"column 3 has no name in the header but holds a value in {}; give it a name in the header row"
    with pytest.raises(UserInputError, match=message.format("data row 2")):
        read_csv(path, "training", REQUIRED)
    with pytest.raises(UserInputError, match=message.format("the row ending on line 3")):
        _streamed(path)


def test_a_first_row_with_an_extra_value_is_a_ragged_row_not_an_index(tmp_path):
    # pandas would take the first column as the row index and shift every value by one column.
    path = _write(tmp_path / "a.csv", "text,label\nhello,pos,oops\nbye,neg,oops\n")
    message = r"the row ending on line 2 has 3 field\(s\) but the header has 2; check the quoting"
    with pytest.raises(UserInputError, match=message):
        read_csv(path, "training", REQUIRED)
    with pytest.raises(UserInputError, match=message):
        read_header(path, "input")


def test_a_later_ragged_row_is_reported_by_both_readers(tmp_path):
    path = _write(tmp_path / "a.csv", "text,label\nhello,pos\nbye,neg,x,y\n")
    with pytest.raises(UserInputError, match="could not be parsed as CSV: .*Expected 2 fields in line 3, saw 4"):
        read_csv(path, "training", REQUIRED)
    with pytest.raises(UserInputError, match=r"line 3 has 4 field\(s\) but the header has 2"):
        _streamed(path)


def test_long_data_fields_are_accepted_everywhere_a_long_header_field_is_not(tmp_path):
    long_text = "word " * 60_000  # 300 kB, above the csv module's default limit
    limit = csv.field_size_limit()
    path = tmp_path / "long.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([("text", "label"), ("short", "pos"), (long_text, "neg")])
    assert read_csv(path, "training", REQUIRED)["text"][1] == long_text
    assert _streamed(path)[1][1] == [long_text, "neg"]
    assert csv.field_size_limit() == limit, "the csv module's process-wide limit is put back"

    _write(tmp_path / "header.csv", "text,label," + "a" * (HEADER_FIELD_LIMIT + 10) + "\nx,y\n")
    with pytest.raises(UserInputError, match=f"has a field longer than {HEADER_FIELD_LIMIT} characters .*header row"):
        read_csv(tmp_path / "header.csv", "training", REQUIRED)


def test_a_cache_that_cannot_be_written_is_reported_as_such_not_as_bad_csv(tmp_path, monkeypatch):
    import datasets.config

    blocker = _write(tmp_path / "not-a-folder", "")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", blocker / "cache")
    path = _write(tmp_path / "a.csv", "text,label\nhello,pos\nbye,neg\n")
    with pytest.raises(UserInputError, match=r"cannot write .*not-a-folder.*: a part of the path is a file, not a folder"):
        read_csv(path, "training", REQUIRED)
