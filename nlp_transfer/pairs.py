"""Sentence pairs for contrastive training: which labelled rows are paired, and how pairs are batched.

The ``contrastive`` strategy tunes the encoder so that two texts of the same class embed close
together and texts of different classes far apart. Its training data are pairs of rows of the
labelled training set with a target similarity: 1 for a positive pair (same class), 0 for a
negative pair (two classes).

Sampling is label-balanced and seeded:

- half the pairs are positive, half negative;
- positive pairs visit the classes in turn (each class with two or more rows gives the same
  number of pairs however many rows it has), two distinct rows of the class;
- negative pairs take each class in turn as the first side and a uniformly drawn other class as
  the second, one row of each;
- the pairs of epoch ``e`` depend only on ``(seed, e)``: a resumed run sees the same pairs, and
  each epoch draws fresh ones.

How many pairs: :func:`default_pair_count` (about 40 per training row, more when there are many
classes, capped so that a large training set does not turn into hours of pair training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

PAIRS_PER_ROW = 40  # 20 positive + 20 negative pairs per training row, per run
PAIRS_PER_CLASS_PAIR = 20  # per ordered pair of classes: with many classes, negatives to set each two apart
MAX_DEFAULT_PAIRS = 20_000  # the default's ceiling (≈ 1,250 steps of 16 pairs); --pairs goes beyond
MIN_PAIR_STEPS = 40  # the default gives at least this many optimizer steps, whatever the batch size


def default_pair_count(rows: int, classes: int) -> int:
    """Pairs per run when ``--pairs`` is not given: 40 per row or 20 per ordered pair of classes, at most 20,000.

    Args:
        rows: labelled training rows.
        classes: number of classes.
    """
    wanted = max(PAIRS_PER_ROW * rows, PAIRS_PER_CLASS_PAIR * classes * (classes - 1))
    return int(min(MAX_DEFAULT_PAIRS, wanted))


@dataclass
class Pairs:
    """Row indices of the two sides of each pair and the target similarity (1 same class, 0 not)."""

    first: np.ndarray
    second: np.ndarray
    target: np.ndarray

    def __len__(self) -> int:
        return len(self.first)


def sample_pairs(labels: Sequence[int], count: int, seed: int, epoch: int = 0) -> Pairs:
    """``count`` label-balanced pairs of row indices: half positive, half negative, in shuffled order.

    Args:
        labels: the class id of every training row.
        count: how many pairs (an odd count gets one more negative than positive pair).
        seed: the run's seed.
        epoch: the epoch the pairs are for (each epoch draws its own).

    Raises:
        ValueError: fewer than two classes, or no class with two rows (no positive pair exists).
    """
    labels = np.asarray(labels, dtype=np.int64)
    classes = np.unique(labels)
    members = {int(k): np.flatnonzero(labels == k) for k in classes}
    pairable = [k for k, rows in members.items() if len(rows) >= 2]
    if len(classes) < 2 or not pairable:
        raise ValueError("contrastive pairs need two classes and a class with at least two rows")
    rng = np.random.default_rng([seed, epoch, 0x9A125])
    n_pos = count // 2
    n_neg = count - n_pos
    # Positive pairs: classes in turn (a fresh class order per round), two distinct rows of the class.
    pos_classes = _round_robin(pairable, n_pos, rng)
    pos = np.array([rng.choice(members[k], 2, replace=False) for k in pos_classes], dtype=np.int64).reshape(-1, 2)
    # Negative pairs: every class in turn as the first side, a uniformly drawn other class as the second.
    ids = [int(k) for k in classes]
    first_classes = _round_robin(ids, n_neg, rng)
    neg = np.empty((n_neg, 2), dtype=np.int64)
    for i, k in enumerate(first_classes):
        other = ids[(ids.index(k) + 1 + rng.integers(len(ids) - 1)) % len(ids)]
        neg[i] = (rng.choice(members[k]), rng.choice(members[other]))
    sides = np.concatenate([pos, neg])
    target = np.concatenate([np.ones(n_pos, np.float32), np.zeros(n_neg, np.float32)])
    swap = rng.random(len(sides)) < 0.5  # which row comes first carries no meaning
    sides[swap] = sides[swap][:, ::-1]
    order = rng.permutation(len(sides))
    return Pairs(sides[order, 0], sides[order, 1], target[order])


def _round_robin(classes: list[int], n: int, rng: np.random.Generator) -> list[int]:
    """``n`` class ids visiting every class once per round, each round in a fresh random order."""
    out: list[int] = []
    for _ in range(math.ceil(n / len(classes))):
        out.extend(classes[i] for i in rng.permutation(len(classes)))
    return out[:n]


class PairSampler(Sampler[int]):
    """The pairs of the current epoch, as codes ``first * rows + second`` (``set_epoch`` picks the epoch).

    Args:
        labels: the class id of every training row.
        count: pairs per epoch.
        seed: the run's seed.
    """

    def __init__(self, labels: Sequence[int], count: int, seed: int):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.count = count
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose pairs ``__iter__`` yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        pairs = sample_pairs(self.labels, self.count, self.seed, self.epoch)
        return iter((pairs.first * len(self.labels) + pairs.second).tolist())


class PairRows(Dataset):
    """Looks up the two tokenized rows of a pair code; the target is whether their labels agree.

    Args:
        rows: tokenized training rows (``input_ids`` …, ``labels``), held in memory (few-shot sets are small).
    """

    def __init__(self, rows: Any):
        keep = [c for c in ("input_ids", "token_type_ids", "attention_mask") if c in rows.column_names]
        self.inputs = rows.select_columns(keep).to_list()
        self.labels = list(rows["labels"])

    def __len__(self) -> int:
        return len(self.inputs) ** 2

    def __getitem__(self, code: int) -> tuple[dict[str, Any], dict[str, Any], float]:
        first, second = divmod(int(code), len(self.inputs))
        return self.inputs[first], self.inputs[second], float(self.labels[first] == self.labels[second])


class PairCollator:
    """Pads the first sides then the second sides of a batch of pairs as one batch of ``2 × pairs`` texts.

    One forward pass then embeds both sides (which keeps gradient synchronisation to one pass under
    several processes); ``pair_targets`` holds the target similarities.

    Args:
        tokenizer: pads the token ids.
    """

    def __init__(self, tokenizer: Any):
        from transformers import DataCollatorWithPadding

        self.pad = DataCollatorWithPadding(tokenizer)

    def __call__(self, pairs: list[tuple[dict[str, Any], dict[str, Any], float]]) -> dict[str, torch.Tensor]:
        batch = self.pad([p[0] for p in pairs] + [p[1] for p in pairs])
        batch["pair_targets"] = torch.tensor([p[2] for p in pairs], dtype=torch.float32)
        return batch


def pair_loader(rows: Any, count: int, batch_size: int, seed: int, tokenizer: Any) -> DataLoader:
    """The training loader of the contrastive phase: ``count`` fresh pairs per epoch in batches of ``batch_size``.

    Args:
        rows: tokenized training rows with ``labels``.
        count: pairs per epoch.
        batch_size: pairs per batch (each batch embeds twice as many texts).
        seed: the run's seed (pairs and their order depend only on it and the epoch).
        tokenizer: pads batches.
    """
    sampler = PairSampler(rows["labels"], count, seed)
    return DataLoader(PairRows(rows), batch_sampler=BatchSampler(sampler, batch_size, drop_last=False),
                      collate_fn=PairCollator(tokenizer), generator=torch.Generator().manual_seed(seed))


def pairs_per_epoch(config: Any, rows: int, classes: int) -> dict[str, Any]:
    """How many pairs each epoch of a run draws, and why (recorded in the summary and the card).

    ``--pairs`` when given; otherwise :func:`default_pair_count` spread over the epochs, and at
    least :data:`MIN_PAIR_STEPS` optimizer steps in all whatever the batch size.
    """
    if config.pairs is not None:
        per_epoch, source = config.pairs, "--pairs"
    else:
        total = max(default_pair_count(rows, classes), MIN_PAIR_STEPS * config.batch_size)
        per_epoch, source = math.ceil(total / config.epochs), "default"
    return {"pairs_per_epoch": per_epoch, "epochs": config.epochs, "total_pairs": per_epoch * config.epochs,
            "source": source, "positive_fraction": 0.5, "rows": rows, "classes": classes}
