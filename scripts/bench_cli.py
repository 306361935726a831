#!/usr/bin/env python3
"""How long the nlp-transfer command takes to answer --help and --version, and its peak memory.

Each command runs as a fresh process (imports included), ``--repeats`` times; the JSON gives the
median wall time, the range and the median peak RSS of each.

    python scripts/bench_cli.py --repeats 7

To measure another checkout of the package with the same interpreter, run it from outside this
checkout with PYTHONPATH set to that checkout's root (a path on PYTHONPATH comes before the
editable install).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = (["--help"], ["--version"], ["train", "--help"], ["evaluate", "--help"], ["predict", "--help"])


def _console_script() -> list[str]:
    """The installed ``nlp-transfer`` next to this Python, else ``python -m nlp_transfer.cli``."""
    script = Path(sys.executable).with_name("nlp-transfer")
    return [str(script)] if script.exists() else [sys.executable, "-m", "nlp_transfer.cli"]


def run_once(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one run of ``command``, read from the child's own rusage."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited with {proc.returncode}")
    return seconds, usage.ru_maxrss / 1024  # ru_maxrss is in KB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per command (the median is reported)")
    args = parser.parse_args()
    base = _console_script()
    results = {}
    for words in COMMANDS:
        runs = [run_once(base + words) for _ in range(args.repeats)]
        seconds = [s for s, _ in runs]
        results[" ".join(words)] = {
            "median_s": round(statistics.median(seconds), 3),
            "range_s": [round(min(seconds), 3), round(max(seconds), 3)],
            "peak_rss_mb": round(statistics.median(m for _, m in runs), 1),
        }
    print(json.dumps({"command": base, "PYTHONPATH": os.environ.get("PYTHONPATH"), "repeats": args.repeats,
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
