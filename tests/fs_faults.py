"""Real filesystem faults for tests: a full disk and a read-only folder, on a small tmpfs.

Mounting needs root (as on CI); elsewhere the tests that need a fault skip with the reason. A
path whose parent is a file needs no help: it fails with ENOTDIR for anyone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest


@contextlib.contextmanager
def tmpfs(path: Path, read_only: bool = False, full: bool = False) -> Iterator[Path]:
    """Mount a 64 kB tmpfs on ``path`` for the block: read-only, or filled to the last byte when ``full``."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs (to make a full or read-only disk) needs root")
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        if full:
            _fill(path)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(path: Path) -> None:
    with (path / "filler").open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 1024)
        except OSError as err:
            assert err.errno == errno.ENOSPC
