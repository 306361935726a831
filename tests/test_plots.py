"""Plots (nlp_transfer/plots.py) and `nlp-transfer report` (nlp_transfer/run_report.py): the PNGs of a
trained folder are valid, sensibly sized and linked from the card; a 50-label matrix gets room per
label; training without matplotlib still works and says how to get them."""

from __future__ import annotations

import csv
import json
import logging

import numpy as np
import pytest

from conftest import requires_shared_data
from nlp_transfer.artifacts import CONFUSION_FILE, CURVES_FILE
from nlp_transfer.cli import main

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")


def _png_size(path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()  # a truncated or corrupt file raises here
    with Image.open(path) as image:
        return image.size


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    from conftest import write_splits
    from nlp_transfer import TrainConfig, train

    root = tmp_path_factory.mktemp("plots")
    csvs = write_splits(root, train=240, validation=60, test=80)
    config = TrainConfig(train_file=str(csvs["train"]), validation_file=str(csvs["validation"]),
                         test_file=str(csvs["test"]), model=tiny_model_dir, output_dir=str(root / "model"), epochs=3,
                         batch_size=16, learning_rate=2e-3, max_length=32, seed=7)
    return train(config)


def test_plots_are_valid_pngs_linked_from_the_card(trained):
    from pathlib import Path

    from nlp_transfer.hub import hub_files

    folder = Path(trained.output_dir)
    width, height = _png_size(folder / CURVES_FILE)
    assert 900 <= width <= 2000 and 350 <= height <= 1000
    width, height = _png_size(folder / CONFUSION_FILE)
    assert 300 <= width <= 1500 and 300 <= height <= 1500
    card = (folder / "README.md").read_text()
    assert f"![Training curves]({CURVES_FILE})" in card and f"![Confusion matrix]({CONFUSION_FILE})" in card
    assert {CURVES_FILE, CONFUSION_FILE} <= set(hub_files(folder))
    summary = json.loads((folder / "training_summary.json").read_text())
    # One loss point per optimizer step for a short run, ending at the last epoch; validation loss per epoch.
    steps = summary["history"][-1]["epoch"] * 15
    assert [p[2] for p in summary["loss_curve"]] == list(range(1, steps + 1))
    assert summary["loss_curve"][-1][0] == 3.0
    assert all(0 < entry["validation"]["loss"] < 5 for entry in summary["history"])
    assert summary["history"][-1]["validation"]["loss"] < summary["history"][0]["validation"]["loss"]


def test_report_redraws_the_plots_and_prints_the_run(trained, capsys):
    from pathlib import Path

    folder = Path(trained.output_dir)
    (folder / CURVES_FILE).unlink()
    (folder / CONFUSION_FILE).unlink()
    assert main(["report", str(folder)]) == 0
    out = capsys.readouterr().out
    assert (folder / CURVES_FILE).is_file() and (folder / CONFUSION_FILE).is_file()
    assert "best epoch" in out and "← best" in out and f"test (80 rows): accuracy {trained.metrics['test']['accuracy']:.4f}" in out
    assert f"wrote {folder / CURVES_FILE}" in out
    (folder / CURVES_FILE).unlink()
    assert main(["report", str(folder), "--no-plots"]) == 0
    assert not (folder / CURVES_FILE).exists()
    assert main(["report", str(folder / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_fifty_labels_get_room_each(tmp_path):
    from nlp_transfer.plots import _png, confusion_matrix

    folder = requires_shared_data("trec")
    with (folder / "train.csv").open(encoding="utf-8", newline="") as fh:
        labels = sorted({row["fine_label"] for row in csv.DictReader(fh)})
    assert len(labels) == 50
    counts = np.diag(np.arange(1, 51) * 7) + np.eye(50, k=1, dtype=np.int64) * 3
    path = tmp_path / CONFUSION_FILE
    path.write_bytes(_png(confusion_matrix({"labels": labels, "matrix": counts.tolist()}, "test set")))
    width, height = _png_size(path)
    assert width >= 50 * 40 and height >= 50 * 40, "at least 40 pixels per label, so 9-point names and counts fit"
    assert width <= 5000 and height <= 5000


def test_training_without_matplotlib_works_and_says_how_to_get_plots(tiny_config, monkeypatch, caplog):
    from pathlib import Path

    from nlp_transfer import plots, train

    monkeypatch.setattr(plots, "plots_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="nlp_transfer.plots"):
        result = train(tiny_config(epochs=1))
    folder = Path(result.output_dir)
    assert not (folder / CURVES_FILE).exists() and "## Plots" not in (folder / "README.md").read_text()
    assert [r.getMessage() for r in caplog.records if r.name == "nlp_transfer.plots"] == [
        f"plots not drawn: matplotlib is not installed; {plots.PLOTS_HINT}."]
    assert main(["report", str(folder)]) == 2
