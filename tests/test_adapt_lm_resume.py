"""adapt-lm checkpoints: a run stopped mid-epoch (killed, or by SIGTERM) and resumed equals an uninterrupted
run bit for bit; resumes on other texts or settings are refused; the masks a resume depends on."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nlp_transfer import UserInputError
from nlp_transfer.adapt_lm import SUMMARY_FILE, adapt_lm
from nlp_transfer.adapt_lm_config import AdaptLmConfig
from nlp_transfer.checkpoint import CHECKPOINTS_DIR, STATE_FILE, TrainState, list_checkpoints
from nlp_transfer.cli import main

from conftest import crash_after, synthetic_rows, write_csv

# 180 training texts / batch 16 → 12 steps per epoch, 24 in all; 10 warm-up steps of the new head come first.
WARMUP, STEPS_PER_EPOCH = 10, 12
SETTINGS = dict(new_mlm_head=True, head_warmup_steps=WARMUP, epochs=2, batch_size=16, learning_rate=1e-3,
                max_length=32, checkpoint_every=4, seed=3)


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("texts") / "texts.csv", [[t] for t, _ in synthetic_rows(200, seed=5)],
                     header=("text",))


def _config(texts: Path, tiny_model_dir: str, out: Path, **overrides) -> AdaptLmConfig:
    return AdaptLmConfig(text_file=str(texts), model=tiny_model_dir, output_dir=str(out), **{**SETTINGS, **overrides})


def _cli_args(texts: Path, tiny_model_dir: str, out: Path) -> list[str]:
    return ["-q", "adapt-lm", str(texts), "--model", tiny_model_dir, "--output-dir", str(out), "--new-mlm-head",
            "--head-warmup-steps", str(WARMUP), "--epochs", "2", "--batch-size", "16", "--learning-rate", "1e-3",
            "--max-length", "32", "--checkpoint-every", "4", "--seed", "3"]


@pytest.fixture(scope="module")
def uninterrupted(texts, tiny_model_dir, tmp_path_factory):
    return adapt_lm(_config(texts, tiny_model_dir, tmp_path_factory.mktemp("reference") / "lm"))


def _assert_same_encoder(resumed: str, reference: str) -> None:
    ours, theirs = (load_file(str(Path(p) / "model.safetensors")) for p in (resumed, reference))
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    summaries = [json.loads((Path(p) / SUMMARY_FILE).read_text()) for p in (resumed, reference)]
    for summary in summaries:
        summary.pop("train_runtime_s")
    assert summaries[0] == summaries[1]  # perplexities before, per epoch and after; losses; history
    assert not (Path(resumed).parent / f".{Path(resumed).name}.incomplete").exists(), "no checkpoints left"


def test_adapt_lm_killed_mid_epoch_resumes_to_the_same_encoder_and_perplexity(uninterrupted, texts, tiny_model_dir,
                                                                              tmp_path):
    assert uninterrupted.summary["perplexity_after"] < uninterrupted.summary["perplexity_before"]
    assert len(uninterrupted.summary["perplexity_per_epoch"]) == 2
    out = tmp_path / "lm"
    handle = crash_after(WARMUP + STEPS_PER_EPOCH + 6)  # mid epoch 2, two steps after the checkpoint of step 16
    try:
        with pytest.raises(KeyboardInterrupt):
            adapt_lm(_config(texts, tiny_model_dir, out))
    finally:
        handle.remove()
    assert not out.exists()
    kept = list_checkpoints(tmp_path / ".lm.incomplete" / CHECKPOINTS_DIR)
    assert [p.name for p in kept] == ["checkpoint-12", "checkpoint-16"]  # --keep-checkpoints 2
    state = TrainState.from_json((kept[-1] / STATE_FILE).read_text())
    assert (state.epoch, state.batches_done) == (1, 4) and state.objective["measured"]["perplexity_before"] > 0

    resumed = adapt_lm(_config(texts, tiny_model_dir, out, resume="latest"))
    assert resumed.summary["perplexity_after"] == uninterrupted.summary["perplexity_after"]
    _assert_same_encoder(resumed.output_dir, uninterrupted.output_dir)


def _sigterm_after(steps: int):
    """Send this process SIGTERM after ``steps`` optimizer steps (as a scheduler stopping the job would)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    count = {"n": 0}

    def hook(optimizer, args, kwargs):
        count["n"] += 1
        if count["n"] == steps:
            os.kill(os.getpid(), signal.SIGTERM)

    return register_optimizer_step_post_hook(hook)


