"""Seeded hold-out splits for data that per-class stratification does not fit.

- :func:`iterative_split`: multi-label rows, stratified by label set with iterative stratification
  (Sechidis, Tsoumakas and Vlahavas, 2011): the rarest label's rows are placed first, each in the
  part that still wants most of that label, so every label keeps close to ``fraction`` of its
  rows in validation — also the rare ones, which a plain random split often leaves out.
- :func:`random_split`: a plain seeded permutation (regression targets).

Both return sorted row numbers ``(train_rows, validation_rows)``; the same data and seed give the
same split. (Single-label data is split per class by :func:`nlp_transfer.data.split_validation`.)
"""

from __future__ import annotations

import numpy as np

from .errors import UserInputError


def _sizes(n: int, fraction: float) -> int:
    n_val = max(1, round(n * fraction))
    if n - n_val < 1:
        raise UserInputError(f"only {n} training rows: too few to hold out a validation split; pass --validation-file.")
    return n_val


def random_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``round(n * fraction)`` (at least 1) seeded random rows for validation, the rest for training."""
    n_val = _sizes(n, fraction)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def iterative_split(targets: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of multi-label rows, keeping each label's share close to ``fraction``.

    Args:
        targets: ``(rows, labels)`` 0/1 matrix.
        fraction: share of rows for validation.
        seed: draws the order of rows within a label and breaks ties.
    """
    y = np.asarray(targets, dtype=bool)
    n, k = y.shape
    n_val = _sizes(n, fraction)
    rng = np.random.default_rng(seed)
    want = np.array([n - n_val, n_val], dtype=np.float64)  # rows each part still wants: train, validation
    want_label = np.stack([y.sum(axis=0) * (1 - fraction), y.sum(axis=0) * fraction])  # per part and label
    part = np.full(n, -1)
    left = y.copy()
    while left.any():
        remaining = left.sum(axis=0)
        label = int(np.argmin(np.where(remaining > 0, remaining, np.iinfo(np.int64).max)))
        for row in rng.permutation(np.flatnonzero(left[:, label])):
            best = _pick(want_label[:, label], want, rng)
            part[row] = best
            want[best] -= 1
            want_label[best] -= y[row]
            left[row] = False
    unlabelled = rng.permutation(np.flatnonzero(part < 0))
    for row in unlabelled:  # rows with no label: whichever part wants more rows
        best = _pick(want, want, rng)
        part[row] = best
        want[best] -= 1
    return np.flatnonzero(part == 0), np.flatnonzero(part == 1)


def _pick(first: np.ndarray, second: np.ndarray, rng: np.random.Generator) -> int:
    """The part wanting most by ``first``, then by ``second``; a remaining tie is drawn."""
    top = np.flatnonzero(first == first.max())
    if len(top) > 1:
        top = top[second[top] == second[top].max()]
    return int(top[0] if len(top) == 1 else rng.choice(top))
