"""nlp-transfer serve: answers equal load_classifier under concurrent clients, 4xx/413 handling, API key, SIGTERM drain.

Each test talks HTTP to a real server process on the loopback interface, as a client would.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'nlp-transfer[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install 'nlp-transfer[serve]'")

from nlp_transfer import load_classifier

from conftest import synthetic_rows
from deploy_models import LABELS, train_tiny_classifier


class Server:
    """``nlp-transfer serve`` in a subprocess on a free loopback port."""

    def __init__(self, model_dir: str, *options: str, env: Optional[dict[str, str]] = None):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nlp_transfer.cli", "-q", "serve", model_dir, "--port", str(self.port), *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.proc.stderr.read()[-2000:]}")
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("server did not start in 180 s")
            time.sleep(0.2)

    def request(self, method: str, path: str, body: Any = None, headers: Optional[dict[str, str]] = None,
                raw: Optional[bytes] = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            connection.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            connection.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory) -> str:
    return train_tiny_classifier(tiny_model_dir, tmp_path_factory.mktemp("serve-model"))[0]


@pytest.fixture(scope="module")
def clf(model_dir):
    return load_classifier(model_dir, device="cpu")


@pytest.fixture(scope="module")
def server(model_dir):
    running = Server(model_dir, "--max-wait-ms", "20", "--max-batch-size", "32", "--max-inputs", "16",
                     "--max-body-bytes", "8192")
    yield running
    running.stop()


def _expected(clf, texts: list[str], top_k: Optional[int]) -> list[list[dict[str, Any]]]:
    k = top_k or len(clf.labels)
    answers = clf.predict(texts, top_k=k)
    return [[answer] if isinstance(answer, dict) else answer for answer in answers]


def _assert_same(got: list[list[dict[str, Any]]], want: list[list[dict[str, Any]]]) -> None:
    assert [[p["label"] for p in row] for row in got] == [[p["label"] for p in row] for row in want]
    for row_got, row_want in zip(got, want):  # other batch mates pad differently: float rounding only
        assert [p["score"] for p in row_got] == pytest.approx([p["score"] for p in row_want], abs=1e-5)


def test_answers_equal_load_classifier_under_concurrent_clients(server, clf):
    texts = [text for text, _ in synthetic_rows(200, seed=9, labels=LABELS)] + ["", "good " * 300, "Très bon!"]
    rng = random.Random(0)
    requests = []
    for i in range(160):
        top_k = rng.choice([None, 1, 2, 5])
        if i % 3 == 0:
            requests.append((rng.choice(texts), top_k))
        else:
            requests.append((rng.sample(texts, rng.randint(1, 6)), top_k))
    before = server.request("GET", "/info")[1]["batches_run"]

    def call(item):
        inputs, top_k = item
        return server.request("POST", "/predict", {"inputs": inputs, **({"top_k": top_k} if top_k else {})})

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, requests))
    for (inputs, top_k), (status, body) in zip(requests, answers):
        assert status == 200, body
        if isinstance(inputs, str):
            _assert_same([body], _expected(clf, [inputs], top_k))
        else:
            _assert_same(body, _expected(clf, inputs, top_k))
    # The Inference API's spelling of top_k works too.
    status, body = server.request("POST", "/predict", {"inputs": texts[0], "parameters": {"top_k": 1}})
    _assert_same([body], _expected(clf, [texts[0]], 1))
    batches = server.request("GET", "/info")[1]["batches_run"] - before
    assert batches < len(requests) - 1, "concurrent requests were not gathered into shared batches"


BAD_REQUESTS = [
    ("malformed JSON", "POST", "/predict", b'{"inputs": ', 400),
    ("not JSON", "POST", "/predict", b"inputs=hello", 400),
    ("not UTF-8", "POST", "/predict", b"\xff\xfe\x00", 400),
    ("empty list", "POST", "/predict", {"inputs": []}, 422),
    ("empty body", "POST", "/predict", b"", 400),
    ("number", "POST", "/predict", {"inputs": 5}, 422),
    ("mixed list", "POST", "/predict", {"inputs": ["a", 3]}, 422),
    ("nested lists", "POST", "/predict", {"inputs": [["a", "b"]]}, 422),
    ("object", "POST", "/predict", {"inputs": {"text": "a"}}, 422),
    ("no inputs", "POST", "/predict", {"text": "a"}, 422),
    ("array body", "POST", "/predict", ["a", "b"], 422),
    ("top_k zero", "POST", "/predict", {"inputs": "a", "top_k": 0}, 422),
    ("top_k string", "POST", "/predict", {"inputs": "a", "top_k": "2"}, 422),
    ("top_k bool", "POST", "/predict", {"inputs": "a", "top_k": True}, 422),
    ("raw scores", "POST", "/predict", {"inputs": "a", "raw_scores": True}, 422),
    ("too many inputs", "POST", "/predict", {"inputs": ["a"] * 17}, 413),
    ("oversized body", "POST", "/predict", {"inputs": ["x" * 5000, "y" * 5000]}, 413),
    ("wrong method", "GET", "/predict", None, 405),
    ("unknown route", "GET", "/embed", None, 404),
]


def test_bad_requests_get_the_right_status_and_the_server_keeps_serving(server, clf):
    for name, method, path, body, status in BAD_REQUESTS:
        raw = body if isinstance(body, bytes) else None
        got, answer = server.request(method, path, None if raw is not None else body, raw=raw)
        assert got == status, (name, answer)
        assert isinstance(answer["error"], str) and answer["error"] and answer["error_type"], name
    status, body = server.request("POST", "/predict", {"inputs": ["still", "serving"], "top_k": 1})
    assert status == 200
    _assert_same(body, _expected(clf, ["still", "serving"], 1))
    assert server.request("GET", "/health") == (200, {"status": "ok"})
    info = server.request("GET", "/info")[1]
    assert info["labels"] == list(LABELS) and info["max_input_length"] == 24 and info["max_client_batch_size"] == 16
    assert info["model_type"]["classifier"]["id2label"] == {"0": "neg", "1": "neutral", "2": "pos"}


def test_api_key_is_required_except_for_health(model_dir):
    server = Server(model_dir, env={"NLP_TRANSFER_API_KEY": "s3cret"})
    try:
        payload = {"inputs": "good"}
        assert server.request("POST", "/predict", payload)[0] == 401
        assert server.request("POST", "/predict", payload, {"Authorization": "Bearer wrong"})[0] == 401
        assert server.request("POST", "/predict", payload, {"Authorization": "Basic s3cret"})[0] == 401
        assert server.request("GET", "/info")[0] == 401
        assert server.request("POST", "/predict", payload, {"Authorization": "Bearer s3cret"})[0] == 200
        assert server.request("GET", "/health")[0] == 200
        assert "s3cret" not in json.dumps(server.request("GET", "/info", headers={"Authorization": "Bearer s3cret"}))
    finally:
        server.stop()


@pytest.mark.parametrize("key", ["", "two words", "clé"])
def test_an_api_key_that_could_never_match_or_would_turn_auth_off_is_refused(key, capsys):
    from nlp_transfer.cli import main

    assert main(["serve", "no-such-model", "--api-key", key]) == 2
    assert "the API key is empty or holds spaces or non-ASCII characters" in capsys.readouterr().err


def test_sigterm_finishes_requests_in_flight(model_dir, clf):
    # A long gathering wait keeps the request in flight when SIGTERM arrives.
    server = Server(model_dir, "--max-wait-ms", "2000")
    answer: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: answer.update(result=server.request("POST", "/predict", {"inputs": ["a b", "good"]})))
    try:
        worker.start()
        time.sleep(0.7)
        server.proc.send_signal(signal.SIGTERM)
        worker.join(timeout=60)
        # uvicorn re-raises the signal once drained, so the process ends as killed by SIGTERM, the usual convention.
        assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        server.stop()
    status, body = answer["result"]
    assert status == 200
    _assert_same(body, _expected(clf, ["a b", "good"], None))


def test_inputs_follow_tei_single_batch_and_pair_forms():
    from nlp_transfer.serving import ApiError, _inputs

    assert _inputs("a", pair_model=False) == (True, ["a"], None)
    assert _inputs(["a", "b"], pair_model=False) == (False, ["a", "b"], None)
    # For a model trained on pairs, a two-string list is one pair (TEI's Pair) and a list of them a batch.
    assert _inputs(["q", "p"], pair_model=True) == (True, ["q"], ["p"])
    assert _inputs([["q1", "p1"], ["q2", "p2"]], pair_model=True) == (False, ["q1", "q2"], ["p1", "p2"])
    for bad, pair_model in ((["a", "b", "c"], True), ("a", True), ([["a", "b"]], False), ([], True), (None, False)):
        with pytest.raises(ApiError) as err:
            _inputs(bad, pair_model)
        assert err.value.status == 422


class HeldClassifier:
    """The real classifier, whose forward passes wait until the test releases them: a model slower than any client."""

    def __init__(self, clf):
        self.clf = clf
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.clf, name)

    def predict_proba(self, texts, pairs=None, **kwargs):
        self.entered.set()
        if not self.release.wait(60):
            raise TimeoutError("the test never released the model")
        return self.clf.predict_proba(texts, pairs, **kwargs)


class InProcessServer(Server):
    """The app of ``serve`` run by uvicorn in a thread of the test process, so its model can be held."""

    def __init__(self, app):
        import uvicorn

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.uvicorn = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                     access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)
        self.thread.start()
        for _ in range(300):
            if self.uvicorn.started:
                return
            time.sleep(0.05)
        raise RuntimeError("the in-process server did not start")

    def post(self, inputs: Any) -> tuple[int, dict[str, str], Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request("POST", "/predict", body=json.dumps({"inputs": inputs}),
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), json.loads(response.read())
        finally:
            connection.close()

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(timeout=60)


def test_a_full_queue_answers_503_with_retry_after_under_concurrent_clients(clf):
    from nlp_transfer.serving import ServeSettings, create_app

    held = HeldClassifier(clf)
    server = InProcessServer(create_app(held, ServeSettings(max_queue=4, max_inputs=4, max_batch_size=8, max_wait_ms=0)))
    try:
        with ThreadPoolExecutor(17) as pool:
            first = pool.submit(server.post, "good film")
            assert held.entered.wait(30)  # the first request is on the model thread, which now stays busy
            texts = [text for text, _ in synthetic_rows(16, seed=21, labels=LABELS)]
            calls = [pool.submit(server.post, text) for text in texts]  # 16 clients at once, room for 4 texts
            deadline = time.monotonic() + 30
            while sum(call.done() for call in calls) < 12 and time.monotonic() < deadline:
                time.sleep(0.05)
            info = server.request("GET", "/info")[1]
            assert (info["queued_texts"], info["refused_overloaded"]) == (4, 12)
            refused = [call.result() for call in calls if call.done()]
            assert len(refused) == 12
            for status, headers, body in refused:
                assert status == 503 and body["error_type"] == "Overloaded" and "--max-queue" in body["error"]
                assert int(headers["retry-after"]) >= 1
            assert server.post(["one more"])[0] == 503  # still full: nothing has drained
            held.release.set()
            answered = [(text, call.result()) for text, call in zip(texts, calls) if call.result()[0] == 200]
            assert first.result()[0] == 200 and len(answered) == 4
        for text, (_, _, body) in answered:
            _assert_same([body], _expected(clf, [text], None))
        # The server keeps serving: a full-size request fits the drained queue.
        status, _, body = server.post(texts[:4])
        assert status == 200
        _assert_same(body, _expected(clf, texts[:4], None))
        assert server.request("GET", "/info")[1]["queued_texts"] == 0
    finally:
        held.release.set()
        server.stop()


def test_max_queue_smaller_than_max_inputs_is_refused_before_loading(capsys):
    from nlp_transfer.cli import main

    assert main(["serve", "no-such-model", "--max-inputs", "16", "--max-queue", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --max-queue 8 is smaller than --max-inputs 16: a request of the largest allowed size could "
                   "never be queued; raise --max-queue or lower --max-inputs."]


def test_an_address_that_cannot_be_bound_is_one_line_before_the_model_loads(capsys):
    from nlp_transfer.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The model folder does not exist: the port is checked first, so a taken port fails before minutes of loading.
        assert main(["serve", "no-such-model", "--port", str(port)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port} (Address already in use); another process listens there; stop it or "
        "choose another --port."]
    assert main(["serve", "no-such-model", "--host", "no-such-host.invalid"]) == 2
    assert "--host 'no-such-host.invalid' is not an address" in capsys.readouterr().err


def test_shutdown_finishes_the_running_and_the_queued_requests(clf):
    """What SIGTERM starts (uvicorn's should_exit): no new connections; every accepted request still answered."""
    from nlp_transfer.serving import ServeSettings, create_app

    held = HeldClassifier(clf)
    server = InProcessServer(create_app(held, ServeSettings(max_batch_size=2, max_wait_ms=0)))
    texts = [text for text, _ in synthetic_rows(5, seed=33, labels=LABELS)]
    try:
        with ThreadPoolExecutor(5) as pool:
            calls = [pool.submit(server.post, texts[0])]
            assert held.entered.wait(30)
            calls += [pool.submit(server.post, text) for text in texts[1:]]
            deadline = time.monotonic() + 30
            while server.request("GET", "/info")[1]["queued_texts"] < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.request("GET", "/info")[1]["queued_texts"] == 4  # one running, four waiting
            server.uvicorn.should_exit = True  # uvicorn's SIGTERM handler does exactly this
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
                    time.sleep(0.05)
                except OSError:
                    break  # the listener is closed: nothing new comes in
            else:
                raise AssertionError("the server kept accepting connections after shutdown began")
            assert not any(call.done() for call in calls)
            held.release.set()
            answers = [call.result() for call in calls]
        server.thread.join(timeout=60)
        assert not server.thread.is_alive()
        for text, (status, _, body) in zip(texts, answers):
            assert status == 200
            _assert_same([body], _expected(clf, [text], None))
    finally:
        held.release.set()
        server.stop()