def test_sigterm_checkpoints_prints_the_resume_command_and_refuses_changed_texts(uninterrupted, texts, tiny_model_dir,
                                                                                   tmp_path, capsys):
    out, copy = tmp_path / "lm", tmp_path / "texts.csv"
    original = texts.read_bytes()
    copy.write_bytes(original)
    args = _cli_args(copy, tiny_model_dir, out)
    handle = _sigterm_after(WARMUP + 7)
    try:
        assert main(args) == 128 + signal.SIGTERM
    finally:
        handle.remove()
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("interrupted:")]
    assert len(line) == 1 and "stopped by SIGTERM after writing checkpoint" in line[0], err
    assert re.search(r"checkpoint-7'; resume with: nlp-transfer -q adapt-lm .* --resume$", line[0]), line[0]
    assert not out.exists()

    # Other texts or other settings: one line, exit 2, the checkpoints untouched.
    copy.write_bytes(original + b"one more review of a phone\r\n")
    assert main([*args, "--resume"]) == 2
    copy.write_bytes(original)
    assert main([*args, "--learning-rate", "2e-3", "--resume"]) == 2
    assert main(args) == 2  # a fresh run over an unfinished one needs --resume or --overwrite
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("error: ") for e in errors), errors
    assert "cannot resume" in errors[0] and "file changed since the checkpoint was written" in errors[0]
    assert "with different settings (learning_rate: 0.001 → 0.002)" in errors[1]
    assert "pass --resume to continue it, or --overwrite" in errors[2]

    assert main([*args, "--resume"]) == 0
    _assert_same_encoder(str(out), uninterrupted.output_dir)


def test_masks_depend_only_on_their_key_and_leave_the_global_rng_alone(tiny_model_dir):
    from transformers import AutoTokenizer

    from nlp_transfer.mlm_objective import MaskedLmObjective, PadForMasking

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = [t for t, _ in synthetic_rows(8, seed=1)] + ["a"]
    enc = tokenizer(texts, return_special_tokens_mask=True, return_offsets_mapping=True)
    batch = PadForMasking(tokenizer)([{k: enc[k][i] for k in enc} for i in range(len(texts))])
    assert batch["offset_mapping"].shape == (*batch["input_ids"].shape, 2)
    for whole_words in (False, True):
        objective = MaskedLmObjective(tokenizer, 0.15, whole_words, seed=0)
        torch.manual_seed(1)
        before = torch.get_rng_state()
        first, again, other = (objective.mask(batch, *key) for key in ((0, 0, 5), (0, 0, 5), (0, 0, 6)))
        assert torch.equal(torch.get_rng_state(), before)
        assert torch.equal(first["input_ids"], again["input_ids"]) and torch.equal(first["labels"], again["labels"])
        assert not torch.equal(first["labels"], other["labels"])
        masked = first["labels"] != -100
        assert masked.any() and not (masked & batch["special_tokens_mask"].bool()).any()
        assert torch.equal(first["labels"][masked], batch["input_ids"][masked])
        assert set(first) == {"input_ids", "token_type_ids", "attention_mask", "labels"}


def test_a_batch_without_a_drawn_mask_still_masks_one_token(tiny_model_dir):
    from transformers import AutoTokenizer

    from nlp_transfer.mlm_objective import MaskedLmObjective, PadForMasking

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    enc = tokenizer(["good"], return_special_tokens_mask=True)
    batch = PadForMasking(tokenizer)([{k: enc[k][0] for k in enc}])
    objective = MaskedLmObjective(tokenizer, 1e-6, False, seed=0)
    masked = objective.mask(batch, 0, 0, 0)
    assert int((masked["labels"] != -100).sum()) == 1
    only_special = {k: v[:, [0, -1]] for k, v in batch.items()}
    with pytest.raises(UserInputError, match="holds only special tokens"):
        objective.mask(only_special, 0, 0, 0)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"checkpoint_every": 0}, "checkpoint_every must be at least 1"),
    ({"keep_checkpoints": -1}, "keep_checkpoints must be 0"),
    ({"checkpoint_every": 5, "keep_checkpoints": 0}, "--keep-checkpoints 0 turns them off"),
])
def test_adapt_lm_checkpoint_settings_are_validated(overrides, message):
    with pytest.raises(UserInputError, match=message):
        AdaptLmConfig("texts.csv", **overrides)


def test_resume_without_a_checkpoint_is_refused(texts, tiny_model_dir, tmp_path):
    with pytest.raises(UserInputError, match="--resume found no checkpoint of --output-dir"):
        adapt_lm(_config(texts, tiny_model_dir, tmp_path / "lm", resume="latest"))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
