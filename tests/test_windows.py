"""Long texts as model rows (truncate, head+tail, sliding windows) and window logits pooled per text."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from nlp_transfer import UserInputError
from nlp_transfer.long_text import LongText
from nlp_transfer.windows import check_fits, encode_texts, pool_windows, special_layout

LONG = " ".join(f"w{i}" for i in range(40))  # w0 … w39: many tokens, each word a few
SHORT = "a short text"
WINDOWS = LongText("sliding-window", stride=3, window_pooling="mean", max_windows=50)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _content(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("long_text", [LongText(), LongText("head-tail", head_fraction=0.25), WINDOWS],
                         ids=["truncate", "head-tail", "sliding-window"])
def test_a_text_shorter_than_one_window_gives_the_truncate_row(tokenizer, long_text):
    texts = [SHORT, "", "another one"]
    truncate = tokenizer(texts, truncation=True, max_length=16)
    encoded = encode_texts(tokenizer, texts, None, 16, long_text)
    assert encoded.documents == [0, 1, 2]
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert encoded.features[key] == truncate[key]


def test_head_tail_keeps_the_first_and_last_tokens_of_the_budget(tokenizer):
    ids = _content(tokenizer, LONG)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert special_layout(tokenizer) == (1, 1)
    encoded = encode_texts(tokenizer, [LONG, SHORT], None, 12, LongText("head-tail", head_fraction=0.25))
    # Budget 12 - 2 special tokens = 10: round(2.5) = 2 head tokens (round half to even), 8 tail tokens.
    assert encoded.features["input_ids"][0] == [cls, *ids[:2], *ids[-8:], sep]
    assert encoded.features["attention_mask"][0] == [1] * 12
    assert encoded.features["input_ids"][1] == tokenizer(SHORT)["input_ids"]
    # All head is truncation; all tail keeps the end.
    head_only = encode_texts(tokenizer, [LONG], None, 12, LongText("head-tail", head_fraction=1.0))
    assert head_only.features["input_ids"] == tokenizer([LONG], truncation=True, max_length=12)["input_ids"]
    tail_only = encode_texts(tokenizer, [LONG], None, 12, LongText("head-tail", head_fraction=0.0))
    assert tail_only.features["input_ids"][0] == [cls, *ids[-10:], sep]


def test_windows_cover_the_text_overlapping_by_stride_and_are_capped(tokenizer):
    ids = _content(tokenizer, LONG)
    encoded = encode_texts(tokenizer, [SHORT, LONG], None, 10, WINDOWS)
    windows = [row[1:-1] for row, doc in zip(encoded.features["input_ids"], encoded.documents) if doc == 1]
    assert encoded.documents[0] == 0 and encoded.documents.count(0) == 1
    assert windows[0] == ids[:8]
    for before, after in zip(windows, windows[1:]):
        assert after[:3] == before[-3:]  # consecutive windows share --stride tokens
    covered = windows[0] + [token for window in windows[1:] for token in window[3:]]
    assert covered == ids  # and together they hold the whole text, nothing more
    assert not any(encoded.cut)

    capped = encode_texts(tokenizer, [SHORT, LONG, LONG], None, 10,
                          LongText("sliding-window", stride=3, window_pooling="mean", max_windows=2))
    assert capped.documents == [0, 1, 1, 2, 2]
    assert capped.cut == [False, True, False, True, False]  # flagged once per capped text, on its first window
    assert capped.features["input_ids"][1:3] == encoded.features["input_ids"][1:3]


def test_window_pooling_equals_a_hand_computation():
    # Rows in any order, as the evaluation loop gathers them: documents 5, 2, 9 with 2, 3 and 1 windows.
    logits = torch.tensor([[1.0, -2.0], [0.5, 4.0], [3.0, 0.0], [-1.0, 1.0], [2.0, 2.0], [7.0, -7.0]])
    documents = torch.tensor([5, 2, 5, 2, 9, 2])
    ids, mean, first = pool_windows(logits, documents, "mean")
    assert ids.tolist() == [2, 5, 9]
    expected = [[(0.5 - 1.0 + 7.0) / 3, (4.0 + 1.0 - 7.0) / 3], [(1.0 + 3.0) / 2, (-2.0 + 0.0) / 2], [2.0, 2.0]]
    assert torch.allclose(mean, torch.tensor(expected))
    assert first.tolist() == [1, 0, 4]  # each document's first row, where its reference label is read
    _, maximum, _ = pool_windows(logits, documents, "max")
    assert maximum.tolist() == [[7.0, 4.0], [3.0, 0.0], [2.0, 2.0]]
    # One window per document: pooling changes nothing.
    _, same, _ = pool_windows(logits, torch.arange(6), "mean")
    assert torch.equal(same, logits)


def test_a_stride_that_leaves_no_new_tokens_is_refused_before_the_tokenizer_panics(tokenizer):
    with pytest.raises(UserInputError, match=r"--stride 8 leaves no new tokens per window: a window of --max-length 10 "
                                             r"holds 8 text tokens"):
        check_fits(LongText("sliding-window", stride=8, window_pooling="mean", max_windows=4), 10, tokenizer)
    check_fits(LongText("sliding-window", stride=7, window_pooling="mean", max_windows=4), 10, tokenizer)


def test_text_pairs_are_refused_outside_truncate(tokenizer):
    with pytest.raises(UserInputError, match="--long-text sliding-window reads single texts, but text pairs"):
        encode_texts(tokenizer, ["a"], ["b"], 16, WINDOWS)
