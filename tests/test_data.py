"""CSV reading and checking: every bad input names what was found and the fix."""

from __future__ import annotations

import pytest

from nlp_transfer.data import TextColumns, load_split, read_csv, sort_labels
from nlp_transfer.errors import UserInputError

from conftest import write_csv

COLUMNS = TextColumns("text", None, "label")


def test_reads_every_column_as_string(tmp_path):
    path = write_csv(tmp_path / "a.csv", [("hello", 1), ("NA", 0), ("None", 1)])
    ds = read_csv(path, "training", COLUMNS.required)
    assert ds["label"] == ["1", "0", "1"]
    assert ds["text"] == ["hello", "NA", "None"], "words like NA must stay text"


def test_bom_crlf_and_quoted_newlines_just_work(tmp_path):
    path = tmp_path / "odd.csv"
    path.write_bytes(b'\xef\xbb\xbftext,label\r\n"two\r\nlines",a\r\nplain,b\r\n')
    ds = load_split(str(path), "training", COLUMNS)
    assert ds.column_names == ["text", "label"]
    assert ds["text"][0].splitlines() == ["two", "lines"]
    assert ds.num_rows == 2


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty; expected a CSV with a header row"),
        (b"text,label\n", "has a header but no data rows"),
        (b"\n\n", "has no header row"),
        (b"text,text\na,b\n", "duplicate column names: 'text'"),
        (b"caf\xe9,label\nx,y\n", r"is not valid UTF-8 \(byte 3\).*iconv"),
        (b"\x00\x01\x02binary", "looks binary"),
        (b"text;label\nhello;a\n", "columns are: text;label. The header looks delimited by something other than commas"),
        (b"sentence,category\nhello,a\n", "column 'text' not found .* columns are: sentence, category. Pass the right name with --text-column"),
    ],
)
def test_bad_files_are_refused_with_the_fix(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(UserInputError, match=message):
        load_split(str(path), "training", COLUMNS)


def test_missing_label_column_names_the_label_option(tmp_path):
    path = write_csv(tmp_path / "a.csv", [("x", "y")], header=("text", "category"))
    with pytest.raises(UserInputError, match="column 'label' not found.*--label-column category"):
        read_csv(path, "training", COLUMNS.required)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(UserInputError, match="does not exist; check the path given as TRAIN_FILE"):
        read_csv(tmp_path / "nope.csv", "training")
    with pytest.raises(UserInputError, match="is a directory; pass the CSV file inside it as --test-file"):
        read_csv(tmp_path, "test")


@pytest.mark.parametrize("role, name, expected", [
    ("training", None, "TRAIN_FILE"), ("input", None, "INPUT_FILE"), ("test", None, "--test-file"),
    ("validation", None, "--validation-file"), ("test", "TEST_FILE", "TEST_FILE"),
])
def test_missing_file_names_the_argument_that_gave_it(tmp_path, role, name, expected):
    with pytest.raises(UserInputError, match=f"does not exist; check the path given as {expected}\\.$"):
        load_split(str(tmp_path / "nope.csv"), role, COLUMNS, name=name)


def test_empty_texts_are_reported_by_row(tmp_path):
    path = write_csv(tmp_path / "a.csv", [("ok", "a"), ("", "b"), ("   ", "a")])
    with pytest.raises(UserInputError, match=r"column 'text' is empty in 2 row\(s\) \(data rows 2, 3\)"):
        load_split(str(path), "training", COLUMNS)


def test_sort_labels():
    assert sort_labels(["b", "a", "C"]) == ["C", "a", "b"]
    assert sort_labels(["10", "9", "-1"]) == ["-1", "9", "10"]
    with pytest.raises(UserInputError, match="mixes numbers"):
        sort_labels(["1", "pos"])
    with pytest.raises(UserInputError, match="look like real numbers"):
        sort_labels(["0.5", "1.5"])


def test_training_labels_checks(tiny_config, tmp_path):
    from nlp_transfer import train

    one = write_csv(tmp_path / "one.csv", [("a b", "x"), ("c d", "x")])
    with pytest.raises(UserInputError, match="has only one label \\('x'\\)"):
        train(tiny_config(train_file=str(one)))
    missing = write_csv(tmp_path / "missing.csv", [("a b", "x"), ("c d", ""), ("e", "y")])
    with pytest.raises(UserInputError, match=r"label column 'label' is empty in 1 row\(s\) \(data rows 2\)"):
        train(tiny_config(train_file=str(missing)))
