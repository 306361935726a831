"""Range checks of TrainConfig's numeric settings: finite, within bounds, and plausible.

A typo such as ``1e6`` for ``1e-6`` must stop a run before any work, not train to NaN weights.
"""

from __future__ import annotations

import math
from dataclasses import field
from typing import Any

from .errors import UserInputError, check_positive_int

MAX_SEED = 2**32 - 1  # what numpy and torch seeding accept


def option(default: Any, help: str, group: str, **meta: Any) -> Any:
    """A dataclass field with its CLI help text and help ``group`` (see ``cli.HELP_GROUPS``).

    Optional metadata: ``metavar`` (how the value is shown in ``--help``), ``choices``, and
    ``nargs``/``const`` for an option that may also stand alone.
    """
    return field(default=default, metadata={"help": help, "group": group, **meta})


def checkpoint_options(inputs: str) -> tuple[Any, Any, Any]:
    """The ``checkpoint_every``, ``keep_checkpoints`` and ``resume`` fields train and adapt-lm share.

    Args:
        inputs: what a resume must be given unchanged besides the settings (e.g. "texts").
    """
    return (
        option(None, "Also write a checkpoint every N optimizer steps (one is always written at each epoch end, and "
               "on SIGINT/SIGTERM). Checkpoints live in the unfinished run's .<name>.incomplete/ folder.", "output",
               metavar="N"),
        option(2, "Newest checkpoints kept while the run is unfinished (0: write none). A finished run deletes them "
               "all.", "output", metavar="N"),
        option(None, "Continue an interrupted run: --resume alone takes the newest complete checkpoint of "
               f"--output-dir, --resume PATH a given checkpoint folder. Use the same settings and {inputs} as the "
               "interrupted run.", "output", nargs="?", const="latest", metavar="PATH"),
    )

def _in_range(value: Any, name: str, low: float, high: float, low_open: bool = False, high_open: bool = False,
              hint: str = "") -> None:
    """Refuse a setting that is not a finite number within [low, high] (or open ends)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise UserInputError(f"{name} must be in {bounds} (a finite number); got {value!r}.{hint}")


def check_numbers(config: Any) -> None:
    """Refuse non-finite, out-of-range and implausible numbers before any work."""
    lr = config.learning_rate
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or not 0 < lr <= 1:
        raise UserInputError(
            f"learning_rate must be > 0 and at most 1; got {lr!r}. AdamW on a pretrained encoder wants 1e-5 to "
            "5e-4 (a typo such as 1e6 for 1e-6 would train to NaN)."
        )
    _in_range(config.weight_decay, "weight_decay", 0, 1, hint=" (0.01 is usual)")
    _in_range(config.warmup_ratio, "warmup_ratio", 0, 1, high_open=True)
    _in_range(config.max_grad_norm, "max_grad_norm", 0, 1e6, hint=" (0 turns clipping off)")
    vs = config.validation_split
    if isinstance(vs, bool) or not isinstance(vs, (int, float)) or not 0 < vs < 1:
        raise UserInputError(f"validation_split must be between 0 and 1 (e.g. 0.1); got {vs!r}.")
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or not 0 <= config.seed <= MAX_SEED:
        raise UserInputError(f"seed must be an integer from 0 to {MAX_SEED}; got {config.seed!r}.")


def check_counts(config: Any) -> None:
    """Refuse counts that are not whole numbers in range (epochs, batch sizes, checkpoints...)."""
    for name in ("epochs", "batch_size", "eval_batch_size", "max_length", "gradient_accumulation_steps"):
        check_positive_int(getattr(config, name), name)
    for name in ("max_train_samples", "early_stopping_patience"):
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UserInputError(f"{name} must be at least 1 (an integer); got {value!r}.")
    check_checkpoint_settings(config)


def check_checkpoint_settings(config: Any) -> None:
    """Refuse ``checkpoint_every``/``keep_checkpoints`` values that are not counts, or that contradict each other
    (train and adapt-lm)."""
    every = config.checkpoint_every
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise UserInputError(f"checkpoint_every must be at least 1 (an integer); got {every!r}.")
    keep = config.keep_checkpoints
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise UserInputError(f"keep_checkpoints must be 0 (no checkpoints) or more; got {keep}.")
    if config.checkpoint_every is not None and keep == 0:
        raise UserInputError(
            "--checkpoint-every asks for checkpoints but --keep-checkpoints 0 turns them off; drop one of them."
        )


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
    """Refuse a setting outside its choices, naming them."""
    if value not in choices:
        raise UserInputError(f"{name} {value!r} is unknown; choose one of: {', '.join(choices)}.")


def check_columns(config: Any) -> None:
    """The text, pair and label columns must be three different columns."""
    if config.text_pair_column is not None and config.text_pair_column == config.text_column:
        raise UserInputError(
            f"text_pair_column and text_column are both {config.text_column!r}; the pair column must be a second column."
        )
    if config.label_column in (config.text_column, config.text_pair_column):
        raise UserInputError(f"label_column {config.label_column!r} is also used as a text column.")
