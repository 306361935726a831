"""``nlp-transfer serve``: a trained classifier behind HTTP (FastAPI, run by uvicorn).

The routes and payloads follow Hugging Face text-embeddings-inference (TEI), so its clients work:

- ``POST /predict`` with ``{"inputs": "text"}`` answers ``[{"label", "score"}, ...]``, best first;
  with ``{"inputs": ["t1", "t2"]}`` one such list per text. ``top_k`` (top level, or in
  ``parameters`` as the Inference API sends it) keeps the k best; by default every label is
  listed, as TEI and ``pipeline(..., top_k=None)`` do. For a model trained on text pairs an input
  is ``["text", "pair"]`` and a batch a list of those (TEI's pair form).
- ``GET /health``: 200 once the model is loaded. ``GET /info``: labels, max input length, limits.

Concurrent requests are gathered into dynamic batches (:mod:`.batching`); texts are cut at the
training ``max_length`` exactly as :func:`~nlp_transfer.inference.load_classifier` does, so the
answers equal ``Classifier.predict``. A bad request gets a 4xx with ``{"error", "error_type"}``:
400 malformed JSON, 422 a payload of the wrong shape or type or empty inputs, 413 a body over
``max_body_bytes`` or more than ``max_inputs`` texts, 401 a missing or wrong API key (compared in
constant time), 404/405 unknown routes or methods. When ``max_queue`` texts already wait for the
model, a request is refused with 503 and a ``Retry-After`` header (seconds) instead of waiting
without bound. No request can stop the server.
"""

from __future__ import annotations

import hmac
import json
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, AsyncIterator, Optional

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batching import DynamicBatcher, Overloaded
from .errors import UserInputError
from .inference import Classifier
from .predictions import top_k_labels
from .onnx_model import OnnxSequenceClassifier
from .version import __version__


@dataclass
class ServeSettings:
    """Limits and batching of the server (the ``serve`` options).

    Attributes:
        max_batch_size: most texts per forward pass when gathering requests.
        max_wait_ms: how long a request may wait for others to share its forward pass.
        batching: False runs every request as its own forward pass.
        max_inputs: most texts in one request (more: 413), TEI's ``max_client_batch_size``.
        max_body_bytes: largest request body (more: 413).
        max_queue: most texts waiting for a forward pass (a request that would go past it: 503 with
            ``Retry-After``); at least ``max_inputs``, so every accepted request size fits an empty queue.
        api_key: when set, ``/predict`` and ``/info`` need ``Authorization: Bearer <key>``.
        model_id: the name ``/info`` reports.
    """

    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    batching: bool = True
    max_inputs: int = 256
    max_body_bytes: int = 1_048_576
    max_queue: int = 1024
    api_key: Optional[str] = None
    model_id: str = "model"

    def __post_init__(self) -> None:
        if self.api_key is not None and not (self.api_key.isascii() and self.api_key.isprintable()
                                             and self.api_key and " " not in self.api_key):
            # An empty key would silently turn authentication off; others could never be sent in the header.
            raise UserInputError("the API key is empty or holds spaces or non-ASCII characters; use printable ASCII "
                                 "without spaces, e.g. from: python -c 'import secrets; print(secrets.token_urlsafe())'")
        if self.max_queue < self.max_inputs:
            raise UserInputError(f"--max-queue {self.max_queue} is smaller than --max-inputs {self.max_inputs}: a "
                                 "request of the largest allowed size could never be queued; raise --max-queue or "
                                 "lower --max-inputs.")


class ApiError(Exception):
    """A request the server refuses: HTTP status, TEI error type and a sentence for the client."""

    def __init__(self, status: int, error_type: str, message: str, headers: Optional[dict[str, str]] = None):
        super().__init__(message)
        self.status, self.error_type, self.message, self.headers = status, error_type, message, headers


