"""Load test of ``nlp-transfer serve``: requests/s and latency with dynamic batching on and off.

    flock /tmp/nlp-transfer-bench.lock python scripts/bench_serve.py --model-dir runs/my-model

Without --model-dir it first fine-tunes the default encoder as scripts/bench_predict.py does.
For each setting (batching on: ``--max-batch-size 64 --max-wait-ms 5``; off: ``--no-batching``) a
server is started on the loopback interface, and for each number of concurrent clients (default
16 and 64) every client sends requests back to back over its own keep-alive connection, one
test-set text per request, until --requests in all are answered. Reported: requests/s, p50/p99
latency (ms), errors, and the forward passes the server ran (``/info``'s ``batches_run``). A
bounded test: loopback only, a fixed number of requests. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import itertools
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "rotten_tomatoes"
SETTINGS = {"batching_on": ["--max-batch-size", "64", "--max-wait-ms", "5"], "batching_off": ["--no-batching"]}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(port: int, path: str) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def start_server(model_dir: str, options: list[str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nlp_transfer.cli", "-q", "serve", model_dir, "--port", str(port),
                             *options], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server failed to start:\n{proc.stderr.read()[-2000:]}")
        try:
            get(port, "/health")
            return proc, port
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise SystemExit("server did not start in 300 s")


def load(port: int, texts: list[str], clients: int, requests: int) -> dict:
    """``clients`` threads share ``requests`` single-text requests; per-request latency in ms."""
    counter = itertools.count()
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while (i := next(counter)) < requests:
            body = json.dumps({"inputs": texts[i % len(texts)], "top_k": 1})
            start = time.perf_counter()
            try:
                connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                ok = False
            elapsed = (time.perf_counter() - start) * 1000
            with lock:
                latencies.append(elapsed)
                errors[0] += not ok
        connection.close()

    before = get(port, "/info")["batches_run"]
    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    batches = get(port, "/info")["batches_run"] - before
    return {"requests": len(latencies), "errors": errors[0], "seconds": round(seconds, 1),
            "requests_per_s": round(len(latencies) / seconds, 1),
            "p50_ms": round(float(np.percentile(latencies, 50)), 1), "p99_ms": round(float(np.percentile(latencies, 99)), 1),
            "forward_passes": batches, "mean_texts_per_pass": round(len(latencies) / max(batches, 1), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="A trained (or exported ONNX) model folder; default: fine-tune one first.")
    parser.add_argument("--train-file", default=str(SHARED / "train.csv"))
    parser.add_argument("--test-file", default=str(SHARED / "test.csv"))
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 64], help="Concurrent clients per run.")
    parser.add_argument("--requests", type=int, default=2000, help="Requests per run (one text each).")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    args = parser.parse_args()

    with (Path(args.test_file)).open(encoding="utf-8", newline="") as fh:
        texts = [row["text"] for row in csv.DictReader(fh)]
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from bench_predict import train_model

            model_dir = train_model(Path(tmp), Path(args.train_file))
        result = {"machine": {"cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                              "python": platform.python_version()},
                  "model": args.model_dir or "all-MiniLM-L6-v2 fine-tuned on 1000 rotten_tomatoes rows, 1 epoch, max_length 64",
                  "requests_per_run": args.requests, "runs": {}}
        for name in args.settings:
            proc, port = start_server(model_dir, SETTINGS[name])
            try:
                load(port, texts, 4, 40)  # warm-up: thread pools, allocator, first batches
                for clients in args.clients:
                    run = {"server_options": " ".join(SETTINGS[name]), **load(port, texts, clients, args.requests)}
                    result["runs"][f"{name}_{clients}_clients"] = run
                    print(json.dumps({f"{name}_{clients}_clients": run}), file=sys.stderr, flush=True)  # progress
            finally:
                proc.terminate()
                proc.wait(timeout=60)
        result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
