"""Transfer strategies: which weights of the pretrained encoder train, and at what learning rate.

The model is seen as layer groups from the bottom up — embeddings, encoder layer 0 … N-1, and the
task layers (pooler, classifier) on top — and each strategy is a statement about those groups:

- ``finetune``: every group trains.
- ``feature-extraction``: only the task layers train, on encoder outputs cached once
  (:mod:`nlp_transfer.features`).
- ``freeze``: the embeddings and the bottom K layers are frozen. Their parameters do not require
  gradients and the token ids never do, so autograd records nothing below layer K: the frozen
  bottom runs without a graph and backward stops at the first trained layer.
- ``gradual-unfreeze`` (ULMFiT): epoch 0 trains the task layers, each later epoch unfreezes the
  next group down.
- ``lora``: low-rank adapters on the attention projections (through ``peft``) plus the task
  layers; merged into the weights before saving, so the folder is a plain model.

``layer_lr_decay`` F gives a parameter at depth d from the top (task layers 0, top layer 1, …,
embeddings N+1) the learning rate ``lr × F**d``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from torch import nn

from .config import TrainConfig
from .errors import UserInputError


@dataclass
class LayerGroups:
    """The parameters of a classifier split into groups from the bottom up."""

    embeddings: list[nn.Parameter]
    layers: list[list[nn.Parameter]]
    head: list[nn.Parameter]

    def bottom_up(self) -> Iterator[list[nn.Parameter]]:
        """Embeddings, then each encoder layer, then the task layers."""
        yield self.embeddings
        yield from self.layers
        yield self.head

    def depths(self) -> dict[int, int]:
        """``id(param)`` → depth from the top (task layers 0, top encoder layer 1, …, embeddings N+1)."""
        groups = list(self.bottom_up())
        top = len(groups) - 1
        return {id(p): top - i for i, group in enumerate(groups) for p in group}


def _base_model(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def encoder_of(model: nn.Module) -> nn.Module:
    """The encoder (``model.bert`` for BERT) of a ``*ForSequenceClassification`` model."""
    return _base_model(model).base_model


def _layer_list(encoder: nn.Module, depth: int) -> nn.ModuleList:
    for module in encoder.modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth:
            return module
    raise UserInputError(
        f"cannot find the {depth} encoder layers of this {type(encoder).__name__}; the strategies other than "
        "finetune support BERT-style encoders (embeddings + a list of layers). Use --strategy finetune."
    )


def num_layers(model: nn.Module) -> int:
    """How many transformer layers the encoder has."""
    return int(_base_model(model).config.num_hidden_layers)


def layer_groups(model: nn.Module) -> LayerGroups:
    """Split every parameter of ``model`` into embeddings, encoder layers and task layers."""
    encoder = encoder_of(model)
    embeddings = getattr(encoder, "embeddings", None)
    if embeddings is None:
        raise UserInputError(
            f"{type(encoder).__name__} has no 'embeddings' module; the strategies other than finetune support "
            "BERT-style encoders. Use --strategy finetune."
        )
    layers = _layer_list(encoder, num_layers(model))
    emb = list(embeddings.parameters())
    per_layer = [list(layer.parameters()) for layer in layers]
    placed = {id(p) for p in emb} | {id(p) for group in per_layer for p in group}
    head = [p for p in model.parameters() if id(p) not in placed]
    return LayerGroups(emb, per_layer, head)


def check_depth(config: TrainConfig, model: nn.Module) -> None:
    """Refuse ``--freeze-layers`` beyond the encoder's depth (known only once the model is loaded)."""
    if config.strategy == "freeze":
        depth = num_layers(model)
        if config.freeze_layers > depth:
            raise UserInputError(
                f"--freeze-layers {config.freeze_layers} is more than the {depth} encoder layers of model "
                f"{config.model!r}; pass --freeze-layers 0 to {depth} ({depth} freezes the whole encoder; "
                "--strategy feature-extraction does that faster, with cached features)."
            )


def _set_trainable(params: list[nn.Parameter], trainable: bool) -> None:
    for p in params:
        p.requires_grad_(trainable)


