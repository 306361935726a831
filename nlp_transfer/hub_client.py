"""Talking to the Hub over HTTP: repo ids, timeouts, a quick reachability probe, offline mode and token checks.

``huggingface_hub`` shares one HTTP client whose requests have no timeout unless the caller gives
one, and ``HfApi`` (create_repo, upload_folder) gives none: a server that accepts the connection and
never answers would hold a push forever. :func:`request_timeouts` gives that shared client a
timeout for the duration of our own calls and puts the old one back after.

Loading a Hub id with no network makes ``transformers`` retry each file for about a minute, with a
warning per try. :func:`hub_unreachable` asks the endpoint once, with a short timeout, so the
loaders can say "no network" in one line, or use the local cache, at once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Iterator, Optional
from urllib.parse import urlsplit

from huggingface_hub import constants, get_session
from huggingface_hub.errors import OfflineModeIsEnabled

from .hub_ids import check_repo_id  # noqa: F401 - re-exported
from .errors import PushError, UserInputError  # noqa: F401

try:  # the HTTP client of huggingface_hub 2.x; 1.x used httpx
    import httpx2 as http
except ImportError:  # pragma: no cover
    import httpx as http

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0
# A probe's answer holds this long: loading one model asks for config, tokenizer and weights.
_PROBE_TTL_S = 60.0
_probes: dict[str, tuple[float, Optional[str]]] = {}


def endpoint() -> str:
    """The Hub address ``huggingface_hub`` uses now (``HF_ENDPOINT``, default https://huggingface.co)."""
    return constants.ENDPOINT.rstrip("/")


def offline_mode() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set."""
    return bool(constants.HF_HUB_OFFLINE)


@contextlib.contextmanager
def request_timeouts(seconds: float, connect_s: float = 10.0) -> Iterator[None]:
    """Give ``huggingface_hub``'s shared HTTP client these timeouts for the calls inside the block.

    Args:
        seconds: longest wait for a read, a write or a free connection.
        connect_s: longest wait to connect (capped at ``seconds``).
    """
    client = get_session()
    previous = client.timeout
    client.timeout = http.Timeout(seconds, connect=min(connect_s, seconds))
    try:
        yield
    finally:
        client.timeout = previous


def hub_unreachable(url: Optional[str] = None, timeout_s: float = PROBE_TIMEOUT_S) -> Optional[str]:
    """None when the Hub answers at all (any HTTP status); else why it cannot be reached, in a few words.

    The answer is kept for a minute per address, so one load asks once.
    """
    url = (url or endpoint()).rstrip("/")
    now = time.monotonic()
    cached = _probes.get(url)
    if cached is not None and now - cached[0] < _PROBE_TTL_S:
        return cached[1]
    try:
        get_session().head(url, timeout=http.Timeout(timeout_s), follow_redirects=False)
        reason = None
    except OfflineModeIsEnabled:
        reason = "HF_HUB_OFFLINE is set"
    except http.TimeoutException:
        reason = f"no answer within {timeout_s:g} s"
    except http.TransportError as err:
        reason = _short(err) or type(err).__name__
    _probes[url] = (now, reason)
    return reason


def _short(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def host(url: Optional[str] = None) -> str:
    """The host of ``url`` (default: the endpoint), for messages."""
    return urlsplit(url or endpoint()).netloc or (url or endpoint())


def check_token(token: str, source: str = "the token") -> str:
    """Return ``token`` without surrounding whitespace, or refuse one that HTTP cannot carry.

    Hub tokens are ASCII (``hf_`` and letters/digits); a token with other characters is a paste
    gone wrong, and HTTP headers cannot hold it.

    Args:
        token: the token as given.
        source: where it came from (``--token``, ``HF_TOKEN``), for the message.
    """
    token = token.strip()
    bad = next((c for c in token if not (c.isascii() and c.isprintable()) or c.isspace()), None)
    if bad is not None:
        # Name the character, never the token.
        raise UserInputError(
            f"{source} contains {'a space' if bad.isspace() else repr(bad)}, which a Hugging Face token never holds "
            "(tokens are ASCII letters and digits starting with hf_); copy it again from "
            "https://huggingface.co/settings/tokens."
        )
    return token
