"""Label readers (nlp_transfer/labels.py) and hold-out splits (nlp_transfer/splits.py) for every problem type."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from nlp_transfer import UserInputError
from nlp_transfer.labels import IndicatorColumns, NumericLabel, SeparatedLabels, SingleLabels, label_reader
from nlp_transfer.splits import iterative_split, random_split


def _ds(**columns):
    return Dataset.from_dict(columns)


def test_separated_labels_read_sets_and_empty_cells():
    reader = SeparatedLabels("labels", ",")
    ds = _ds(labels=["sports, politics", "", None, "tech", "politics"])
    labels = reader.label_set(ds, "train.csv")
    assert labels == ["politics", "sports", "tech"]
    assert reader.encoder(labels)({"labels": ["sports, politics", "", None, "tech"]}) == [
        [1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]


def test_a_cell_of_separators_only_is_refused_with_its_row():
    with pytest.raises(UserInputError, match=r"holds only separators \(','\) in 2 row\(s\) \(data rows 2, 4\)"):
        SeparatedLabels("labels", ",").label_set(_ds(labels=["a", ",", "b", " , ,"]), "train.csv")


def test_an_unknown_multi_label_at_test_time_is_named():
    with pytest.raises(UserInputError, match=r"test file 'test.csv' has label\(s\) never seen in training: 'sprots'"):
        SeparatedLabels("labels", "|").check(_ds(labels=["sports|sprots", ""]), "test", "test.csv", ["sports", "tech"])


def test_indicator_columns_take_zero_or_one_only():
    reader = IndicatorColumns(["a", "b"])
    ds = _ds(a=["1", "0", "1"], b=["0", "0", "1"])
    assert reader.label_set(ds, "t.csv") == ["a", "b"]
    assert reader.encoder(["a", "b"])({"a": ["1", "0"], "b": ["0", "1"]}) == [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(UserInputError, match=r"label column 'b' holds 'yes' in 1 row\(s\) \(data rows 2\)"):
        reader.check(_ds(a=["1", "0"], b=["0", "yes"]), "validation", "v.csv", ["a", "b"])


@pytest.mark.parametrize("bad", ["abc", "inf", "nan", "", "1e999"])
def test_regression_targets_must_be_finite_numbers(bad):
    reader = NumericLabel("score")
    assert reader.label_set(_ds(score=["1.5", "-2", "3e-1"]), "t.csv") == ["score"]
    with pytest.raises(UserInputError, match=r"needs a finite number in label column 'score'.*data rows 3"):
        reader.label_set(_ds(score=["1.5", "2", bad]), "t.csv")


def test_the_reader_follows_the_settings():
    assert isinstance(label_reader({}), SingleLabels)
    assert isinstance(label_reader({"multi_label": True, "label_separator": ";"}), SeparatedLabels)
    assert isinstance(label_reader({"multi_label": True, "label_columns": "a,b"}), IndicatorColumns)
    assert isinstance(label_reader({"task": "regression", "label_column": "score"}), NumericLabel)


def test_iterative_split_keeps_every_label_share_and_is_seeded():
    rng = np.random.default_rng(0)
    y = (rng.random((600, 4)) < [0.5, 0.2, 0.04, 0.3]).astype(float)
    train, val = iterative_split(y, 0.2, seed=1)
    assert len(val) == 120 and len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 600
    share = y[val].sum(axis=0) / y.sum(axis=0)
    assert np.all(np.abs(share - 0.2) < 0.03), share  # also the 4% label
    # A plain random split of the same size misses the rare label's share far more often.
    plain = [abs(y[random_split(600, 0.2, s)[1]].sum(axis=0)[2] / y[:, 2].sum() - 0.2) for s in range(20)]
    assert max(plain) > 0.05
    assert np.array_equal(iterative_split(y, 0.2, seed=1)[1], val)
    assert not np.array_equal(iterative_split(y, 0.2, seed=2)[1], val)
