"""Push a trained model folder to the Hugging Face Hub (or any server speaking its API).

``push_to_hub(dir, "my-org/sentiment-minilm")`` creates the repo if needed and uploads, in one
commit, exactly the files someone needs to use the model: weights and config, tokenizer, the model
card and the three JSON records of the run (``HUB_FILES``); never checkpoints, caches or
optimizer states. The endpoint is ``HF_ENDPOINT`` (default https://huggingface.co); the token is
``--token`` / ``token=``, else ``HF_TOKEN``, else the login cached by ``hf auth login``.

Decisions worth knowing:

* The card on the Hub is rendered for the repo (its title and usage snippets name the repo id).
  It is rendered into a temporary staging folder that also holds links to the model files, so
  pushing never modifies the local folder; ``nlp-transfer card DIR --repo-id ID`` rewrites the
  local ``README.md`` the same way if wanted.
* Files of ``HUB_FILES`` that are on the Hub but no longer in the folder are deleted in the same
  commit, so the repo always mirrors the folder; other files in the repo are left alone.
* The token is only ever passed to ``huggingface_hub``: it is not written to any file, log line
  or message (messages are scrubbed, and a staged file that contains it stops the push).
* Failures raise :class:`PushError`, a :class:`UserInputError`, so the CLI prints one line and
  exits with code 2: the fix (log in, correct the repo id, check the network) is the user's.
  Network errors are retried with exponential back-off first; the local folder is never touched.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar

import huggingface_hub
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from .version import __version__
from .artifacts import (
    CONFIG_FILE, CONFUSION_FILE, CURVES_FILE, METRICS_FILE, SUMMARY_FILE, filesystem_error, read_json, to_json,
)
from .errors import UserInputError
from .hub_client import PushError, check_repo_id, check_token, request_timeouts  # noqa: F401  (re-exported)
from .model_card import portable_config, render_card, reported_split

try:  # the HTTP client of huggingface_hub 2.x; 1.x used httpx
    import httpx2 as _http
except ImportError:  # pragma: no cover
    import httpx as _http

logger = logging.getLogger(__name__)

# What a pushed repo holds. Glob patterns relative to the model folder (fnmatch, like
# ``upload_folder``'s allow_patterns); sharded weights come with their index.
HUB_FILES = (
    "config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "README.md",
    METRICS_FILE,
    CONFIG_FILE,
    SUMMARY_FILE,
    CURVES_FILE,  # the plots the card shows (issue 20)
    CONFUSION_FILE,
)
WEIGHT_FILES = ("model.safetensors", "model-*-of-*.safetensors")
LOGIN_HINT = "log in with `hf auth login` (or `huggingface-cli login`), set HF_TOKEN, or pass --token"


T = TypeVar("T")


@dataclass
class PushResult:
    """Where a push went: the repo, its web address and the commit it made.

    ``changed`` is False when the repo already held exactly these files: no commit was made, and
    ``commit_oid`` is the commit that already holds them.
    """

    repo_id: str
    revision: str
    url: str
    commit_url: str
    commit_oid: str
    files: list[str] = field(default_factory=list)
    changed: bool = True


def resolve_token(token: Optional[str] = None) -> str:
    """The token to push with: ``token``, else ``HF_TOKEN``, else the cached login (surrounding spaces dropped).

    Raises:
        PushError: there is none (the message says how to log in), or it holds characters no Hub
            token has (a non-ASCII letter, a space inside: a paste gone wrong).
    """
    source = "--token" if token else "the Hugging Face token (HF_TOKEN or the cached login)"
    token = token or huggingface_hub.get_token()
    if not token:
        raise PushError(f"no Hugging Face token found: pushing needs a token with write access; {LOGIN_HINT}.")
    try:
        return check_token(token, source)
    except UserInputError as err:
        raise PushError(str(err)) from None


def hub_files(directory: str | Path, include: Sequence[str] = ()) -> list[str]:
    """The files of a model folder that a push uploads (``HUB_FILES`` plus ``include`` patterns), sorted."""
    directory = Path(directory)
    patterns = (*HUB_FILES, *include)
    found = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if any(fnmatch.fnmatchcase(rel, pattern) for pattern in patterns):
            found.append(rel)
    return found


def push_to_hub(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: Optional[str] = None,
    commit_message: Optional[str] = None,
    token: Optional[str] = None,
    endpoint: Optional[str] = None,
    include: Sequence[str] = (),
    retries: int = 3,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
) -> PushResult:
    """Upload a model folder written by ``nlp-transfer train`` to a Hub repo, in one commit.

    Args:
        model_dir: the trained model folder.
        repo_id: ``namespace/name``; the repo is created (``private`` or not) if it does not exist.
        revision: branch to commit to (created from ``main`` if missing); default ``main``.
        commit_message: the commit's title (default: "Upload <name> trained with nlp-transfer").
        token: Hub token; default ``HF_TOKEN`` or the cached login. Never stored anywhere.
        endpoint: Hub address; default ``HF_ENDPOINT`` as read by ``huggingface_hub``.
        include: extra glob patterns of files to upload (e.g. ``"checkpoint-*/**"``).
        retries, backoff_s: attempts on network errors (timeouts included), and the wait before the
            first retry (doubled after each failed attempt).
        timeout_s: longest wait for the server to answer a request (connecting: at most 10 s).

    Returns:
        The repo, revision, commit and uploaded files; ``changed`` is False when the repo already
        held exactly these files (then no commit is made).

    Raises:
        PushError: not a model folder, bad repo id, no/invalid token, no write access, network
            failure or silence after the retries, a full or unwritable temporary folder. Nothing
            local is changed in any case.
    """
    directory, branch, patterns = Path(model_dir), revision or "main", [*HUB_FILES, *include]
    _check_model_dir(directory)
    check_repo_id(repo_id)
    token = resolve_token(token)
    api = HfApi(endpoint=endpoint, token=token, library_name="nlp-transfer", library_version=__version__)
    message = commit_message or f"Upload {repo_id.split('/')[1]} trained with nlp-transfer {__version__}"
    try:
        with tempfile.TemporaryDirectory(prefix="nlp-transfer-push-") as tmp:
            staged = _stage(directory, Path(tmp), repo_id, include)
            _refuse_token_in_files(Path(tmp), staged, token)
            logger.info("pushing %d files of %s to %s/%s (%s)", len(staged), directory, api.endpoint, repo_id, branch)
            info, before = _with_retries(
                lambda: _upload(api, tmp, directory, repo_id, branch, private, message, patterns, timeout_s),
                retries, backoff_s,
            )
    except (_http.TransportError, OSError) as err:  # HTTP answers and offline mode are OSErrors too
        raise _push_error(err, api.endpoint, directory, repo_id, retries, timeout_s, token) from None
    if info.oid == before:
        logger.info("nothing changed: %s/%s (%s) already holds these files; no commit was made", api.endpoint, repo_id, branch)
    return PushResult(repo_id=repo_id, revision=branch, url=f"{api.endpoint}/{repo_id}", commit_url=info.commit_url,
                      commit_oid=info.oid, files=staged, changed=info.oid != before)


def _upload(api: HfApi, folder: str, directory: Path, repo_id: str, branch: str, private: bool, message: str,
            patterns: list[str], timeout_s: float) -> tuple[Any, Optional[str]]:
    """One attempt: create the repo (and branch) if needed, then commit ``folder``; return the commit and the head before."""
    with request_timeouts(timeout_s):
        api.create_repo(repo_id, private=private, exist_ok=True)
        if branch != "main":
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        before = api.repo_info(repo_id, revision=branch).sha
        with _quiet_logger("huggingface_hub.hf_api"):  # its "no files modified" note: push_to_hub says it
            info = api.upload_folder(
                repo_id=repo_id, folder_path=folder, revision=branch, commit_message=message,
                commit_description=_commit_description(directory), allow_patterns=patterns, delete_patterns=patterns,
            )
    return info, before


def _push_error(err: Exception, endpoint: str, directory: Path, repo_id: str, retries: int, timeout_s: float,
                token: str) -> PushError:
    """One sentence (without the token) for a push that failed on the way to the Hub, or while staging its files."""
    again = _again(directory, repo_id)
    if isinstance(err, HfHubHTTPError):
        text = f"{_explain_http(err, endpoint, repo_id)} {again}"
    elif isinstance(err, OfflineModeIsEnabled):
        text = "HF_HUB_OFFLINE is set, so nothing can be pushed; unset it and run the push again."
    elif isinstance(err, _http.ConnectTimeout):
        text = (f"could not connect to the Hub at {endpoint} within the time limit, {retries} attempts; check your "
                f"network connection, or HF_ENDPOINT if you use a self-hosted Hub. {again}")
    elif isinstance(err, _http.TimeoutException):
        text = (f"the Hub at {endpoint} accepted the connection but did not answer within {timeout_s:g} s, {retries} "
                f"attempts; it may be overloaded or the address may not be a Hub (check HF_ENDPOINT). {again}")
    elif isinstance(err, _http.ConnectError):
        text = (f"could not reach the Hub at {endpoint} after {retries} attempts ({err or type(err).__name__}); "
                f"check your network connection, or HF_ENDPOINT if you use a self-hosted Hub. {again}")
    elif isinstance(err, _http.TransportError):
        text = (f"network error while pushing to {endpoint}/{repo_id}, still failing after {retries} attempts "
                f"({type(err).__name__}: {err}). {again} (files already on the Hub are not sent twice).")
    else:  # staging the files: a full or unwritable temporary folder
        text = str(filesystem_error(err, getattr(err, "filename", None) or tempfile.gettempdir(),
                                    "stage the files to push in"))
    return PushError(_scrub(text, token))


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Hold back one library logger's warnings inside the block; its level is put back after."""
    target = logging.getLogger(name)
    previous = target.level
    target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(previous)


