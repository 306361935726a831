"""Experiment tracking (nlp_transfer/tracking.py, `--report-to`): TensorBoard receives the logged
scalars (read back with tensorboard's own event reader); a tracker that is not installed is one
error line and exit 2 before any work; the default imports no tracker."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nlp_transfer.cli import main
from nlp_transfer.errors import UserInputError
from nlp_transfer.tracking import TRACKERS, tracker_names


def test_tensorboard_run_directory_holds_the_logged_scalars(tiny_config, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from nlp_transfer import train

    logs = tmp_path / "tb"
    result = train(tiny_config(epochs=2, report_to="tensorboard", logging_dir=str(logs)))
    (run_dir,) = list(logs.iterdir())
    assert run_dir.name.startswith("model-")
    events = EventAccumulator(str(run_dir))
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    summary = json.loads((Path(result.output_dir) / "training_summary.json").read_text())
    total = 2 * 15  # 240 rows / batch 16, two epochs
    assert [step for step, _ in scalars["train/loss"]] == list(range(1, total + 1))
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([p[1] for p in summary["loss_curve"]], rel=1e-5)
    assert all(v > 0 for _, v in scalars["train/samples_per_s"])
    rates = [v for _, v in scalars["train/learning_rate"]]
    assert max(rates) == pytest.approx(2e-3, rel=1e-3) and rates[-1] < rates[len(rates) // 2]
    for name in ("accuracy", "f1_macro", "loss"):
        assert scalars[f"validation/{name}"] == [
            (15 * e["epoch"], pytest.approx(e["validation"][name], rel=1e-5)) for e in summary["history"]]
    assert scalars["test/accuracy"] == [(total, pytest.approx(result.metrics["test"]["accuracy"], rel=1e-6))]
    assert any(p.name.startswith("events.out.tfevents.") for p in run_dir.iterdir())
    # The settings went in as hyperparameters; the published config names the logs folder only.
    config = json.loads((Path(result.output_dir) / "training_config.json").read_text())
    assert config["report_to"] == "tensorboard" and config["logging_dir"] == "tb"


def _missing_tracker() -> str:
    for name, (modules, _) in TRACKERS.items():
        if not any(importlib.util.find_spec(m) for m in modules):
            return name
    pytest.skip("every tracker accelerate supports is installed here")


def test_a_tracker_that_is_not_installed_stops_before_any_work(sentiment_csvs, tiny_model_dir, tmp_path, capsys):
    name = _missing_tracker()
    out = tmp_path / "model"
    code = main(["train", str(sentiment_csvs["train"]), "--model", tiny_model_dir, "--output-dir", str(out),
                 "--report-to", name, "-q"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: --report-to {name} needs the"), err
    assert "pip install" in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".model*")) and not (tmp_path / "logs").exists()


def test_report_to_names_are_checked_at_construction(tiny_config):
    assert tracker_names("none") == [] and tracker_names("TensorBoard, mlflow") == ["tensorboard", "mlflow"]
    with pytest.raises(UserInputError, match="unknown tracker 'tensorbord'; choose none or one or more"):
        tiny_config(report_to="tensorbord")
    with pytest.raises(UserInputError, match="unknown tracker 'none'"):
        tiny_config(report_to="none,tensorboard")


def test_default_imports_no_tracker():
    code = ("import sys; from nlp_transfer import TrainConfig; from nlp_transfer.tracking import accelerator_kwargs; "
            "import nlp_transfer.trainer; assert accelerator_kwargs(TrainConfig(train_file='t.csv')) == {}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorboard', 'tensorboardX', 'mlflow', "
            "'wandb') or m == 'torch.utils.tensorboard'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
