"""Pair sampling of the contrastive strategy: label-balanced, seeded, counts that scale with rows and classes."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from nlp_transfer.pairs import (MAX_DEFAULT_PAIRS, MIN_PAIR_STEPS, PairSampler, default_pair_count, pairs_per_epoch,
                                sample_pairs)

# Three classes of very different sizes: 2, 5 and 20 rows.
LABELS = np.array([0] * 2 + [1] * 5 + [2] * 20)


def test_half_the_pairs_are_positive_and_targets_match_the_labels():
    pairs = sample_pairs(LABELS, 601, seed=3)
    assert len(pairs) == 601
    assert pairs.target.sum() == 300  # an odd count gets the extra pair on the negative side
    same = LABELS[pairs.first] == LABELS[pairs.second]
    assert np.array_equal(same, pairs.target == 1)
    positive = pairs.target == 1
    assert np.all(pairs.first[positive] != pairs.second[positive]), "a positive pair is two distinct rows"


def test_every_class_gets_the_same_share_however_many_rows_it_has():
    pairs = sample_pairs(LABELS, 1200, seed=0)
    positive = pairs.target == 1
    per_class = Counter(LABELS[pairs.first[positive]].tolist())
    assert sorted(per_class.values()) == [200, 200, 200]  # round-robin: exactly n_pos / classes each
    negative = ~positive
    sides = Counter(LABELS[pairs.first[negative]].tolist()) + Counter(LABELS[pairs.second[negative]].tolist())
    # Each class is the first side of 1/3 of the negatives and the other side of about 1/3: ~400 appearances.
    assert all(abs(n - 400) < 60 for n in sides.values()), sides
    assert len(sides) == 3


def test_pairs_are_seeded_and_fresh_each_epoch():
    a, b = sample_pairs(LABELS, 100, seed=5, epoch=1), sample_pairs(LABELS, 100, seed=5, epoch=1)
    assert np.array_equal(a.first, b.first) and np.array_equal(a.second, b.second)
    c = sample_pairs(LABELS, 100, seed=5, epoch=2)
    d = sample_pairs(LABELS, 100, seed=6, epoch=1)
    assert not np.array_equal(a.first, c.first) and not np.array_equal(a.first, d.first)

    sampler = PairSampler(LABELS, 50, seed=5)
    sampler.set_epoch(1)
    codes = list(sampler)
    assert len(codes) == len(sampler) == 50
    expected = sample_pairs(LABELS, 50, seed=5, epoch=1)
    assert codes == (expected.first * len(LABELS) + expected.second).tolist()


def test_a_class_with_one_row_still_appears_in_negative_pairs():
    labels = np.array([0, 1, 1, 1])
    pairs = sample_pairs(labels, 40, seed=0)
    positive = pairs.target == 1
    assert set(labels[pairs.first[positive]].tolist()) == {1}
    assert 0 in labels[np.concatenate([pairs.first[~positive], pairs.second[~positive]])]


def test_no_positive_pair_possible_is_refused():
    with pytest.raises(ValueError, match="two classes and a class with at least two rows"):
        sample_pairs(np.array([0, 1, 2]), 10, seed=0)


def test_the_pair_count_scales_with_rows_and_classes():
    # SetFit's oversampling count: twice the distinct pairs of the more numerous kind.
    assert default_pair_count([8, 8]) == 2 * 64  # 64 two-class pairs > 2 × 28 one-class pairs
    assert default_pair_count([8] * 6) == 2 * 15 * 64  # 1,920, as SetFit draws on trec
    assert default_pair_count([30, 2]) == 2 * (435 + 1)  # one big class: its one-class pairs are the more numerous
    assert default_pair_count([1000, 1000]) == MAX_DEFAULT_PAIRS

    def config(**kw):
        return SimpleNamespace(**{"pairs": None, "epochs": 2, "batch_size": 32, "gradient_accumulation_steps": 1, **kw})

    labels = np.repeat(np.arange(6), 8)
    plan = pairs_per_epoch(config(), labels, 6)
    assert plan["pairs_per_epoch"] == 960 and plan["total_pairs"] == 1920 and plan["source"] == "default"
    assert plan["pairs_per_batch"] == 16 and plan["rows"] == 48
    # A large batch on a tiny set still takes MIN_PAIR_STEPS optimizer steps (a batch of 64 texts holds 32 pairs).
    plan = pairs_per_epoch(config(batch_size=64, epochs=1), np.repeat([0, 1], 8), 2)
    assert plan["pairs_per_epoch"] == MIN_PAIR_STEPS * 32
    plan = pairs_per_epoch(config(batch_size=64, epochs=1, gradient_accumulation_steps=2), np.repeat([0, 1], 8), 2)
    assert plan["pairs_per_epoch"] == MIN_PAIR_STEPS * 64
    assert pairs_per_epoch(config(pairs=100), labels, 6)["pairs_per_epoch"] == 100
