"""The target-domain CSV of ``--strategy dann``: read, checked, tokenized and split into training and held-out rows.

Target rows need a text; a label is optional. When the file has the run's ``--label-column``,
rows where it is filled are labelled (they feed ``L_tgt``) and must use the source's label names;
blank ones are unlabelled (``labels`` = -100). A seeded tenth of the rows (at most 1000) is held
out to measure the domain discriminator after each epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc

from .data import TextColumns, column, load_split, tokenize
from .errors import UserInputError

UNLABELLED = -100  # ignored by the loss
HELD_OUT_FRACTION = 0.1
MAX_HELD_OUT = 1000


@dataclass
class TargetData:
    """Tokenized target rows: ``train`` (read by the training steps) and ``held_out`` (discriminator checks)."""

    train: Any
    held_out: Any
    labelled: int

    def counts(self) -> dict[str, int]:
        """Rows per part, for the training summary."""
        return {"train": self.train.num_rows, "held_out": self.held_out.num_rows, "labelled": self.labelled}


def _label_ids(ds: Any, label_column: str, labels: list[str], path: str) -> list[int]:
    """The label id of every row (-100 where blank), refusing labels the source does not have."""
    values = pc.utf8_trim_whitespace(column(ds, label_column)).to_pylist()
    label2id = {name: i for i, name in enumerate(labels)}
    unknown = sorted({v for v in values if v and v not in label2id})
    if unknown:
        raise UserInputError(
            f"target file {path!r} has label(s) that the source training data does not have in column "
            f"{label_column!r}: {', '.join(map(repr, unknown[:5]))}; source labels are: {', '.join(labels)}. Fix or "
            "blank those labels (blank rows count as unlabelled target texts)."
        )
    return [label2id[v] if v else UNLABELLED for v in values]


def load_target(config: Any, tokenizer: Any, labels: list[str]) -> TargetData:
    """Read ``config.target_file``, check it against the source labels, tokenize and split it.

    Args:
        config: the run's ``TrainConfig`` (target file and text column, pair and label columns, max length, seed).
        tokenizer: the run's tokenizer.
        labels: the source label names, in id order.

    Raises:
        UserInputError: the file is missing, empty, lacks its text column, has blank texts, fewer than 2 rows,
            or labels the source does not have.
    """
    path = config.target_file
    columns = TextColumns(config.target_text_column, config.text_pair_column, None)
    raw = load_split(path, "target", columns, name="--target-file")
    if raw.num_rows < 2:
        raise UserInputError(
            f"target file {path!r} has {raw.num_rows} row; --strategy dann needs at least 2 target texts (some to "
            "train on, some held out to measure the domain discriminator), and hundreds to adapt well."
        )
    ids = (_label_ids(raw, config.label_column, labels, path) if config.label_column in raw.column_names
           else [UNLABELLED] * raw.num_rows)
    ds = tokenize(raw, tokenizer, columns, config.max_length, None, "Tokenizing target data").add_column("labels", ids)
    rng = np.random.default_rng([config.seed, 15])
    n_held = min(MAX_HELD_OUT, max(1, round(HELD_OUT_FRACTION * ds.num_rows)))
    order = rng.permutation(ds.num_rows)
    held, train = np.sort(order[:n_held]), np.sort(order[n_held:])
    labelled = int(sum(1 for i in ids if i != UNLABELLED))
    return TargetData(ds.select(train), ds.select(held), labelled)
