"""Transfer strategies on the tiny BERT: what trains, what stays frozen, what gets saved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertForSequenceClassification, get_linear_schedule_with_warmup, pipeline

from nlp_transfer import TrainConfig, UserInputError, evaluate_model, train
from nlp_transfer.cli import main
from nlp_transfer.metrics import compute_report
from nlp_transfer.modeling import load_for_training
from nlp_transfer.strategies import apply_strategy, layer_groups, param_groups, unfreeze_for_epoch

from conftest import synthetic_rows

LABELS = ["neg", "pos"]


def _config(tiny_model_dir: str, **overrides) -> TrainConfig:
    return TrainConfig(train_file="unused.csv", model=tiny_model_dir, learning_rate=1e-3, **overrides)


def _numel(params) -> int:
    return sum(p.numel() for p in params)


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lora_r": 4}, r"--lora-r does not apply to --strategy finetune; it is used by --strategy lora"),
        ({"strategy": "freeze", "lora_alpha": 8.0}, r"--lora-alpha does not apply to --strategy freeze"),
        ({"freeze_layers": 2}, r"--freeze-layers does not apply to --strategy finetune"),
        ({"strategy": "freeze"}, r"--strategy freeze needs --freeze-layers K"),
        ({"strategy": "freeze", "freeze_layers": -1}, r"--freeze-layers must be 0 or more"),
        ({"strategy": "feature-extraction", "layer_lr_decay": 0.8}, r"--layer-lr-decay does not apply to --strategy feature-extraction"),
        ({"layer_lr_decay": 1.5}, r"--layer-lr-decay must be in \(0, 1\]"),
        ({"strategy": "lora", "lora_r": 0}, r"--lora-r must be a positive integer"),
        ({"strategy": "lora", "lora_dropout": 1.0}, r"--lora-dropout must be in \[0, 1\)"),
        ({"strategy": "nonsense"}, r"strategy 'nonsense' is unknown"),
    ],
)
def test_bad_combinations_are_refused(overrides, message):
    with pytest.raises(UserInputError, match=message):
        TrainConfig(train_file="train.csv", **overrides)


def test_strategy_defaults_are_filled_in_and_round_trip():
    lora = TrainConfig(train_file="t.csv", strategy="lora")
    assert (lora.lora_r, lora.lora_alpha, lora.lora_dropout) == (8, 16.0, 0.1)
    assert TrainConfig.from_dict(lora.to_dict()) == lora
    features = TrainConfig(train_file="t.csv", strategy="feature-extraction")
    assert features.pooling is None  # the default depends on the model: filled in by train() (nlp_transfer.pooling)
    assert TrainConfig.from_dict(features.to_dict()) == features


def test_cli_refuses_bad_combinations_with_exit_2(sentiment_csvs, tiny_model_dir, tmp_path, capsys):
    base = ["train", str(sentiment_csvs["train"]), "--model", tiny_model_dir, "--output-dir", str(tmp_path / "m")]
    assert main([*base, "--lora-r", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --lora-r does not apply to --strategy finetune")
    # The depth is known only once the model is loaded: the tiny BERT has 2 layers.
    assert main([*base, "--strategy", "freeze", "--freeze-layers", "3", "--max-length", "32"]) == 2
    err = capsys.readouterr().err  # (after the progress bars of reading the CSV)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert "--freeze-layers 3 is more than the 2 encoder layers" in errors[0] and "pass --freeze-layers 0 to 2" in errors[0]
    assert not (tmp_path / "m").exists()


def test_trainable_counts_match_each_strategy(tiny_model_dir):
    full = load_for_training(tiny_model_dir, LABELS)
    groups = layer_groups(full)
    total = _numel(full.parameters())
    head = _numel(groups.head)
    assert head == _numel(full.bert.pooler.parameters()) + _numel(full.classifier.parameters())
    assert total == _numel(groups.embeddings) + sum(_numel(layer) for layer in groups.layers) + head

    def trainable(**overrides) -> int:
        torch.manual_seed(0)
        model = apply_strategy(load_for_training(tiny_model_dir, LABELS), _config(tiny_model_dir, **overrides))
        return _trainable(model)

    assert trainable() == total
    assert trainable(strategy="feature-extraction") == head
    assert trainable(strategy="freeze", freeze_layers=0) == total - _numel(groups.embeddings)
    assert trainable(strategy="freeze", freeze_layers=1) == _numel(groups.layers[1]) + head
    assert trainable(strategy="freeze", freeze_layers=2) == head
    assert trainable(strategy="gradual-unfreeze") == head  # epoch 0: the task layers only
    # LoRA: rank-r A (r × in) and B (out × r) on query and value of each layer, plus the task layers.
    hidden, r = full.config.hidden_size, 4
    adapters = full.config.num_hidden_layers * 2 * (r * hidden + hidden * r)
    assert trainable(strategy="lora", lora_r=r) == adapters + head


def test_gradual_unfreezing_opens_one_group_per_epoch_from_the_top(tiny_model_dir):
    config = _config(tiny_model_dir, strategy="gradual-unfreeze")
    model = apply_strategy(load_for_training(tiny_model_dir, LABELS), config)
    groups = layer_groups(model)
    expected = [
        _numel(groups.head),
        _numel(groups.head) + _numel(groups.layers[1]),
        _numel(groups.head) + _numel(groups.layers[1]) + _numel(groups.layers[0]),
        _numel(model.parameters()),
        _numel(model.parameters()),
    ]
    for epoch, count in enumerate(expected):
        unfreeze_for_epoch(model, config, epoch)
        assert _trainable(model) == count, epoch


def test_layer_lr_decay_groups_and_schedule(tiny_model_dir):
    config = _config(tiny_model_dir, layer_lr_decay=0.5, weight_decay=0.01)
    model = apply_strategy(load_for_training(tiny_model_dir, LABELS), config)
    groups = param_groups(model, config)
    depths = layer_groups(model).depths()
    params = {id(p): p for p in model.parameters()}
    assert sum(len(g["params"]) for g in groups) == len(params)
    for group in groups:
        for p in group["params"]:
            assert group["lr"] == pytest.approx(1e-3 * 0.5 ** depths[id(p)])
            assert group["weight_decay"] == (0.0 if p.ndim < 2 else 0.01)  # never decay biases / LayerNorm
    assert groups[0]["lr"] == pytest.approx(1e-3)  # head first: the progress bar shows the peak rate
    assert min(g["lr"] for g in groups) == pytest.approx(1e-3 * 0.5 ** 3)  # embeddings: below 2 layers
    # The warm-up/decay schedule scales every group by the same factor, keeping the ratios.
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, 2, 10)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    factor = 6 / 8
    for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr()):
        assert lr == pytest.approx(group["initial_lr"] * factor)


def test_frozen_bottom_builds_no_graph(tiny_model_dir):
    config = _config(tiny_model_dir, strategy="freeze", freeze_layers=1)
    model = apply_strategy(load_for_training(tiny_model_dir, LABELS), config)
    tracked = {}
    for name, module in (("embeddings", model.bert.embeddings), ("layer0", model.bert.encoder.layer[0]),
                         ("layer1", model.bert.encoder.layer[1])):
        module.register_forward_hook(
            lambda _m, _i, out, name=name: tracked.__setitem__(name, (out[0] if isinstance(out, tuple) else out).requires_grad)
        )
    batch = {"input_ids": torch.tensor([[101, 2204, 3185, 102]]), "labels": torch.tensor([1])}
    model(**batch).loss.backward()
    # Nothing below the first trained layer is recorded by autograd: backward stops there.
    assert tracked == {"embeddings": False, "layer0": False, "layer1": True}
    groups = layer_groups(model)
    assert all(p.grad is None for p in groups.embeddings + groups.layers[0])
    assert all(p.grad is not None for p in groups.layers[1] + groups.head)


def _pipeline_report(model_dir: str, rows) -> dict:
    clf = pipeline("text-classification", model=model_dir, device="cpu")
    predictions = clf([text for text, _ in rows], truncation=True, batch_size=16)
    label2id = {name: i for i, name in enumerate(LABELS)}
    return compute_report([label2id[p["label"]] for p in predictions], [label2id[label] for _, label in rows], LABELS)


STRATEGY_RUNS = {
    "finetune": {"layer_lr_decay": 0.9},
    "feature-extraction": {},
    "freeze": {"freeze_layers": 1},
    "gradual-unfreeze": {},  # 2 epochs: the task layers, then also the top layer
    "lora": {"lora_r": 4},
}


def _stays_frozen(strategy: str, key: str) -> bool:
    """Whether a weight of the tiny BERT must leave training bit-identical under ``strategy``."""
    bottom = key.startswith(("bert.embeddings.", "bert.encoder.layer.0."))
    if strategy in ("freeze", "gradual-unfreeze"):
        return bottom
    if strategy == "feature-extraction":
        return key.startswith(("bert.embeddings.", "bert.encoder."))
    if strategy == "lora":  # adapters merge into query/value weights only; pooler and classifier train in full
        adapted = key.endswith((".attention.self.query.weight", ".attention.self.value.weight"))
        return not adapted and not key.startswith(("bert.pooler.", "classifier."))
    return False


@pytest.mark.parametrize("strategy", list(STRATEGY_RUNS))
def test_every_strategy_saves_a_plain_folder_that_pipeline_reproduces(strategy, tiny_config, tiny_model_dir, tmp_path):
    settings = {"strategy": strategy, **STRATEGY_RUNS[strategy]}
    if strategy == "feature-extraction":
        settings["feature_cache_dir"] = str(tmp_path / "features")
    config = tiny_config(epochs=2, **settings)
    result = train(config)
    out = Path(result.output_dir)

    # A standard classifier folder: no adapter files, no adapter or wrapper weight names.
    assert not (out / "adapter_config.json").exists()
    weights = load_file(out / "model.safetensors")
    assert not [k for k in weights if "lora" in k or "classifier_model" in k or "modules_to_save" in k]
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]

    from_pipeline = _pipeline_report(str(out), synthetic_rows(80, seed=3))
    from_evaluate = evaluate_model(str(out), config.test_file)
    assert from_evaluate == from_pipeline == result.metrics["test"]

    saved = json.loads((out / "training_config.json").read_text())
    assert {k: saved[k] for k in settings} == settings
    assert f"| strategy | {strategy} |" in (out / "README.md").read_text()
    assert result.summary["strategy"] == strategy

    # Frozen weights are bit-identical to the pretrained ones; the trained encoder weights moved.
    before = BertForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2).state_dict()
    after = BertForSequenceClassification.from_pretrained(str(out)).state_dict()
    frozen = [k for k in before if _stays_frozen(strategy, k)]
    assert (len(frozen) > 0) == (strategy != "finetune")
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    moved = [k for k in before if k.endswith(".weight") and not k.startswith("classifier.") and k not in frozen
             and not torch.equal(before[k], after[k])]
    if strategy == "lora":
        assert sorted(moved) == sorted(k for k in before if not _stays_frozen("lora", k) and k.endswith(".weight")
                                       and not k.startswith("classifier."))
    elif strategy != "gradual-unfreeze":  # (its top layer trains only if the second epoch was the best)
        assert moved


@pytest.mark.parametrize("strategy", ["contrastive", "dann"])
@pytest.mark.parametrize("task", [{"task": "regression"}, {"multi_label": True}, {"label_columns": "a,b"}])
def test_class_based_strategies_refuse_other_problem_types(strategy, task):
    extra = {"target_file": "target.csv"} if strategy == "dann" else {}
    with pytest.raises(UserInputError, match=f"--strategy {strategy} trains single-label classifiers"):
        TrainConfig(train_file="train.csv", strategy=strategy, **task, **extra)
