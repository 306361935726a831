"""Checkpoints, exact resume after kill -9 / SIGTERM, the output lock, and resume refusals.

The interrupted runs are real subprocesses of the CLI. A global optimizer-step hook (test code,
in the child's wrapper script) slows each step down so the parent can interrupt mid-epoch; it
changes no number. Resumed runs must equal an uninterrupted run bit for bit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from nlp_transfer import TrainConfig, UserInputError, train
from nlp_transfer.pooling import resolve_pooling
from nlp_transfer.checkpoint import CHECKPOINTS_DIR, STATE_FILE, TrainState, list_checkpoints
from nlp_transfer.cli import build_parser, main
from nlp_transfer.artifacts import OutputDir

from conftest import synthetic_rows, write_splits

# 120 rows / batch 16 → 8 steps per epoch; --checkpoint-every 3 puts checkpoints mid-epoch.
STEPS_PER_EPOCH = 8

SLOW_CHILD = """
import sys, time
from torch.optim.optimizer import register_optimizer_step_post_hook
register_optimizer_step_post_hook(lambda optimizer, args, kwargs: time.sleep(0.3))
from nlp_transfer.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def run_args(tiny_model_dir, tmp_path_factory):
    """CLI arguments of one small run (dropout on); call with the output folder."""
    root = tmp_path_factory.mktemp("resume-data")
    files = write_splits(root, train=120, validation=40, test=40)

    def make(output_dir: Path) -> list[str]:
        return [
            "-q", "train", str(files["train"]), "--validation-file", str(files["validation"]),
            "--test-file", str(files["test"]), "--model", tiny_model_dir, "--output-dir", str(output_dir),
            "--epochs", "2", "--batch-size", "16", "--learning-rate", "2e-3", "--max-length", "32", "--seed", "7",
            "--checkpoint-every", "3", "--small-data", "off",  # one pass per epoch (STEPS_PER_EPOCH)
        ]

    return make