def _check_model_dir(directory: Path) -> None:
    if not directory.is_dir():
        raise PushError(f"model folder {str(directory)!r} does not exist; pass the --output-dir of a training run.")
    required = ["config.json", CONFIG_FILE, METRICS_FILE, SUMMARY_FILE]
    missing = [name for name in required if not (directory / name).is_file()]
    if not any(directory.glob(pattern) for pattern in WEIGHT_FILES):
        missing.append("model.safetensors")
    if missing:
        raise PushError(
            f"{str(directory)!r} is not a model folder written by nlp-transfer train (missing: {', '.join(missing)}); "
            "pass the --output-dir of a finished training run."
        )


def _stage(directory: Path, staging: Path, repo_id: str, include: Sequence[str]) -> list[str]:
    """Fill ``staging`` with links (or copies) of the files to push and the card rendered for ``repo_id``."""
    files = [f for f in hub_files(directory, include) if f != "README.md"]
    for rel in files:
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel == CONFIG_FILE:  # published without the training machine's feature-cache folder
            settings = read_json(directory / rel, f"the model folder's {CONFIG_FILE}")
            # A plain write: staging faults become OSError, reported like every other staging fault.
            target.write_text(to_json(portable_config(settings, publish=True)), encoding="utf-8")
            continue
        # No copy of the weights: a hard link on the same filesystem, else a symbolic link (the
        # upload reads through it); a copy only where neither exists.
        try:
            os.link(directory / rel, target)
        except OSError:
            try:
                os.symlink((directory / rel).resolve(), target)
            except OSError:
                shutil.copy2(directory / rel, target)
    render_card(directory, repo_id).save(staging / "README.md")
    return sorted([*files, "README.md"])


