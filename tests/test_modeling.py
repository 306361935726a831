"""Loading encoders safely: safetensors only unless --allow-pickle."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nlp_transfer import UserInputError
from nlp_transfer.modeling import load_for_training


@pytest.fixture
def pickle_only_model(tiny_model_dir, tmp_path) -> Path:
    """The tiny encoder with its weights as pytorch_model.bin (pickle) and no safetensors file."""
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    weights = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    return folder


def test_pickle_weights_are_refused_unless_allowed(pickle_only_model, tiny_model_dir):
    with pytest.raises(UserInputError, match=r"only pickle weights \(pytorch_model.bin\).* pass --allow-pickle"):
        load_for_training(str(pickle_only_model), ["neg", "pos"])
    model = load_for_training(str(pickle_only_model), ["neg", "pos"], allow_pickle=True)
    reference = load_for_training(tiny_model_dir, ["neg", "pos"])
    embeddings = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(model.state_dict()[embeddings], reference.state_dict()[embeddings])


def test_the_cli_refuses_pickle_with_one_line(pickle_only_model, tmp_path, capsys):
    from conftest import synthetic_rows, write_csv
    from nlp_transfer.cli import main

    train_csv = write_csv(tmp_path / "train.csv", synthetic_rows(20))
    code = main(["-q", "train", str(train_csv), "--model", str(pickle_only_model), "--output-dir",
                 str(tmp_path / "out"), "--max-length", "32"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: model ")
    assert not (tmp_path / "out").exists()


# ---- folders that would load "successfully" and compute garbage ------------------------------

@pytest.fixture(scope="module")
def classifier_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny 2-label classifier folder (neg, pos) with a training_config.json, as train writes it."""
    from nlp_transfer import TrainConfig, train

    from conftest import synthetic_rows, write_csv

    root = tmp_path_factory.mktemp("modeling-classifier")
    config = TrainConfig(train_file=str(write_csv(root / "train.csv", synthetic_rows(60))), model=tiny_model_dir,
                         output_dir=str(root / "model"), epochs=1, max_length=32)
    return Path(train(config).output_dir)


def _copy_without(src, dst: Path, *patterns: str) -> Path:
    shutil.copytree(src, dst)
    for pattern in patterns:
        for path in dst.glob(pattern):
            path.unlink()
    return dst


def test_a_folder_without_tokenizer_files_is_refused_by_every_loader(tiny_model_dir, classifier_dir, tmp_path):
    from nlp_transfer.inference import load_classifier
    from nlp_transfer.modeling import load_tokenizer

    message = r"the tokenizer of model .* does not fit the model: it has no vocabulary file \(one of tokenizer.json"
    encoder = _copy_without(tiny_model_dir, tmp_path / "encoder", "tokenizer*")
    with pytest.raises(UserInputError, match=message):
        load_tokenizer(str(encoder))
    for keep in ("tokenizer_config.json", None):  # with the config alone transformers builds a 5-token tokenizer
        trained = _copy_without(classifier_dir, tmp_path / f"trained-{keep}", "tokenizer.json",
                                *(["tokenizer_config.json"] if keep is None else []))
        with pytest.raises(UserInputError, match=message):
            load_classifier(trained)


def test_a_tokenizer_larger_than_the_embedding_is_refused(tiny_model_dir, tmp_path):
    from transformers import AutoConfig, BertModel

    from nlp_transfer.modeling import load_tokenizer

    folder = _copy_without(tiny_model_dir, tmp_path / "small-vocab", "model.safetensors", "config.json")
    config = AutoConfig.from_pretrained(tiny_model_dir, vocab_size=30000)
    BertModel(config).save_pretrained(folder)
    with pytest.raises(UserInputError, match="has 30522 tokens but the model only 30000 embedding rows"):
        load_tokenizer(str(folder))


def test_cli_train_on_a_folder_without_tokenizer_is_one_line(tiny_model_dir, tmp_path, capsys):
    from conftest import synthetic_rows, write_csv
    from nlp_transfer.cli import main

    encoder = _copy_without(tiny_model_dir, tmp_path / "encoder", "tokenizer.json")
    train_csv = write_csv(tmp_path / "train.csv", synthetic_rows(20))
    code = main(["-q", "train", str(train_csv), "--model", str(encoder), "--output-dir", str(tmp_path / "out"),
                 "--max-length", "32"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "does not fit the model" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("pair, least", [(False, 3), (True, 5)])
def test_max_length_must_leave_room_for_text(tiny_model_dir, pair, least):
    from nlp_transfer.modeling import check_max_length, check_text_room, load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    check_text_room(least, tokenizer, pair=pair)
    with pytest.raises(UserInputError, match=f"--max-length {least - 1} leaves no room for text.*at least {least} are "
                       f"needed; pass --max-length {least} or more"):
        check_max_length(tiny_model_dir, least - 1, tokenizer, pair=pair)


@pytest.mark.parametrize("size", [100, 300_000])
def test_truncated_weights_are_one_sentence(classifier_dir, tmp_path, size):
    from nlp_transfer.modeling import load_trained

    folder = _copy_without(classifier_dir, tmp_path / "truncated")
    weights = (folder / "model.safetensors").read_bytes()[:size]
    (folder / "model.safetensors").write_bytes(weights)
    with pytest.raises(UserInputError, match="the weights file of model .* is damaged .*download it again, or re-run"):
        load_trained(str(folder))


def test_missing_encoder_weights_are_refused(tiny_model_dir, tmp_path):
    from safetensors.torch import save_file

    folder = _copy_without(tiny_model_dir, tmp_path / "partial")
    weights = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("encoder.layer.1.")}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(UserInputError, match=r"weight\(s\) are missing or of another shape \(bert.encoder.layer.1"):
        load_for_training(str(folder), ["neg", "pos"])


def test_encoder_weights_of_another_shape_are_refused(tiny_model_dir, tmp_path):
    import json

    folder = _copy_without(tiny_model_dir, tmp_path / "other-shape")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 128}))  # the weights have 64
    with pytest.raises(UserInputError, match=r"weight\(s\) are missing or of another shape \(bert.encoder.layer.0.intermediate"):
        load_for_training(str(folder), ["neg", "pos"])


