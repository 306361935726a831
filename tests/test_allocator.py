"""reuse_freed_memory: large freed blocks are reused instead of being faulted in again each step."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from nlp_transfer.speed import allocator
from nlp_transfer.speed.allocator import reuse_freed_memory

glibc_only = pytest.mark.skipif(allocator._glibc() is None, reason="the heap thresholds are a glibc setting")


# Page faults depend on the whole heap of the process that counts them: after a long test session its
# layout (blocks other tests left, mappings near the heap) can make glibc serve the block elsewhere, and
# the test then measured the session, not the allocator. A fresh interpreter measures the allocator.
CHILD = """
import json, resource, torch
from nlp_transfer.speed.allocator import reuse_freed_memory

def cycles(n):
    faults = []
    for _ in range(n):  # allocate, fill, free a 64 MB buffer (an embedding gradient)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        buffer = torch.zeros(16 * 1024 * 1024)
        del buffer
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return faults

with reuse_freed_memory() as active:
    reused = cycles(16)
print(json.dumps({"active": active, "reused": reused, "after": cycles(1)}))
"""


def _page_faults_in_a_fresh_process() -> dict:
    """Minor page faults of each allocate → fill → free cycle, inside reuse_freed_memory and once after."""
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@glibc_only
def test_freed_buffers_are_reused_inside_and_handed_back_after():
    pages = 64 * 1024 * 1024 // resource.getpagesize()
    faults = _page_faults_in_a_fresh_process()
    assert faults["active"]
    # Once the heap has grown to hold the block, its pages stay mapped. That takes up to 8 cycles here: a freed
    # block sits below small allocations made after it, and the next 64-byte-aligned request needs a little more
    # than its size, so the heap grows until freed neighbours coalesce (measured in fresh processes).
    assert max(faults["reused"][-4:]) < pages // 20, faults
    # On exit malloc_trim hands the pages back: the next cycle has to fault them in again.
    assert faults["after"][0] > pages // 2, faults


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
