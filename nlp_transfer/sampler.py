"""Batches: a seeded, epoch-shuffled sampler that groups texts of similar length, and the loaders
built on it (:func:`training_loader` for every training run, :func:`eval_loader` for scoring).

Dynamic padding pads each batch to its longest text; if a batch mixes a 10-token and a
200-token text, 95% of the short one's compute is padding. This sampler shuffles all rows,
cuts the order into "mega-batches" of ``batch_size * mega_batch_factor`` rows, sorts each by
length, slices it into batches and shuffles the batch order. Batches stay random across the
epoch, yet their texts have similar lengths.

It yields row indices (a plain ``Sampler``) in an order where every consecutive
``batch_size`` run is one length group, so a standard ``BatchSampler`` on top of it gives the
grouped batches, and ``accelerate`` shards those batches across processes as it does for any
``DataLoader``. ``set_epoch`` is called by ``accelerate`` (or the trainer) each epoch.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler
from datasets import Dataset
from transformers import DataCollatorWithPadding


class LengthGroupedSampler(Sampler[int]):
    """Row indices, shuffled per epoch, in length-grouped runs of ``batch_size``.

    Args:
        lengths: token count of each row.
        batch_size: rows per batch the order is grouped for.
        seed: base seed; the permutation of epoch ``e`` depends only on ``seed`` and ``e``.
        mega_batch_factor: batches per sorted group; larger groups give less padding but less randomness.
        passes: times each row is visited per epoch (the small-data policy's repeated passes).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, mega_batch_factor: int = 50,
                 passes: int = 1):
        self.rows = len(lengths)
        self.lengths = np.tile(np.asarray(lengths, dtype=np.int64), passes)
        self.batch_size = batch_size
        self.seed = seed
        self.mega_batch_factor = mega_batch_factor
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order ``__iter__`` yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def order(self) -> np.ndarray:
        """The full index order of the current epoch."""
        rng = np.random.default_rng([self.seed, self.epoch])
        perm = rng.permutation(len(self.lengths))
        mega = self.batch_size * self.mega_batch_factor
        batches: list[np.ndarray] = []
        for start in range(0, len(perm), mega):
            chunk = perm[start : start + mega]
            # Stable sort, longest first, so the order is reproducible for equal lengths.
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        # The last batch of the epoch may be short: keep it last so every other batch is full,
        # which keeps per-process batch shapes equal under distributed sharding.
        full = [b for b in batches if len(b) == self.batch_size]
        short = [b for b in batches if len(b) < self.batch_size]
        full = [full[i] for i in rng.permutation(len(full))]
        if not full and not short:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(full + short)

    def __iter__(self) -> Iterator[int]:
        return iter((self.order() % max(1, self.rows)).tolist())


# Bookkeeping columns of tokenized data (nlp_transfer.data): token counts and, with sliding windows, each
# row's text and whether that text was capped.
BOOKKEEPING = ("length", "document", "cut")


def model_inputs(ds: Dataset, keep: tuple[str, ...] = ()) -> Dataset:
    """Drop the bookkeeping columns (except ``keep``) so batches hold only model inputs (and labels)."""
    return ds.remove_columns([c for c in BOOKKEEPING if c in ds.column_names and c not in keep])


def eval_loader(ds: Dataset, tokenizer: Any, batch_size: int) -> DataLoader:
    """Longest-first batches (little padding, and an OOM shows at once, not at the end).

    Windows keep their ``document`` column: the evaluation loop pools their logits per text.
    """
    with warnings.catch_warnings():
        # datasets' sort() passes an option pyarrow deprecated; nothing a caller can act on.
        warnings.filterwarnings("ignore", category=FutureWarning, module="pyarrow")
        warnings.filterwarnings("ignore", message=".*null_placement.*", category=FutureWarning)
        ds = model_inputs(ds.sort("length", reverse=True), keep=("document",))
    return DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=DataCollatorWithPadding(tokenizer))


def training_loader(dataset: Any, lengths: Sequence[int], batch_size: int, seed: int, group_by_length: bool = True,
                    collate_fn: Optional[Callable] = None, passes: int = 1) -> DataLoader:
    """The training ``DataLoader`` of every run: seeded, reshuffled per epoch, optionally length-grouped.

    Either way the order of epoch ``e`` depends only on ``(seed, e)``, so a resumed run sees the
    same batches; groups of one batch are a plain shuffle.

    Args:
        dataset: rows to batch (a ``datasets.Dataset`` of model inputs, or cached features).
        lengths: token count of each row (ignored without ``group_by_length``).
        batch_size: rows per batch.
        seed: base seed of the order.
        group_by_length: sort within groups of 50 batches so little compute goes to padding.
        collate_fn: pads the rows of a batch (None: the default collation).
        passes: times each row is visited per epoch (in one shuffled order over all visits).
    """
    group = 50 if group_by_length else 1
    sampler = LengthGroupedSampler(lengths, batch_size, seed=seed, mega_batch_factor=group, passes=passes)
    return DataLoader(
        dataset,
        batch_sampler=BatchSampler(sampler, batch_size, drop_last=False),
        collate_fn=collate_fn,
        # Iterating a DataLoader draws a seed from this generator, not from the global RNG that
        # dropout uses, so skipping batches on resume leaves the dropout sequence exact.
        generator=torch.Generator().manual_seed(seed),
    )
