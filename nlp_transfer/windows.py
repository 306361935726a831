"""Long texts as model rows, and window scores back to one score per text.

The mechanics behind :class:`~nlp_transfer.long_text.LongText`, shared by training data,
evaluation, feature extraction and :class:`~nlp_transfer.inference.Classifier`:

- :func:`encode_texts` tokenizes texts into model rows (one per text, or one per window) and says
  which text each row belongs to;
- :func:`pool_windows` pools the logits of each text's rows (mean or max over the window axis)
  *before* the task turns them into predictions, so every task (single-label, multi-label,
  regression) is pooled the same way.

A text that fits in one window gives exactly the row ``truncate`` gives, in every mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from .errors import UserInputError
from .long_text import LongText

_MODEL_KEYS = ("input_ids", "token_type_ids", "attention_mask")


@dataclass
class Encoded:
    """Model rows of some texts.

    Attributes:
        features: ``input_ids`` (and ``token_type_ids``, ``attention_mask`` when the tokenizer makes
            them), one unpadded list per row.
        documents: per row, the position of its text in the input.
        cut: per row, True on the first row of a text whose windows were capped at ``max_windows``.
    """

    features: dict[str, list[list[int]]]
    documents: list[int]
    cut: list[bool] = field(default_factory=list)


def special_layout(tokenizer: Any) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a single text.

    Raises:
        UserInputError: special tokens inside the text (head+tail would cut through them).
    """
    plain = tokenizer("hello world", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello world")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return start, len(full) - start - len(plain)
    raise UserInputError(
        f"--long-text head-tail needs special tokens only around the text, but tokenizer {type(tokenizer).__name__} "
        "puts them elsewhere; use --long-text sliding-window or truncate.")


def head_tail_tokens(tokenizer: Any, max_length: int, head_fraction: float) -> tuple[int, int, int, int]:
    """Token counts of a cut text under head+tail: (special tokens before, head, tail, special tokens after)."""
    before, after = special_layout(tokenizer)
    budget = max_length - before - after
    head = round(head_fraction * budget)
    return before, head, budget - head, after


def check_fits(long_text: LongText, max_length: int, tokenizer: Any, flag: str = "--max-length") -> None:
    """Refuse settings that leave a window no new text tokens once the tokenizer's special tokens are in.

    Args:
        long_text: the settings.
        max_length: the window length.
        tokenizer: the model's tokenizer.
        flag: how the user set ``max_length``, for the message.
    """
    if long_text.mode == "head-tail":
        special_layout(tokenizer)
    if not long_text.windows:
        return
    room = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    if long_text.stride >= room:
        raise UserInputError(
            f"--stride {long_text.stride} leaves no new tokens per window: a window of {flag} {max_length} holds "
            f"{room} text tokens besides the tokenizer's special tokens; pass --stride {max(1, room // 4)} or at most "
            f"{room - 1}.")


def encode_texts(tokenizer: Any, texts: Sequence[str], pairs: Optional[Sequence[str]], max_length: int,
                 long_text: LongText) -> Encoded:
    """Tokenize ``texts`` (and ``pairs``, truncate mode only) into model rows as ``long_text`` says.

    Args:
        tokenizer: a fast tokenizer.
        texts: the texts.
        pairs: second texts, or None.
        max_length: tokens per row.
        long_text: how texts longer than ``max_length`` are read (checked by :func:`check_fits`).
    """
    if pairs is not None and long_text.mode != "truncate":
        raise UserInputError(f"--long-text {long_text.mode} reads single texts, but text pairs were given; pass "
                             "single texts (a model trained with --long-text truncate reads pairs).")
    if long_text.mode == "head-tail":
        return _head_tail(tokenizer, texts, max_length, long_text.head_fraction)
    if long_text.windows:
        return _windows(tokenizer, texts, max_length, long_text.stride, long_text.max_windows)
    enc = tokenizer(list(texts), None if pairs is None else list(pairs), truncation=True, max_length=max_length)
    return Encoded({k: enc[k] for k in _MODEL_KEYS if k in enc}, list(range(len(texts))))


def _head_tail(tokenizer: Any, texts: Sequence[str], max_length: int, head_fraction: float) -> Encoded:
    """The first and last tokens of each text's budget, between the tokenizer's own special tokens."""
    before, head, tail, after = head_tail_tokens(tokenizer, max_length, head_fraction)
    enc = tokenizer(list(texts), verbose=False)  # whole texts: the cut is made below
    features: dict[str, list[list[int]]] = {k: [] for k in _MODEL_KEYS if k in enc}
    for row in range(len(texts)):
        n = len(enc["input_ids"][row])
        for key, rows in features.items():
            values = enc[key][row]
            # Keep [specials] head ... tail [specials]: positions [0, before + head) and [n - tail - after, n).
            rows.append(values if n <= max_length else values[:before + head] + values[n - tail - after:])
    return Encoded(features, list(range(len(texts))))


def _windows(tokenizer: Any, texts: Sequence[str], max_length: int, stride: int, max_windows: int) -> Encoded:
    """Windows of ``max_length`` tokens sharing ``stride``, the first ``max_windows`` of each text."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, stride=stride,
                    return_overflowing_tokens=True)
    keep, documents, cut = [], [], []
    first: dict[int, int] = {}  # document → its first kept row
    count: dict[int, int] = {}
    for row, doc in enumerate(enc["overflow_to_sample_mapping"]):
        count[doc] = count.get(doc, 0) + 1
        if count[doc] <= max_windows:
            first.setdefault(doc, len(keep))
            keep.append(row)
            documents.append(doc)
            cut.append(False)
        elif count[doc] == max_windows + 1:  # the text goes on past its last kept window
            cut[first[doc]] = True
    return Encoded({k: [enc[k][i] for i in keep] for k in _MODEL_KEYS if k in enc}, documents, cut)


def pool_windows(logits: torch.Tensor, documents: torch.Tensor, how: str) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  torch.Tensor]:
    """Pool the logits of each document's rows over the window axis.

    Args:
        logits: ``(rows, outputs)`` logits, rows in any order.
        documents: ``(rows,)`` document id of each row.
        how: ``mean`` or ``max`` (element-wise over the document's rows).

    Returns:
        The document ids (ascending), their pooled logits ``(documents, outputs)`` in float32, and for
        each document the position of its first row (to read its reference label).
    """
    ids, inverse = torch.unique(documents, sorted=True, return_inverse=True)
    logits = logits.float().reshape(len(documents), -1)
    index = inverse.unsqueeze(1).expand_as(logits)
    reduce = {"mean": "mean", "max": "amax"}[how]
    pooled = logits.new_zeros(len(ids), logits.shape[1]).scatter_reduce(0, index, logits, reduce, include_self=False)
    positions = torch.arange(len(documents), device=documents.device)
    first = torch.full((len(ids),), len(documents), device=documents.device).scatter_reduce(
        0, inverse, positions, "amin", include_self=False)
    return ids, pooled, first
