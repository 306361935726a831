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
