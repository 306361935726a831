"""Transfer strategies: which weights of the pretrained encoder train, and at what learning rate.

The model is seen as layer groups from the bottom up — embeddings, encoder layer 0 … N-1, and the
task layers (pooler, classifier) on top (:mod:`nlp_transfer.layers`) — and each strategy is a
:class:`Strategy` subclass making a statement about those groups:

- :class:`Finetune`: every group trains.
- :class:`FeatureExtraction`: only the task layers train, on encoder outputs cached once
  (:mod:`nlp_transfer.features`).
- :class:`Freeze`: the embeddings and the bottom K layers are frozen. Their parameters do not
  require gradients and the token ids never do, so autograd records nothing below layer K: the
  frozen bottom runs without a graph and backward stops at the first trained layer.
- :class:`GradualUnfreeze` (ULMFiT): epoch 0 trains the task layers, each later epoch unfreezes
  the next group down.
- :class:`Lora`: low-rank adapters on the attention projections (through ``peft``) plus the task
  layers; merged into the weights before saving, so the folder is a plain model.
- :class:`Contrastive` (few labelled rows, SetFit's recipe): the encoder tuned on sentence pairs
  through the mean-pooling layer, then the head fit on its vectors each epoch
  (:mod:`nlp_transfer.pairs`, :mod:`nlp_transfer.contrastive`).

Each strategy validates its own settings (:meth:`Strategy.check_config`, called when a
``TrainConfig`` is built), applies itself, says whether it supports several processes, adjusts
the model per epoch and exports the plain model that is saved. This module imports no torch at
import time, so building a config stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .domain_settings import DANN_DESCRIPTION, DANN_OPTIONS, check_dann_config
from .errors import UserInputError
from .feature_settings import HEAD_SOLVERS, check_head_solver  # noqa: F401  (HEAD_SOLVERS re-exported)
from .layers import encoder_of, layer_groups, set_trainable
from .strategy_base import Strategy, TrainConfig, TrainingData, require_single_label  # noqa: F401  (re-exported)

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

class Finetune(Strategy):
    name = "finetune"
    description = "full fine-tuning: every weight of the encoder and the head trained"
    trains_every_embedding_row = True


class FeatureExtraction(Strategy):
    name = "feature-extraction"
    description = "feature extraction: the encoder frozen, only the classification head trained"
    options = ("feature_cache_dir", "head_solver")
    runs_encoder_in_training = False
    accepts_layer_lr_decay = False
    # With --head-solver adamw: epochs on cached vectors cost milliseconds, so the head trains to convergence at a
    # rate ten times the fine-tuning one, with early stopping on the validation score. The default solver for
    # single-label data, lbfgs, fits the head in one pass instead (scripts/bench_strategies.py compares both with a
    # logistic regression on the same vectors).
    defaults = {"epochs": 100, "learning_rate": 1e-3, "warmup_ratio": 0.0, "early_stopping_patience": 5}

    @classmethod
    def check_config(cls, config: "TrainConfig") -> None:
        check_head_solver(config)

    def check_model(self, model: "nn.Module") -> None:
        if self.config.head_solver == "lbfgs":
            from .linear_head import head_layers

            head_layers(model, self.name)

    def apply(self, model: "nn.Module") -> "nn.Module":
        groups = layer_groups(model)
        set_trainable(groups.embeddings, False)
        for layer in groups.layers:
            set_trainable(layer, False)
        return model

    def export(self, model: "nn.Module") -> "nn.Module":
        return getattr(model, "classifier_model", model)  # the FeatureHead wraps the whole classifier

    def training_data(self, model: "nn.Module", data: Any, tokenizer: Any, accelerator: Any) -> "TrainingData":
        """The head on encoder outputs computed once and cached (:mod:`nlp_transfer.features`)."""
        from .features import feature_loaders

        with accelerator.main_process_first():
            features = feature_loaders(model, data, tokenizer, self.config, accelerator.device,
                                       accelerator.num_processes)
        self._fit_rows = (features.train, features.validation)  # what an L-BFGS fit reads at the epoch's end
        return TrainingData(features.head, features.train_loader, features.val_loader,
                            {"feature_cache": vars(features.stats)})

    def end_of_epoch(self, model: "nn.Module", accelerator: Any) -> dict[str, Any]:
        """With ``--head-solver lbfgs``: fit the head on the cached vectors (:func:`nlp_transfer.linear_head.fit_on_features`)."""
        if self.config.head_solver != "lbfgs":
            return {}
        from .features import fit_head_on_cache

        return {"head_fit": fit_head_on_cache(model, *self._fit_rows, self.config, accelerator)}


class Freeze(Strategy):
    name = "freeze"
    description = "partial freezing: embeddings and the bottom encoder layers frozen, the rest trained"
    options = ("freeze_layers",)

    @classmethod
    def check_config(cls, config: "TrainConfig") -> None:
        if config.freeze_layers is None:
            raise UserInputError(
                "--strategy freeze needs --freeze-layers K (encoder layers frozen from the bottom, e.g. 4)."
            )
        if isinstance(config.freeze_layers, bool) or not isinstance(config.freeze_layers, int) or config.freeze_layers < 0:
            raise UserInputError(f"--freeze-layers must be 0 or more; got {config.freeze_layers}.")

    def check_model(self, model: "nn.Module") -> None:
        depth = len(layer_groups(model).layers)  # a mean-pooling layer is not one of them
        if self.config.freeze_layers > depth:
            raise UserInputError(
                f"--freeze-layers {self.config.freeze_layers} is more than the {depth} encoder layers of model "
                f"{self.config.model!r}; pass --freeze-layers 0 to {depth} ({depth} freezes the whole encoder; "
                "--strategy feature-extraction does that faster, with cached features)."
            )

    def apply(self, model: "nn.Module") -> "nn.Module":
        groups = layer_groups(model)
        set_trainable(groups.embeddings, False)
        for layer in groups.layers[: self.config.freeze_layers]:
            set_trainable(layer, False)
        return model


class GradualUnfreeze(Strategy):
    name = "gradual-unfreeze"
    description = "gradual unfreezing: encoder layers unfrozen one group per epoch from the top"
    # DDP fixes the set of synchronised parameters when it wraps the model; layers unfrozen later
    # would train apart on each process.
    supports_multiple_processes = False

    def apply(self, model: "nn.Module") -> "nn.Module":
        self.on_epoch(model, 0)
        return model

    def on_epoch(self, model: "nn.Module", epoch: int) -> None:
        groups = list(layer_groups(model).bottom_up())
        for depth, group in enumerate(reversed(groups)):
            set_trainable(group, depth <= epoch)

    def trainable_parameters(self, model: "nn.Module") -> list[Any]:
        fixed = {id(p) for p in layer_groups(model).fixed}  # the mean-pooling layer is never unfrozen
        return [p for p in model.parameters() if id(p) not in fixed]  # those trained now and those unfrozen later


class Lora(Strategy):
    name = "lora"
    description = "LoRA: low-rank adapters trained and merged into the weights"
    options = ("lora_r", "lora_alpha", "lora_dropout")

    @classmethod
    def check_config(cls, config: "TrainConfig") -> None:
        config.lora_r = 8 if config.lora_r is None else config.lora_r
        config.lora_alpha = float(2 * config.lora_r) if config.lora_alpha is None else float(config.lora_alpha)
        config.lora_dropout = 0.1 if config.lora_dropout is None else config.lora_dropout
        if isinstance(config.lora_r, bool) or not isinstance(config.lora_r, int) or config.lora_r < 1:
            raise UserInputError(f"--lora-r must be a positive integer; got {config.lora_r}.")
        if not 0 < config.lora_alpha < float("inf"):
            raise UserInputError(f"--lora-alpha must be > 0; got {config.lora_alpha}.")
        if not 0 <= config.lora_dropout < 1:
            raise UserInputError(f"--lora-dropout must be in [0, 1); got {config.lora_dropout}.")

    def apply(self, model: "nn.Module") -> "nn.Module":
        try:
            from peft import LoraConfig, TaskType, get_peft_model
        except ImportError:
            raise UserInputError(
                "--strategy lora needs the peft package, which is not installed; run: pip install 'nlp-transfer[lora]'"
            ) from None
        # The pooler (when the model has one) is a task layer here as in the other strategies: it trains in full.
        extra = ["pooler"] if getattr(encoder_of(model), "pooler", None) is not None else []
        settings = LoraConfig(
            task_type=TaskType.SEQ_CLS, r=self.config.lora_r, lora_alpha=self.config.lora_alpha,
            lora_dropout=self.config.lora_dropout, modules_to_save=extra or None,
            exclude_modules=_fixed_modules(model) or None,
        )
        try:
            return get_peft_model(model, settings)
        except ValueError as err:  # peft knows the attention module names of common architectures only
            raise UserInputError(
                f"peft cannot place LoRA adapters in model {self.config.model!r} ({str(err).splitlines()[0]}); "
                "use another --strategy."
            ) from None

    def export(self, model: "nn.Module") -> "nn.Module":
        return model.merge_and_unload()


class Contrastive(Strategy):
    name = "contrastive"
    description = ("contrastive few-shot (SetFit's recipe): the encoder tuned on sentence pairs with a cosine-similarity "
                   "loss on mean-pooled embeddings, then the classification head fit on the frozen encoder's vectors")
    options = ("pairs",)
    trains_every_embedding_row = True

    @classmethod
    def check_config(cls, config: "TrainConfig") -> None:
        require_single_label(config, "contrastive", "its pairs are of the same class or of two classes")
        pairs = config.pairs
        if pairs is not None and (isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 2):
            raise UserInputError(f"--pairs must be an integer of at least 2 (pairs per epoch); got {pairs!r}.")
        if config.pooling == "cls":
            raise UserInputError(
                "--strategy contrastive tunes mean-pooled sentence embeddings, so it needs --pooling mean; "
                "drop --pooling cls."
            )
        config.pooling = "mean"  # whatever the model's default: the pair loss is defined on the mean

    def check_model(self, model: "nn.Module") -> None:
        from .linear_head import head_layers

        head_layers(model, self.name)

    def apply(self, model: "nn.Module") -> "nn.Module":
        from .contrastive import freeze_head
        from .pooling import add_mean_pooling

        add_mean_pooling(model, self.config.model)
        freeze_head(model)
        return model

    def make_objective(self, task: Any) -> Any:
        from .contrastive import PairSimilarity

        return PairSimilarity(task)

    def training_data(self, model: "nn.Module", data: Any, tokenizer: Any, accelerator: Any) -> "TrainingData":
        """Batches of sentence pairs for the steps; every training row once for the head fit."""
        from .pairs import MIN_PAIR_STEPS, pair_loader, pairs_per_epoch
        from .sampler import eval_loader

        plan = pairs_per_epoch(self.config, data.train["labels"], len(data.labels))
        if data.small_data is not None:
            data.small_data.min_steps = MIN_PAIR_STEPS  # the pair count, not repeated passes, sets the budget
        self._head_rows = eval_loader(data.train, tokenizer, self.config.eval_batch_size)
        val_loader = eval_loader(data.validation, tokenizer, self.config.eval_batch_size) if data.validation is not None else None
        loader = pair_loader(data.train, plan["pairs_per_epoch"], self.config.batch_size, self.config.seed, tokenizer)
        return TrainingData(model, loader, val_loader, {"pairs": plan})

    def end_of_epoch(self, model: "nn.Module", accelerator: Any) -> dict[str, Any]:
        """Phase 2: fit the head on the frozen, pair-tuned encoder (:func:`nlp_transfer.contrastive.fit_head`)."""
        from .contrastive import fit_head
        from .linear_head import head_fit_record

        return {"head_fit": head_fit_record(fit_head(model, self._head_rows, accelerator.device, accelerator))}


def _fixed_modules(model: "nn.Module") -> list[str]:
    """Names of the mean-pooling layer's submodules (no adapters go there: it never trains)."""
    from .pooling import mean_pooling_layer

    layer = mean_pooling_layer(model)
    if layer is None:
        return []
    inside = {id(m) for m in layer.modules()}
    return [name for name, module in model.named_modules() if id(module) in inside and name]


