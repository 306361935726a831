"""Shared by the benchmark scripts: where the real data lies and reading/writing text,label CSVs.

The scripts run as ``python scripts/bench_X.py``, so this folder is on ``sys.path`` and they
import this module by name.
"""

from __future__ import annotations

import csv
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def read_rows(path: Path) -> list[dict[str, str]]:
    """The ``text`` and ``label`` of every row of a CSV."""
    with path.open(encoding="utf-8", newline="") as fh:
        return [{"text": r["text"], "label": r["label"]} for r in csv.DictReader(fh)]


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    """Write ``rows`` as a text,label CSV; return ``path``."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path
