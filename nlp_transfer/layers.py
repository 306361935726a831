"""A sequence classifier seen as layer groups, bottom up: embeddings, encoder layers, task layers.

Strategies freeze and unfreeze these groups, layer-wise learning-rate decay gives each its rate,
and the feature cache hashes the encoder part. A top layer marked fixed
(``FIXED_MARK``; :mod:`nlp_transfer.pooling` marks its mean-pooling layer so) is in none of them: it
is never trained and never decayed, so a strategy that walks the groups cannot unfreeze it and
``--freeze-layers`` counts the real layers. ``layer_lr_decay`` F gives a parameter at depth d
from the top (task layers 0, top layer 1, …, embeddings N+1) the learning rate ``lr × F**d``.
Nothing here imports torch at import time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Optional

from .errors import UserInputError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

# A module attribute: True on a top encoder layer that must never train (the mean-pooling layer).
FIXED_MARK = "nlp_transfer_fixed"


@dataclass
class LayerGroups:
    """The parameters of a classifier split into groups from the bottom up, plus the fixed ones.

    ``fixed`` holds the parameters of the mean-pooling layer (empty without one): they sit between
    the top encoder layer and the head but never train, so they belong to no group.
    """

    embeddings: list[Any]
    layers: list[list[Any]]
    head: list[Any]
    fixed: list[Any] = field(default_factory=list)

    def bottom_up(self) -> Iterator[list[Any]]:
        """Embeddings, then each encoder layer, then the task layers."""
        yield self.embeddings
        yield from self.layers
        yield self.head

    def depths(self) -> dict[int, int]:
        """``id(param)`` → depth from the top (task layers 0, top encoder layer 1, …, embeddings N+1)."""
        groups = list(self.bottom_up())
        top = len(groups) - 1
        return {id(p): top - i for i, group in enumerate(groups) for p in group}


def unwrap_peft(model: "nn.Module") -> "nn.Module":
    """The transformers model under a peft (LoRA) wrapper, or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def encoder_of(model: "nn.Module") -> "nn.Module":
    """The encoder (``model.bert`` for BERT) of a ``*ForSequenceClassification`` model."""
    return unwrap_peft(model).base_model


def num_layers(model: "nn.Module") -> int:
    """How many transformer layers the encoder has (a mean-pooling layer included)."""
    return int(unwrap_peft(model).config.num_hidden_layers)


def _layer_list(encoder: "nn.Module", depth: int) -> Any:
    from torch import nn

    for module in encoder.modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth:
            return module
    raise UserInputError(
        f"cannot find the {depth} encoder layers of this {type(encoder).__name__}; the strategies other than "
        "finetune support BERT-style encoders (embeddings + a list of layers). Use --strategy finetune."
    )


def layer_groups(model: "nn.Module") -> LayerGroups:
    """Split every parameter of ``model`` into embeddings, encoder layers and task layers."""
    encoder = encoder_of(model)
    embeddings = getattr(encoder, "embeddings", None)
    if embeddings is None:
        raise UserInputError(
            f"{type(encoder).__name__} has no 'embeddings' module; the strategies other than finetune support "
            "BERT-style encoders. Use --strategy finetune."
        )
    layers = list(_layer_list(encoder, num_layers(model)))
    pooling = layers.pop() if layers and getattr(layers[-1], FIXED_MARK, False) else None
    emb = list(embeddings.parameters())
    per_layer = [list(layer.parameters()) for layer in layers]
    fixed = list(pooling.parameters()) if pooling is not None else []
    placed = {id(p) for p in emb} | {id(p) for group in per_layer for p in group} | {id(p) for p in fixed}
    head = [p for p in model.parameters() if id(p) not in placed]
    return LayerGroups(emb, per_layer, head, fixed)


def set_trainable(params: list[Any], trainable: bool) -> None:
    """Switch ``requires_grad`` of every parameter in ``params``."""
    for p in params:
        p.requires_grad_(trainable)


def decay_groups(params: list[Any], learning_rate: float, weight_decay: float, layer_lr_decay: Optional[float],
                 depths: Optional[dict[int, int]] = None) -> list[dict[str, Any]]:
    """AdamW parameter groups: no weight decay on 1-d parameters (biases, LayerNorm), layer-wise LR decay.

    Groups come top first, so ``scheduler.get_last_lr()[0]`` is the peak (task-layer) rate. Each group
    carries its own ``lr``; the warm-up/decay schedule scales every group by the same factor.

    Args:
        params: the parameters to optimise.
        learning_rate: the peak rate (task layers).
        weight_decay: AdamW's decay for matrices.
        layer_lr_decay: F, or None for one rate everywhere.
        depths: ``id(param)`` → depth from the top (:meth:`LayerGroups.depths`); needed with ``layer_lr_decay``.
    """
    depth_of = depths if layer_lr_decay is not None and depths is not None else {}
    buckets: dict[tuple[int, bool], list[Any]] = {}
    for p in params:
        buckets.setdefault((depth_of.get(id(p), 0), p.ndim < 2), []).append(p)
    decay = layer_lr_decay or 1.0
    return [
        {"params": buckets[key], "lr": learning_rate * decay ** key[0],
         "weight_decay": 0.0 if key[1] else weight_decay}
        for key in sorted(buckets)
    ]