class Dann(Strategy):
    """Domain-adversarial fine-tuning: options in :mod:`.domain_settings`, the objective in :mod:`.domain`."""
    name, description, options, trains_every_embedding_row = "dann", DANN_DESCRIPTION, DANN_OPTIONS, True

    @classmethod
    def check_config(cls, config: "TrainConfig") -> None:
        require_single_label(config, "dann", "its target labels and pseudo-labels are classes")
        check_dann_config(config)

    def check_model(self, model: "nn.Module") -> None:
        from .domain import feature_size

        self.feature_size = feature_size(model, self.config.model)

    def input_files(self) -> dict[str, str]:
        return {"target_file": self.config.target_file}

    def make_objective(self, task: Any) -> Any:
        from .domain import DannObjective

        return DannObjective(task, self.config, self.feature_size)


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Finetune, FeatureExtraction, Freeze, GradualUnfreeze, Lora, Contrastive, Dann)
}


def strategy_class(name: str) -> type[Strategy]:
    """The strategy called ``name``, or one sentence listing the choices."""
    if name not in STRATEGIES:
        raise UserInputError(f"strategy {name!r} is unknown; choose one of: {', '.join(STRATEGIES)}.")
    return STRATEGIES[name]


def fill_strategy_defaults(config: "TrainConfig") -> None:
    """Give the settings left at None the defaults of ``config.strategy`` (:attr:`Strategy.defaults`), in place."""
    filled = set()
    for name, value in {**Strategy.defaults, **strategy_class(config.strategy).defaults}.items():
        if getattr(config, name) is None:
            setattr(config, name, value)
            filled.add(name)
    config.__dict__["strategy_defaults_filled"] = filled  # not a field: never saved, read by the small-data policy


