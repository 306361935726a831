"""The contrastive strategy: the pair loss learns, the head fit converges, the folder is plain and resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertForSequenceClassification, pipeline

from nlp_transfer import TrainConfig, UserInputError, train
from nlp_transfer.contrastive import PairSimilarity, freeze_head
from nlp_transfer.linear_head import logistic_regression
from nlp_transfer.evaluation import evaluate_model
from nlp_transfer.metrics import compute_report
from nlp_transfer.pairs import PairCollator, PairRows, sample_pairs
from nlp_transfer.pooling import add_mean_pooling, mean_pooling_layer
from nlp_transfer.task import SingleLabelClassification

from conftest import crash_after, synthetic_rows, write_csv

LABELS = ["neg", "pos"]


def _pair_batch(tokenizer, rows, count: int, seed: int) -> dict[str, torch.Tensor]:
    from datasets import Dataset

    enc = tokenizer([t for t, _ in rows], truncation=True, max_length=32)
    ds = Dataset.from_dict({**enc, "labels": [LABELS.index(label) for _, label in rows]})
    pairs = sample_pairs(ds["labels"], count, seed)
    lookup = PairRows(ds)
    return PairCollator(lookup, tokenizer)([lookup[int(a) * len(rows) + int(b)] for a, b in zip(pairs.first, pairs.second)])


def test_pair_loss_goes_down_on_separable_pairs(tiny_model_dir_no_dropout):
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir_no_dropout)
    model = BertForSequenceClassification.from_pretrained(tiny_model_dir_no_dropout, num_labels=2)
    add_mean_pooling(model)
    freeze_head(model)
    objective = PairSimilarity(SingleLabelClassification(LABELS))
    train_batch = _pair_batch(tokenizer, synthetic_rows(32, seed=1), 64, seed=0)
    held_out = _pair_batch(tokenizer, synthetic_rows(32, seed=2), 64, seed=1)  # other texts, other pairs

    def loss(batch) -> float:
        model.eval()
        with torch.no_grad():
            return float(objective.step(model, batch, 0.0).loss)

    before = loss(held_out)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(40):
        out = objective.step(model, train_batch, 0.0)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = loss(held_out)
    assert after < 0.5 * before, (before, after)
    logs = objective.step(model.eval(), held_out, 1.0).logs
    assert logs["cosine_same_class"] > logs["cosine_other_class"] + 0.5


def test_each_distinct_text_of_a_batch_is_embedded_once_with_the_same_loss(tiny_model_dir_no_dropout):
    """Sides shared by several pairs are padded once; the loss equals embedding every side separately."""
    import torch.nn.functional as F

    from nlp_transfer.contrastive import PAIR_KEYS, sentence_embeddings

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir_no_dropout)
    model = BertForSequenceClassification.from_pretrained(tiny_model_dir_no_dropout, num_labels=2).eval()
    add_mean_pooling(model)
    rows = synthetic_rows(6, seed=3)
    batch = _pair_batch(tokenizer, rows, 16, seed=0)
    sides = torch.cat([batch["pair_first"], batch["pair_second"]])
    assert len(batch["input_ids"]) == len(set(sides.tolist())) < len(sides)  # 32 sides, at most 6 texts
    assert sorted(set(sides.tolist())) == list(range(len(batch["input_ids"])))  # every padded text is used
    with torch.no_grad():
        loss = float(PairSimilarity(SingleLabelClassification(LABELS)).step(model, batch, 0.0).loss)
        texts = {k: v for k, v in batch.items() if k not in PAIR_KEYS}
        one_by_one = [sentence_embeddings(model, {k: v[i:i + 1, :int(texts["attention_mask"][i].sum())]
                                                   for k, v in texts.items()}) for i in sides.tolist()]
        first, second = torch.cat(one_by_one).chunk(2)
        naive = float(F.mse_loss(F.cosine_similarity(first, second, dim=-1), batch["pair_targets"]))
    assert loss == pytest.approx(naive, abs=1e-5)


def test_head_fit_converges_to_the_regularised_optimum():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(60, 8)), dtype=torch.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    weight, bias, fit = logistic_regression(x, y, 2)
    assert fit.converged and fit.max_gradient < 1e-5
    assert fit.train_accuracy > 0.9
    # The optimum of a strictly convex objective: any nudge makes it worse.
    def objective(w, b):
        return float(torch.nn.functional.cross_entropy(x.double() @ w.T + b, y) + w.pow(2).sum() / (2 * len(x)))
    best = objective(weight, bias)
    for _ in range(5):
        assert objective(weight + 1e-2 * torch.randn_like(weight), bias) > best


def _pipeline_report(model_dir: str, rows) -> dict:
    clf = pipeline("text-classification", model=model_dir, device="cpu")
    predictions = clf([text for text, _ in rows], truncation=True, batch_size=16)
    return compute_report([LABELS.index(p["label"]) for p in predictions], [LABELS.index(label) for _, label in rows],
                          LABELS)


@pytest.fixture
def fewshot_config(tiny_model_dir, tmp_path):
    """A contrastive run on 24 rows (12 per class): the small-data policy applies."""
    train_csv = write_csv(tmp_path / "train.csv", synthetic_rows(24, seed=1))
    test_csv = write_csv(tmp_path / "test.csv", synthetic_rows(80, seed=3))

    def make(**overrides):
        values = dict(train_file=str(train_csv), test_file=str(test_csv), model=tiny_model_dir, strategy="contrastive",
                      output_dir=str(tmp_path / "model"), epochs=2, batch_size=8, learning_rate=2e-3, max_length=32,
                      seed=7, pairs=96)
        values.update(overrides)
        return TrainConfig(**values)

    return make


def test_contrastive_saves_a_plain_mean_pooling_folder_that_pipeline_reproduces(fewshot_config, tiny_model_dir):
    config = fewshot_config()
    result = train(config)
    out = Path(result.output_dir)
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]
    saved = BertForSequenceClassification.from_pretrained(str(out))
    assert saved.config.num_hidden_layers == 3 and mean_pooling_layer(saved) is not None  # 2 layers + pooling

    from_pipeline = _pipeline_report(str(out), synthetic_rows(80, seed=3))
    assert evaluate_model(str(out), config.test_file) == from_pipeline == result.metrics["test"]
    assert result.metrics["test"]["accuracy"] >= 0.85  # 12 rows per class of keyword sentiment

    # Phase 1 moved the encoder; phase 2 fit the head (the classifier is not the random initialisation).
    before = BertForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2).state_dict()
    after = saved.state_dict()
    assert not torch.equal(before["bert.encoder.layer.0.attention.self.query.weight"],
                           after["bert.encoder.layer.0.attention.self.query.weight"])
    summary = result.summary
    fits = [e["strategy"]["head_fit"] for e in summary["history"]]
    assert len(fits) == 2 and all(f["converged"] for f in fits)
    assert summary["pairs"]["pairs_per_epoch"] == 96 and summary["pairs"]["source"] == "--pairs"
    assert summary["objective"]["name"] == "pair-similarity"
    card = (out / "README.md").read_text()
    assert "| strategy | contrastive |" in card and "Contrastive pairs: 96 per epoch" in card
    assert "Small data and few-shot regime" in card and "small-data policy applied" in card


def test_contrastive_resumes_exactly_after_a_crash(fewshot_config, tmp_path):
    reference = train(fewshot_config(output_dir=str(tmp_path / "reference"), checkpoint_every=4))
    handle = crash_after(7)  # mid-epoch 1 (12 steps per epoch), after the checkpoint at step 4
    try:
        with pytest.raises(KeyboardInterrupt):
            train(fewshot_config(checkpoint_every=4))
    finally:
        handle.remove()
    resumed = train(fewshot_config(checkpoint_every=4, resume="latest"))
    assert resumed.metrics == reference.metrics
    weights = [load_file(str(Path(r.output_dir) / "model.safetensors")) for r in (resumed, reference)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])
    drop = ("train_runtime_s", "train_loop_s", "train_samples_per_s", "train_tokens_per_s", "command")
    assert {k: v for k, v in resumed.summary.items() if k not in drop} == \
        {k: v for k, v in reference.summary.items() if k not in drop}


@pytest.mark.parametrize("overrides, message", [
    ({"pairs": 1}, r"--pairs must be an integer of at least 2"),
    ({"strategy": "finetune", "pairs": 100}, r"--pairs does not apply to --strategy finetune"),
])
def test_bad_contrastive_settings_are_refused(fewshot_config, overrides, message):
    with pytest.raises(UserInputError, match=message):
        fewshot_config(**overrides)


@pytest.mark.skipif(__import__("shutil").which("accelerate") is None, reason="the accelerate launcher is not on PATH")
def test_contrastive_under_two_processes(tiny_model_dir, tmp_path):
    import os
    import subprocess
    import sys

    train_csv = write_csv(tmp_path / "train.csv", synthetic_rows(24, seed=1))
    test_csv = write_csv(tmp_path / "test.csv", synthetic_rows(81, seed=3))
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "nlp_transfer.cli"]
    args = ["train", str(train_csv), "--test-file", str(test_csv), "--model", tiny_model_dir, "--strategy",
            "contrastive", "--pairs", "96", "--output-dir", str(tmp_path / "two"), "--epochs", "2", "--batch-size",
            "16", "--learning-rate", "2e-3", "--max-length", "32", "--seed", "7"]
    proc = subprocess.run([*launcher, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "ACCELERATE_USE_CPU": "true"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 96 pairs in batches of 16 texts (8 pairs) are 12 batches per epoch: each of the two processes ran 6.
    assert "Epoch 1/2: 100%|██████████| 6/6" in proc.stderr.replace("\r", "\n")
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["test"]["num_samples"] == 81 and metrics["test"]["accuracy"] >= 0.85
    assert evaluate_model(str(tmp_path / "two"), str(test_csv)) == metrics["test"]
