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

How many pairs: :func:`default_pair_count` (SetFit's oversampling count: every distinct pair of the
more numerous kind, one-class or two-class, once, and as many of the other kind; capped so that a
large training set does not turn into hours of pair training). A batch of ``--batch-size`` texts
holds half as many pairs (:func:`pairs_per_batch`), so a pair step embeds as many texts as a
step of any other strategy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

MAX_DEFAULT_PAIRS = 20_000  # the default's ceiling (1,250 steps of 16 pairs); --pairs goes beyond
MIN_PAIR_STEPS = 8  # the default gives at least this many optimizer steps, whatever the batch size


def default_pair_count(class_sizes: Sequence[int]) -> int:
    """Pairs per run when ``--pairs`` is not given: twice the distinct pairs of the more numerous kind, at most 20,000.

    The distinct one-class pairs (two different rows of a class) and the distinct two-class pairs
    are counted; the run draws as many pairs as the larger count holds, and as many of the other
    kind (half positive, half negative). This is SetFit's default ("oversampling"): on 8 rows for
    each of 2 classes, 128 pairs; for each of 6 classes, 1,920. It grows with the square of the
    rows, which few-shot sets can afford, up to :data:`MAX_DEFAULT_PAIRS`.

    Args:
        class_sizes: training rows of each class.
    """
    sizes = [int(n) for n in class_sizes]
    one_class = sum(n * (n - 1) // 2 for n in sizes)
    two_class = (sum(sizes) ** 2 - sum(n * n for n in sizes)) // 2
    return int(min(MAX_DEFAULT_PAIRS, 2 * max(one_class, two_class)))


def pairs_per_batch(batch_size: int) -> int:
    """Pairs in a batch of ``batch_size`` texts (each pair embeds two): half of it, at least one."""
    return max(1, batch_size // 2)


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
    """Looks up the two rows of a pair code: ``(first row, second row, target)``, the target whether their labels agree.

    Args:
        rows: tokenized training rows (``input_ids`` …, ``labels``), held in memory (few-shot sets are small).
    """

    def __init__(self, rows: Any):
        keep = [c for c in ("input_ids", "token_type_ids", "attention_mask") if c in rows.column_names]
        self.inputs = rows.select_columns(keep).to_list()
        self.labels = list(rows["labels"])

    def __len__(self) -> int:
        return len(self.inputs) ** 2

    def __getitem__(self, code: int) -> tuple[int, int, float]:
        first, second = divmod(int(code), len(self.inputs))
        return first, second, float(self.labels[first] == self.labels[second])


class PairCollator:
    """Pads each distinct text of a batch of pairs once, and says where each pair's two sides are.

    A text that is a side of several pairs of the batch (most are, when the rows are few: 16 pairs
    of 16 rows hold about 14 distinct texts in 32 sides) is embedded once per step, and the loss
    reaches it through every pair it is in. ``pair_first`` / ``pair_second`` index the padded
    texts; ``pair_targets`` holds the target similarities. One forward pass embeds them all (which
    keeps gradient synchronisation to one pass under several processes).

    Args:
        rows: the :class:`PairRows` the batch's row ids refer to.
        tokenizer: pads the token ids.
    """

    def __init__(self, rows: PairRows, tokenizer: Any):
        from transformers import DataCollatorWithPadding

        self.rows = rows
        self.pad = DataCollatorWithPadding(tokenizer)

    def __call__(self, pairs: list[tuple[int, int, float]]) -> dict[str, torch.Tensor]:
        distinct = sorted({row for first, second, _ in pairs for row in (first, second)})
        position = {row: i for i, row in enumerate(distinct)}
        batch = self.pad([self.rows.inputs[row] for row in distinct])
        batch["pair_first"] = torch.tensor([position[p[0]] for p in pairs], dtype=torch.long)
        batch["pair_second"] = torch.tensor([position[p[1]] for p in pairs], dtype=torch.long)
        batch["pair_targets"] = torch.tensor([p[2] for p in pairs], dtype=torch.float32)
        return batch


def pair_loader(rows: Any, count: int, batch_size: int, seed: int, tokenizer: Any) -> DataLoader:
    """The training loader of the contrastive phase: ``count`` fresh pairs per epoch in batches of ``batch_size``.

    Args:
        rows: tokenized training rows with ``labels``.
        count: pairs per epoch.
        batch_size: texts per batch (``--batch-size``): each batch holds :func:`pairs_per_batch` pairs.
        seed: the run's seed (pairs and their order depend only on it and the epoch).
        tokenizer: pads batches.
    """
    sampler = PairSampler(rows["labels"], count, seed)
    lookup = PairRows(rows)
    return DataLoader(lookup, batch_sampler=BatchSampler(sampler, pairs_per_batch(batch_size), drop_last=False),
                      collate_fn=PairCollator(lookup, tokenizer), generator=torch.Generator().manual_seed(seed))


def pairs_per_epoch(config: Any, labels: Sequence[int], classes: int) -> dict[str, Any]:
    """How many pairs each epoch of a run draws, and why (recorded in the summary and the card).

    ``--pairs`` when given; otherwise :func:`default_pair_count` spread over the epochs, and at
    least :data:`MIN_PAIR_STEPS` optimizer steps in all whatever the batch size.

    Args:
        config: the run's settings (``pairs``, ``epochs``, ``batch_size``, ``gradient_accumulation_steps``).
        labels: the class id of every training row.
        classes: number of classes of the task.
    """
    sizes = np.bincount(np.asarray(labels, dtype=np.int64), minlength=classes)
    if config.pairs is not None:
        per_epoch, source = config.pairs, "--pairs"
    else:
        per_step = pairs_per_batch(config.batch_size) * getattr(config, "gradient_accumulation_steps", 1)
        total = max(default_pair_count(sizes), MIN_PAIR_STEPS * per_step)
        per_epoch, source = math.ceil(total / config.epochs), "default"
    return {"pairs_per_epoch": per_epoch, "epochs": config.epochs, "total_pairs": per_epoch * config.epochs,
            "pairs_per_batch": pairs_per_batch(config.batch_size), "source": source, "positive_fraction": 0.5,
            "rows": int(sizes.sum()), "classes": classes}
