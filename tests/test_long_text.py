"""``--long-text``: settings and bad input, and long documents through training, evaluation, prediction,
``load_classifier``, feature extraction, resume and the card.

The synthetic documents put their label's keywords at the very end, after 14-18 filler words: a
16-token window truncated from the start (14 text tokens) never sees them, so a model that reads only the head can
do no better than chance, while sliding windows and head+tail can learn the task.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from nlp_transfer import TrainConfig, UserInputError, load_classifier, train
from nlp_transfer.checkpoint import CHECKPOINTS_DIR, list_checkpoints
from nlp_transfer.cli import main
from nlp_transfer.evaluation import evaluate_model
from nlp_transfer.inference import predict_csv
from nlp_transfer.long_text import MODEL_CONFIG_KEY, LongText

from conftest import FILLER, NEGATIVE, POSITIVE, crash_after, write_csv

WINDOW_SETTINGS = dict(long_text="sliding-window", stride=4, max_length=16)


def long_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Documents of filler words whose label shows only in the two keywords at their end."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ("neg", "pos")[i % 2]
        words = [rng.choice(FILLER) for _ in range(rng.randint(14, 18))]
        rows.append((" ".join(words + rng.sample(POSITIVE if label == "pos" else NEGATIVE, 2)), label))
    rng.shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def long_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("long-docs")
    sizes = {"train": 160, "validation": 31, "test": 41}  # odd counts: a shard one row short under two processes
    return {split: write_csv(root / f"{split}.csv", long_rows(n, seed)) for seed, (split, n) in enumerate(sizes.items(), 1)}


def long_config(tiny_model_dir, files, output_dir, **overrides) -> TrainConfig:
    values = dict(train_file=str(files["train"]), validation_file=str(files["validation"]),
                  test_file=str(files["test"]), model=tiny_model_dir, output_dir=str(output_dir), epochs=3,
                  batch_size=8, learning_rate=2e-3, max_length=16, seed=7)
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def window_model(tiny_model_dir, long_files, tmp_path_factory):
    """A sliding-window model trained once for this module: (result, output folder)."""
    out = tmp_path_factory.mktemp("window-model") / "model"
    result = train(long_config(tiny_model_dir, long_files, out, **WINDOW_SETTINGS))
    return result, out


def _texts(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [row["text"] for row in csv.DictReader(fh)]


# --- settings and bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "message"), [
    ({"long_text": "sliding-window", "stride": 32, "max_length": 32}, r"--stride 32 is not below --max-length 32"),
    ({"long_text": "sliding-window", "stride": 0}, r"--stride must be a positive integer; got 0"),
    ({"long_text": "sliding-window", "stride": -4}, r"--stride must be a positive integer; got -4"),
    ({"long_text": "sliding-window", "max_windows": 0}, r"--max-windows must be a positive integer; got 0"),
    ({"long_text": "sliding-window", "window_pooling": "median"}, r"--window-pooling 'median' is unknown"),
    ({"long_text": "head-tail", "head_fraction": 1.5}, r"--head-fraction must be a number from 0"),
    ({"long_text": "head-tail", "head_fraction": float("nan")}, r"--head-fraction must be a number from 0"),
    ({"stride": 8}, r"--stride applies to --long-text sliding-window only, but --long-text is truncate"),
    ({"long_text": "head-tail", "max_windows": 3}, r"--max-windows applies to --long-text sliding-window only"),
    ({"long_text": "sliding-window", "head_fraction": 0.5}, r"--head-fraction applies to --long-text head-tail only"),
    ({"long_text": "sliding-window", "text_pair_column": "hypothesis"},
     r"--long-text sliding-window reads single texts, but --text-pair-column 'hypothesis' gives pairs"),
    ({"long_text": "head-tail", "text_pair_column": "hypothesis"}, r"--long-text head-tail reads single texts"),
    ({"long_text": "chunks"}, r"--long-text 'chunks' is unknown; choose one of: truncate, head-tail, sliding-window"),
])
def test_bad_settings_are_refused_at_construction(overrides, message):
    with pytest.raises(UserInputError, match=message):
        TrainConfig("x.csv", **overrides)


def test_defaults_are_filled_in_for_the_chosen_mode():
    config = TrainConfig("x.csv", long_text="sliding-window", max_length=128)
    assert (config.stride, config.window_pooling, config.max_windows) == (32, "mean", 16)
    assert TrainConfig("x.csv", long_text="head-tail").head_fraction == 0.25
    plain = TrainConfig("x.csv")
    assert (plain.long_text, plain.stride, plain.head_fraction) == ("truncate", None, None)


@pytest.mark.parametrize(("args", "message"), [
    (["--long-text", "sliding-window", "--max-length", "64", "--stride", "64"], "error: --stride 64 is not below"),
    (["--long-text", "sliding-window", "--max-windows", "-1"], "error: --max-windows"),
    (["--stride", "8"], "error: --stride applies to --long-text sliding-window only"),
    (["--long-text", "windows"], "error: argument --long-text: invalid choice: 'windows'"),
])
def test_bad_options_exit_2_with_one_line(args, message, tmp_path, capsys):
    train_csv = write_csv(tmp_path / "train.csv", long_rows(10, 1))
    assert main(["train", str(train_csv), "--output-dir", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_a_stride_too_large_for_the_tokenizer_stops_before_anything_is_written(tiny_model_dir, long_files, tmp_path):
    # 14 of the 16 tokens are text ([CLS] and [SEP] take two): a stride of 14 would never move on.
    config = long_config(tiny_model_dir, long_files, tmp_path / "out", long_text="sliding-window", stride=14)
    with pytest.raises(UserInputError, match=r"--stride 14 leaves no new tokens per window"):
        train(config)
    assert not (tmp_path / "out").exists()


def test_the_validation_split_draws_whole_texts_with_all_their_windows():
    from datasets import Dataset

    from nlp_transfer.data import label_counts, split_validation

    # 40 texts of 1 to 4 windows each; labels alternate by text.
    documents = [doc for doc in range(40) for _ in range(doc % 4 + 1)]
    ds = Dataset.from_dict({"document": documents, "labels": [doc % 2 for doc in documents],
                            "length": [16] * len(documents)})
    train_part, validation, _ = split_validation(ds, ["neg", "pos"], 0.25, seed=3)
    held_out, kept = set(validation["document"]), set(train_part["document"])
    assert not held_out & kept and held_out | kept == set(range(40))
    assert len(held_out) == 10  # a quarter of the texts, not of the windows
    assert validation.num_rows == sum(doc % 4 + 1 for doc in held_out)  # every window of a held-out text
    assert label_counts(validation, ["neg", "pos"]) == {"neg": 5, "pos": 5}


# --- training, evaluation, prediction ------------------------------------------------------------------

def test_windows_read_what_truncation_cannot_and_metrics_count_documents(window_model, tiny_model_dir, long_files,
                                                                        tmp_path):
    result, out = window_model
    for split, rows in (("validation", 31), ("test", 41)):
        report = result.metrics[split]
        assert report["num_samples"] == rows
        assert sum(map(sum, report["confusion_matrix"]["matrix"])) == rows
    assert result.metrics["test"]["accuracy"] >= 0.85
    record = result.summary["long_text"]["splits"]
    assert record["train"] == {"texts": 160, "windows": 320, "capped_texts": 0}  # two windows per text
    assert record["test"] == {"texts": 41, "windows": record["test"]["windows"], "capped_texts": 0}
    assert result.summary["label_counts"]["train"] == {"neg": 80, "pos": 80}  # texts, not windows
    saved = json.loads((out / "training_config.json").read_text())
    assert {k: saved[k] for k in ("long_text", "stride", "window_pooling", "max_windows")} == {
        "long_text": "sliding-window", "stride": 4, "window_pooling": "mean", "max_windows": 16}
    assert json.loads((out / "config.json").read_text())[MODEL_CONFIG_KEY] == {
        "mode": "sliding-window", "stride": 4, "window_pooling": "mean", "max_windows": 16}

    truncated = train(long_config(tiny_model_dir, long_files, tmp_path / "truncate"))
    assert truncated.metrics["test"]["accuracy"] <= 0.7  # the keywords are past the first window


def test_load_classifier_applies_the_saved_windows_and_pools_as_by_hand(window_model, long_files):
    _, out = window_model
    clf = load_classifier(out, device="cpu")
    assert clf.long_text == LongText("sliding-window", stride=4, window_pooling="mean", max_windows=16)
    texts = _texts(long_files["test"])[:12]
    probs = clf.predict_proba(texts, batch_size=5)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    for text, row in zip(texts, probs):
        windows = tokenizer(text, truncation=True, max_length=16, stride=4, return_overflowing_tokens=True,
                            padding=True, return_tensors="pt")
        windows.pop("overflow_to_sample_mapping")
        assert len(windows["input_ids"]) > 1
        with torch.no_grad():
            expected = model(**windows).logits.mean(dim=0).softmax(-1).numpy()
        np.testing.assert_allclose(row, expected, atol=1e-5)
    # One row per input text, in input order, whatever the batch size.
    np.testing.assert_allclose(clf.predict_proba(texts[::-1], batch_size=3), probs[::-1], atol=1e-6)


def test_a_text_shorter_than_one_window_predicts_exactly_as_with_truncate(window_model):
    _, out = window_model
    clf = load_classifier(out, device="cpu")
    short = ["good movie", "awful plot", "", "the film was really wonderful"]
    truncating = replace(clf, long_text=LongText())
    np.testing.assert_array_equal(clf.predict_proba(short), truncating.predict_proba(short))


def test_evaluate_applies_the_saved_windows_without_options(window_model, long_files):
    result, out = window_model
    report = evaluate_model(str(out), str(long_files["test"]))
    assert report["num_samples"] == 41
    assert report["accuracy"] == result.metrics["test"]["accuracy"]
    assert report["confusion_matrix"] == result.metrics["test"]["confusion_matrix"]


def test_predict_writes_one_row_per_input_row_in_order(window_model, long_files, tmp_path):
    _, out = window_model
    output = tmp_path / "predictions.csv"
    summary = predict_csv(str(out), str(long_files["test"]), str(output), chunk_size=7, progress=False)
    assert summary["rows"] == 41
    with output.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["text"] for row in rows] == _texts(long_files["test"])
    expected = load_classifier(out, device="cpu").predict(_texts(long_files["test"]))
    assert [row["predicted_label"] for row in rows] == [p["label"] for p in expected]


def test_config_json_alone_tells_how_the_model_reads_long_texts(window_model, tmp_path):
    _, out = window_model
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "training_config.json").unlink()
    assert load_classifier(copy, device="cpu").long_text.window_pooling == "mean"


def test_the_card_says_how_long_texts_are_read_and_its_code_reproduces_predictions(window_model, long_files):
    _, out = window_model
    card = (out / "README.md").read_text()
    assert "## Long texts" in card and "windows of 16 tokens, consecutive windows sharing 4 tokens" in card
    assert "Only the first 16 windows of a text are read" in card
    code = re.search(r"## Long texts.*?```python\n(.*?)```", card, re.S).group(1)
    namespace: dict = {}
    exec(code.replace('print(classify("A long text ..."))', ""), namespace)  # the card's plain-transformers code
    texts = _texts(long_files["test"])[:6]
    ours = load_classifier(out, device="cpu").predict(texts)
    for text, mine in zip(texts, ours):
        theirs = namespace["classify"](text)
        assert theirs["label"] == mine["label"] and abs(theirs["score"] - mine["score"]) < 1e-5


def test_head_tail_reads_the_end_and_its_card_code_matches(tiny_model_dir, long_files, tmp_path):
    result = train(long_config(tiny_model_dir, long_files, tmp_path / "model", long_text="head-tail"))
    assert result.metrics["test"]["accuracy"] >= 0.85 and result.metrics["test"]["num_samples"] == 41
    assert result.summary["long_text"] == {"mode": "head-tail", "head_tokens": 4, "tail_tokens": 10,
                                           "special_tokens_before": 1, "special_tokens_after": 1}
    card = (tmp_path / "model" / "README.md").read_text()
    code = re.search(r"## Long texts.*?```python\n(.*?)```", card, re.S).group(1)
    namespace: dict = {}
    exec(code.replace('print(classify("A long text ..."))', ""), namespace)
    texts = _texts(long_files["test"])[:6]
    for text, mine in zip(texts, load_classifier(tmp_path / "model", device="cpu").predict(texts)):
        theirs = namespace["classify"](text)
        assert theirs["label"] == mine["label"] and abs(theirs["score"] - mine["score"]) < 1e-5


def test_feature_extraction_caches_one_vector_per_window(tiny_model_dir, long_files, tmp_path):
    config = long_config(tiny_model_dir, long_files, tmp_path / "model", strategy="feature-extraction",
                         feature_cache_dir=str(tmp_path / "cache"), learning_rate=1e-2, **WINDOW_SETTINGS)
    result = train(config)
    windows = result.summary["long_text"]["splits"]
    assert result.summary["feature_cache"]["rows_encoded"] == windows["train"]["windows"] + windows["validation"]["windows"]
    assert result.metrics["validation"]["num_samples"] == 31 and result.metrics["test"]["num_samples"] == 41


def test_resume_with_windows_equals_an_uninterrupted_run(tiny_model_dir, long_files, tmp_path):
    settings = dict(epochs=1, checkpoint_every=15, **WINDOW_SETTINGS)  # 40 steps
    reference = train(long_config(tiny_model_dir, long_files, tmp_path / "reference", **settings))
    handle = crash_after(20)  # after the checkpoint of step 15
    try:
        with pytest.raises(KeyboardInterrupt):
            train(long_config(tiny_model_dir, long_files, tmp_path / "crashed", **settings))
    finally:
        handle.remove()
    assert list_checkpoints(tmp_path / ".crashed.incomplete" / CHECKPOINTS_DIR)
    resumed = train(long_config(tiny_model_dir, long_files, tmp_path / "crashed", resume="latest", **settings))
    ours, theirs = (load_file(str(Path(r.output_dir) / "model.safetensors")) for r in (resumed, reference))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert resumed.metrics == reference.metrics


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="the accelerate launcher is not on PATH")
def test_two_processes_count_every_document_once(window_model, long_files, tmp_path):
    result, out = window_model
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "nlp_transfer.cli"]
    report = tmp_path / "report.json"
    proc = subprocess.run([*launcher, "-q", "evaluate", str(out), str(long_files["test"]), "--eval-batch-size", "8",
                           "--output", str(report)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "ACCELERATE_USE_CPU": "true"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(report.read_text())
    assert two["num_samples"] == 41
    assert sum(map(sum, two["confusion_matrix"]["matrix"])) == 41
    assert two["accuracy"] == result.metrics["test"]["accuracy"]
