"""Load test of ``nlp-transfer serve``: requests/s and p50/p99 latency, dynamic batching on and off side by side.

    flock /tmp/nlp-transfer-bench.lock nice -n 10 python scripts/bench_serve.py --model-dir runs/my-model

Without --model-dir it first fine-tunes the default encoder as scripts/bench_predict.py does.
For each setting (batching on: ``--max-batch-size 64 --max-wait-ms 5``; off: ``--no-batching``,
every request its own forward pass) a server is started on the loopback interface (127.0.0.1
only), warmed up, and for each number of concurrent clients (default 16 and 64) every client sends
requests back to back over its own keep-alive connection, one test-set text per request, until
--requests in all (default 2,000) are answered. A bounded test: loopback only, a fixed number of
requests. Reported per run: requests/s, p50/p99 latency (ms) of the answered requests, errors
(any status but 200, e.g. 503 from a full queue, or a client timeout), and the forward passes the
server ran (``/info``'s ``batches_run``). Prints a Markdown table, then one JSON document with the
machine described (CPU, cores, memory, load before and after, versions).

The clients run on the same machine as the server and take CPU from it; on a machine with few
cores the absolute figures understate the server, the on/off ratio is the point.
"""

from __future__ import annotations

import argparse
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

from bench_data import SHARED, read_rows

DATA = SHARED / "rotten_tomatoes"
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
    """``nlp-transfer serve`` on a free loopback port, once ``/health`` answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nlp_transfer.cli", "-q", "serve", model_dir, "--host", "127.0.0.1",
                             "--port", str(port), *options], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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


def load(port: int, texts: list[str], clients: int, requests: int, timeout: float) -> dict:
    """``clients`` threads share ``requests`` single-text requests; latency in ms of those answered 200."""
    counter = itertools.count()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        while (i := next(counter)) < requests:
            body = json.dumps({"inputs": texts[i % len(texts)], "top_k": 1})
            start = time.perf_counter()
            try:
                connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException) as err:
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                status = type(err).__name__
            elapsed = (time.perf_counter() - start) * 1000
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == "200":
                    latencies.append(elapsed)
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
    percentile = lambda q: round(float(np.percentile(latencies, q)), 1) if latencies else None  # noqa: E731
    return {"clients": clients, "requests": requests, "answered": len(latencies), "errors": requests - len(latencies),
            "statuses": statuses, "seconds": round(seconds, 2), "requests_per_s": round(len(latencies) / seconds, 1),
            "p50_ms": percentile(50), "p99_ms": percentile(99), "forward_passes": batches,
            "mean_texts_per_pass": round(len(latencies) / max(batches, 1), 1)}


def machine() -> dict:
    """The machine the figures come from: CPU, cores, memory, OS, versions, load average."""
    cpu = platform.processor() or platform.machine()
    memory_gb = None
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
        memory_gb = round(kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass  # not Linux: platform's answer stands
    import torch
    import uvicorn

    return {"cpu": cpu, "cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "memory_gb": memory_gb, "os": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "uvicorn": uvicorn.__version__,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def print_table(runs: dict[str, dict]) -> None:
    """One Markdown row per (setting, clients), then the on/off ratio of requests/s per client count."""
    print("| setting | clients | requests | errors | requests/s | p50 ms | p99 ms | forward passes | texts/pass |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, run in runs.items():
        print(f"| {name.rsplit('_', 2)[0]} | {run['clients']} | {run['requests']} | {run['errors']} | "
              f"{run['requests_per_s']} | {run['p50_ms']} | {run['p99_ms']} | {run['forward_passes']} | "
              f"{run['mean_texts_per_pass']} |")
    for clients, ratio in ratios(runs).items():
        print(f"\n{clients} clients: batching on serves {ratio}x the requests/s of batching off", end="")
    print("\n")


def ratios(runs: dict[str, dict]) -> dict[int, float]:
    """Requests/s with batching on over off, per number of clients measured both ways."""
    found = {}
    for name, on in runs.items():
        off = runs.get(name.replace("batching_on", "batching_off"))
        if name.startswith("batching_on") and off and off["requests_per_s"]:
            found[on["clients"]] = round(on["requests_per_s"] / off["requests_per_s"], 2)
    return found


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", help="A trained (or exported ONNX) model folder; default: fine-tune one first.")
    parser.add_argument("--train-file", default=str(DATA / "train.csv"))
    parser.add_argument("--test-file", default=str(DATA / "test.csv"), help="Its text column gives the requests.")
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 64], help="Concurrent clients per run.")
    parser.add_argument("--requests", type=int, default=2000, help="Requests per run (one text each).")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--backend", choices=["pytorch", "onnx"], help="serve's --backend (default: detected).")
    parser.add_argument("--timeout", type=float, default=120, help="Seconds a client waits for an answer.")
    args = parser.parse_args()
    if args.requests < 1 or min(args.clients) < 1:
        parser.error("--requests and --clients must be positive")
    return args


def main() -> None:
    args = parse_args()
    texts = [row["text"] for row in read_rows(Path(args.test_file))]
    result = {"machine": machine(), "requests_per_run": args.requests, "loopback": "127.0.0.1", "runs": {}}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            from bench_predict import train_model

            model_dir = train_model(Path(tmp), Path(args.train_file))
        result["model"] = args.model_dir or "all-MiniLM-L6-v2 fine-tuned on 1000 rotten_tomatoes rows, 1 epoch, max_length 64"
        for name in args.settings:
            options = SETTINGS[name] + (["--backend", args.backend] if args.backend else [])
            proc, port = start_server(model_dir, options)
            try:
                load(port, texts, 4, 40, args.timeout)  # warm-up: thread pools, allocator, first batches
                for clients in args.clients:
                    run = {"server_options": " ".join(options), **load(port, texts, clients, args.requests, args.timeout)}
                    result["runs"][f"{name}_{clients}_clients"] = run
                    print(json.dumps({f"{name}_{clients}_clients": run}), file=sys.stderr, flush=True)  # progress
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["batching_on_over_off_requests_per_s"] = {str(k): v for k, v in ratios(result["runs"]).items()}
    print_table(result["runs"])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
