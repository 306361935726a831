"""``nlp-transfer inspect``: the data report of the CSVs a model would be trained on.

Thin: parse → :func:`nlp_transfer.data_report.inspect_data` → print the table (or JSON). The
exit code is 2 when the report holds errors (``train`` would refuse the data), else 0.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..config import TrainConfig
from ..options import PositiveInt, with_default

_DEFAULTS = {f: TrainConfig.__dataclass_fields__[f].default for f in ("text_column", "label_column", "model", "max_length")}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``inspect`` subcommand."""
    inspect = sub.add_parser(
        "inspect", parents=[common], usage="%(prog)s TRAIN_FILE [OPTIONS]",
        help="Report on the training data before training: labels, duplicates, leaks, lengths.",
        description="Read the CSVs a model would be trained on and report rows and labels per split (imbalance "
        "ratio, balanced class weights), empty/whitespace-only/duplicate texts, texts with conflicting labels, texts "
        "shared between training and validation/test (leakage), labels training lacks, token lengths with the "
        "model's tokenizer (share cut at --max-length, a suggested value) and encoding oddities. Texts are compared "
        "after case and whitespace normalisation. Exit code 2 when train would refuse the data.",
    )
    data, model = inspect.add_argument_group("data"), inspect.add_argument_group("tokens")
    data.add_argument("train_file", metavar="TRAIN_FILE", help="CSV with a text column and a label column.")
    data.add_argument("--validation-file", metavar="FILE", help="Validation CSV, checked against the training file.")
    data.add_argument("--test-file", metavar="FILE", help="Test CSV, checked against the training file.")
    data.add_argument("--text-column", default=_DEFAULTS["text_column"], metavar="COLUMN",
                      help=with_default("Column holding the text.", _DEFAULTS["text_column"]))
    data.add_argument("--text-pair-column", metavar="COLUMN", help="Column with a second text, for sentence pairs.")
    data.add_argument("--label-column", default=_DEFAULTS["label_column"], metavar="COLUMN",
                      help=with_default("Column holding the label.", _DEFAULTS["label_column"]))
    model.add_argument("--model", default=_DEFAULTS["model"], metavar="NAME_OR_PATH",
                       help=with_default("Encoder whose tokenizer counts the tokens.", _DEFAULTS["model"]))
    model.add_argument("--max-length", type=PositiveInt("--max-length"), default=_DEFAULTS["max_length"],
                       metavar="TOKENS", help=with_default("The --max-length of training: texts longer are cut.",
                                                           _DEFAULTS["max_length"]))
    model.add_argument("--no-tokens", action="store_true", help="Skip the token lengths (no tokenizer is loaded).")
    inspect.add_argument("--json", action="store_true", help="Print the full report as JSON instead of the table.")
    inspect.set_defaults(func=_cmd_inspect)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from ..data import TextColumns
    from ..data_report import inspect_data
    from ..data_report_text import render
    from . import quiet_libraries

    quiet_libraries(args.quiet)
    columns = TextColumns(args.text_column, args.text_pair_column, args.label_column)
    tokenizer = None
    if not args.no_tokens:
        from ..modeling import load_tokenizer

        tokenizer = load_tokenizer(args.model)
    report = inspect_data(args.train_file, args.validation_file, args.test_file, columns, tokenizer,
                          args.max_length, tokenizer_name=args.model, progress=not args.quiet)
    print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) if args.json else render(report))
    return 2 if report.errors else 0
