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
from typing import Any

from ..options import PositiveInt, with_default

__all__ = ["COMMAND_MODULES", "MODEL_DIR_HELP", "TOKEN_HELP", "add_backend", "add_columns", "add_eval_batch_size",
           "quiet_libraries"]

# Module names under nlp_transfer/commands/, in the order their commands appear in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "adapt_lm",  # domain-adaptive pretraining (issue 15)
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
