"""Masked-LM models for ``adapt-lm``: loading one with its head (or a fresh head on request), and saving the
adapted encoder as a plain encoder folder that ``train --model`` loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, AutoModelForMaskedLM, PreTrainedModel

from .errors import UserInputError
from .modeling import _load_error, missing_weights_error, quiet_loading
from .model_source import locate_model


def _load(auto: Any, name: str) -> tuple[PreTrainedModel, dict[str, Any]]:
    source = locate_model(name)
    try:
        with quiet_loading():
            return auto.from_pretrained(source.path, use_safetensors=True, local_files_only=source.local_files_only,
                                        output_loading_info=True)
    except ValueError as err:
        if "Unrecognized configuration class" in str(err):
            raise UserInputError(
                f"model {name!r} has no masked-LM form in transformers ({str(err).splitlines()[0][:160]}); adapt-lm "
                "needs a BERT-family encoder (BERT, RoBERTa, DistilBERT, ELECTRA, XLM-R, ...)."
            ) from None
        raise _load_error(source, err) from None
    except OSError as err:
        raise _load_error(source, err) from None


def load_masked_lm(name: str, new_head: bool) -> tuple[PreTrainedModel, bool]:
    """The encoder with its masked-LM head; return the model and whether the head is new (random).

    Args:
        name: Hub id or local folder.
        new_head: accept a model saved without its masked-LM head (the head is then initialised afresh).

    Raises:
        UserInputError: no masked-LM form, encoder weights missing, or no head without ``new_head``.
    """
    model, info = _load(AutoModelForMaskedLM, name)
    prefix = f"{model.base_model_prefix}."
    missing = sorted(info["missing_keys"]) + sorted(k[0] for k in info["mismatched_keys"])
    encoder = [k for k in missing if k.startswith(prefix)]
    if encoder:
        raise missing_weights_error(name, encoder)
    head = [k for k in missing if not k.startswith(prefix)]
    if head and not new_head:
        shown = ", ".join(head[:3]) + (f" and {len(head) - 3} more" if len(head) > 3 else "")
        raise UserInputError(
            f"model {name!r} has no masked-LM head ({len(head)} head weight(s) are not in its weights file: {shown}), "
            "so its perplexity would be that of a random head; pass --new-mlm-head to train a fresh head first (the "
            "encoder frozen), or adapt an encoder saved with its head (e.g. bert-base-uncased)."
        )
    return model, bool(head)


def head_parameters(model: PreTrainedModel) -> list[torch.nn.Parameter]:
    """Parameters outside the encoder (a tied decoder weight is the word embedding: it counts as encoder)."""
    prefix = f"{model.base_model_prefix}."
    return [p for n, p in model.named_parameters() if not n.startswith(prefix)]


def save_encoder(model: PreTrainedModel, name: str, tokenizer: Any, directory: Path) -> str:
    """Save the adapted encoder as a plain encoder folder (``AutoModel``), keeping the base model's other weights.

    A masked-LM model has no pooler; the pooler (and any other weight of the base encoder folder outside
    the masked-LM model) is kept from ``name``, so ``train --model`` starts from the same pooler as before.
    The masked-LM head is training-only and is not saved. A base that ships sentence-transformers
    mean pooling passes it on (:func:`nlp_transfer.pooling.copy_sentence_pooling`), so a run on the
    folder pools as a run on the base does. Returns that pooling (``mean`` or ``cls``).
    """
    from .pooling import copy_sentence_pooling

    encoder, _ = _load(AutoModel, name)
    missing, unexpected = encoder.load_state_dict(model.base_model.state_dict(), strict=False)
    if unexpected or [k for k in missing if not k.startswith("pooler.")]:
        raise RuntimeError(f"the adapted encoder does not fit {type(encoder).__name__}: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    with quiet_loading():
        encoder.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return "mean" if copy_sentence_pooling(name, Path(directory)) else "cls"


def _single_head(model: PreTrainedModel) -> torch.nn.Module | None:
    """The one module on top of the encoder (``cls`` for BERT, ``lm_head`` for RoBERTa), else None."""
    heads = [m for n, m in model.named_children() if n != model.base_model_prefix]
    return heads[0] if len(heads) == 1 else None


def masked_lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the masked tokens of ``batch`` (labels -100 elsewhere).

    The vocabulary projection (30k outputs per position) is most of a masked-LM step, yet only the
    masked ~15% of positions have a loss: when the model is one encoder plus one head module and runs
    in one process, the head runs at those positions only. The loss is the same as ``model(**batch).loss``.
    """
    head = _single_head(model) if isinstance(model, PreTrainedModel) else None
    if head is None:
        return model(**batch).loss
    labels = batch["labels"]
    hidden = model.base_model(**{k: v for k, v in batch.items() if k != "labels"}).last_hidden_state
    picked = labels != -100
    return torch.nn.functional.cross_entropy(head(hidden[picked]).float(), labels[picked])
