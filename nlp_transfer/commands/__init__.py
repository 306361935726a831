"""Subcommands of ``nlp-transfer`` beyond the core train/evaluate/predict/push/card/example-data.

Each capability that brings a command adds one module here with ``register(sub, common)``, which
adds its subparser (``parents=[common]`` for ``-q``) and sets ``func`` to a function taking the
parsed arguments and returning the exit code, and names the module in :data:`COMMAND_MODULES`.
A module imports only the standard library at the top (``--help`` must stay instant): torch,
transformers and the rest are imported inside ``func``. :class:`~nlp_transfer.errors.UserInputError`
raised by ``func`` becomes one ``error:`` line and exit 2 (in ``cli.main``).

The helpers below are shared with the core commands so an option means the same everywhere.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..options import PositiveInt, resume_command, with_default

__all__ = ["COMMAND_MODULES", "MODEL_DIR_HELP", "TOKEN_HELP", "add_backend", "add_columns", "add_eval_batch_size",
           "quiet_libraries", "report_interruption"]

# Module names under nlp_transfer/commands/, in the order their commands appear in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "adapt_lm", "pseudo_label",  # domain adaptation: masked-LM pretraining, self-training (issue 15)
    "inspect", "report",  # know your data and your run (issue 20)
    "export", "serve",  # deploy (issue 21)
)

TOKEN_HELP = "Hugging Face token with write access; none means HF_TOKEN, else the `hf auth login` login. Never saved."
MODEL_DIR_HELP = "Folder written by nlp-transfer train (or a Hub id)."
TRAINED_COLUMN = "(default: the one the model was trained with)"


def quiet_libraries(quiet: bool) -> None:
    """Silence transformers' load reports; under ``-q`` also every progress bar of transformers
    ("Writing model shards"), huggingface_hub and datasets. Called by the commands that load
    these libraries anyway, so ``--help`` never imports them."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    if quiet:
        transformers.logging.disable_progress_bar()  # also turns off huggingface_hub's bars
        datasets.disable_progress_bars()


def add_columns(section: Any, label: bool) -> None:
    """The column options of evaluate/predict: the same names and meaning as train's."""
    section.add_argument("--text-column", metavar="COLUMN", help=f"Column holding the text {TRAINED_COLUMN}.")
    section.add_argument("--text-pair-column", metavar="COLUMN", help=f"Column with the second text {TRAINED_COLUMN}.")
    if label:
        section.add_argument("--label-column", metavar="COLUMN", help=f"Column holding the label {TRAINED_COLUMN}.")


def add_eval_batch_size(section: Any) -> None:
    """``--eval-batch-size N`` as in train; ``--batch-size`` is its old, unlisted spelling here."""
    section.add_argument("--eval-batch-size", type=PositiveInt("--eval-batch-size"), default=64, metavar="N",
                         help=with_default("Rows per forward pass.", 64))
    section.add_argument("--batch-size", dest="eval_batch_size", type=PositiveInt("--batch-size"),
                         default=argparse.SUPPRESS, help=argparse.SUPPRESS)


# --- deploy (issue 21) ---
def add_backend(section: Any) -> None:
    """``--backend pytorch|onnx`` of evaluate/predict/serve: which runtime scores the model folder."""
    section.add_argument("--backend", choices=["pytorch", "onnx"],
                         help="Run the model with PyTorch or with ONNX Runtime on the CPU (a folder written by "
                         "nlp-transfer export --format onnx). Default: onnx for a folder holding only model.onnx.")


# --- checkpoints of train and adapt-lm (issue 15) ---
def report_interruption(stop: Any, args: argparse.Namespace) -> None:
    """Print one line (main process): where training stopped and the exact command that continues it (train, adapt-lm).

    Args:
        stop: the ``checkpoint.TrainingInterrupted`` raised by the run.
        args: the parsed arguments (``command_line``, ``resume``, and ``token`` where the command has one).
    """
    import signal

    from accelerate import PartialState

    state = PartialState()
    if not state.is_main_process:
        return
    if stop.checkpoint is None:
        print(f"interrupted: {stop}", file=sys.stderr)
        return
    how = resume_command(args.command_line, args.resume)
    if state.num_processes > 1:
        how = f"the same launcher with {state.num_processes} processes running {how}"
    if getattr(args, "token", None):
        how += " (with --token again: it is never recorded)"
    print(f"interrupted: stopped by {signal.Signals(stop.signum).name} after writing checkpoint "
          f"{str(stop.checkpoint)!r}; resume with: {how}", file=sys.stderr)
