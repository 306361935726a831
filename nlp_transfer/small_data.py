"""The small-data policy: what ``train`` does when there are few labelled rows, or few optimizer steps.

With fewer than :data:`SMALL_ROWS_PER_CLASS` training rows per class on average (classification):

- **no validation split**: a ``--validation-split`` of such a set holds out a handful of rows per
  class, whose score moves by a whole class-share with one row and cannot tell epochs apart; it
  would also take those rows from training, where every example counts. Without a
  ``--validation-file`` the run trains on every row for a fixed budget and keeps the last epoch
  (``metrics.json`` has no validation scores; ``training_summary.json`` says why);
- **a suggestion**: the ``contrastive`` strategy (pair-tuned encoder, fitted head) is the one made
  for few rows per class; other strategies log a one-line hint.

At any size (classification or regression):

- **enough optimizer steps**: each epoch passes over the rows as many times as needed for at
  least :data:`MIN_STEPS` optimizer steps in the run, whatever the batch size (a 40-row set at
  batch size 32 would otherwise train 6 steps in 3 epochs, a 115-row one 12). A set with
  ``MIN_STEPS`` steps or more trains as usual.

``--small-data off`` turns the policy off (the split and the plain epochs come back).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

from .errors import UserInputError

logger = logging.getLogger(__name__)

SMALL_ROWS_PER_CLASS = 50  # below this average, a 10% split holds out fewer than 5 rows per class
MIN_STEPS = 100  # optimizer steps a small-data run takes at least (without the contrastive strategy)
SMALL_DATA_CHOICES = ("auto", "off")


@dataclass
class SmallData:
    """The policy's decision for one run (recorded as ``small_data`` in ``training_summary.json``)."""

    rows: int
    classes: Optional[int]  # None for a regression target
    rows_per_class: Optional[float]
    few_rows: bool  # fewer than SMALL_ROWS_PER_CLASS per class: no validation split, the contrastive hint
    validation: str = ""  # what replaced the validation split, or "" when the run has its validation data
    passes_per_epoch: int = 1  # filled in by the strategy's loader (see :func:`passes_per_epoch`)
    min_steps: int = MIN_STEPS

    @property
    def applied(self) -> bool:
        """Whether the policy changed anything in this run (recorded in the summary and the card only then)."""
        return self.few_rows or self.passes_per_epoch > 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return asdict(self)


def check_small_data_setting(config: Any) -> None:
    """Refuse an unknown ``--small-data`` value (from ``TrainConfig.__post_init__``)."""
    if config.small_data not in SMALL_DATA_CHOICES:
        raise UserInputError(f"small_data {config.small_data!r} is unknown; choose one of: {', '.join(SMALL_DATA_CHOICES)}.")


def small_data_plan(config: Any, rows: int, classes: Optional[int]) -> Optional[SmallData]:
    """The policy for a training set of ``rows`` rows and ``classes`` classes (None: regression); None when off.

    Logs what it does instead of the usual and the contrastive suggestion. The step floor is decided
    later, by :func:`passes_per_epoch`, when the strategy builds its loader.

    Raises:
        UserInputError: early stopping asked for where there is no validation data to stop on.
    """
    if config.small_data == "off":
        return None
    per_class = rows / max(1, classes) if classes is not None else None
    plan = SmallData(rows, classes, round(per_class, 2) if per_class is not None else None,
                     per_class is not None and per_class < SMALL_ROWS_PER_CLASS)
    if not plan.few_rows:
        return plan
    if config.validation_file is None:
        # A patience the strategy filled in (feature extraction: 5) has nothing to stop on here and never
        # triggers; only one the user asked for is refused.
        if config.early_stopping_patience is not None and "early_stopping_patience" not in getattr(
                config, "strategy_defaults_filled", ()):
            raise UserInputError(
                f"--early-stopping-patience needs validation data, but the {rows} training rows ({per_class:.1f} per "
                f"class) are too few to hold out a split (small-data policy); pass --validation-file, or drop "
                "--early-stopping-patience, or pass --small-data off to hold out --validation-split anyway."
            )
        plan.validation = (f"none: {rows} rows ({per_class:.1f} per class) are too few for a validation split "
                           f"(fewer than {SMALL_ROWS_PER_CLASS} per class); all rows train, the last epoch is kept")
        logger.warning("small-data policy: %d training rows for %d classes (%.1f per class) are too few to hold out "
                       "a validation split that could pick an epoch; training on all of them for a fixed budget and "
                       "keeping the last epoch. Pass --validation-file to select on held-out data, or --small-data "
                       "off to split anyway.", rows, classes, per_class)
    if config.strategy != "contrastive":
        logger.warning("small-data policy: with %.1f rows per class, --strategy contrastive (a pair-tuned encoder and "
                       "a fitted head, as SetFit) usually classifies much better than --strategy %s.", per_class,
                       config.strategy)
    return plan


