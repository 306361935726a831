"""The :class:`Strategy` interface every transfer strategy implements, and :class:`TrainingData`.

The strategies themselves and their registry are in :mod:`nlp_transfer.strategies`. This module
imports no torch at import time, so building a config stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import UserInputError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

TrainConfig = Any  # nlp_transfer.config.TrainConfig (which imports this module)

class Strategy:
    """What of the pretrained model trains. Subclasses set the class attributes and override hooks.

    Args:
        config: the run's settings (already checked by :meth:`check_config`).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""  # for the model card
    options: ClassVar[tuple[str, ...]] = ()  # TrainConfig fields that belong to this strategy
    supports_multiple_processes: ClassVar[bool] = True
    runs_encoder_in_training: ClassVar[bool] = True  # False: the loop trains on cached encoder outputs
    trains_every_embedding_row: ClassVar[bool] = False  # every word-embedding row trains at every step
    accepts_layer_lr_decay: ClassVar[bool] = True
    # TrainConfig fields whose default depends on the strategy (None in the config means "this default").
    defaults: ClassVar[dict[str, Any]] = {"epochs": 3, "learning_rate": 1e-4, "warmup_ratio": 0.1}

    def __init__(self, config: "TrainConfig"):
        self.config = config

    @classmethod
    def check_config(cls, config: "TrainConfig") -> None:
        """Refuse settings that do not fit this strategy; fill in its defaults (in place)."""

    def check_model(self, model: "nn.Module") -> None:
        """Refuse a model whose structure does not fit (known only once it is loaded)."""

    def apply(self, model: "nn.Module") -> "nn.Module":
        """Freeze parameters (or add adapters); return the model to train."""
        return model

    def on_epoch(self, model: "nn.Module", epoch: int) -> None:
        """Adjust what trains at the start of epoch ``epoch`` (0-based)."""

    def end_of_epoch(self, model: "nn.Module", accelerator: Any) -> dict[str, Any]:
        """Work after an epoch's steps and before its validation (e.g. fitting a head); what it did, for the history."""
        return {}

    def trainable_parameters(self, model: "nn.Module") -> list[Any]:
        """Parameters the optimizer must hold."""
        return [p for p in model.parameters() if p.requires_grad]

    def export(self, model: "nn.Module") -> "nn.Module":
        """The plain ``*ForSequenceClassification`` model to save."""
        return model

    def input_files(self) -> dict[str, str]:
        """Input files beyond the train/validation/test CSVs (setting name → path), fingerprinted for resume."""
        return {}

    def make_objective(self, task: Any) -> Any:
        """What a training step computes under this strategy (plain supervised classification here)."""
        from .objective import Classification

        return Classification(task)

    def training_data(self, model: "nn.Module", data: Any, tokenizer: Any, accelerator: Any) -> "TrainingData":
        """The module the loop trains and its training and validation loaders (token batches here)."""
        from transformers import DataCollatorWithPadding

        from .sampler import eval_loader, model_inputs, training_loader
        from .small_data import passes_per_epoch

        lengths = data.train.with_format("arrow")["length"].to_numpy()
        passes = passes_per_epoch(self.config, data.train.num_rows, data.small_data, accelerator.num_processes)
        train_loader = training_loader(model_inputs(data.train), lengths, self.config.batch_size, self.config.seed,
                                       self.config.group_by_length, DataCollatorWithPadding(tokenizer), passes)
        val_loader = eval_loader(data.validation, tokenizer, self.config.eval_batch_size) \
            if data.validation is not None else None
        return TrainingData(model, train_loader, val_loader)


@dataclass
class TrainingData:
    """What :meth:`Strategy.training_data` returns: the trained module, its loaders, summary entries."""

    model: Any
    train_loader: Any
    val_loader: Any
    summary: dict[str, Any] = field(default_factory=dict)


def require_single_label(config: "TrainConfig", strategy: str, why: str) -> None:
    """Refuse ``--strategy strategy`` for multi-label or regression data, saying ``why`` it needs classes."""
    if getattr(config, "task", "classification") != "classification" or getattr(config, "multi_label", False) \
            or getattr(config, "label_columns", None):
        kind = "regression" if getattr(config, "task", "classification") == "regression" else "multi-label"
        raise UserInputError(
            f"--strategy {strategy} trains single-label classifiers ({why}); it does not support {kind} data. "
            "Use --strategy finetune, feature-extraction, freeze, gradual-unfreeze or lora."
        )