def _error(status: int, error_type: str, message: str, headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({"error": message, "error_type": error_type}, status_code=status, headers=headers)


def create_app(clf: Classifier, settings: ServeSettings) -> FastAPI:
    """The FastAPI application serving ``clf`` with ``settings`` (run it with uvicorn).

    Args:
        clf: the loaded classifier (PyTorch or ONNX backend).
        settings: batching and limits.
    """
    batcher = DynamicBatcher(lambda texts, pairs: clf.predict_proba(texts, pairs, batch_size=settings.max_batch_size),
                             settings.max_batch_size, settings.max_wait_ms, settings.batching, settings.max_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()  # uvicorn has let in-flight requests finish before this

    app = FastAPI(title="nlp-transfer", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.batcher = batcher

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else err.headers
        return _error(err.status, err.error_type, err.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, "Http", str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception) -> JSONResponse:
        return _error(500, "Backend", f"the model failed on this request: {type(err).__name__}: {err}")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    async def info(request: Request) -> dict[str, Any]:
        _authorize(request, settings.api_key)
        return _info(clf, settings, batcher)

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        _authorize(request, settings.api_key)
        payload = _parse_json(await _read_body(request, settings.max_body_bytes))
        single, texts, pairs, top_k = _parse_predict(payload, clf, settings.max_inputs)
        try:
            probs = await batcher.submit(texts, pairs)
        except Overloaded as err:
            raise ApiError(503, "Overloaded", f"{err}; retry in {err.retry_after} s (serve's --max-queue sets the "
                           "limit).", {"Retry-After": str(err.retry_after)}) from None
        answers = _predictions(clf, probs, top_k)
        return JSONResponse(answers[0] if single else answers)

    return app


def _authorize(request: Request, api_key: Optional[str]) -> None:
    if api_key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # compare_digest takes the same time wherever the strings differ, so timing reveals nothing of the key.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
        raise ApiError(401, "Unauthorized", "missing or wrong API key; send the header 'Authorization: Bearer <key>'.")


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    too_large = ApiError(413, "Validation", f"the request body is over the limit of {limit} bytes; send fewer or "
                         "shorter texts per request (the limit is serve's --max-body-bytes).")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, "Validation", f"the request body is not valid JSON ({err}); send "
                       '{"inputs": "a text"} or {"inputs": ["text 1", "text 2"]}.') from None


def _parse_predict(payload: Any, clf: Classifier, max_inputs: int) -> tuple[bool, list[str], Optional[list[str]], Optional[int]]:
    """``(single, texts, pairs, top_k)`` from a /predict payload, or a 413/422 :class:`ApiError`."""
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise ApiError(422, "Validation", 'the body must be a JSON object with "inputs": a text or a list of texts.')
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ApiError(422, "Validation", f'"parameters" must be an object; got {type(parameters).__name__}.')
    top_k = payload.get("top_k", parameters.get("top_k"))
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ApiError(422, "Validation", f'"top_k" must be a positive integer; got {json.dumps(top_k)}.')
    if payload.get("raw_scores") not in (None, False):
        raise ApiError(422, "Validation", '"raw_scores" is not supported: scores are probabilities.')
    if payload.get("truncate") is False:
        raise ApiError(422, "Validation", '"truncate": false is not supported: texts are always cut at the '
                       f"{clf.max_length} tokens the model was trained with.")
    single, texts, pairs = _inputs(payload["inputs"], clf.text_pair_column is not None)
    if len(texts) > max_inputs:
        raise ApiError(413, "Validation", f"{len(texts)} inputs in one request; the limit is {max_inputs} (serve's "
                       "--max-inputs); split the request.")
    return single, texts, pairs, top_k


def _inputs(inputs: Any, pair_model: bool) -> tuple[bool, list[str], Optional[list[str]]]:
    expected = 'a ["text", "pair"] list or a list of them' if pair_model else "a string or a list of strings"
    if pair_model:
        if _is_pair(inputs):
            return True, [inputs[0]], [inputs[1]]
        if isinstance(inputs, list) and inputs and all(_is_pair(item) for item in inputs):
            return False, [item[0] for item in inputs], [item[1] for item in inputs]
    elif isinstance(inputs, str):
        return True, [inputs], None
    elif isinstance(inputs, list) and inputs and all(isinstance(item, str) for item in inputs):
        return False, list(inputs), None
    if isinstance(inputs, list) and not inputs:
        raise ApiError(422, "Validation", f'"inputs" is empty; send {expected}.')
    found = type(inputs).__name__ if not isinstance(inputs, list) else \
        "a list holding " + ", ".join(sorted({type(item).__name__ for item in inputs}))
    raise ApiError(422, "Validation", f'"inputs" must be {expected}; got {found}.')


def _is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)


def _predictions(clf: Classifier, probs: np.ndarray, top_k: Optional[int]) -> list[list[dict[str, Any]]]:
    """Per text, the ``top_k`` (default: all) labels with their probabilities, best first."""
    ranked, scores = top_k_labels(probs, min(top_k or len(clf.labels), len(clf.labels)))
    return [[{"label": clf.labels[i], "score": float(s)} for i, s in zip(ids, row)] for ids, row in zip(ranked, scores)]


def _info(clf: Classifier, settings: ServeSettings, batcher: DynamicBatcher) -> dict[str, Any]:
    backend = "onnx" if isinstance(clf.model, OnnxSequenceClassifier) else "pytorch"
    limits = asdict(settings)
    limits.pop("api_key")
    return {
        "model_id": settings.model_id,
        "model_type": {"classifier": {"id2label": dict(enumerate(clf.labels)),
                                      "label2id": {label: i for i, label in enumerate(clf.labels)}}},
        "labels": clf.labels,
        "max_input_length": clf.max_length,
        "text_pair": clf.text_pair_column is not None,
        "backend": backend,
        "max_client_batch_size": settings.max_inputs,
        "max_batch_requests": settings.max_batch_size,
        "settings": limits,
        "batches_run": batcher.batches,
        "queued_texts": batcher.queued,
        "refused_overloaded": batcher.refused,
        "version": __version__,
    }
