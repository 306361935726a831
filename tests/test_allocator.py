"""reuse_freed_memory: large freed blocks are reused instead of being faulted in again each step."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest
import torch

from nlp_transfer.speed import allocator
from nlp_transfer.speed.allocator import reuse_freed_memory

glibc_only = pytest.mark.skipif(allocator._glibc() is None, reason="the heap thresholds are a glibc setting")


def _page_faults_per_cycle(cycles: int = 4) -> list[int]:
    """Minor page faults of each allocate → fill → free cycle of a 64 MB buffer (an embedding gradient)."""
    faults = []
    for _ in range(cycles):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        buffer = torch.zeros(16 * 1024 * 1024)
        del buffer
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return faults


@glibc_only
def test_freed_buffers_are_reused_inside_and_handed_back_after():
    pages = 64 * 1024 * 1024 // resource.getpagesize()
    with reuse_freed_memory() as active:
        assert active
        reused = _page_faults_per_cycle(cycles=8)
    # Once the heap has grown to hold the block (a cycle or two), its pages stay mapped.
    assert max(reused[-4:]) < pages // 20, reused
    # On exit malloc_trim hands the pages back: the next cycle has to fault them in again.
    assert _page_faults_per_cycle(cycles=1)[0] > pages // 2


def test_without_glibc_it_is_a_no_op(monkeypatch):
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    with reuse_freed_memory() as active:
        assert active is False


def test_training_is_bit_identical_with_and_without_it(tiny_config, tmp_path, monkeypatch):
    from nlp_transfer import train

    held = train(tiny_config(output_dir=str(tmp_path / "held"), epochs=2))
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    plain = train(tiny_config(output_dir=str(tmp_path / "plain"), epochs=2))
    assert (Path(held.output_dir) / "model.safetensors").read_bytes() == (
        Path(plain.output_dir) / "model.safetensors").read_bytes()