@pytest.fixture(scope="module")
def uninterrupted(run_args, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "model"
    assert main(run_args(out)) == 0
    return out


def _start_slow_run(args: list[str], tmp_path: Path) -> subprocess.Popen:
    script = tmp_path / "slow_child.py"
    script.write_text(SLOW_CHILD, encoding="utf-8")
    return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_mid_epoch_checkpoint(proc: subprocess.Popen, staging: Path, timeout: float = 300) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p for p in list_checkpoints(staging / CHECKPOINTS_DIR) if int(p.name.split("-")[1]) % STEPS_PER_EPOCH]
        if found:
            return found[0]
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before a mid-epoch checkpoint:\n{err[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no mid-epoch checkpoint appeared in time")


def _assert_same_run(resumed: Path, reference: Path) -> None:
    for name in ("metrics.json",):
        assert json.loads((resumed / name).read_text()) == json.loads((reference / name).read_text())
    history = [json.loads((p / "training_summary.json").read_text())["history"] for p in (resumed, reference)]
    assert history[0] == history[1]
    weights = [load_file(str(p / "model.safetensors")) for p in (resumed, reference)]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    texts = [text for text, _ in synthetic_rows(40, seed=3)]
    logits = []
    for path in (resumed, reference):
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        batch = AutoTokenizer.from_pretrained(path)(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            logits.append(model(**batch).logits)
    assert torch.equal(logits[0], logits[1])
    assert not (resumed / CHECKPOINTS_DIR).exists(), "a finished run keeps no checkpoints"
    assert not (resumed.parent / f".{resumed.name}.incomplete").exists()
    _assert_same_folder(resumed, reference)


TIMINGS = ("train_runtime_s", "train_loop_s", "train_samples_per_s", "train_tokens_per_s")


def _assert_same_folder(resumed: Path, reference: Path) -> None:
    """The folder is the same byte for byte whichever way the run got there, apart from timings."""
    assert sorted(p.name for p in resumed.iterdir()) == sorted(p.name for p in reference.iterdir())
    for path in reference.iterdir():
        if path.name in ("training_summary.json", "README.md"):
            continue
        assert (resumed / path.name).read_bytes() == path.read_bytes(), path.name
    summaries = [json.loads((p / "training_summary.json").read_text()) for p in (resumed, reference)]
    for summary in summaries:
        for key in TIMINGS:
            summary.pop(key)
    assert summaries[0] == summaries[1]
    cards = [(p / "README.md").read_text().replace(str(p), "MODEL_DIR") for p in (resumed, reference)]
    cards = ["\n".join(line for line in card.splitlines() if not line.startswith("Training took")) for card in cards]
    assert cards[0] == cards[1]


def test_resume_after_kill_9_equals_an_uninterrupted_run(run_args, uninterrupted, tmp_path):
    out = tmp_path / "model"
    staging = tmp_path / ".model.incomplete"
    proc = _start_slow_run(run_args(out), tmp_path)
    _wait_for_mid_epoch_checkpoint(proc, staging)
    time.sleep(0.5)  # a step or two past the checkpoint: that work is lost and redone
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists(), "a killed run must not leave a folder that looks finished"
    kept = list_checkpoints(staging / CHECKPOINTS_DIR)
    assert 1 <= len(kept) <= 2, "--keep-checkpoints 2"
    state = TrainState.from_json((kept[-1] / STATE_FILE).read_text())
    assert state.batches_done > 0, "the newest checkpoint is mid-epoch"

    assert main(run_args(out) + ["--resume"]) == 0
    _assert_same_run(out, uninterrupted)


def test_sigterm_writes_a_checkpoint_then_resume_finishes_the_same_run(run_args, uninterrupted, tmp_path, capsys):
    out = tmp_path / "model"
    staging = tmp_path / ".model.incomplete"
    proc = _start_slow_run(run_args(out), tmp_path)
    first = _wait_for_mid_epoch_checkpoint(proc, staging)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    message = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(message) == 1 and "stopped by SIGTERM after writing checkpoint" in message[0]
    assert "--resume" in message[0]
    newest = list_checkpoints(staging / CHECKPOINTS_DIR)[-1]
    assert int(newest.name.split("-")[1]) > int(first.name.split("-")[1]), "SIGTERM wrote its own checkpoint"
    assert not out.exists()

    assert main(run_args(out) + ["--resume", str(newest)]) == 0
    _assert_same_run(out, uninterrupted)


def _fake_checkpoint(staging: Path, step: int, config: TrainConfig) -> Path:
    path = staging / CHECKPOINTS_DIR / f"checkpoint-{step}"
    path.mkdir(parents=True)
    config.save(path / "training_config.json")
    (path / STATE_FILE).write_text(TrainState(global_step=step).to_json())
    return path


def test_incomplete_checkpoints_are_ignored(tmp_path):
    config = TrainConfig("x.csv")
    _fake_checkpoint(tmp_path, 4, config)
    _fake_checkpoint(tmp_path, 12, config)
    (tmp_path / CHECKPOINTS_DIR / ".checkpoint-16.tmp").mkdir()  # killed while writing
    (tmp_path / CHECKPOINTS_DIR / "checkpoint-20").mkdir()  # no trainer_state.json: not complete
    assert [p.name for p in list_checkpoints(tmp_path / CHECKPOINTS_DIR)] == ["checkpoint-4", "checkpoint-12"]


def test_resume_refusals(tiny_config, tmp_path):
    config = tiny_config(resume="latest")
    with pytest.raises(UserInputError, match="--resume found no checkpoint of --output-dir"):
        train(config)
    staging = Path(config.output_dir).parent / ".model.incomplete"
    saved = tiny_config()
    resolve_pooling(saved)  # a real checkpoint records the pooling the run resolved
    _fake_checkpoint(staging, 6, saved)
    with pytest.raises(UserInputError, match="has an unfinished run with checkpoints .* pass --resume to continue it"):
        train(tiny_config())
    with pytest.raises(UserInputError, match=r"cannot resume .* with different settings \(learning_rate: 0.002 → 0.1\)"):
        train(tiny_config(resume="latest", learning_rate=0.1))
    with pytest.raises(UserInputError, match="is not a complete checkpoint"):
        train(tiny_config(resume=str(tmp_path)))
    assert staging.is_dir(), "refusals touch nothing"


def test_a_second_run_on_the_same_output_dir_is_refused(tiny_config, tmp_path, capsys):
    config = tiny_config()
    first = OutputDir(config.output_dir)
    first.lock()
    try:
        with pytest.raises(UserInputError, match=rf"another run \(pid {os.getpid()}\) is writing --output-dir"):
            train(config)
        args = ["train", config.train_file, "--model", config.model, "--output-dir", config.output_dir]
        assert main(args) == 2
        assert capsys.readouterr().err.startswith("error: another run")
    finally:
        first.unlock()
    assert not Path(config.output_dir).exists()


def test_resume_option_alone_means_latest():
    parser = build_parser()
    assert parser.parse_args(["train", "x.csv", "--resume"]).resume == "latest"
    assert parser.parse_args(["train", "x.csv", "--resume", "ck/checkpoint-8"]).resume == "ck/checkpoint-8"
    assert parser.parse_args(["train", "x.csv"]).resume is None


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"checkpoint_every": 0}, "checkpoint_every must be at least 1"),
        ({"keep_checkpoints": -1}, "keep_checkpoints must be 0"),
        ({"checkpoint_every": 5, "keep_checkpoints": 0}, "--keep-checkpoints 0 turns them off"),
    ],
)
def test_checkpoint_settings_are_validated(overrides, message):
    with pytest.raises(UserInputError, match=message):
        TrainConfig("x.csv", **overrides)


def test_resume_on_changed_data_is_refused_naming_the_file(tiny_config, tmp_path):
    from conftest import crash_after

    config = tiny_config(checkpoint_every=3)
    handle = crash_after(5)
    try:
        with pytest.raises(KeyboardInterrupt):
            train(config)
    finally:
        handle.remove()
    staging = Path(config.output_dir).parent / ".model.incomplete"
    assert list_checkpoints(staging / CHECKPOINTS_DIR)
    train_csv = Path(config.train_file)
    original = train_csv.read_bytes()
    train_csv.write_bytes(original + b"an extra row with a new label,neutral\r\n")
    with pytest.raises(UserInputError, match=r"the --train-file file changed since the checkpoint was written"):
        train(tiny_config(checkpoint_every=3, resume="latest"))
    train_csv.write_bytes(original)
    resumed = train(tiny_config(checkpoint_every=3, resume="latest"))  # the original data resume fine
    assert resumed.metrics["test"]["accuracy"] >= 0.85
