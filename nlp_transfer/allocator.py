"""Host memory allocator settings for the training loop.

Every training step allocates and frees the same large buffers; the biggest is the dense gradient of
the word-embedding matrix (30522 × 384 floats, 47 MB, for the default encoder). glibc serves any
block above its mmap threshold (at most 32 MB by default) with a fresh ``mmap`` and unmaps it on
free, so each step the kernel faults in and zeroes every page again before PyTorch zeroes it once
more. On the 2-core CI machine that is about 10 ms of a 180 ms step, spent outside any kernel a
profile names as the cause (it shows up as ``aten::fill_``).

:func:`reuse_freed_memory` raises the mmap and trim thresholds for the duration of training, so
freed blocks stay in the heap and the next step reuses pages that are already mapped. It changes
where memory comes from, never what is computed. On other C libraries it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import sys
from typing import Iterator, Optional

logger = logging.getLogger(__name__)

# mallopt parameters from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Above the largest per-step buffer of common encoders (a 250k-token vocabulary at width 768 is 768 MB).
_HOLD_BYTES = 1 << 30
# glibc's documented defaults, restored afterwards.
_DEFAULT_BYTES = 128 * 1024


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


def _set(libc: ctypes.CDLL, mmap_threshold: int, trim_threshold: int) -> bool:
    # The trim threshold matters as much: with a small one, freeing a large block at the top of
    # the heap hands the pages straight back to the kernel.
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))


@contextlib.contextmanager
def reuse_freed_memory() -> Iterator[bool]:
    """Keep freed blocks of up to 1 GiB in the heap while the block runs (glibc only).

    Yields whether the setting took effect. On exit the thresholds go back to glibc's defaults
    and ``malloc_trim`` returns the held memory to the system.
    """
    libc = _glibc()
    active = libc is not None and _set(libc, _HOLD_BYTES, _HOLD_BYTES)
    if libc is not None and not active:
        logger.debug("mallopt refused the heap thresholds; large buffers stay mmap-backed")
    try:
        yield active
    finally:
        if active:
            _set(libc, _DEFAULT_BYTES, _DEFAULT_BYTES)
            libc.malloc_trim(0)
