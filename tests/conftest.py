"""Shared fixtures: a tiny random BERT (built once per session) and small CSV factories.

Unit tests train a 2-layer, 32-wide BERT on synthetic keyword data in seconds; the real
packaged encoder and ``../shared/data`` are used only by tests marked ``integration``/``slow``.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("NLP_TRANSFER_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

POSITIVE = ["good", "great", "excellent", "happy", "wonderful", "love"]
NEGATIVE = ["bad", "awful", "terrible", "sad", "horrible", "hate"]
FILLER = ["the", "movie", "was", "a", "and", "film", "story", "it", "plot", "actors", "really", "very", "this"]


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow") or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow (or -m slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


REAL_PASSES = pytest.StashKey()  # the real small_data.passes_per_epoch


def _few_rows_only(real):
    def passes(config, rows, plan, processes=1):
        return real(config, rows, plan, processes) if plan is not None and plan.few_rows else 1

    return passes


def pytest_configure(config):
    """Unit tests train sets of 100-300 synthetic rows for a handful of steps by design (their step counts,
    checkpoints and equalities are written for one pass per epoch); the small-data policy would raise each
    to 100 steps. In this process the floor applies only to sets with few rows per class, as it did before
    it applied at any size; tests marked ``step_floor`` (tests/test_small_data.py) get the real policy, and
    so do CLI runs in child processes (those pass --small-data off where their step counts matter)."""
    from nlp_transfer import small_data

    config.stash[REAL_PASSES] = small_data.passes_per_epoch
    small_data.passes_per_epoch = _few_rows_only(small_data.passes_per_epoch)


@pytest.fixture(autouse=True)
def _real_step_floor(request):
    """The real small-data step floor for tests marked ``step_floor``."""
    if not request.node.get_closest_marker("step_floor"):
        yield
        return
    from nlp_transfer import small_data

    patched = small_data.passes_per_epoch
    small_data.passes_per_epoch = request.config.stash[REAL_PASSES]
    try:
        yield
    finally:
        small_data.passes_per_epoch = patched


def requires_shared_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is missing (../shared/data is only on developer/CI machines)")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A randomly initialised 2-layer BERT encoder with the real MiniLM tokenizer, saved once."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from nlp_transfer.modeling import resolve_model
    from nlp_transfer.config import DEFAULT_MODEL

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_model_dir_no_dropout(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny model with dropout off: two runs that compute the same thing differ only by float rounding."""
    from transformers import AutoConfig, AutoTokenizer, BertModel

    path = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    config = AutoConfig.from_pretrained(tiny_model_dir, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertModel.from_pretrained(tiny_model_dir, config=config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return str(path)


def synthetic_rows(n: int, seed: int = 0, labels=("neg", "pos")) -> list[tuple[str, str]]:
    """Keyword-sentiment rows: the label is decided by which word list the text draws from."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        keywords = POSITIVE if label == labels[-1] else NEGATIVE
        words = rng.sample(FILLER, rng.randint(2, 8)) + rng.sample(keywords, 2)
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows, header=("text", "label"), **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding=kwargs.pop("encoding", "utf-8"), newline="") as fh:
        writer = csv.writer(fh, **kwargs)
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def write_splits(root: Path, train: int, validation: int, test: int) -> dict[str, Path]:
    """Train/validation/test CSVs of synthetic keyword sentiment with these row counts (seeds 1, 2, 3)."""
    sizes = {"train": train, "validation": validation, "test": test}
    return {split: write_csv(root / f"{split}.csv", synthetic_rows(n, seed=seed))
            for seed, (split, n) in enumerate(sizes.items(), start=1)}


@pytest.fixture
def sentiment_csvs(tmp_path) -> dict[str, Path]:
    """Train/validation/test CSVs of synthetic keyword sentiment."""
    return write_splits(tmp_path, train=240, validation=60, test=80)


@pytest.fixture
def tiny_config(tiny_model_dir, sentiment_csvs, tmp_path):
    """A TrainConfig factory for fast runs of the tiny model on the synthetic data."""
    from nlp_transfer import TrainConfig

    def make(**overrides):
        values = dict(
            train_file=str(sentiment_csvs["train"]), validation_file=str(sentiment_csvs["validation"]),
            test_file=str(sentiment_csvs["test"]), model=tiny_model_dir, output_dir=str(tmp_path / "model"),
            epochs=4, batch_size=16, learning_rate=2e-3, max_length=32, seed=7,
        )
        values.update(overrides)
        return TrainConfig(**values)

    return make


def crash_after(steps: int):
    """Raise KeyboardInterrupt from inside training (as a kill ends a process) after ``steps`` optimizer steps.

    Returns the hook's handle: call ``.remove()`` when done.
    """
    from torch.optim.optimizer import register_optimizer_step_post_hook

    count = {"n": 0}

    def hook(optimizer, args, kwargs):
        count["n"] += 1
        if count["n"] == steps:
            raise KeyboardInterrupt

    return register_optimizer_step_post_hook(hook)
