"""Settings of ``nlp-transfer adapt-lm`` (domain-adaptive masked-LM pretraining), validated at construction.

Like :class:`~nlp_transfer.config.TrainConfig`, every field carries its help text and help group,
and the command's options are generated from the fields. This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from .config_checks import check_checkpoint_settings, checkpoint_options, option
from .errors import UserInputError, check_positive_int
from .hub_ids import DEFAULT_MODEL


_opt = option


@dataclass
class AdaptLmConfig:
    """Everything that defines an ``adapt-lm`` run; saved as ``adapt_lm_config.json`` in the encoder folder."""

    text_file: str = field(metadata={
        "help": "CSV of target-domain texts (labels, if any, are ignored).", "group": "data", "positional": True,
        "metavar": "TEXT_FILE",
    })
    text_column: str = _opt("text", "Column holding the text.", "data", metavar="COLUMN")
    max_length: int = _opt(128, "Longest input in tokens; longer texts are truncated.", "data", metavar="TOKENS")
    max_train_samples: Optional[int] = _opt(
        None, "Use a seeded random sample of N texts (before the held-out split). Default: every text.", "data",
        metavar="N",
    )
    validation_split: float = _opt(
        0.1, "Fraction of the texts (at most 2000) held out to measure perplexity before and after.", "data",
        metavar="FRACTION",
    )
    model: str = _opt(DEFAULT_MODEL, "Encoder to adapt: a Hub id or a local folder.", "model", metavar="NAME_OR_PATH")
    new_mlm_head: bool = _opt(
        False, "Accept an encoder saved without its masked-LM head (e.g. sentence-transformers models): a fresh "
        "head is first trained alone for --head-warmup-steps with the encoder frozen, and the 'before' perplexity is "
        "measured after that, so it scores the unadapted encoder.", "model",
    )
    head_warmup_steps: int = _opt(
        300, "With --new-mlm-head: optimizer steps that train the fresh head alone (encoder frozen).", "model",
        metavar="N",
    )
    mlm_probability: float = _opt(0.15, "Fraction of tokens masked for prediction.", "optimisation",
                                  metavar="FRACTION")
    whole_word_masking: bool = _opt(False, "Mask every piece of a word together instead of single word pieces.",
                                    "optimisation")
    epochs: int = _opt(1, "Passes over the texts.", "optimisation", metavar="N")
    batch_size: int = _opt(32, "Texts per optimizer step.", "optimisation", metavar="N")
    learning_rate: float = _opt(5e-5, "Peak learning rate of AdamW (linear warm-up over 6 percent of the steps, "
                                "then linear decay).", "optimisation", metavar="RATE")
    weight_decay: float = _opt(0.01, "AdamW weight decay (not on biases and LayerNorm).", "optimisation",
                               metavar="RATE")
    seed: int = _opt(42, "Seed of the held-out split, the text order and the masks.", "optimisation", metavar="N")
    output_dir: str = _opt("runs/adapted-lm", "Folder that receives the adapted encoder (pass it to train "
                           "--model).", "output", metavar="DIR")
    overwrite: bool = _opt(False, "Replace an output folder that already holds a model.", "output")
    checkpoint_every: Optional[int]
    keep_checkpoints: int
    resume: Optional[str]
    checkpoint_every, keep_checkpoints, resume = checkpoint_options("texts")

    # What the shared training loop (nlp_transfer.loop.fit) reads beyond the fields, fixed for adapt-lm:
    # one batch per step, gradients clipped to norm 1, every epoch runs, no classification validation.
    gradient_accumulation_steps: ClassVar[int] = 1
    max_grad_norm: ClassVar[float] = 1.0
    early_stopping_patience: ClassVar[Optional[int]] = None
    metric_for_best_model: ClassVar[str] = "perplexity"
    window_pooling: ClassVar[Optional[str]] = None

    def __post_init__(self) -> None:
        for name in ("max_length", "epochs", "batch_size"):
            check_positive_int(getattr(self, name), f"--{name.replace('_', '-')}")
        if self.max_train_samples is not None:
            check_positive_int(self.max_train_samples, "--max-train-samples")
        steps = self.head_warmup_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise UserInputError(f"--head-warmup-steps must be 0 or more (an integer); got {steps!r}.")
        for name, low, high, low_open in (("mlm_probability", 0, 1, True), ("validation_split", 0, 1, True),
                                          ("learning_rate", 0, 1, True), ("weight_decay", 0, 1, False)):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not (ok and (value > low if low_open else value >= low) and value < high):
                raise UserInputError(f"--{name.replace('_', '-')} must be in {'(' if low_open else '['}{low}, {high}); "
                                     f"got {value!r}.")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**32:
            raise UserInputError(f"--seed must be an integer from 0 to {2**32 - 1}; got {self.seed!r}.")
        check_checkpoint_settings(self)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values."""
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the settings as indented JSON (each checkpoint holds them: a resume with others is refused)."""
        from .artifacts import write_json

        write_json(path, self.to_dict())
