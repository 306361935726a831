"""Train the last encoder layer on the one position the classifier reads.

A BERT-family sequence classifier reads a single vector from the encoder: the last layer's
output at the first position ([CLS] / ``<s>``), through the pooler or the classification head.
The last layer's outputs at every other position feed nothing, so their loss gradients are
zero. In that layer only the keys and values need every position; the query, the attention
output projection, the LayerNorms and the feed-forward block (10 of the layer's 12 d² products
per token) are needed for the first position alone. For the 6-layer default encoder and texts
of ~14 tokens that is about 13% of the encoder's matrix work per step, forward and backward,
skipped without changing what is learned: the logits and every gradient are the same up to float rounding (tested). Dropout in
that layer draws fewer random numbers, so a run with it differs from one without only as two
seeds differ.

The swap is a class change of the last layer's module (no weights move, the saved folder is the
same standard one) and acts only in training mode; evaluation and prediction run the full layer.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Optional

import torch
from torch import nn

from ..layers import unwrap_peft

logger = logging.getLogger(__name__)

# Sequence classifiers whose head reads only the first position of the last hidden state.
_FIRST_POSITION_HEADS = frozenset({
    "BertForSequenceClassification",
    "RobertaForSequenceClassification",
    "XLMRobertaForSequenceClassification",
    "CamembertForSequenceClassification",
    "ElectraForSequenceClassification",
})
_ATTENTION_KERNELS = ("sdpa", "eager")


@functools.cache
def _attention_internals() -> tuple[Any, Any]:
    """Private transformers internals, imported only when this option runs (and then once)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    return ALL_ATTENTION_FUNCTIONS, eager_attention_forward


def _first_position_forward(layer: nn.Module, hidden_states: torch.Tensor, attention_mask: Any) -> torch.Tensor:
    kernels, eager_attention_forward = _attention_internals()
    attention = layer.attention.self
    batch, length, _ = hidden_states.shape
    first = hidden_states[:, :1]
    heads = (batch, -1, attention.num_attention_heads, attention.attention_head_size)
    query = attention.query(first).view(heads).transpose(1, 2)
    key = attention.key(hidden_states).view(heads).transpose(1, 2)
    value = attention.value(hidden_states).view(heads).transpose(1, 2)
    if attention_mask is not None and attention_mask.shape[-2] > 1:
        attention_mask = attention_mask[..., :1, :]  # the first query's row of a (batch, 1, query, key) mask
    kernel = kernels.get_interface(attention.config._attn_implementation, eager_attention_forward)
    context, _ = kernel(
        attention, query, key, value, attention_mask,
        dropout=attention.dropout.p if attention.training else 0.0, scaling=attention.scaling,
    )
    attended = layer.attention.output(context.reshape(batch, 1, -1), first)
    return layer.feed_forward_chunk(attended)


class _FirstPositionLayer:
    """Mixed into the last layer's own class: in training mode it returns (batch, 1, hidden)."""

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        extra = (*args, *kwargs.values())  # encoder states, caches: a decoder's business, never a classifier's
        if not self.training or any(v is not None for v in extra):
            return super().forward(hidden_states, attention_mask, *args, **kwargs)
        return _first_position_forward(self, hidden_states, attention_mask)


def _last_layer(model: nn.Module) -> Optional[nn.Module]:
    base = unwrap_peft(model)
    if type(base).__name__ not in _FIRST_POSITION_HEADS:
        return None
    config = base.config
    if config.is_decoder or getattr(config, "_attn_implementation", None) not in _ATTENTION_KERNELS:
        return None
    layers = getattr(getattr(base.base_model, "encoder", None), "layer", None)
    if not layers:
        return None
    layer = layers[-1]
    attention = getattr(getattr(layer, "attention", None), "self", None)
    needed = ("query", "key", "value", "dropout", "scaling", "num_attention_heads", "attention_head_size")
    if attention is None or not all(hasattr(attention, name) for name in needed):
        return None
    if not hasattr(layer, "feed_forward_chunk") or not hasattr(layer.attention, "output"):
        return None
    return layer


def train_first_position_only(model: nn.Module) -> bool:
    """Make the last encoder layer of ``model`` compute only the first position while training.

    Returns whether it applied: only to the sequence classifiers known to read nothing else
    (BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA) with eager or SDPA attention; other models are
    left as they are.
    """
    layer = _last_layer(model)
    if layer is None:
        logger.info("the full last layer is trained: %s is not a known first-position classifier",
                    type(model).__name__)
        return False
    if not isinstance(layer, _FirstPositionLayer):
        cls = type(layer)
        layer.__class__ = type(cls.__name__, (_FirstPositionLayer, cls), {"__module__": cls.__module__})
    return True


def train_full_last_layer(model: nn.Module) -> None:
    """Undo :func:`train_first_position_only`."""
    layer = _last_layer(model)
    if isinstance(layer, _FirstPositionLayer):
        layer.__class__ = type(layer).__mro__[2]
