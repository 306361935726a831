"""Time `nlp-transfer inspect` on a large CSV made by repeating real data; print JSON.

The training CSV is ../shared/data/<source>/train.csv repeated (each copy's texts get a copy
number appended, so most rows stay distinct and every tenth copy repeats the original: duplicates
and leaks are found, not just counted), the test CSV is the real test file. Reported side by side:

- ``inspect_s``: the full report with token lengths (the bundled encoder's tokenizer);
- ``inspect_no_tokens_s``: the same without tokenizing (what `train` runs before training);
- ``python_baseline_s``: the same counts (labels, empty, duplicates, leaks) with the csv module
  and Python sets, the way one would script it by hand, as the reference for the Arrow path.

Usage: python scripts/bench_inspect.py [--rows 100000] [--source rotten_tomatoes]
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_csv(source: Path, rows: int, target: Path) -> int:
    with source.open(encoding="utf-8", newline="") as fh:
        original = [(r["text"], r["label"]) for r in csv.DictReader(fh)]
    written = 0
    with target.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        copy = 0
        while written < rows:
            for text, label in original[: rows - written]:
                writer.writerow([text if copy % 10 == 0 else f"{text} ({copy})", label])
            written = min(rows, written + len(original))
            copy += 1
    return written


def python_baseline(train: Path, test: Path) -> dict:
    def norm(text: str) -> str:
        return " ".join(text.lower().split())

    with train.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    seen: set[str] = set()
    duplicates = 0
    for row in rows:
        key = norm(row["text"])
        duplicates += key in seen
        seen.add(key)
    with test.open(encoding="utf-8", newline="") as fh:
        leaks = sum(norm(r["text"]) in seen for r in csv.DictReader(fh))
    return {"labels": Counter(r["label"].strip() for r in rows), "empty": sum(not r["text"].strip() for r in rows),
            "duplicates": duplicates, "leaks": leaks}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_inspect(*args: str) -> tuple[float, float, dict]:
    """Wall and CPU seconds of one `inspect --json` process (CPU: what it costs on a machine others share)."""
    started, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run([sys.executable, "-m", "nlp_transfer.cli", "inspect", *args, "--json", "-q"],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 2):
        raise SystemExit(proc.stderr)
    return seconds, _children_cpu() - cpu, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--source", default="rotten_tomatoes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        train, test = Path(tmp) / "train.csv", SHARED / args.source / "test.csv"
        rows = make_csv(SHARED / args.source / "train.csv", args.rows, train)
        timed_inspect(str(train), "--no-tokens")  # builds the datasets cache of the CSV, as a first run would
        full_s, full_cpu, full = timed_inspect(str(train), "--test-file", str(test))
        fast_s, fast_cpu, fast = timed_inspect(str(train), "--test-file", str(test), "--no-tokens")
        started, cpu = time.perf_counter(), time.process_time()
        baseline = python_baseline(train, test)
        baseline_s, baseline_cpu = time.perf_counter() - started, time.process_time() - cpu
    assert fast["splits"]["train"]["duplicate_rows"] == baseline["duplicates"]
    assert fast["leakage"]["test"]["rows"] == baseline["leaks"]
    print(json.dumps({
        "rows": rows, "source": args.source,
        "inspect_s": round(full_s, 2), "inspect_cpu_s": round(full_cpu, 2), "inspect_report_s": round(full["seconds"], 2),
        "inspect_no_tokens_s": round(fast_s, 2), "inspect_no_tokens_cpu_s": round(fast_cpu, 2),
        "inspect_no_tokens_report_s": round(fast["seconds"], 2),
        "python_baseline_s": round(baseline_s, 2), "python_baseline_cpu_s": round(baseline_cpu, 2),
        "note": "*_s: wall time of the whole command (process start, imports, tokenizer load); *_cpu_s: its CPU "
                "time; *_report_s: the report itself (reading the CSVs included); the CSV's datasets cache is warm",
        "duplicate_rows": fast["splits"]["train"]["duplicate_rows"], "leaked_test_rows": fast["leakage"]["test"]["rows"],
        "token_p95": full["tokens"]["splits"]["train"]["p95"],
    }, indent=2))


if __name__ == "__main__":
    main()
