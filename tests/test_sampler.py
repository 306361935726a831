"""The length-grouped sampler: every row once per epoch, grouped, seeded, shardable."""

from __future__ import annotations

import numpy as np
from torch.utils.data import BatchSampler

from nlp_transfer.sampler import LengthGroupedSampler


def _lengths(n=1000, seed=0):
    return np.random.default_rng(seed).integers(3, 120, n)


def test_every_row_exactly_once_per_epoch():
    sampler = LengthGroupedSampler(_lengths(1003), batch_size=16, seed=1)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert sorted(sampler) == list(range(1003))


def test_batches_are_length_grouped():
    lengths = _lengths()
    sampler = LengthGroupedSampler(lengths, batch_size=16, seed=1)

    def padding(batches):
        return sum(len(b) * lengths[b].max() - lengths[b].sum() for b in map(np.asarray, batches)) / lengths.sum()

    grouped = padding(list(BatchSampler(sampler, 16, drop_last=False)))
    shuffled = np.random.default_rng(1).permutation(len(lengths))
    random = padding([shuffled[i:i + 16] for i in range(0, len(shuffled), 16)])
    assert grouped < 0.1 < random


def test_order_depends_only_on_seed_and_epoch():
    a, b = LengthGroupedSampler(_lengths(), 16, seed=3), LengthGroupedSampler(_lengths(), 16, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)


def test_only_the_last_batch_is_short():
    sampler = LengthGroupedSampler(_lengths(1003), batch_size=16, seed=0, mega_batch_factor=4)
    sizes = [len(b) for b in BatchSampler(sampler, 16, drop_last=False)]
    assert sizes[:-1] == [16] * (len(sizes) - 1) and sizes[-1] == 1003 % 16
