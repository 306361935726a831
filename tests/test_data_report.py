"""The data report (nlp_transfer/data_report.py, `nlp-transfer inspect`): counts checked against an
independent count of real data, and planted problems (duplicate, leak, conflict, unseen label,
encoding damage, empty text) each reported with their rows."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import requires_shared_data, write_csv
from nlp_transfer.cli import main
from nlp_transfer.data import TextColumns
from nlp_transfer.data_report import inspect_data


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _inspect_json(capsys, *args: str) -> tuple[int, dict]:
    code = main(["inspect", *args, "--json", "-q"])
    return code, json.loads(capsys.readouterr().out)


def test_inspect_json_counts_equal_an_independent_count_on_real_data(capsys, tiny_model_dir):
    folder = requires_shared_data("sms_spam")
    train, test = _rows(folder / "train.csv"), _rows(folder / "test.csv")
    code, report = _inspect_json(capsys, str(folder / "train.csv"), "--test-file", str(folder / "test.csv"),
                                 "--model", tiny_model_dir, "--max-length", "64")
    assert code == 0 and report["errors"] == []
    for split, rows in (("train", train), ("test", test)):
        stats = report["splits"][split]
        assert stats["rows"] == len(rows)
        assert stats["label_counts"] == dict(Counter(r["label"].strip() for r in rows))
        texts = [_norm(r["text"]) for r in rows]
        assert stats["duplicate_rows"] == len(texts) - len(set(texts))
        assert stats["empty_texts"]["rows"] == sum(not r["text"] for r in rows)
        controls = [i + 1 for i, r in enumerate(rows) if any(ord(c) < 32 and c not in "\t\n\r" or 127 <= ord(c) < 160
                                                               for c in r["text"])]
        assert stats["control_characters"]["rows"] == len(controls)
        assert stats["control_characters"]["examples"] == controls[:5]
    seen = {_norm(r["text"]) for r in train}
    leaked = [i + 1 for i, r in enumerate(test) if _norm(r["text"]) in seen]
    assert leaked and report["leakage"]["test"]["rows"] == len(leaked)
    assert [e["row"] for e in report["leakage"]["test"]["examples"]] == leaked[:5]
    counts = Counter(r["label"] for r in train)
    assert report["imbalance_ratio"] == pytest.approx(max(counts.values()) / min(counts.values()))
    assert report["balanced_weights"]["spam"] == pytest.approx(len(train) / (2 * counts["spam"]))
    # Token lengths with the tokenizer itself, special tokens included.
    from transformers import AutoTokenizer

    lengths = np.array([len(ids) for ids in AutoTokenizer.from_pretrained(tiny_model_dir)(
        [r["text"] for r in train])["input_ids"]])
    tokens = report["tokens"]["splits"]["train"]
    assert (tokens["min"], tokens["max"], tokens["truncated"]) == (lengths.min(), lengths.max(), (lengths > 64).sum())
    assert tokens["median"] == np.median(lengths)
    assert report["tokens"]["suggested_max_length"] >= tokens["p95"]


@pytest.fixture
def planted(tmp_path) -> dict[str, Path]:
    """200 distinct real training rows and 50 real test rows, then one of each problem planted."""
    folder = requires_shared_data("trec")
    seen: set[str] = set()
    train, test = [], []
    for row in _rows(folder / "train.csv"):
        if _norm(row["text"]) not in seen and len(train) < 200:
            seen.add(_norm(row["text"]))
            train.append([row["text"], row["label"]])
    for row in _rows(folder / "test.csv"):
        if _norm(row["text"]) not in seen and len(test) < 50:
            seen.add(_norm(row["text"]))
            test.append([row["text"], row["label"]])
    other = next(label for label in ("HUM", "LOC") if label != train[3][1])
    train += [["  " + train[0][0].upper() + " ", train[0][1]],  # row 201: duplicate of row 1
              [train[3][0], other],  # row 202: row 4's text with another label
              ["Whatâ€™s the cafÃ© called ?", "LOC"]]  # row 203: mojibake
    test += [[train[10][0], train[10][1]],  # test row 51: leak of training row 11
             ["Is this a new kind of question ?", "OPINION"]]  # test row 52: unseen label
    return {"train": write_csv(tmp_path / "train.csv", train), "test": write_csv(tmp_path / "test.csv", test),
            "conflict_text": train[3][0], "other": other}


def test_planted_problems_are_each_reported(planted):
    report = inspect_data(str(planted["train"]), test_file=str(planted["test"]))
    train = report.splits["train"]
    assert train["duplicate_rows"] == 2 and train["duplicated_texts"] == 2
    assert {tuple(e["rows"]) for e in train["duplicate_examples"]} == {(1, 201), (4, 202)}
    assert train["conflicting_texts"] == 1 and train["conflicting_rows"] == 2
    assert train["conflict_examples"][0]["rows"] == [4, 202] and planted["other"] in train["conflict_examples"][0]["labels"]
    assert train["mojibake"] == {"rows": 1, "examples": [203]}
    leak = report.leakage["test"]
    assert leak["rows"] == 1 and (leak["examples"][0]["row"], leak["examples"][0]["train_row"]) == (51, 11)
    assert report.unseen_labels == {"test": {"OPINION": 1}}
    assert report.splits["test"]["duplicate_rows"] == 0
    assert any("never seen in training: 'OPINION' (1 rows)" in e for e in report.errors)
    joined = "\n".join(report.warnings)
    for expected in ("2 row(s) repeat the text", "1 text(s) appear with different labels", "mojibake",
                     "1 row(s) (1.9%) of the test file also occur in the training file", "test row 51 = training row 11"):
        assert expected in joined


def test_inspect_command_prints_a_table_and_exits_2_on_errors(planted, capsys):
    code = main(["inspect", str(planted["train"]), "--test-file", str(planted["test"]), "--no-tokens", "-q"])
    out = capsys.readouterr().out
    assert code == 2
    assert "duplicate rows" in out and "also in training (leak)" in out and "OPINION" in out
    assert "error: test file" in out and "warning:" in out
    width = max(len(line) for line in out.splitlines() if not line.startswith(("error:", "warning:")))
    assert width <= 100


def test_empty_and_whitespace_texts_are_errors_with_their_rows(tmp_path):
    path = write_csv(tmp_path / "train.csv", [["fine text", "a"], ["", "b"], ["   ", "a"], ["other text", ""]])
    report = inspect_data(str(path), columns=TextColumns())
    stats = report.splits["train"]
    assert stats["empty_texts"]["examples"] == [2] and stats["whitespace_only_texts"]["examples"] == [3]
    assert stats["empty_labels"]["examples"] == [4]
    assert len(report.errors) == 2 and all(str(path) in e for e in report.errors)
    assert "column 'text' is empty in 2 row(s) (data rows 2, 3)" in report.errors[0]


def test_train_runs_the_checks_first_warnings_logged_errors_stop(planted, tmp_path, caplog):
    from nlp_transfer import TrainConfig
    from nlp_transfer.data_report import check_before_training
    from nlp_transfer.errors import UserInputError

    config = TrainConfig(train_file=str(planted["train"]), test_file=str(planted["test"]), output_dir=str(tmp_path / "m"))
    with pytest.raises(UserInputError, match=r"never seen in training: 'OPINION' \(1 rows\)"):
        check_before_training(config)
    config = TrainConfig(train_file=str(planted["train"]), output_dir=str(tmp_path / "m"))
    with caplog.at_level("INFO", logger="nlp_transfer.data_report"):
        report = check_before_training(config)
    assert report.errors == [] and report.tokens is None
    logged = [r for r in caplog.records if r.name == "nlp_transfer.data_report"]
    assert logged[0].levelname == "INFO"
    assert "train 203 rows; 6 labels" in logged[0].getMessage()
    assert [r.getMessage() for r in logged[1:]] == report.warnings and len(report.warnings) == 3
