"""The feature cache: one encoder pass per text, reused until the model, data, length or pooling change."""

from __future__ import annotations

import copy

import pytest
import torch

from nlp_transfer import TrainConfig, train
from nlp_transfer.data import prepare_data
from nlp_transfer.features import CacheStats, FeatureHead, cached_features, encode
from nlp_transfer.modeling import load_for_training, load_tokenizer
from nlp_transfer.pooling import apply_pooling
from nlp_transfer.strategies import apply_strategy

from conftest import requires_shared_data, synthetic_rows, write_csv


class EncoderCalls:
    """Counts forward passes of a model's encoder (a real forward hook, no stand-in model)."""

    def __init__(self, model):
        self.count = 0
        model.bert.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.count += 1


@pytest.fixture
def setup(tiny_model_dir, tiny_config, tmp_path):
    """A frozen tiny classifier, its tokenizer and prepared data, and a fresh cache folder."""
    config = tiny_config(strategy="feature-extraction")
    tokenizer = load_tokenizer(tiny_model_dir)
    data = prepare_data(config, tokenizer)
    torch.manual_seed(0)
    model = apply_strategy(load_for_training(tiny_model_dir, data.labels), config)
    return config, tokenizer, data, model, tmp_path / "cache"


def _cached(model, ds, tokenizer, cache, max_length=32, pooling="cls"):
    stats = CacheStats(str(cache))
    features = cached_features(model, ds, tokenizer, max_length, pooling, cache, batch_size=16, stats=stats)
    return features, stats


def test_head_on_cached_cls_vectors_equals_the_full_model(setup):
    config, tokenizer, data, model, _ = setup
    model.eval()
    vectors = torch.from_numpy(encode(model, data.test, tokenizer, "cls", batch_size=7))
    head_logits = FeatureHead(model)(vectors).logits
    rows = data.test.select_columns(["input_ids", "token_type_ids", "attention_mask"]).to_list()
    full_logits = torch.cat([model(**{k: torch.tensor([v]) for k, v in row.items()}).logits for row in rows])
    torch.testing.assert_close(head_logits, full_logits, rtol=1e-5, atol=1e-5)


def test_mean_pooling_ignores_padding(setup, tiny_model_dir):
    _, tokenizer, data, model, _ = setup
    apply_pooling(model, "mean", tiny_model_dir)
    rows = data.test.select(range(9))
    batched = encode(model, rows, tokenizer, "mean", batch_size=9)  # padded to the longest row
    one_by_one = encode(model, rows, tokenizer, "mean", batch_size=1)  # no padding at all
    torch.testing.assert_close(torch.from_numpy(batched), torch.from_numpy(one_by_one), rtol=1e-5, atol=1e-5)


