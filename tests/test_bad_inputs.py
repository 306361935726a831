"""The bad-input corpus through ``train``, ``evaluate`` and ``predict``.

Small malformed CSVs live in ``tests/data/bad_inputs/`` (readable, so anyone can see what each
one looks like); the binary file, the 10 MB line, the directory and the unreadable file are made
here. Each bad input must give exactly one ``error:`` line, exit code 2, and write nothing; the
valid-but-odd ones (BOM, CRLF, quoted newlines) must simply work.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nlp_transfer.cli import main

from conftest import synthetic_rows, write_csv

CORPUS = Path(__file__).parent / "data" / "bad_inputs"

# file → what each command must say (a regex of the error line), or None where the file is fine
# for that command: predict reads only the text column, and a test set may hold a single class.
EXPECTED: dict[str, dict[str, str | None]] = {}


def expect(name: str, train: str | None, evaluate: str | None = "same", predict: str | None = "same") -> None:
    EXPECTED[name] = {
        "train": train,
        "evaluate": train if evaluate == "same" else evaluate,
        "predict": train if predict == "same" else predict,
    }


expect("empty.csv", "is empty; expected a CSV with a header row")
expect("header_only.csv", "has a header but no data rows")
expect("blank_lines_only.csv", "has no header row")
expect("blank_header.csv", "has no header row")
expect("missing_label_column.csv", "column 'label' not found .* columns are: text, category. Pass the right name "
       "with --label-column", predict=None)
expect("missing_text_column.csv", "column 'text' not found .* columns are: sentence, label. Pass the right name "
       "with --text-column")
expect("duplicate_columns.csv", "duplicate column names: 'text'")
expect("semicolon_delimited.csv", "columns are: text;label. The header looks delimited by something other than commas")
expect("latin1_bytes.csv", r"is not valid UTF-8 \(byte \d+\); re-save it as UTF-8")
expect("truncated_utf8.csv", "ends in the middle of a UTF-8 character")
expect("utf16.csv", "is UTF-16 encoded; re-save it as UTF-8")
expect("nan_labels.csv", r"label column 'label' is empty in 2 row\(s\) \(data rows 7, 8\)", predict=None)
# predict keeps one output row per input row, so it predicts blank texts rather than refusing them.
expect("empty_texts.csv", r"column 'text' is empty in 2 row\(s\) \(data rows 7, 8\)", predict=None)
expect("one_class.csv", "has only one label \\('pos'\\)", evaluate=None, predict=None)
expect("mixed_labels.csv", r"mixes numbers \(0, 1\) and words", evaluate="never seen in training: '0', '1'",
       predict=None)
expect("float_labels.csv", "labels look like real numbers", evaluate="never seen in training: '0.5', '1.5'",
       predict=None)
# predict streams the CSV with its own reader, hence its own wording.
expect("ragged_rows.csv", "could not be parsed as CSV: .*Expected 2 fields in line 8, saw 4",
       predict="line 8 has 4 field\\(s\\) but the header has 2")
expect("unclosed_quote.csv", "could not be parsed as CSV: .*EOF inside string",
       predict="has 1 field\\(s\\) but the header has 2; check the quoting")
expect("unseen_test_labels.csv", None, evaluate="never seen in training: 'neutral'", predict=None)
# Spreadsheet shapes: a value in a column without a name, an extra value on the first row only (which
# pandas would otherwise read as a row index, shifting every column).
expect("unnamed_column_with_values.csv", r"column 3 has no name in the header but holds a value in (data row 7|the row "
       r"ending on line 8); give it a name in the header row")
expect("extra_field_first_row.csv", r"the row ending on line 2 has 3 field\(s\) but the header has 2; check the quoting")
expect("binary.bin", r"looks binary \(it contains NUL bytes\)")
expect("ten_megabyte_line.csv", "has a field longer than 131072 characters")
expect("a_directory.csv", "is a directory; pass the CSV file inside it")
expect("unreadable.csv", r"is not readable \(permissions\)")
GENERATED = {"binary.bin", "ten_megabyte_line.csv", "a_directory.csv", "unreadable.csv", "ok_long_field.csv"}
# Spaces around header names and a trailing comma on every line are what spreadsheets write; a
# 300 kB text is long, not broken (it is cut at --max-length tokens). Every command accepts them.
VALID_BUT_ODD = ["ok_bom.csv", "ok_crlf.csv", "ok_quoted_newlines.csv", "ok_spaced_header.csv",
                 "ok_trailing_commas.csv", "ok_long_field.csv"]


def test_the_corpus_is_complete():
    on_disk = {p.name for p in CORPUS.iterdir()}
    assert on_disk == (set(EXPECTED) - GENERATED) | (set(VALID_BUT_ODD) - GENERATED)
    assert len(EXPECTED) >= 20


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The committed files plus the generated ones, in one folder."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    for path in CORPUS.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "binary.bin").write_bytes(bytes(range(256)) * 16)
    (folder / "ten_megabyte_line.csv").write_text("text,label," + "a" * 10_000_000, encoding="utf-8")
    (folder / "a_directory.csv").mkdir()
    unreadable = write_csv(folder / "unreadable.csv", synthetic_rows(10))
    unreadable.chmod(0)
    long_rows = synthetic_rows(24)
    long_rows[5] = ("word " * 60_000 + long_rows[5][0], long_rows[5][1])
    write_csv(folder / "ok_long_field.csv", long_rows)
    return folder


@pytest.fixture(scope="module")
def trained_model(tiny_model_dir, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("bad-inputs-model")
    out = root / "model"
    args = ["-q", "train", str(write_csv(root / "train.csv", synthetic_rows(60))), "--model", tiny_model_dir,
            "--output-dir", str(out), "--epochs", "1", "--max-length", "32", "--validation-split", "0.2"]
    assert main(args) == 0
    return str(out)


def _good_train_csv(folder: Path) -> Path:
    return write_csv(folder / "good_train.csv", synthetic_rows(40))


def _command(command: str, bad: Path, tiny_model_dir: str, trained_model: str, out: Path) -> list[str]:
    if command == "train":
        args = ["-q", "train", str(bad), "--model", tiny_model_dir, "--output-dir", str(out / "model"),
                "--epochs", "1", "--max-length", "32"]
        if bad.name == "unseen_test_labels.csv":  # its labels are fine as training data; it is a bad test set
            args = ["-q", "train", str(_good_train_csv(out)), "--test-file", str(bad), *args[3:]]
        return args
    if command == "evaluate":
        return ["-q", "evaluate", trained_model, str(bad), "--output", str(out / "metrics.json")]
    return ["-q", "predict", trained_model, str(bad), "--output", str(out / "predictions.csv")]


def _skip_unreadable_as_root(name: str) -> None:
    if name == "unreadable.csv" and os.geteuid() == 0:
        pytest.skip("root reads files whatever their permissions, so chmod 000 cannot make one unreadable here")


# Only the (file, command) pairs that are bad for that command: e.g. empty texts are valid for
# predict (they are predicted) and a one-class file is a valid test set for evaluate.
BAD_PAIRS = [(name, command) for name in sorted(EXPECTED) for command in ("train", "evaluate", "predict")
             if EXPECTED[name][command] is not None]


@pytest.mark.parametrize("name, command", BAD_PAIRS)
def test_bad_input_gives_one_error_line_exit_2_and_writes_nothing(
    name, command, corpus, tiny_model_dir, trained_model, tmp_path, capsys
):
    _skip_unreadable_as_root(name)
    message = EXPECTED[name][command]
    out = tmp_path / "out"
    out.mkdir()
    capsys.readouterr()
    code = main(_command(command, corpus / name, tiny_model_dir, trained_model, out))
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err[-2000:]
    assert re.search(message, errors[0]), errors[0]
    assert len(errors[0]) < 600, "the message must stay one readable line"
    assert "Traceback" not in err
    left = sorted(p.name for p in out.iterdir() if p.name != "good_train.csv")
    assert left == [], f"{command} left {left} behind"


@pytest.mark.parametrize("name", VALID_BUT_ODD)
def test_valid_but_odd_files_simply_work(name, corpus, tiny_model_dir, trained_model, tmp_path):
    path = corpus / name
    assert main(["-q", "train", str(path), "--model", tiny_model_dir, "--output-dir", str(tmp_path / "model"),
                 "--epochs", "1", "--max-length", "32"]) == 0
    assert main(["-q", "evaluate", trained_model, str(path)]) == 0
    assert main(["-q", "predict", trained_model, str(path), "--output", str(tmp_path / "p.csv")]) == 0
    lines = (tmp_path / "p.csv").read_text(encoding="utf-8").count("\n")
    assert lines >= 24, "every row predicted (quoted newlines may add lines, never remove rows)"


def test_the_console_script_prints_one_line_too(corpus, tiny_model_dir, tmp_path):
    """In a fresh process, with the library's real logging and warnings: still one line, exit 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "nlp_transfer.cli", "-q", "train", str(corpus / "ragged_rows.csv"), "--model", tiny_model_dir,
         "--output-dir", str(tmp_path / "model"), "--max-length", "32"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: training file"), proc.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []
