"""Mean pooling as an appended encoder layer: its output, the saved folder, and that it never trains."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, pipeline

from nlp_transfer import TrainConfig, UserInputError, load_classifier, train
from nlp_transfer.config import DEFAULT_MODEL
from nlp_transfer.data import prepare_data
from nlp_transfer.evaluation import evaluate_model
from nlp_transfer.features import CacheStats, cached_features
from nlp_transfer.layers import layer_groups
from nlp_transfer.modeling import load_for_training, load_tokenizer
from nlp_transfer.pooling import (
    POOLING_SCALE, add_mean_pooling, apply_pooling, default_pooling, mean_pooling_layer, ships_mean_pooling,
)
from nlp_transfer.strategies import apply_strategy, strategy_for

# The pooled vector differs from the exact layer-normalised mean by about |h| / (POOLING_SCALE · std(mean))
# (h: the previous layer's [CLS] vector); for these models that is below 1e-5, so 1e-4 leaves room.
TOLERANCE = 1e-4
TEXTS = ["good", "a much longer text about the plot and the actors of this film, which was great",
         "bad movie", "the story was really very sad and the actors were terrible"]


def _classifier(model_dir: str, attn: str = "sdpa"):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2,
                                                              attn_implementation=attn).eval()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_pooling_layer_outputs_the_layer_normalised_masked_mean(tiny_model_dir, attn):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _classifier(tiny_model_dir, attn)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert not batch["attention_mask"].all()  # the batch has padding
    with torch.no_grad():
        previous = model.bert(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        mean = (previous * mask).sum(1) / mask.sum(1)
        expected = torch.nn.functional.layer_norm(mean, mean.shape[-1:], eps=model.config.layer_norm_eps)
        add_mean_pooling(model)
        pooled = model.bert(**batch).last_hidden_state[:, 0]
    assert model.config.num_hidden_layers == 3
    torch.testing.assert_close(pooled, expected, atol=TOLERANCE, rtol=0)
    # Each text alone (no padding) gives the same vector as in the padded batch.
    with torch.no_grad():
        alone = torch.cat([model.bert(**tokenizer([t], return_tensors="pt")).last_hidden_state[:, 0] for t in TEXTS])
    torch.testing.assert_close(alone, pooled, atol=TOLERANCE, rtol=0)


def test_pooling_layer_is_recognised_and_added_once(tiny_model_dir, tmp_path):
    model = _classifier(tiny_model_dir)
    assert mean_pooling_layer(model) is None
    layer = add_mean_pooling(model)
    assert add_mean_pooling(model) is layer and model.config.num_hidden_layers == 3
    assert all(not p.requires_grad for p in layer.parameters())
    groups = layer_groups(model)
    assert len(groups.layers) == 2 and {id(p) for p in groups.fixed} == {id(p) for p in layer.parameters()}
    model.save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert again.config.num_hidden_layers == 3 and mean_pooling_layer(again) is not None
    assert (layer.attention.output.dense.weight == POOLING_SCALE * torch.eye(32)).all()


def _fresh_pooling_state(model_dir: str) -> dict[str, torch.Tensor]:
    model = _classifier(model_dir)
    return {k: v.clone() for k, v in add_mean_pooling(model).state_dict().items()}


@pytest.mark.parametrize("overrides", [
    {"strategy": "finetune", "layer_lr_decay": 0.8},
    {"strategy": "freeze", "freeze_layers": 1},
    {"strategy": "gradual-unfreeze"},
    {"strategy": "feature-extraction"},
    pytest.param({"strategy": "lora"}, id="lora"),
])
def test_pooling_layer_weights_are_unchanged_by_training(tiny_config, tiny_model_dir, tmp_path, overrides):
    if overrides["strategy"] == "lora":
        pytest.importorskip("peft")
    extra = {"feature_cache_dir": str(tmp_path / "cache")} if overrides["strategy"] == "feature-extraction" else {}
    result = train(tiny_config(pooling="mean", epochs=3, weight_decay=0.1, **overrides, **extra))
    saved = AutoModelForSequenceClassification.from_pretrained(result.output_dir)
    assert saved.config.num_hidden_layers == 3 and type(saved).__name__ == "BertForSequenceClassification"
    layer = mean_pooling_layer(saved)
    assert layer is not None
    expected = _fresh_pooling_state(tiny_model_dir)
    for name, value in layer.state_dict().items():
        assert torch.equal(value, expected[name]), name
    # Training did change the model: the head (and for all but feature extraction, the encoder) learned.
    assert result.metrics["test"]["accuracy"] > 0.75


def test_saved_mean_pooling_folder_predicts_in_pipeline_as_evaluate_does(tiny_config, sentiment_csvs):
    result = train(tiny_config(pooling="mean", epochs=3))
    folder = Path(result.output_dir)
    assert json.loads((folder / "config.json").read_text())["num_hidden_layers"] == 3
    assert json.loads((folder / "training_config.json").read_text())["pooling"] == "mean"
    assert "Pooling: the classification head reads the mean of the encoder" in (folder / "README.md").read_text()
    with open(sentiment_csvs["test"], encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    texts = [r["text"] for r in rows]
    reference = pipeline("text-classification", model=str(folder), device="cpu")(texts, truncation=True)
    ours = load_classifier(str(folder), device="cpu").predict(texts)
    assert [p["label"] for p in ours] == [r["label"] for r in reference]
    assert max(abs(p["score"] - r["score"]) for p, r in zip(ours, reference)) < 1e-5
    accuracy = sum(r["label"] == row["label"] for r, row in zip(reference, rows)) / len(rows)
    report = evaluate_model(str(folder), str(sentiment_csvs["test"]))
    assert report["accuracy"] == pytest.approx(accuracy) == pytest.approx(result.metrics["test"]["accuracy"])
    assert accuracy > 0.75  # two balanced classes: well above the majority's 0.5


def test_feature_cache_key_includes_the_pooling(tiny_config, tiny_model_dir, tmp_path):
    config = tiny_config(strategy="feature-extraction")
    tokenizer = load_tokenizer(tiny_model_dir)
    data = prepare_data(config, tokenizer)
    stats = CacheStats(str(tmp_path / "cache"))
    models = {}
    for pooling in ("cls", "mean"):
        torch.manual_seed(0)
        models[pooling] = apply_strategy(load_for_training(tiny_model_dir, data.labels), config)
        apply_pooling(models[pooling], pooling, tiny_model_dir)
    cls_vectors = cached_features(models["cls"], data.train, tokenizer, 32, "cls", stats.directory, stats=stats)
    mean_vectors = cached_features(models["mean"], data.train, tokenizer, 32, "mean", stats.directory, stats=stats)
    assert (stats.misses, stats.hits) == (2, 0)
    assert cls_vectors["features"] != mean_vectors["features"]
    cached_features(models["mean"], data.train, tokenizer, 32, "mean", stats.directory, stats=stats)
    assert stats.hits == 1
    with pytest.raises(ValueError, match="does not end in a mean-pooling layer"):
        cached_features(models["cls"], data.train, tokenizer, 32, "mean", stats.directory)


def test_default_pooling_follows_the_model(tiny_model_dir, tmp_path):
    assert ships_mean_pooling(DEFAULT_MODEL) and default_pooling(DEFAULT_MODEL) == "mean"
    assert default_pooling(tiny_model_dir) == "cls"  # a plain BERT folder without sentence-transformers files
    folder = tmp_path / "st-cls"
    folder.mkdir()
    (folder / "config.json").write_text(AutoConfig.from_pretrained(tiny_model_dir).to_json_string())
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                                  "pooling_mode_mean_tokens": False}))
    assert default_pooling(str(folder)) == "cls"
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    assert default_pooling(str(folder)) == "mean"


def test_a_mean_pooling_folder_trains_on_with_mean_and_refuses_cls(tiny_config, tmp_path):
    first = train(tiny_config(pooling="mean", epochs=1))
    assert default_pooling(first.output_dir) == "mean"
    again = train(tiny_config(model=first.output_dir, epochs=1, output_dir=str(tmp_path / "again")))
    config = AutoConfig.from_pretrained(again.output_dir)
    assert config.num_hidden_layers == 3  # the pooling layer was recognised, not appended a second time
    with pytest.raises(UserInputError, match="ends in a mean-pooling layer"):
        train(tiny_config(model=first.output_dir, pooling="cls", epochs=1, output_dir=str(tmp_path / "cls")))


def test_bad_pooling_settings_are_refused():
    with pytest.raises(UserInputError, match="pooling 'max' is unknown"):
        TrainConfig(train_file="t.csv", pooling="max")
    with pytest.raises(UserInputError, match="--pooling mean does not run in float16"):
        TrainConfig(train_file="t.csv", pooling="mean", mixed_precision="fp16")


def test_freeze_layers_counts_the_encoder_layers_only(tiny_config, tiny_model_dir):
    config = tiny_config(strategy="freeze", freeze_layers=3, pooling="mean")
    model = load_for_training(tiny_model_dir, ["neg", "pos"])
    apply_pooling(model, "mean", tiny_model_dir)
    with pytest.raises(UserInputError, match="more than the 2 encoder layers"):
        strategy_for(config).check_model(model)


def test_gradual_unfreeze_never_hands_the_pooling_layer_to_the_optimizer(tiny_config, tiny_model_dir):
    config = tiny_config(strategy="gradual-unfreeze", pooling="mean")
    model = load_for_training(tiny_model_dir, ["neg", "pos"])
    layer = apply_pooling(model, "mean", tiny_model_dir)
    strategy = strategy_for(config)
    strategy.apply(model)
    for epoch in range(4):
        strategy.on_epoch(model, epoch)
    handed = {id(p) for p in strategy.trainable_parameters(model)}
    assert not handed & {id(p) for p in layer.parameters()}
    assert all(not p.requires_grad for p in layer.parameters())


def test_cls_only_last_layer_computes_the_pooling_layer_exactly(tiny_model_dir_no_dropout):
    from nlp_transfer.speed.last_layer import train_first_position_only

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir_no_dropout)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    results = []
    for first_only in (False, True):
        model = _classifier(tiny_model_dir_no_dropout)
        add_mean_pooling(model)
        model.train()
        if first_only:
            assert train_first_position_only(model)  # the pooling layer is the last layer it swaps
        logits = model(**batch).logits
        logits.sum().backward()
        results.append((logits.detach(), [p.grad.clone() for p in model.bert.encoder.layer[1].parameters()]))
    (full, full_grads), (first, first_grads) = results
    torch.testing.assert_close(first, full, atol=1e-5, rtol=1e-5)
    for a, b in zip(first_grads, full_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
