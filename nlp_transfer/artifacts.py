"""The files a run writes: their names, and writing each one whole or not at all.

Every writer of the package goes through this module:

- :class:`OutputDir`: a model folder is written in a hidden sibling, ``<parent>/.<name>.incomplete/``,
  and renamed to ``<parent>/<name>`` only when the model, metrics and card are all there. A crash
  never leaves a folder that looks like a finished model; checkpoints of an unfinished run stay in
  the staging folder, where ``--resume`` finds them.
- :func:`write_text` / :func:`write_json`: a single file goes to a temporary name in its folder
  and is renamed over the target when complete; a failure removes the temporary file.
- :func:`check_output_file`: a file the user names as output must not be one of the inputs.
- :func:`share_like_umask`: files get the permissions the user's umask gives new files (some
  writers, e.g. safetensors, create theirs private to the owner).
- :func:`filesystem_error`: an ``OSError`` (read-only folder, full disk, a parent that is a file)
  becomes one sentence naming the path and the fix.

JSON is written strictly (no ``NaN`` or ``Infinity``, which standard parsers reject): a
non-finite number becomes ``null``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO, Any, Iterable, Optional

from .errors import UserInputError

CONFIG_FILE = "training_config.json"
METRICS_FILE = "metrics.json"
SUMMARY_FILE = "training_summary.json"
CARD_FILE = "README.md"
MODEL_CONFIG_FILE = "config.json"
MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")
# Plots of a finished run (issue 20), drawn by nlp_transfer.plots and linked from the card.
CURVES_FILE = "training_curves.png"
CONFUSION_FILE = "confusion_matrix.png"


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
        lock_path = parent / f".{self.path.name}.lock"
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self._take(lock_path)
        except OSError as err:
            self._lock = None
            self._remove_created()
            raise filesystem_error(err, self.path, "write --output-dir") from None

    def _take(self, lock_path: Path) -> None:
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
        self._remove_created()

    def _remove_created(self) -> None:
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
        try:
            self.staging.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise filesystem_error(err, self.staging, "create the working folder") from None
        return self.staging

    def commit(self) -> Path:
        """Move the finished staging folder into place, replacing an old model if allowed."""
        old = None
        try:
            if self.path.exists():
                old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:8]}"
                self.path.rename(old)
            self.staging.rename(self.path)
        except OSError as err:
            if old is not None and not self.path.exists():
                old.rename(self.path)  # put the previous model back
            raise filesystem_error(err, self.path, "move the finished model into") from None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.path

    def discard(self) -> None:
        """Remove the staging folder (a run that failed before it had anything worth keeping)."""
        shutil.rmtree(self.staging, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def share_like_umask(*paths: str | Path) -> None:
    """Give files (and folders) the permissions a new file gets under the current umask.

    Writers that go through a private temporary file (``tempfile``, safetensors) leave mode 0600,
    which keeps everyone else on a shared server from loading the model.
    """
    mask = _umask()
    for path in paths:
        path = Path(path)
        targets = [path, *path.rglob("*")] if path.is_dir() else [path]
        for target in targets:
            mode = 0o777 if target.is_dir() else 0o666
            os.chmod(target, mode & ~mask)


def filesystem_error(err: OSError, path: str | Path, action: str = "write") -> UserInputError:
    """One sentence for an ``OSError`` met while writing (or reading) ``path``: what happened and the fix."""
    where = str(path)
    reasons = {
        errno.ENOSPC: ("the disk is full", "free some space or choose a path on another disk"),
        errno.EDQUOT: ("the disk quota is exceeded", "free some space or choose a path on another disk"),
        errno.EROFS: ("the file system is read-only", "choose a writable location"),
        errno.EACCES: ("permission denied", "choose a folder you can write to, or fix its permissions"),
        errno.EPERM: ("permission denied", "choose a folder you can write to, or fix its permissions"),
        errno.ENOTDIR: ("a part of the path is a file, not a folder", "fix the path"),
        errno.EISDIR: ("it is a folder", "pass a file path"),
        errno.ENAMETOOLONG: ("the name is too long", "choose a shorter path"),
    }
    blocking = next((p for p in Path(path).parents if p.exists() and not p.is_dir()), None)
    if blocking is not None and err.errno in (errno.EEXIST, errno.ENOTDIR, errno.ENOENT):
        return UserInputError(f"cannot {action} {where!r}: a part of the path is a file, not a folder ({str(blocking)!r}); "
                              "fix the path.")
    if err.errno == errno.ENOENT:
        reasons[errno.ENOENT] = ("a folder on the way does not exist and cannot be created there", "fix the path")
    reason, fix = reasons.get(err.errno, (err.strerror or type(err).__name__, "check the path and the disk"))
    return UserInputError(f"cannot {action} {where!r}: {reason}; {fix}.")


def _strict(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def to_json(value: Any) -> str:
    """Indented, standard JSON (non-finite floats written as ``null``), with a final newline."""
    return json.dumps(_strict(value), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically: a temporary file in the same folder, renamed when complete.

    Raises:
        UserInputError: the file cannot be written (the message says why); nothing is left behind.
    """
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, as :func:`write_text` does (e.g. a PNG plot)."""
    path = Path(path)
    tmp: Optional[str] = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        share_like_umask(tmp)
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        raise filesystem_error(err, path) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path


def write_json(path: str | Path, value: Any) -> Path:
    """Write ``value`` as standard JSON (see :func:`to_json`), atomically."""
    return write_text(path, to_json(value))


def read_json(path: str | Path, what: str) -> Any:
    """Read a JSON file written by nlp-transfer, or one sentence saying it is damaged.

    Args:
        path: the file.
        what: how to name it in the message (e.g. "the model's training_config.json").
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserInputError(
            f"{what} {str(path)!r} is damaged ({type(err).__name__}: {err}); restore it from a copy or re-run the "
            "step that wrote it."
        ) from None
    except OSError as err:
        raise filesystem_error(err, path, "read") from None


def check_output_file(output: str | Path, inputs: Iterable[str | Path], flag: str = "--output") -> Path:
    """Refuse an output file path that would destroy an input or cannot be a file.

    Args:
        output: the path the user asked to write.
        inputs: files the command reads; none may be overwritten.
        flag: the option that named ``output``, for the message.
    """
    out = Path(output)
    for source in inputs:
        source = Path(source)
        if out.exists() and source.exists() and os.path.samefile(out, source):
            raise UserInputError(f"{flag} {str(output)!r} is the input file {str(source)!r}; pass another path so "
                                 "the input is kept.")
    if out.is_dir():
        raise UserInputError(f"{flag} {str(output)!r} is a directory; pass a file path such as "
                             f"{str(out / 'output.json')!r}.")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserInputError(f"{flag} {str(output)!r}: {str(parent)!r} is a file, not a folder; fix the path.")
            break
    return out
