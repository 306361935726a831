"""The loop's seams on the tiny BERT: an objective with an extra source and a training-only module,
exact resume of all of it, and a loud stop when the loss becomes non-finite."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import DataCollatorWithPadding

from nlp_transfer import UserInputError, train
from nlp_transfer.checkpoint import CHECKPOINTS_DIR, list_checkpoints

from nlp_transfer.loop import TrainingDiverged
from nlp_transfer.objective import Classification, CyclingSource, StepOutput
from nlp_transfer.sampler import model_inputs, training_loader
from nlp_transfer.strategies import STRATEGIES, Finetune

from conftest import crash_after


class AuxObjective(Classification):
    """The task loss plus a small loss of a training-only head on batches of a second, cycling source."""

    name = "aux-test"

    def __init__(self, task):
        super().__init__(task)
        self.head = nn.Linear(32, 2)

    def modules(self):
        return {"aux": self.head}

    def summary(self):
        return {"aux_weight": 0.1}

    def end_of_epoch(self, model, accelerator):
        return {"aux_bias_norm": float(self.head.bias.norm())}

    def add_sources(self, accelerator, data, tokenizer):
        loader = training_loader(model_inputs(data.validation), [0] * data.validation.num_rows, 7, seed=99,
                                 group_by_length=False, collate_fn=DataCollatorWithPadding(tokenizer))
        self.sources["extra"] = CyclingSource(accelerator.prepare(loader), accelerator)

    def step(self, model, batch, progress):
        out = super().step(model, batch, progress)
        extra = self.sources["extra"].next()
        hidden = model(**{k: v for k, v in extra.items() if k != "labels"}, output_hidden_states=True).hidden_states[-1]
        aux_logits = self.prepared["aux"](hidden[:, 0])
        aux = nn.functional.cross_entropy(aux_logits, torch.zeros(len(aux_logits), dtype=torch.long))
        return StepOutput(out.loss + 0.1 * aux, {"aux_loss": aux.detach()})


class AuxStrategy(Finetune):
    name = "aux-test"

    def make_objective(self, task):
        return AuxObjective(task)


@pytest.fixture
def aux_strategy(monkeypatch):
    monkeypatch.setitem(STRATEGIES, AuxStrategy.name, AuxStrategy)
    return AuxStrategy.name


def _weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(path) / "model.safetensors"))


def test_cycling_source_resumes_at_the_same_batch():
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    rows = [{"x": torch.tensor([i])} for i in range(10)]

    def source():
        return CyclingSource(acc.prepare(training_loader(rows, [1] * 10, 3, seed=5, group_by_length=False)), acc)

    first = source()
    seen = [first.next()["x"].flatten().tolist() for _ in range(6)]  # 4 batches per pass: into the second pass
    state = first.state_dict()
    assert state == {"passes": 1, "position": 2}
    after = [first.next()["x"].flatten().tolist() for _ in range(5)]
    resumed = source()
    resumed.load_state_dict(state)
    assert [resumed.next()["x"].flatten().tolist() for _ in range(5)] == after
    assert seen[:4] != seen[4:] + [[-1]] and sorted(sum(seen[:4], [])) == list(range(10))  # one full pass first


def test_an_objective_adds_a_source_and_a_training_only_module(aux_strategy, tiny_config, tmp_path, monkeypatch):
    result = train(tiny_config(strategy=aux_strategy))
    history = result.summary["history"]
    assert all("aux_loss" in entry["train_logs"] for entry in history)
    assert history[-1]["train_logs"]["aux_loss"] < history[0]["train_logs"]["aux_loss"]  # the aux head trained
    assert not [k for k in _weights(result.output_dir) if "aux" in k or "head." in k]  # never saved with the model
    assert all("aux_bias_norm" in entry["objective"] for entry in history)
    assert result.summary["objective"] == {"aux_weight": 0.1}
    assert "- `aux_weight`: 0.1" in (Path(result.output_dir) / "README.md").read_text()
    assert result.metrics["test"]["accuracy"] >= 0.85


def test_an_objective_resumes_exactly_after_a_crash(aux_strategy, tiny_config, tmp_path):
    settings = dict(strategy=aux_strategy, epochs=2, checkpoint_every=3)
    reference = train(tiny_config(output_dir=str(tmp_path / "reference"), **settings))
    out = tmp_path / "crashed"
    handle = crash_after(20)  # 15 steps per epoch: mid epoch 2, after the checkpoint of step 18
    try:
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(output_dir=str(out), **settings))
    finally:
        handle.remove()
    kept = list_checkpoints(tmp_path / ".crashed.incomplete" / CHECKPOINTS_DIR)
    assert kept and (kept[-1] / "model_1.safetensors").is_file()  # the training-only module is checkpointed
    resumed = train(tiny_config(output_dir=str(out), resume="latest", **settings))
    ours, theirs = _weights(resumed.output_dir), _weights(reference.output_dir)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert resumed.summary["history"] == reference.summary["history"]
    assert resumed.metrics == reference.metrics


def test_progress_runs_from_zero_to_one(aux_strategy, tiny_config, monkeypatch):
    seen: list[float] = []
    original = AuxObjective.step

    def recording(self, model, batch, progress):
        seen.append(progress)
        return original(self, model, batch, progress)

    monkeypatch.setattr(AuxObjective, "step", recording)
    train(tiny_config(strategy=aux_strategy, epochs=2))
    assert seen[0] == 0.0 and seen == sorted(seen) and 0.9 < seen[-1] < 1.0


class NanAfterFive(Classification):
    name = "nan-test"
    steps = 0

    def step(self, model, batch, progress):
        out = super().step(model, batch, progress)
        NanAfterFive.steps += 1
        return StepOutput(out.loss * (float("nan") if NanAfterFive.steps > 5 else 1.0))


class NanStrategy(Finetune):
    name = "nan-test"

    def make_objective(self, task):
        return NanAfterFive(task)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_earlier_checkpoints(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setitem(STRATEGIES, NanStrategy.name, NanStrategy)
    NanAfterFive.steps = 0
    config = tiny_config(strategy=NanStrategy.name, checkpoint_every=2)
    with pytest.raises(TrainingDiverged, match=r"the training loss became NaN or infinite by step \d+ of epoch 1 .*"
                                               r"lower --learning-rate"):
        train(config)
    assert isinstance(TrainingDiverged("x"), UserInputError)  # the CLI prints one line and exits 2
    assert not Path(config.output_dir).exists()
    kept = list_checkpoints(tmp_path / ".model.incomplete" / CHECKPOINTS_DIR)
    assert kept, "checkpoints written before the divergence are kept"
    for checkpoint in kept:
        assert all(torch.isfinite(t).all() for t in load_file(str(checkpoint / "model.safetensors")).values())


class OutOfMemory(Classification):
    name = "oom-test"

    def step(self, model, batch, progress):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


class OomStrategy(Finetune):
    name = "oom-test"

    def make_objective(self, task):
        return OutOfMemory(task)


def test_out_of_memory_names_the_levers(tiny_config, monkeypatch):
    monkeypatch.setitem(STRATEGIES, OomStrategy.name, OomStrategy)
    with pytest.raises(UserInputError, match=r"ran out of memory while training with --batch-size 16 .* pass "
                                             r"--batch-size 8 --gradient-accumulation-steps 2"):
        train(tiny_config(strategy=OomStrategy.name))
