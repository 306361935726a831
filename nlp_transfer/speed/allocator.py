"""Host memory allocator settings for the training loop.

Every training step allocates and frees the same large buffers; the biggest is the dense gradient of
the word-embedding matrix (30522 × 384 floats, 47 MB, for the default encoder). glibc serves any
block above its mmap threshold (at most 32 MB by default) with a fresh ``mmap`` and unmaps it on
free, so each step the kernel faults in and zeroes every page again before PyTorch zeroes it once
more. On the 2-core CI machine that is about 10 ms of a 180 ms step, spent outside any kernel a
profile names as the cause (it shows up as ``aten::fill_``).

:func:`reuse_freed_memory` raises the mmap and trim thresholds for the duration of training, so
freed blocks stay in the heap and later steps reuse pages that are already mapped. It changes
where memory comes from, never what is computed. On other C libraries it does nothing. The first
few steps still grow the heap: a freed block lies below small blocks allocated after it, and an
aligned request of the same size needs a few bytes more, until freed neighbours coalesce (a 64 MB
block cycled alone: up to 8 cycles in tests/test_allocator.py).

glibc has no call that reads its thresholds back, so the previous setting is the one the process
started with: ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES`` when the
user set them, else glibc's documented defaults. (A threshold set through ``mallopt`` stays fixed:
glibc's sliding mmap threshold cannot be switched back on, which changes where later blocks come
from, not what is computed.) ``--no-reuse-freed-memory`` leaves the allocator alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import sys
from typing import Iterator, Optional

logger = logging.getLogger(__name__)

# mallopt parameters from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Above the largest per-step buffer of common encoders (a 250k-token vocabulary at width 768 is 768 MB).
_HOLD_BYTES = 1 << 30
# glibc's documented defaults, restored afterwards unless the process was started with others.
_DEFAULT_BYTES = 128 * 1024
_ENV = {"mmap": "MALLOC_MMAP_THRESHOLD_", "trim": "MALLOC_TRIM_THRESHOLD_"}
_TUNABLES = {"mmap": "glibc.malloc.mmap_threshold", "trim": "glibc.malloc.trim_threshold"}


def _glibc() -> Optional[ctypes.CDLL]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - present only in glibc (musl has mallopt but ignores these)
        libc.mallopt, libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def available() -> bool:
    """Whether the heap setting can be applied here (glibc on Linux)."""
    return _glibc() is not None


def _set(libc: ctypes.CDLL, mmap_threshold: int, trim_threshold: int) -> bool:
    # The trim threshold matters as much: with a small one, freeing a large block at the top of
    # the heap hands the pages straight back to the kernel.
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def _startup_setting(kind: str) -> int:
    """The threshold this process started with: from the environment glibc read, else the default."""
    values = {}
    for item in os.environ.get("GLIBC_TUNABLES", "").split(":"):
        name, _, value = item.partition("=")
        values[name] = value
    for raw in (os.environ.get(_ENV[kind]), values.get(_TUNABLES[kind])):
        try:
            if raw:
                return int(raw, 0)
        except ValueError:
            continue
    return _DEFAULT_BYTES


@contextlib.contextmanager
def reuse_freed_memory() -> Iterator[bool]:
    """Keep freed blocks of up to 1 GiB in the heap while the block runs (glibc only).

    Yields whether the setting took effect. On exit the thresholds go back to the process's
    startup setting (see the module docstring) and ``malloc_trim`` returns the held memory.
    """
    libc = _glibc()
    active = libc is not None and _set(libc, _HOLD_BYTES, _HOLD_BYTES)
    if libc is not None and not active:
        logger.debug("mallopt refused the heap thresholds; large buffers stay mmap-backed")
    try:
        yield active
    finally:
        if active:
            _set(libc, _startup_setting("mmap"), _startup_setting("trim"))
            libc.malloc_trim(0)