def check_strategy_settings(config: "TrainConfig") -> None:
    """Refuse settings that belong to another strategy; let the chosen one check and fill in its own."""
    cls = strategy_class(config.strategy)
    owners: dict[str, list[str]] = {}
    for other in STRATEGIES.values():
        for option in other.options:
            owners.setdefault(option, []).append(other.name)
    owners["layer_lr_decay"] = [s.name for s in STRATEGIES.values() if s.accepts_layer_lr_decay]
    for option, strategies in owners.items():
        if getattr(config, option) is not None and config.strategy not in strategies:
            flag = "--" + option.replace("_", "-")
            raise UserInputError(
                f"{flag} does not apply to --strategy {config.strategy}; it is used by --strategy "
                f"{' / '.join(strategies)}. Drop {flag} or change the strategy."
            )
    if config.layer_lr_decay is not None and not 0 < config.layer_lr_decay <= 1:
        raise UserInputError(f"--layer-lr-decay must be in (0, 1], e.g. 0.8; got {config.layer_lr_decay}.")
    cls.check_config(config)


def strategy_for(config: "TrainConfig") -> Strategy:
    """The strategy object of a run."""
    return strategy_class(config.strategy)(config)


def apply_strategy(model: "nn.Module", config: "TrainConfig") -> "nn.Module":
    """Check the model against ``config.strategy`` and apply the strategy; return the model to train."""
    strategy = strategy_for(config)
    strategy.check_model(model)
    return strategy.apply(model)


def unfreeze_for_epoch(model: "nn.Module", config: "TrainConfig", epoch: int) -> None:
    """Let ``config.strategy`` adjust what trains at the start of ``epoch``."""
    strategy_for(config).on_epoch(model, epoch)


def param_groups(model: "nn.Module", config: "TrainConfig") -> list[dict[str, Any]]:
    """AdamW parameter groups of a run (see :func:`nlp_transfer.layers.decay_groups`)."""
    from .layers import decay_groups

    params = strategy_for(config).trainable_parameters(model)
    depths = layer_groups(model).depths() if config.layer_lr_decay is not None else None
    return decay_groups(params, config.learning_rate, config.weight_decay, config.layer_lr_decay, depths)


def parameter_counts(model: "nn.Module") -> dict[str, int]:
    """Trainable and total parameter counts (trainable: ``requires_grad`` at the end of training)."""
    params = {id(p): p for p in model.parameters()}.values()
    return {
        "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
        "total_parameters": sum(p.numel() for p in params),
    }
