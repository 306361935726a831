"""Settings of domain-adversarial training (``--strategy dann``), checked when a ``TrainConfig`` is built.

Kept apart from :mod:`nlp_transfer.domain` (which needs torch) so that building a config stays cheap.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from .errors import UserInputError

GRL_SCHEDULES = ("ganin", "constant")
DANN_DESCRIPTION = ("domain-adversarial fine-tuning (DANN): every weight trained, with a domain discriminator on the "
                    "pooled output through gradient reversal (training only, not saved)")
DANN_OPTIONS = ("target_file", "target_text_column", "source_weight", "target_weight", "adversarial_weight",
                "grl_schedule", "discriminator_hidden", "pseudo_label_threshold")
DANN_DEFAULTS: Mapping[str, Any] = {"source_weight": 1.0, "target_weight": 1.0, "adversarial_weight": 0.1,
                                    "grl_schedule": "ganin", "discriminator_hidden": 256}


def check_dann_config(config: Any, defaults: Mapping[str, Any] = DANN_DEFAULTS) -> None:
    """Fill in the defaults of the dann options and refuse values that cannot train.

    Args:
        config: the run's ``TrainConfig`` (changed in place).
        defaults: option name → default, for the options left unset.
    """
    if config.target_file is None:
        raise UserInputError(
            "--strategy dann needs --target-file FILE: a CSV of target-domain texts (labels optional) whose domain "
            "the model should adapt to."
        )
    for name, value in defaults.items():
        if getattr(config, name) is None:
            setattr(config, name, value)
    config.target_text_column = config.target_text_column or config.text_column
    for name in ("source_weight", "target_weight", "adversarial_weight"):
        value = getattr(config, name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
        if not ok:
            flag = "--" + name.replace("_", "-")
            raise UserInputError(f"{flag} must be a finite number of 0 or more (a loss weight); got {value!r}.")
        setattr(config, name, float(value))
    if config.source_weight == 0 and config.target_weight == 0:
        raise UserInputError(
            "--source-weight 0 and --target-weight 0 leave no supervised loss, so the classifier would learn nothing; "
            "keep --source-weight above 0 (default 1)."
        )
    if config.grl_schedule not in GRL_SCHEDULES:
        raise UserInputError(f"--grl-schedule {config.grl_schedule!r} is unknown; choose one of: {', '.join(GRL_SCHEDULES)}.")
    hidden = config.discriminator_hidden
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise UserInputError(f"--discriminator-hidden must be a positive integer (hidden units); got {hidden!r}.")
    threshold = config.pseudo_label_threshold
    if threshold is not None and not (isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
                                      and 0.5 <= threshold < 1):
        raise UserInputError(f"--pseudo-label-threshold must be in [0.5, 1) (a predicted probability, e.g. 0.9); "
                             f"got {threshold!r}.")
