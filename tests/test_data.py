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


# ---- the validation split ---------------------------------------------------------------------

def _labelled(counts: dict[str, int]):
    """A dataset with a ``labels`` column of class ids, ``counts`` rows per label name (ids in order)."""
    from datasets import ClassLabel, Dataset

    names = list(counts)
    ids = [i for i, name in enumerate(names) for _ in range(counts[name])]
    ds = Dataset.from_dict({"labels": ids, "row": list(range(len(ids)))})
    return ds.cast_column("labels", ClassLabel(names=names)), names


def _per_label(ds, names):
    counts = {name: 0 for name in names}
    for i in ds["labels"]:
        counts[names[i]] += 1
    return counts


def test_split_is_stratified_seeded_and_disjoint():
    from nlp_transfer.data import split_validation

    ds, names = _labelled({"a": 50, "b": 30, "c": 20})
    train, val, description = split_validation(ds, names, 0.2, seed=3)
    assert _per_label(val, names) == {"a": 10, "b": 6, "c": 4}
    assert _per_label(train, names) == {"a": 40, "b": 24, "c": 16}
    assert sorted(list(train["row"]) + list(val["row"])) == list(range(100))
    assert description == "0.2 of the training file, stratified by label, seed 3"
    again = list(split_validation(ds, names, 0.2, seed=3)[1]["row"])
    assert again == list(val["row"]) and list(split_validation(ds, names, 0.2, seed=4)[1]["row"]) != again


def test_a_rare_class_stays_in_training_and_the_rest_is_still_stratified(caplog):
    from nlp_transfer.data import split_validation

    ds, names = _labelled({"common": 60, "other": 40, "once": 1})
    train, val, description = split_validation(ds, names, 0.1, seed=42)
    assert _per_label(val, names) == {"common": 6, "other": 4, "once": 0}
    assert _per_label(train, names)["once"] == 1
    assert description == ("0.1 of the training file, stratified by label, seed 42; 1 class(es) with fewer than 2 "
                           "rows (once) kept in training only")
    assert "stay in training only and are not validated: once" in caplog.text


def test_many_small_classes_all_keep_training_rows():
    from nlp_transfer.data import split_validation

    counts = {f"c{i:02d}": 2 + i % 3 for i in range(40)}  # 40 classes of 2 to 4 rows: 119 rows, 12 for validation
    ds, names = _labelled(counts)
    train, val, description = split_validation(ds, names, 0.1, seed=0)
    assert val.num_rows == 12
    assert all(n >= 1 for n in _per_label(train, names).values()), "every class keeps a training row"
    assert all(n <= 1 for n in _per_label(val, names).values())
    assert "28 class(es) too small for a validation row" in description


def test_no_class_with_two_rows_is_refused():
    from nlp_transfer.data import split_validation

    ds, names = _labelled({"a": 1, "b": 1, "c": 1})
    with pytest.raises(UserInputError, match=r"only 3 training rows \(no class has 2 or more rows\).*--validation-file"):
        split_validation(ds, names, 0.1, seed=0)


def test_sampling_that_leaves_a_label_without_rows_is_refused(tiny_config, tmp_path):
    from nlp_transfer import train

    from conftest import synthetic_rows

    rows = synthetic_rows(200, seed=5) + [("a rare example", "rare")]
    path = write_csv(tmp_path / "rare.csv", rows)
    with pytest.raises(UserInputError, match=r"--max-train-samples 20 leaves 1 label\(s\) .* with no training rows \(rare\)"):
        train(tiny_config(train_file=str(path), validation_file=None, max_train_samples=20, seed=1))


def test_max_length_without_room_for_text_is_refused(tiny_config, tmp_path):
    from nlp_transfer import train

    from conftest import synthetic_rows

    pairs = write_csv(tmp_path / "pairs.csv", [(t, t, label) for t, label in synthetic_rows(40)],
                      header=("text", "other", "label"))
    with pytest.raises(UserInputError, match="--max-length 4 leaves no room for text: the tokenizer adds 3 special "
                       "tokens to each sentence pair, so at least 5 are needed"):
        train(tiny_config(train_file=str(pairs), validation_file=None, test_file=None, text_pair_column="other",
                          max_length=4))
