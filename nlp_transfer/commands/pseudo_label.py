"""``nlp-transfer pseudo-label MODEL_DIR TEXTS --output FILE``: the target texts a model is sure of, class-balanced."""

from __future__ import annotations

import argparse
import json
from typing import Any

from . import MODEL_DIR_HELP, add_eval_batch_size, quiet_libraries


def _threshold(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability such as 0.7, got {text!r}") from None


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``pseudo-label`` subcommand."""
    parser = sub.add_parser(
        "pseudo-label", parents=[common], usage="%(prog)s MODEL_DIR TEXTS --output FILE [OPTIONS]",
        help="Self-training: label the target texts a trained model is sure of (class-balanced), for dann's L_tgt.",
        description="Run a trained classifier over unlabelled target texts and write those it predicts with "
        "probability >= --threshold, with the predicted label: the same number for every class (the most confident "
        "of each), since a model from another domain is sure of one class far more often. Train on them as labelled "
        "target rows: nlp-transfer train SOURCE.csv --strategy dann --target-file FILE --adversarial-weight 0. "
        "Nothing is written when some class has no confident text.",
    )
    data, output = (parser.add_argument_group(title) for title in ("data", "output"))
    data.add_argument("model_dir", metavar="MODEL_DIR", help=MODEL_DIR_HELP)
    data.add_argument("text_file", metavar="TEXTS", help="CSV of target-domain texts (labels, if any, are ignored).")
    data.add_argument("--text-column", metavar="COLUMN", help="Column holding the text (default: the one the model "
                      "was trained with).")
    data.add_argument("--threshold", type=_threshold, default=0.7, metavar="P",
                      help="Least probability of a kept text's predicted label, in [0.5, 1) (default: 0.7).")
    add_eval_batch_size(data)
    output.add_argument("--output", required=True, metavar="FILE",
                        help="Required: the CSV to write (the text column and --label-column); written whole or not at all.")
    output.add_argument("--label-column", default="label", metavar="COLUMN",
                        help="Name of the output's label column (default: label).")
    output.add_argument("--overwrite", action="store_true", help="Replace an existing --output file.")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..pseudo_label import pseudo_label

    quiet_libraries(args.quiet)
    summary = pseudo_label(args.model_dir, args.text_file, args.output, threshold=args.threshold,
                           text_column=args.text_column, label_column=args.label_column,
                           batch_size=args.eval_batch_size, overwrite=args.overwrite, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0
