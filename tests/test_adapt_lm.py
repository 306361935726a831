"""nlp-transfer adapt-lm: masked-LM adaptation lowers held-out perplexity, its folder loads as --model, bad input."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import pipeline

from nlp_transfer import UserInputError, train
from nlp_transfer.adapt_lm import adapt_lm
from nlp_transfer.adapt_lm_config import AdaptLmConfig
from nlp_transfer.cli import main
from nlp_transfer.pooling import default_pooling

from conftest import requires_shared_data, synthetic_rows, write_csv


@pytest.fixture(scope="module")
def amazon_texts(tmp_path_factory) -> Path:
    """600 real product-review texts of ../shared/data (labels dropped)."""
    source = requires_shared_data("sentiment", "amazon_reviews_train.csv")
    with open(source, encoding="utf-8", newline="") as handle:
        texts = [row["text"] for row, _ in zip(csv.DictReader(handle), range(600))]
    return write_csv(tmp_path_factory.mktemp("amazon") / "amazon_unlabelled.csv", [[t] for t in texts], header=("text",))


@pytest.fixture(scope="module")
def adapted(tiny_model_dir, amazon_texts, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapted") / "lm"
    return adapt_lm(AdaptLmConfig(text_file=str(amazon_texts), model=tiny_model_dir, output_dir=str(out),
                                  new_mlm_head=True, head_warmup_steps=20, epochs=2, learning_rate=1e-3,
                                  max_length=64, batch_size=16))


def test_adapt_lm_lowers_held_out_perplexity_on_real_texts(adapted):
    summary = adapted.summary
    assert summary["texts"] == {"train": 540, "held_out": 60}
    # The fresh head learns the token statistics first; the encoder's adaptation then lowers perplexity further.
    assert summary["perplexity_random_head"] > summary["perplexity_before"] > summary["perplexity_after"]
    assert summary["perplexity_after"] < 0.9 * summary["perplexity_before"]
    saved = json.loads((Path(adapted.output_dir) / "adapt_lm_summary.json").read_text())
    assert saved["perplexity_after"] == summary["perplexity_after"]


def test_adapted_folder_is_a_plain_encoder_with_the_base_pooler(adapted, tiny_model_dir):
    ours, base = (load_file(str(Path(p) / "model.safetensors")) for p in (adapted.output_dir, tiny_model_dir))
    assert ours.keys() == base.keys()  # no masked-LM head, the pooler kept
    assert all(torch.equal(ours[k], base[k]) for k in ours if k.startswith("pooler."))
    assert not torch.equal(ours["encoder.layer.0.attention.self.query.weight"],
                           base["encoder.layer.0.attention.self.query.weight"])
    config = json.loads((Path(adapted.output_dir) / "config.json").read_text())
    assert config["architectures"] == ["BertModel"]


def test_adapted_encoder_trains_as_model(adapted, tiny_config, sentiment_csvs):
    result = train(tiny_config(model=adapted.output_dir))
    assert result.metrics["test"]["accuracy"] >= 0.85
    predictions = pipeline("text-classification", model=result.output_dir, device="cpu")(["good great love it"])
    assert predictions[0]["label"] == "pos"


def test_an_adapted_sentence_encoder_keeps_its_mean_pooling(adapted, tiny_model_dir, tmp_path):
    """A base shipping sentence-transformers mean pooling passes it on; a plain BERT base stays [CLS]."""
    assert adapted.summary["pooling"] == "cls" and default_pooling(adapted.output_dir) == "cls"
    base = tmp_path / "sentence-encoder"
    shutil.copytree(tiny_model_dir, base)
    (base / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (base / "1_Pooling").mkdir()
    (base / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    assert default_pooling(str(base)) == "mean"
    texts = write_csv(tmp_path / "t.csv", [[text] for text, _ in synthetic_rows(40)], header=("text",))
    result = adapt_lm(AdaptLmConfig(text_file=str(texts), model=str(base), output_dir=str(tmp_path / "lm"),
                                    new_mlm_head=True, head_warmup_steps=2, max_length=32, batch_size=16))
    assert result.summary["pooling"] == "mean"
    assert default_pooling(result.output_dir) == "mean"
    assert json.loads((Path(result.output_dir) / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"]


def test_model_without_masked_lm_head_is_refused_unless_asked(tiny_model_dir, tmp_path):
    texts = write_csv(tmp_path / "t.csv", [[text] for text, _ in synthetic_rows(40)], header=("text",))
    with pytest.raises(UserInputError, match=r"has no masked-LM head .* pass --new-mlm-head"):
        adapt_lm(AdaptLmConfig(text_file=str(texts), model=tiny_model_dir, output_dir=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.incomplete").exists()


@pytest.mark.parametrize(("case", "args", "message"), [
    ("missing file", [], r"nowhere\.csv"),
    ("no text column", ["--text-column", "review"], r"'review'"),
    ("bad probability", ["--mlm-probability", "1.5"], r"--mlm-probability must be in \(0, 1\)"),
    ("negative warm-up", ["--head-warmup-steps", "-1"], r"--head-warmup-steps must be 0 or more"),
    ("one text", [], r"needs at least 2"),
])
def test_bad_adapt_lm_input_exits_2_and_writes_nothing(case, args, message, tiny_model_dir, tmp_path, capsys):
    rows = [["good phone"]] if case == "one text" else [[t] for t, _ in synthetic_rows(20)]
    texts = tmp_path / "nowhere.csv" if case == "missing file" else write_csv(tmp_path / "t.csv", rows, header=("text",))
    out = tmp_path / "out"
    code = main(["-q", "adapt-lm", str(texts), "--model", tiny_model_dir, "--output-dir", str(out), "--new-mlm-head",
                 *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and re.search(message, err[0]), err
    assert not out.exists() and not (tmp_path / ".out.incomplete").exists()


def test_an_existing_model_folder_is_not_replaced_without_overwrite(adapted, tiny_model_dir, amazon_texts, capsys):
    before = (Path(adapted.output_dir) / "model.safetensors").read_bytes()
    code = main(["-q", "adapt-lm", str(amazon_texts), "--model", tiny_model_dir, "--output-dir", adapted.output_dir,
                 "--new-mlm-head"])
    assert code == 2 and "already holds a model" in capsys.readouterr().err
    assert (Path(adapted.output_dir) / "model.safetensors").read_bytes() == before


def test_every_adapt_lm_setting_is_an_option_listed_once():
    import dataclasses

    from nlp_transfer.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["adapt-lm", "texts.csv"])
    fields = dataclasses.fields(AdaptLmConfig)
    assert AdaptLmConfig(**{f.name: getattr(args, f.name) for f in fields}) == AdaptLmConfig("texts.csv")
    help_text = parser._subparsers._group_actions[0].choices["adapt-lm"].format_help()
    for f in fields:
        shown = f.metadata.get("metavar") if f.metadata.get("positional") else "--" + f.name.replace("_", "-")
        assert len(re.findall(rf"(?m)^  {re.escape(shown)}(?=[ ,\n])", help_text)) == 1, shown