def passes_per_epoch(config: Any, rows: int, plan: Optional[SmallData], processes: int = 1) -> int:
    """Passes over the training rows per epoch: enough for :data:`MIN_STEPS` optimizer steps in the run.

    Args:
        config: the run's settings (batch size per process, accumulation, epochs).
        rows: training rows.
        plan: the run's small-data decision (None, with ``--small-data off``: one pass, as usual).
        processes: training processes; each takes one batch of its own per step, so N of them take
            1/N of the steps of one over the same rows.
    """
    if plan is None:
        return 1

    def steps(passes: int) -> int:
        batches = math.ceil(math.ceil(passes * rows / config.batch_size) / processes)
        return config.epochs * math.ceil(batches / config.gradient_accumulation_steps)

    passes = 1
    while steps(passes) < MIN_STEPS:
        passes += 1
    plan.passes_per_epoch, plan.min_steps = passes, MIN_STEPS
    if passes > 1:
        logger.warning("small-data policy: %d passes over the %d training rows per epoch, so the run takes at least "
                       "%d optimizer steps at --batch-size %d%s (one pass per epoch would take %d); --small-data off "
                       "trains one pass", passes, rows, MIN_STEPS, config.batch_size,
                       f" in {processes} processes" if processes > 1 else "", steps(1))
    return passes


def fewshot_card_lines(summary: dict[str, Any]) -> list[str]:
    """The model card's few-shot lines: the small-data decision, the contrastive pairs and the last head fit."""
    lines = []
    small = summary.get("small_data")
    if small and small.get("few_rows", True):  # summaries written before the step floor applied at any size
        lines.append(f"{small['rows']} training rows for {small['classes']} classes ({small['rows_per_class']:g} per "
                     f"class): the small-data policy applied (fewer than {SMALL_ROWS_PER_CLASS} per class).")
    if small:
        if small.get("validation"):
            lines.append(f"Validation: {small['validation']}.")
        if small.get("passes_per_epoch", 1) > 1:
            lines.append(f"{small['passes_per_epoch']} passes over the rows per epoch, for at least "
                         f"{small['min_steps']} optimizer steps.")
    pairs = summary.get("pairs")
    if pairs:
        lines.append(f"Contrastive pairs: {pairs['pairs_per_epoch']} per epoch, {pairs['total_pairs']} in all "
                     f"({pairs['source']}), half of one class and half of two classes, label-balanced, drawn afresh "
                     "each epoch from the seed.")
    fits = [e["strategy"]["head_fit"] for e in summary.get("history", []) if "head_fit" in (e.get("strategy") or {})
            and "solver" not in e["strategy"]["head_fit"]]  # feature extraction's fit has its own card line
    if fits:
        last = fits[-1]
        lines.append(f"Head: logistic regression on the tuned encoder's pooled vectors of the {last['rows']} training "
                     f"rows, L-BFGS {'converged' if last['converged'] else 'stopped unconverged'} after "
                     f"{last['iterations']} iterations (training accuracy {last['train_accuracy']:.4f}).")
    return lines

