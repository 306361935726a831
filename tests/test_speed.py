"""Speed options behind one interface: when each applies, one summary shape, undo, allocator restore."""

from __future__ import annotations

import pytest
from datasets import Dataset
from transformers import AutoModelForSequenceClassification

from nlp_transfer import TrainConfig, train
from nlp_transfer.objective import Classification
from nlp_transfer.speed import SPEED_OPTION_NAMES, SpeedContext, SpeedOptions, allocator, default_options
from nlp_transfer.speed.dropout import CpuDropout
from nlp_transfer.strategies import strategy_for
from nlp_transfer.task import SingleLabelClassification


class EveryPosition(Classification):
    name = "every-position"
    reads_every_position = True


def _context(tiny_model_dir, objective_cls=Classification, device="cpu", processes=1, tokens=(), **config):
    cfg = TrainConfig("t.csv", model=tiny_model_dir, **config)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    objective = objective_cls(SingleLabelClassification(["a", "b"]))
    return SpeedContext(cfg, device, processes, strategy_for(cfg), objective, model, list(tokens))


def test_each_option_says_why_it_does_not_apply(tiny_model_dir):
    gpu = SpeedOptions.select(_context(tiny_model_dir, device="cuda"), default_options())
    assert "runs on cuda" in gpu.skipped["fast_cpu_dropout"] and "runs on cuda" in gpu.skipped["compact_embeddings"]
    ddp = SpeedOptions.select(_context(tiny_model_dir, processes=2), default_options())
    assert "2 processes" in ddp.skipped["compact_embeddings"]
    frozen = SpeedOptions.select(_context(tiny_model_dir, strategy="feature-extraction"), default_options())
    assert "does not run the encoder" in frozen.skipped["cls_only_last_layer"]
    off = SpeedOptions.select(_context(tiny_model_dir, fast_cpu_dropout=False), default_options())
    assert off.skipped["fast_cpu_dropout"] == "switched off"


def test_cls_only_last_layer_turns_itself_off_for_an_objective_reading_every_position(tiny_model_dir):
    options = SpeedOptions.select(_context(tiny_model_dir, EveryPosition), default_options())
    assert "reads the last layer at every position" in options.skipped["cls_only_last_layer"]


def test_compact_embeddings_count_the_tokens_of_every_training_source(tiny_model_dir):
    labelled = Dataset.from_dict({"input_ids": [[101, 2000, 102]]})
    target = Dataset.from_dict({"input_ids": [[101, 3000, 3001, 102]]})
    ctx = _context(tiny_model_dir, tokens=[labelled, target])
    options = SpeedOptions.select(ctx, default_options())
    options.on_model()
    weight = ctx.model.get_input_embeddings().weight
    groups = [{"params": [weight]}]
    options.on_param_groups(groups)
    used = set(ctx.model.get_input_embeddings().used.tolist())
    assert {101, 102, 2000, 3000, 3001} <= used and len(used) <= 6  # + the padding row
    record = options.record(SPEED_OPTION_NAMES)["speedups"]["compact_embeddings"]
    assert record["trained_rows"] == len(used) and "effect" in record
    options.undo()
    assert type(ctx.model.get_input_embeddings()).__name__ == "Embedding"
    assert not any(isinstance(m, CpuDropout) for m in ctx.model.modules())


def test_the_summary_reports_every_option_in_one_shape(tiny_config):
    result = train(tiny_config(epochs=1, strategy="feature-extraction"))
    speedups, skipped = result.summary["speedups"], result.summary["speedups_skipped"]
    assert list(speedups) == list(SPEED_OPTION_NAMES)
    for name, record in speedups.items():
        assert (record is None) == (name in skipped)
        assert record is None or isinstance(record["effect"], str) and record["effect"]
    assert speedups["fast_cpu_dropout"]["dropout_modules_swapped"] > 0
    assert "feature-extraction" in skipped["compact_embeddings"]


def test_allocator_restores_the_setting_the_process_started_with(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=262144:glibc.malloc.trim_threshold=65536")
    assert allocator._startup_setting("mmap") == 262144 and allocator._startup_setting("trim") == 65536
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "524288")
    assert allocator._startup_setting("mmap") == 524288
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    assert allocator._startup_setting("trim") == 128 * 1024


@pytest.mark.parametrize("switch", [True, False])
def test_reuse_freed_memory_has_a_switch(tiny_model_dir, switch):
    options = SpeedOptions.select(_context(tiny_model_dir, reuse_freed_memory=switch), default_options())
    assert ("reuse_freed_memory" in options.skipped) != (switch and allocator.available())
