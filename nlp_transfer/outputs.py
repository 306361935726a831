"""The output folder: written whole or not at all.

A run writes into a hidden sibling, ``<parent>/.<name>.incomplete/``, and renames it to
``<parent>/<name>`` only when the model, metrics and card are all there. A crash therefore never
leaves a folder that looks like a finished model; checkpoints of an unfinished run stay in the
staging folder, where ``--resume`` finds them.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from pathlib import Path
from typing import IO, Optional

from .errors import UserInputError

MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")


def holds_model(path: Path) -> bool:
    """Whether ``path`` is a folder with model files in it."""
    return path.is_dir() and any((path / name).exists() for name in MODEL_FILES)


class OutputDir:
    """A model folder that appears atomically.

    Args:
        path: the final folder (``--output-dir``).
        overwrite: replace a folder that already holds a model.
    """

    def __init__(self, path: str | Path, overwrite: bool = False):
        self.path = Path(path)
        self.overwrite = overwrite
        self.staging = self.path.parent / f".{self.path.name}.incomplete"
        self._lock: Optional[IO[str]] = None
        self._lock_path: Optional[Path] = None
        self._created: list[Path] = []

    def lock(self) -> None:
        """Take the folder's lock (``<parent>/.<name>.lock``) for this process, or refuse at once.

        Two runs writing the same ``--output-dir`` would mix their checkpoints and files; the
        second one stops here. The lock is an ``flock``, so it dies with its process (even on
        ``kill -9``); :meth:`unlock` releases it and removes the lock file (and the parent folders
        this call created, if still empty), so a refused run leaves nothing behind.
        """
        parent = self.path.parent
        self._created = [d for d in (parent, *parent.parents) if not d.exists()]
        parent.mkdir(parents=True, exist_ok=True)
        lock_path = parent / f".{self.path.name}.lock"
        while True:
            handle = open(lock_path, "a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                handle.close()
                raise UserInputError(
                    f"another run (pid {holder}) is writing --output-dir {str(self.path)!r}; wait for it to finish, "
                    "stop it, or choose another --output-dir."
                ) from None
            # The holder before us may have unlinked the file after we opened it: lock the live file only.
            try:
                if os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle
        self._lock_path = lock_path

    def unlock(self) -> None:
        """Release the lock taken by :meth:`lock` (no-op when not held)."""
        handle, lock_path = self._lock, self._lock_path
        if handle is None or lock_path is None:
            return
        lock_path.unlink(missing_ok=True)  # while still held, so no one locks a file about to vanish
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
        self._lock = None
        for folder in self._created:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break  # not empty: it holds the model or the kept checkpoints

    def check(self) -> None:
        """Refuse, before any work, an output path that would destroy something."""
        if self.path.exists() and not self.path.is_dir():
            raise UserInputError(f"--output-dir {str(self.path)!r} is a file; pass a folder path.")
        if holds_model(self.path) and not self.overwrite:
            raise UserInputError(
                f"--output-dir {str(self.path)!r} already holds a model; pass --overwrite to replace it "
                "or choose another --output-dir."
            )
        if self.path.is_dir() and any(self.path.iterdir()) and not holds_model(self.path):
            raise UserInputError(
                f"--output-dir {str(self.path)!r} is a non-empty folder that holds no model; "
                "choose an empty or new folder so none of its files are replaced."
            )

    def create_staging(self) -> Path:
        """Create (or reuse, when resuming) the staging folder and return it."""
        self.staging.mkdir(parents=True, exist_ok=True)
        return self.staging

    def commit(self) -> Path:
        """Move the finished staging folder into place, replacing an old model if allowed."""
        old = None
        if self.path.exists():
            old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:8]}"
            self.path.rename(old)
        self.staging.rename(self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.path

    def discard(self) -> None:
        """Remove the staging folder (a run that failed before it had anything worth keeping)."""
        shutil.rmtree(self.staging, ignore_errors=True)
