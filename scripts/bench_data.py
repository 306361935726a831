"""Shared by the benchmark scripts: where the real data lies and reading/writing text,label CSVs.

The scripts run as ``python scripts/bench_X.py``, so this folder is on ``sys.path`` and they
import this module by name.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional, Sequence

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def read_rows(path: Path, columns: Optional[Sequence[str]] = ("text", "label")) -> list[dict[str, str]]:
    """The ``columns`` of every row of a CSV (None: every column)."""
    with path.open(encoding="utf-8", newline="") as fh:
        return [r if columns is None else {k: r[k] for k in columns} for r in csv.DictReader(fh)]


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    """Write ``rows`` as a CSV with the first row's columns (text,label when there are no rows); return ``path``."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path