def test_second_call_reads_the_cache_without_encoder_passes(setup):
    _, tokenizer, data, model, cache = setup
    calls = EncoderCalls(model)
    first, stats = _cached(model, data.train, tokenizer, cache)
    assert (stats.misses, stats.rows_encoded) == (1, data.train.num_rows)
    assert calls.count == -(-data.train.num_rows // 16)  # one pass per batch of 16
    calls.count = 0
    second, stats = _cached(model, data.train, tokenizer, cache)
    assert (stats.hits, stats.misses, stats.rows_encoded, calls.count) == (1, 0, 0, 0)
    assert first["features"] == second["features"]
    assert second.num_rows == data.train.num_rows


def test_cache_is_invalidated_when_model_data_length_or_pooling_change(setup, tiny_config, tmp_path):
    config, tokenizer, data, model, cache = setup
    _cached(model, data.train, tokenizer, cache)

    def misses(**kwargs) -> int:
        args = {"model": model, "ds": data.train, "max_length": 32, "pooling": "cls", **kwargs}
        return _cached(args["model"], args["ds"], tokenizer, cache, args["max_length"], args["pooling"])[1].misses

    assert misses() == 0
    assert misses(max_length=24) == 1
    pooled = copy.deepcopy(model)
    apply_pooling(pooled, "mean", "tiny")
    assert misses(model=pooled, pooling="mean") == 1
    assert misses(ds=data.train.select(range(100))) == 1
    # Other data: the same number of rows, other texts.
    other = TrainConfig(**{**config.to_dict(), "train_file": str(write_csv(tmp_path / "o.csv", synthetic_rows(240, seed=9)))})
    assert misses(ds=prepare_data(other, tokenizer).train) == 1
    # Another model: one encoder weight nudged.
    with torch.no_grad():
        model.bert.encoder.layer[1].output.dense.bias[0] += 1e-3
    assert misses() == 1


def test_cache_ignores_the_head_and_the_labels(setup, tiny_model_dir):
    _, tokenizer, data, model, cache = setup
    _cached(model, data.train, tokenizer, cache)
    torch.manual_seed(123)  # another seed: another random head, same encoder
    other_head = apply_strategy(load_for_training(tiny_model_dir, ["a", "b"]), TrainConfig(
        train_file="t.csv", strategy="feature-extraction"))
    assert _cached(other_head, data.train, tokenizer, cache)[1].hits == 1


def test_training_twice_encodes_only_once(tiny_config, tmp_path):
    cache = str(tmp_path / "cache")
    first = train(tiny_config(strategy="feature-extraction", feature_cache_dir=cache, epochs=2))
    assert first.summary["feature_cache"]["rows_encoded"] == 300  # 240 training + 60 validation rows
    second = train(tiny_config(strategy="feature-extraction", feature_cache_dir=cache, epochs=3, seed=8,
                               learning_rate=1e-2, output_dir=str(tmp_path / "again")))
    assert second.summary["feature_cache"] == {**first.summary["feature_cache"], "hits": 2, "misses": 0,
                                               "rows_encoded": 0, "encode_seconds": 0.0}
    assert second.summary["trainable_parameters"] == first.summary["trainable_parameters"]


@pytest.mark.integration
def test_feature_extraction_on_the_real_encoder(tmp_path):
    data_dir = requires_shared_data("trec")
    import csv

    with open(data_dir / "train.csv", encoding="utf-8") as fh:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(fh)][:400]
    train_csv = write_csv(tmp_path / "train.csv", rows[:300])
    test_csv = write_csv(tmp_path / "test.csv", rows[300:])
    config = TrainConfig(train_file=str(train_csv), test_file=str(test_csv), output_dir=str(tmp_path / "m"),
                         strategy="feature-extraction", feature_cache_dir=str(tmp_path / "cache"), epochs=8,
                         learning_rate=2e-3, max_length=32, validation_split=0.2)
    result = train(config)
    # 6 classes, the largest about 0.23 of the rows. MiniLM was trained for mean pooling, so its [CLS]
    # vector is a weak feature (about 0.5 here; scripts/bench_strategies.py compares), but it is learnt.
    assert result.metrics["test"]["accuracy"] > 0.35


def test_feature_extraction_defaults_fit_the_head_to_convergence(caplog):
    config = TrainConfig(train_file="t.csv", strategy="feature-extraction")
    assert (config.head_solver, config.epochs) == ("lbfgs", 1)  # single-label: one L-BFGS fit
    adamw = TrainConfig(train_file="t.csv", strategy="feature-extraction", head_solver="adamw")
    assert (adamw.epochs, adamw.learning_rate, adamw.warmup_ratio, adamw.early_stopping_patience) == (100, 1e-3, 0.0, 5)
    chosen = TrainConfig(train_file="t.csv", strategy="feature-extraction", head_solver="adamw", epochs=7,
                         learning_rate=5e-4, early_stopping_patience=2)
    assert (chosen.epochs, chosen.learning_rate, chosen.early_stopping_patience) == (7, 5e-4, 2)
    with caplog.at_level("WARNING"):  # loop settings given to an L-BFGS fit are named as not applying
        ignored = TrainConfig(train_file="t.csv", strategy="feature-extraction", epochs=7, learning_rate=5e-4)
    assert ignored.epochs == 1 and "--epochs, --learning-rate do(es) not apply" in caplog.text
    for problem in ({"multi_label": True}, {"task": "regression"}):  # their heads train by gradient steps
        assert TrainConfig(train_file="t.csv", strategy="feature-extraction", **problem).head_solver == "adamw"
    finetune = TrainConfig(train_file="t.csv")
    assert (finetune.epochs, finetune.learning_rate, finetune.warmup_ratio, finetune.early_stopping_patience) == \
        (3, 1e-4, 0.1, None)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.from_dict(adamw.to_dict()) == adamw


def test_feature_extraction_at_its_defaults_stops_early_with_a_learnt_head(tiny_config, tmp_path):
    # The tiny encoder is random: its [CLS] vector carries little, the mean over the tokens carries the
    # keywords. This checks the schedule (no warm-up, early stopping) at the tiny model's learning rate;
    # scripts/bench_strategies.py measures the defaults on the real encoder.
    result = train(tiny_config(strategy="feature-extraction", head_solver="adamw", epochs=None, pooling="mean",
                               feature_cache_dir=str(tmp_path / "cache"), keep_checkpoints=0))
    history = result.summary["history"]
    assert 5 < len(history) < 100  # ran past the old 3-5 epochs, and early stopping ended it
    assert result.summary["best_epoch"] == len(history) - 5
    assert result.metrics["test"]["accuracy"] > 0.75
