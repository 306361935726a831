"""Mean pooling carried by a plain ``*ForSequenceClassification`` folder: one appended encoder layer.

A BERT-family classifier reads one vector, the last layer's output at the first ([CLS]) position.
Mean pooling fits into that reading without custom code: :func:`add_mean_pooling` appends one more
standard encoder layer (a copy of the last one, re-weighted) whose

- query and key projections are zero, so every attention score is 0 and the softmax is uniform
  over the real tokens (padding is masked out as in every layer);
- value projection is the identity, so the attention output is the mean of the previous layer's
  vectors over the real tokens, [CLS] and [SEP] included (as sentence-transformers averages);
- attention output projection is ``POOLING_SCALE`` × identity, so the residual sum
  ``POOLING_SCALE · mean + h`` is the mean up to ``h / POOLING_SCALE`` and its LayerNorm (weight 1,
  bias 0) is the layer-normalised mean;
- feed-forward block is zero, so the last LayerNorm (weight 1, bias 0) passes that vector on.

Its [CLS] output is therefore ``LayerNorm(masked mean of the previous layer)`` (zero mean, unit
variance over the hidden units; within 1e-4, see ``POOLING_SCALE``), at every position. The
folder stays a standard one with ``num_hidden_layers + 1`` and loads in ``transformers.pipeline()``;
the pooler and classifier read the pooled vector as they read [CLS]. The pooling layer is fixed:
its parameters never require gradients, it is in no optimizer group (so no weight decay), and its
dropout is off so training sees the same pooled vector as prediction.

API (used by the trainer, the strategies, :mod:`nlp_transfer.layers` and the feature cache):

- ``POOLINGS``: the ``--pooling`` choices, ``("cls", "mean")``.
- :func:`add_mean_pooling` ``(model) -> layer``: append the layer (no-op if the model already ends in one),
  update ``config.num_hidden_layers``, fix it.
- :func:`mean_pooling_layer` ``(model) -> layer | None``: the model's pooling layer, recognised by its weights
  (so a saved folder trained with mean pooling is recognised when loaded again).
- :func:`apply_pooling` ``(model, pooling, name)``: what the trainer calls after loading: append for ``mean``,
  refuse ``cls`` on a model that ends in a pooling layer, fix the layer.
- :func:`check_pooling_settings` ``(config)`` / :func:`resolve_pooling` ``(config)``: validate ``--pooling``
  (from ``TrainConfig.__post_init__``) / fill in its default for the run's model (at the start of ``train``).
- :func:`ships_mean_pooling` ``(name) -> bool``: the model folder/Hub id ships a sentence-transformers
  configuration whose pooling is the mean of the tokens (``modules.json`` + ``1_Pooling/config.json``).
- :func:`default_pooling` ``(name) -> "cls" | "mean"``: mean for such models, and for folders already ending
  in a pooling layer; cls otherwise.

Nothing here imports torch at import time.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .errors import UserInputError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

logger = logging.getLogger(__name__)

POOLINGS = ("cls", "mean")
# The residual input h enters the pooled vector as h / POOLING_SCALE: on all-MiniLM-L6-v2 the largest
# difference from the exact layer-normalised mean is ~30 / POOLING_SCALE (measured: 3e-3 at 1e4, 3e-5
# at 1e6). float32 holds POOLING_SCALE · mean with 7 digits to spare; float16 cannot (its largest value is
# 65504), which is why --mixed-precision fp16 is refused with mean pooling.
POOLING_SCALE = 1e6
# Model types whose layers are BERT layers (attention.self.query/key/value, attention.output,
# intermediate, output) with absolute positions: the pooling layer is built from one of them.
SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra")
_LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
            "intermediate.dense", "output.dense")
_LAYER_NORMS = ("attention.output.LayerNorm", "output.LayerNorm")


def _layers(model: "nn.Module") -> Optional[Any]:
    from .layers import unwrap_peft

    encoder = getattr(unwrap_peft(model).base_model, "encoder", None)
    return getattr(encoder, "layer", None)


def _part(layer: "nn.Module", dotted: str) -> Any:
    for name in dotted.split("."):
        layer = getattr(layer, name, None)
        if layer is None:
            return None
    return layer


def _check_supported(model: "nn.Module", name: str) -> Any:
    from .layers import unwrap_peft

    config = unwrap_peft(model).config
    layers = _layers(model)
    ok = config.model_type in SUPPORTED_MODEL_TYPES and layers is not None and len(layers) > 0
    ok = ok and getattr(config, "position_embedding_type", "absolute") in ("absolute", None)
    ok = ok and all(_part(layers[-1], p) is not None for p in (*_LINEARS, *_LAYER_NORMS))
    if not ok:
        raise UserInputError(
            f"--pooling mean is not available for model {name!r} (model type {config.model_type!r}): the pooling "
            f"layer is built for {', '.join(SUPPORTED_MODEL_TYPES)} encoders with absolute positions. "
            "Pass --pooling cls."
        )
    return layers


def is_mean_pooling_layer(layer: "nn.Module") -> bool:
    """Whether ``layer`` has the weights of the mean-pooling layer (see the module docstring)."""
    import torch

    parts = {p: _part(layer, p) for p in (*_LINEARS, *_LAYER_NORMS)}
    if any(module is None for module in parts.values()):
        return False
    query, key, value = (parts[p] for p in _LINEARS[:3])
    with torch.no_grad():
        if query.weight.any() or key.weight.any():
            return False
        eye = torch.eye(value.weight.shape[0], dtype=value.weight.dtype, device=value.weight.device)
        dense = parts["attention.output.dense"].weight
        return bool(torch.equal(value.weight, eye) and torch.equal(dense, eye * POOLING_SCALE)
                    and not parts["output.dense"].weight.any())


def mean_pooling_layer(model: "nn.Module") -> Optional["nn.Module"]:
    """The mean-pooling layer the model ends in, or None (recognised by its weights)."""
    layers = _layers(model)
    if not layers or not is_mean_pooling_layer(layers[-1]):
        return None
    return layers[-1]


def _set_pooling_weights(layer: "nn.Module") -> None:
    import torch

    with torch.no_grad():
        for path in _LINEARS:
            linear = _part(layer, path)
            linear.weight.zero_()
            if linear.bias is not None:
                linear.bias.zero_()
        hidden = _part(layer, "attention.self.value").weight.shape[0]
        _part(layer, "attention.self.value").weight.copy_(torch.eye(hidden))
        _part(layer, "attention.output.dense").weight.copy_(torch.eye(hidden) * POOLING_SCALE)
        for path in _LAYER_NORMS:
            norm = _part(layer, path)
            norm.weight.fill_(1.0)
            norm.bias.zero_()


def fix_pooling_layer(layer: "nn.Module") -> None:
    """Keep the pooling layer out of training: no gradients for its weights, its dropout off, and
    marked so that :func:`nlp_transfer.layers.layer_groups` puts it in no layer group."""
    import torch

    from .layers import FIXED_MARK

    setattr(layer, FIXED_MARK, True)
    for p in layer.parameters():
        p.requires_grad_(False)
    for module in layer.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0  # attention dropout would average a random subset; the head has its own dropout


def add_mean_pooling(model: "nn.Module", name: str = "the model") -> "nn.Module":
    """Append the mean-pooling layer to ``model``'s encoder and return it (the existing one if there is one).

    ``model.config.num_hidden_layers`` grows by one, so ``save_pretrained`` writes a folder that
    ``from_pretrained`` and ``pipeline()`` rebuild with the layer.

    Args:
        model: a BERT-family ``*ForSequenceClassification`` (or its peft wrapper).
        name: the model as the user named it, for the refusal.

    Raises:
        UserInputError: the architecture is not one the layer can be built for.
    """
    from .layers import unwrap_peft

    existing = mean_pooling_layer(model)
    if existing is not None:  # e.g. a folder trained with --pooling mean
        fix_pooling_layer(existing)
        return existing
    layers = _check_supported(model, name)
    layer = copy.deepcopy(layers[-1])
    _set_pooling_weights(layer)
    for module in layer.modules():  # the index a layer's attention uses in a key/value cache
        if hasattr(module, "layer_idx"):
            module.layer_idx = len(layers)
    layers.append(layer)
    config = unwrap_peft(model).config
    config.num_hidden_layers = len(layers)
    fix_pooling_layer(layer)
    return layer


def apply_pooling(model: "nn.Module", pooling: str, name: str) -> Optional["nn.Module"]:
    """Give the freshly loaded ``model`` its pooling; return the pooling layer (None for ``cls``).

    Args:
        model: the classifier to train.
        pooling: ``cls`` or ``mean``.
        name: the model as the user named it, for messages.

    Raises:
        UserInputError: ``cls`` on a model that already ends in a mean-pooling layer, or ``mean``
            on an architecture the layer cannot be built for.
    """
    if pooling == "mean":
        return add_mean_pooling(model, name)
    if mean_pooling_layer(model) is not None:
        raise UserInputError(
            f"model {name!r} ends in a mean-pooling layer (it was trained with --pooling mean), so its head reads "
            "mean-pooled vectors; pass --pooling mean (or leave --pooling out) to keep training it."
        )
    return None


def _model_file(name: str, filename: str) -> Optional[Path]:
    """A file of a local model folder, or of a Hub model when it is in the local cache; None if absent.

    Nothing is downloaded: the default pooling is decided from what is already here.
    """
    from huggingface_hub import try_to_load_from_cache

    from .model_source import resolve_model

    path = resolve_model(name)
    if Path(path).expanduser().is_dir():
        found = Path(path).expanduser() / filename
        return found if found.is_file() else None
    try:
        cached = try_to_load_from_cache(path, filename)
    except ValueError:  # not a valid Hub id: loading the model will say so
        return None
    return Path(cached) if isinstance(cached, str) else None


def _read_json(path: Optional[Path]) -> Any:
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # an unreadable optional file says nothing about the pooling


def ships_mean_pooling(name: str) -> bool:
    """Whether model ``name`` ships a sentence-transformers configuration that mean-pools its tokens.

    That is a ``modules.json`` naming a ``sentence_transformers.models.Pooling`` module whose
    ``config.json`` sets ``pooling_mode_mean_tokens`` (and no other pooling mode). Only local files
    are read: a folder's own, or the Hub cache's copy of a Hub model.
    """
    modules = _read_json(_model_file(name, "modules.json"))
    if not isinstance(modules, list):
        return False
    for module in modules:
        if isinstance(module, dict) and str(module.get("type", "")).endswith("models.Pooling"):
            folder = str(module.get("path") or "").strip("/")
            settings = _read_json(_model_file(name, f"{folder}/config.json" if folder else "config.json"))
            if not isinstance(settings, dict):
                return False
            others = [k for k, v in settings.items() if k.startswith("pooling_mode_") and v
                      and k != "pooling_mode_mean_tokens"]
            return bool(settings.get("pooling_mode_mean_tokens")) and not others
    return False


SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


def copy_sentence_pooling(name: str, directory: Path) -> bool:
    """Give ``directory`` (an encoder derived from ``name``) the mean-pooling configuration ``name`` ships.

    An encoder folder written from a sentence encoder (``adapt-lm``'s output) would otherwise lose the
    sentence-transformers files that make :func:`default_pooling` say ``mean``, and a run on it
    would silently pool the [CLS] vector its base never trained. Copies ``modules.json``, the
    sentence-transformers settings and each module folder's ``config.json``; nothing when ``name``
    does not ship mean pooling. Returns whether it copied.
    """
    if not ships_mean_pooling(name):
        return False
    modules = _read_json(_model_file(name, "modules.json")) or []
    wanted = list(SENTENCE_TRANSFORMERS_FILES) + [
        f"{str(m.get('path') or '').strip('/')}/config.json" for m in modules
        if isinstance(m, dict) and str(m.get("path") or "").strip("/")]
    for filename in wanted:
        found = _model_file(name, filename)
        if found is not None:
            (directory / filename).parent.mkdir(parents=True, exist_ok=True)
            (directory / filename).write_bytes(found.read_bytes())
    return True


def _supported_type(name: str) -> bool:
    settings = _read_json(_model_file(name, "config.json"))
    return isinstance(settings, dict) and settings.get("model_type") in SUPPORTED_MODEL_TYPES


def _ends_in_pooling_layer(name: str) -> bool:
    """Whether the saved model ``name`` was trained with ``--pooling mean`` (its training_config.json says so)."""
    settings = _read_json(_model_file(name, "training_config.json"))
    return isinstance(settings, dict) and settings.get("pooling") == "mean"


def default_pooling(name: str) -> str:
    """The pooling a run on model ``name`` uses when ``--pooling`` is not given.

    ``mean`` for encoders trained for sentence embeddings with mean pooling (they ship a
    sentence-transformers mean-pooling configuration, as the default all-MiniLM-L6-v2 does: their
    [CLS] vector was never trained to summarise the text) and for folders already trained with
    ``--pooling mean``; ``cls`` otherwise (BERT-style pretraining trains [CLS] through the pooler).
    """
    if not _supported_type(name):
        return "cls"
    return "mean" if _ends_in_pooling_layer(name) or ships_mean_pooling(name) else "cls"


def check_pooling_settings(config: Any) -> None:
    """Refuse an unknown ``pooling`` and mean pooling with float16 (its pooled sum would overflow)."""
    if config.pooling is not None and config.pooling not in POOLINGS:
        raise UserInputError(f"pooling {config.pooling!r} is unknown; choose one of: {', '.join(POOLINGS)}.")
    if config.pooling == "mean" and config.mixed_precision == "fp16":
        raise UserInputError(
            "--pooling mean does not run in float16: its pooling layer sums "
            f"{POOLING_SCALE:g} × the mean vector, beyond float16's largest value 65504. Use --mixed-precision bf16 "
            "or no, or --pooling cls."
        )


def resolve_pooling(config: Any) -> None:
    """Set ``config.pooling`` to :func:`default_pooling` of its model when it was not given (in place)."""
    if config.pooling is None:
        config.pooling = default_pooling(config.model)
        check_pooling_settings(config)


def describe_pooling(pooling: Optional[str]) -> str:
    """One phrase for the model card: which vector the classification head reads (empty when unknown)."""
    if pooling == "mean":
        return ("the mean of the encoder's token vectors over the text (padding excluded), layer-normalised, "
                "computed by the last encoder layer, a fixed mean-pooling layer that was not trained")
    if pooling == "cls":
        return "the encoder's vector of the first ([CLS]) token"
    return ""