def apply_strategy(model: nn.Module, config: TrainConfig) -> nn.Module:
    """Freeze parameters (or add LoRA adapters) as ``config.strategy`` says; return the model to train.

    Args:
        model: a freshly loaded ``*ForSequenceClassification`` model.
        config: the run's settings.

    Returns:
        The same model with ``requires_grad`` set per strategy, or for ``lora`` a ``peft`` model
        wrapping it. (``feature-extraction`` is wrapped later by :mod:`nlp_transfer.features`.)

    Raises:
        UserInputError: the model's structure does not fit the strategy (too few layers, not BERT-style).
    """
    check_depth(config, model)
    if config.strategy == "finetune":
        return model
    if config.strategy == "lora":
        return _with_lora(model, config)
    groups = layer_groups(model)
    if config.strategy == "feature-extraction":
        _set_trainable(groups.embeddings, False)
        for layer in groups.layers:
            _set_trainable(layer, False)
    elif config.strategy == "freeze":
        _set_trainable(groups.embeddings, False)
        for layer in groups.layers[: config.freeze_layers]:
            _set_trainable(layer, False)
    elif config.strategy == "gradual-unfreeze":
        unfreeze_for_epoch(model, config, 0)
    return model


def unfreeze_for_epoch(model: nn.Module, config: TrainConfig, epoch: int) -> None:
    """ULMFiT schedule: at epoch ``e`` the task layers and the top ``e`` groups train (no-op for other strategies)."""
    if config.strategy != "gradual-unfreeze":
        return
    groups = list(layer_groups(model).bottom_up())
    for depth, group in enumerate(reversed(groups)):
        _set_trainable(group, depth <= epoch)


def trainable_parameters(model: nn.Module, config: TrainConfig) -> list[nn.Parameter]:
    """Parameters the optimizer must hold: those trained now, plus for gradual unfreezing those trained later."""
    if config.strategy == "gradual-unfreeze":
        return list(model.parameters())
    return [p for p in model.parameters() if p.requires_grad]


def param_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW parameter groups: no weight decay on 1-d parameters (biases, LayerNorm), layer-wise LR decay.

    Groups come top first, so ``scheduler.get_last_lr()[0]`` is the peak (task-layer) rate. Each group
    carries its own ``lr``; the warm-up/decay schedule scales every group by the same factor.
    """
    params = trainable_parameters(model, config)
    if config.layer_lr_decay is None:
        depth_of = {id(p): 0 for p in params}
    else:
        depth_of = layer_groups(model).depths()
    buckets: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for p in params:
        buckets.setdefault((depth_of[id(p)], p.ndim < 2), []).append(p)
    decay = config.layer_lr_decay or 1.0
    return [
        {
            "params": buckets[key],
            "lr": config.learning_rate * decay ** key[0],
            "weight_decay": 0.0 if key[1] else config.weight_decay,
        }
        for key in sorted(buckets)
    ]


def _with_lora(model: nn.Module, config: TrainConfig) -> nn.Module:
    try:
        from peft import LoraConfig, TaskType, get_peft_model
    except ImportError:
        raise UserInputError(
            "--strategy lora needs the peft package, which is not installed; run: pip install 'nlp-transfer[lora]'"
        ) from None
    # The pooler (when the model has one) is a task layer here as in the other strategies: it trains in full.
    extra = ["pooler"] if getattr(encoder_of(model), "pooler", None) is not None else []
    lora_config = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=config.lora_r, lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout, modules_to_save=extra or None,
    )
    try:
        return get_peft_model(model, lora_config)
    except ValueError as err:  # peft knows the attention module names of common architectures only
        raise UserInputError(
            f"peft cannot place LoRA adapters in model {config.model!r} ({str(err).splitlines()[0]}); "
            "use another --strategy."
        ) from None


def export_model(model: nn.Module) -> nn.Module:
    """The plain ``*ForSequenceClassification`` model to save: LoRA merged, feature head unwrapped."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return getattr(model, "classifier_model", model)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts (trainable: ``requires_grad`` at the end of training)."""
    params = {id(p): p for p in model.parameters()}.values()
    return {
        "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
        "total_parameters": sum(p.numel() for p in params),
    }