def _refuse_token_in_files(staging: Path, files: list[str], token: str) -> None:
    needle = token.encode()
    leaking = [
        rel for rel in files
        if not any(fnmatch.fnmatchcase(rel, pattern) for pattern in WEIGHT_FILES) and needle in (staging / rel).read_bytes()
    ]
    if leaking:
        raise PushError(
            f"your Hub token is written in {', '.join(leaking)}, so nothing was pushed; remove it from the model "
            "folder (README.md comes from training_summary.json: edit that, then `nlp-transfer card`) and push again."
        )


def _commit_description(directory: Path) -> str:
    import json

    metrics = json.loads((directory / METRICS_FILE).read_text(encoding="utf-8"))
    split = reported_split(metrics)
    scores = metrics[split]
    return (
        f"Pushed with nlp-transfer {__version__}. {split} accuracy {scores['accuracy']:.4f}, "
        f"macro F1 {scores['f1_macro']:.4f} on {scores['num_samples']} rows."
    )


def _with_retries(action: Callable[[], T], retries: int, backoff_s: float) -> T:
    """Run ``action``; on a network error or a 5xx/429 answer, wait and try again (``retries`` attempts)."""
    for attempt in range(1, max(1, retries) + 1):
        try:
            return action()
        except (_http.TransportError, HfHubHTTPError) as err:
            # An HTTP answer is only worth retrying when the server is overloaded or failing.
            transient = not isinstance(err, HfHubHTTPError) or err.response.status_code in (429, 500, 502, 503, 504)
            if not transient or attempt >= retries:
                raise
            wait = backoff_s * 2 ** (attempt - 1)
            logger.warning(
                "push attempt %d of %d failed (%s); retrying in %.1f s", attempt, retries, type(err).__name__, wait
            )
            time.sleep(wait)
    raise AssertionError("unreachable")


def _again(directory: Path, repo_id: str) -> str:
    return f"{str(directory)!r} is unchanged; push it again with: nlp-transfer push {shlex.quote(str(directory))} {repo_id}"


def _explain_http(err: HfHubHTTPError, endpoint: str, repo_id: str) -> str:
    status = err.response.status_code
    server = (err.server_message or "").strip().rstrip(".")
    detail = f" (server said: {server})" if server else ""
    if status == 401:
        return (
            f"the Hub at {endpoint} rejected the token (401 Unauthorized){detail}; {LOGIN_HINT} with a valid "
            "token that has write access."
        )
    if status == 403:
        namespace = repo_id.split("/")[0]
        return (
            f"the token has no write access to {repo_id} on {endpoint} (403 Forbidden){detail}; use a token with "
            f"the 'write' role that may write to the namespace {namespace!r} ({LOGIN_HINT}), or push to your own "
            "namespace."
        )
    return f"the Hub at {endpoint} refused the push to {repo_id}: HTTP {status}{detail}."


def _scrub(text: str, token: Optional[str]) -> str:
    """``text`` with every occurrence of the token replaced by ``***``."""
    return text.replace(token, "***") if token else text
