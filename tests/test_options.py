"""Command-line options: help defaults, value types, the recorded command line and the resume command."""

from __future__ import annotations

import argparse

import pytest

from nlp_transfer.cli import build_parser
from nlp_transfer.options import PositiveInt, recorded_command_line, resume_command, token_values, with_default


@pytest.mark.parametrize("help_text, default, expected", [
    ("Passes.", 3, "Passes. (default: 3)"),
    ("Column.", None, "Column."),
    ("Replace it.", False, "Replace it."),
    ("Batch by length.", True, "Batch by length. (default: on)"),
    ("Rank (default 8).", None, "Rank (default 8)."),
    ("Stop early. Default: never.", 5, "Stop early. Default: never."),
    ("The default encoder's table.", True, "The default encoder's table. (default: on)"),
    ("Share.", "50%", "Share. (default: 50%%)"),  # argparse %-formats help: the default must survive it
])
def test_each_default_is_shown_once(help_text, default, expected):
    assert with_default(help_text, default) == expected


def test_positive_int_accepts_counts_and_names_the_option_otherwise():
    check = PositiveInt("--top-k")
    assert check("3") == 3
    for bad in ("0", "-1", "2.5", "many"):
        with pytest.raises(argparse.ArgumentTypeError, match=rf"^--top-k must be a positive integer; got '{bad}'"):
            check(bad)


def test_the_recorded_command_line_never_holds_the_token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_fromenv")
    args = build_parser().parse_args(["train", "x.csv", "--token=hf_typed"])
    argv = ["train", "x.csv", "--token=hf_typed", "--token", "hf_typed", "--dataset-name", "hf_fromenv",
            "--license", "mit"]
    line = recorded_command_line(argv, token_values(args))
    assert "hf_typed" not in line and "hf_fromenv" not in line
    assert line == "nlp-transfer train x.csv --dataset-name '***' --license mit"


@pytest.mark.parametrize("typed, resume, expected", [
    ("nlp-transfer -q train x.csv --epochs 2", None, "nlp-transfer -q train x.csv --epochs 2 --resume"),
    ("nlp-transfer train x.csv --resume --seed 3", "latest", "nlp-transfer train x.csv --seed 3 --resume"),
    ("nlp-transfer train x.csv --resume 'ck/checkpoint 8' --seed 3", "ck/checkpoint 8",
     "nlp-transfer train x.csv --seed 3 --resume"),
    ("nlp-transfer train x.csv --resume=ck/checkpoint-8", "ck/checkpoint-8", "nlp-transfer train x.csv --resume"),
    ("nlp-transfer train 'my data.csv' --overwrite", None, "nlp-transfer train 'my data.csv' --overwrite --resume"),
])
def test_resume_command(typed, resume, expected):
    assert resume_command(typed, resume) == expected


def test_a_short_dummy_token_is_masked_only_as_a_whole_word(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "x")
    args = build_parser().parse_args(["train", "x.csv", "--dataset-name", "x"])
    assert recorded_command_line(["train", "x.csv", "--dataset-name", "x"], token_values(args)) == (
        "nlp-transfer train x.csv --dataset-name '***'")