@pytest.mark.parametrize("content, found", [('{"max_len', "JSONDecodeError"), ("[1, 2]", "a JSON list")])
def test_a_damaged_training_config_is_one_sentence(classifier_dir, tmp_path, content, found):
    from nlp_transfer.modeling import training_settings

    folder = _copy_without(classifier_dir, tmp_path / "damaged")
    (folder / "training_config.json").write_text(content)
    with pytest.raises(UserInputError, match=f"training_config.json .* is damaged \\({found}"):
        training_settings(str(folder))


@pytest.mark.parametrize("name, message", [
    ("./no-such-folder", "model folder './no-such-folder' does not exist; check the path"),
    ("~/no/such/folder", "does not exist; check the path"),
    ("runs/a/model", "does not exist; check the path"),
    ("not a model!", "is neither an existing folder nor a Hub id"),
])
def test_names_that_cannot_be_a_model_are_refused_at_once(name, message):
    from nlp_transfer.modeling import load_tokenizer

    with pytest.raises(UserInputError, match=message):
        load_tokenizer(name)


def test_a_file_given_as_model_is_named_as_such(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(UserInputError, match="is a file; pass the folder that holds its config.json"):
        load_for_training(str(tmp_path / "model.bin"), ["a", "b"])


# ---- fine-tuning a classifier on a new label set -----------------------------------------------

def test_a_classifier_gets_a_fresh_head_for_other_labels_and_keeps_its_encoder(classifier_dir, caplog):
    saved = load_file(str(classifier_dir / "model.safetensors"))
    encoder_key = "bert.encoder.layer.0.attention.self.query.weight"

    three = load_for_training(str(classifier_dir), ["a", "b", "c"])
    assert three.config.id2label == {0: "a", 1: "b", 2: "c"} and three.config.label2id == {"a": 0, "b": 1, "c": 2}
    assert three.classifier.out_features == 3
    assert torch.equal(three.state_dict()[encoder_key], saved[encoder_key])
    assert "is a classifier for other labels (neg, pos); its classification head starts afresh" in caplog.text

    renamed = load_for_training(str(classifier_dir), ["bad", "good"])  # same size, other names: a fresh head too
    assert renamed.config.id2label == {0: "bad", 1: "good"}
    assert not torch.equal(renamed.classifier.weight, saved["classifier.weight"])

    same = load_for_training(str(classifier_dir), ["neg", "pos"])  # the same labels: training continues from its head
    assert torch.equal(same.classifier.weight, saved["classifier.weight"])


def test_cli_fine_tunes_a_classifier_on_new_labels(classifier_dir, tmp_path, capsys):
    import json

    from conftest import synthetic_rows, write_csv
    from nlp_transfer.cli import main

    rows = write_csv(tmp_path / "three.csv", synthetic_rows(60, labels=("a", "b", "c")))
    code = main(["-q", "train", str(rows), "--model", str(classifier_dir), "--output-dir", str(tmp_path / "out"),
                 "--epochs", "1", "--max-length", "32"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "config.json").read_text())["id2label"] == {"0": "a", "1": "b", "2": "c"}


# ---- quiet loading -----------------------------------------------------------------------------

_LOAD_EVERYTHING = """
import sys
from nlp_transfer import load_classifier
from nlp_transfer.modeling import load_for_training, load_tokenizer
clf = load_classifier(sys.argv[1])
clf.predict(["a good film"])
load_classifier(sys.argv[1], quantize="int8").predict(["a good film"])
load_for_training(sys.argv[2], ["neg", "pos"])
load_tokenizer(sys.argv[2])
"""


def test_loading_through_the_api_prints_nothing(classifier_dir, tiny_model_dir):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-W", "default", "-c", _LOAD_EVERYTHING, str(classifier_dir), tiny_model_dir],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and proc.stdout == ""


def test_quiet_loading_puts_transformers_settings_back():
    from transformers.utils import logging as hf_logging

    from nlp_transfer.modeling import quiet_loading

    before = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled())
    with quiet_loading():
        assert hf_logging.get_verbosity() == hf_logging.ERROR and not hf_logging.is_progress_bar_enabled()
    assert (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()) == before
