"""Checkpoints of an unfinished run, resuming from them exactly, and stopping cleanly on signals.

A checkpoint is a folder ``<staging>/checkpoints/checkpoint-<step>/`` (``<staging>`` is the
run's ``.<name>.incomplete/`` folder, see :mod:`nlp_transfer.artifacts`) holding:

- what ``accelerator.save_state`` writes: ``model.safetensors``, ``optimizer.bin``,
  ``scheduler.bin`` and ``random_states_<rank>.pkl`` (the RNG states of every process, so
  dropout continues with the same random numbers);
- ``best_model.safetensors``: the weights of the best epoch so far (the trainer keeps them in
  memory, so they would otherwise die with the process);
- ``training_config.json``: the settings of the run (a resume with other settings is refused);
- ``data_fingerprint.json``: a content hash of every input file and the label set (a resume on
  changed data is refused, naming the file);
- ``trainer_state.json``: where the loop stands (epoch, batches done in it, step counters,
  early-stopping state, history, the objective's extra batch sources), written last.

Each checkpoint is written as ``.checkpoint-<step>.tmp`` and renamed when complete, so a kill
while writing leaves only a temporary folder that ``--resume`` ignores. Resuming is exact
because nothing else is random: the training order depends only on the seed and the epoch
(:mod:`nlp_transfer.sampler`), the batches already done in the epoch are skipped without being
loaded, and the training loader draws its worker seed from its own generator, so iterating it
does not move the global RNG that dropout uses.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import xxhash
from safetensors.torch import load_file, save_file

from .config import TrainConfig
from .errors import UserInputError
from .artifacts import CONFIG_FILE, OutputDir, filesystem_error, read_json, to_json, write_json, write_text

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
DATA_FILE = "data_fingerprint.json"
BEST_WEIGHTS_FILE = "best_model.safetensors"
LATEST = "latest"
_NAME = re.compile(r"^checkpoint-(\d+)$")

# Settings that may change between a run and its resume: none of them alters what is computed.
RESUMABLE_CHANGES = frozenset(
    {"resume", "overwrite", "output_dir", "checkpoint_every", "keep_checkpoints", "license", "language", "dataset_name",
     "report_to", "logging_dir"}
)


@dataclass
class BestEpoch:
    """The best validation result so far (``score``: the chosen metric, higher is better)."""

    score: Optional[float] = None
    epoch: int = 0
    validation: Optional[dict[str, Any]] = None

    def improved_by(self, score: Optional[float]) -> bool:
        """Whether ``score`` beats the best so far (the first epoch always does; without validation, None,
        the latest epoch does)."""
        return score is None or self.score is None or score > self.score


@dataclass
class TrainState:
    """Where the training loop stands; everything besides tensors that a resume needs.

    ``epoch`` is the epoch in progress (0-based) and ``batches_done`` the batches of it already
    trained on this process; an epoch-end checkpoint has ``epoch`` + 1 and ``batches_done`` 0.
    """

    epoch: int = 0
    batches_done: int = 0
    global_step: int = 0
    loss_sums: list[float] = field(default_factory=list)  # per process, of the epoch in progress
    log_sums: list[dict[str, float]] = field(default_factory=list)  # per process: the objective's logs
    tokens: int = 0
    padded: int = 0
    loop_seconds: float = 0.0
    elapsed_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: BestEpoch = field(default_factory=BestEpoch)
    patience: int = 0
    num_processes: int = 1
    objective: dict[str, Any] = field(default_factory=dict)  # Objective.state_dict()
    loss_curve: list[list[float]] = field(default_factory=list)  # [epoch, loss, step] points (tracking.TrainingLog)
    loss_curve_mark: list[float] = field(default_factory=list)  # [loss sum, batches] of the epoch at the last point

    def end_epoch(self, entry: dict[str, Any], score: Optional[float], validation: Optional[dict[str, Any]]) -> bool:
        """Record a finished epoch's history entry and validation score; return whether it is the best yet."""
        self.history.append(entry)
        self.epoch, self.batches_done, self.loss_sums, self.log_sums = entry["epoch"], 0, [], []
        if self.best.improved_by(score):
            self.best = BestEpoch(score, entry["epoch"], validation)
            self.patience = 0
            return True
        self.patience += 1
        return False

    def to_json(self) -> str:
        return to_json(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "TrainState":
        values = json.loads(text)
        values["best"] = BestEpoch(**values.get("best", {}))
        return cls(**values)


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training after writing a checkpoint (``checkpoint`` is None when
    checkpoints are off). A subclass of ``KeyboardInterrupt``, so code that handles Ctrl-C still does."""

    def __init__(self, signum: int, checkpoint: Optional[Path]):
        self.signum = signum
        self.checkpoint = checkpoint
        name = signal.Signals(signum).name
        if checkpoint is None:
            text = f"stopped by {name}; checkpoints were off (--keep-checkpoints 0), so nothing was kept."
        else:
            text = f"stopped by {name} after writing checkpoint {str(checkpoint)!r}; run the same command with --resume to continue."
        super().__init__(text)

    @property
    def exit_code(self) -> int:
        """The shell convention for death by a signal: 128 + its number (130 SIGINT, 143 SIGTERM)."""
        return 128 + self.signum


def checkpoint_step(path: Path) -> Optional[int]:
    """The step number of a complete checkpoint folder, else None."""
    match = _NAME.match(path.name)
    if match is None or not (path / STATE_FILE).is_file():
        return None
    return int(match.group(1))


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (temporary folders are ignored)."""
    if not root.is_dir():
        return []
    found = [(step, p) for p in root.iterdir() if (step := checkpoint_step(p)) is not None]
    return [p for _, p in sorted(found)]


def resume_point(config: TrainConfig, output: OutputDir) -> Optional[Path]:
    """The checkpoint this run continues from (None for a fresh run), refusing what cannot work.

    A fresh run (no ``--resume``) refuses to start over an unfinished run's checkpoints unless
    ``--overwrite``; ``--resume`` alone takes the newest complete checkpoint of the staging folder.

    Raises:
        UserInputError: nothing to resume, an unfinished run in the way, or a path that is no checkpoint.
    """
    found = list_checkpoints(output.staging / CHECKPOINTS_DIR)
    if config.resume is None:
        if found and not config.overwrite:
            raise UserInputError(
                f"--output-dir {str(output.path)!r} has an unfinished run with checkpoints in {str(found[-1].parent)!r}; "
                "pass --resume to continue it, or --overwrite to discard it and start again."
            )
        return None
    if config.resume == LATEST:
        if not found:
            done = " (it already holds a finished model)" if output.path.is_dir() and any(output.path.iterdir()) else ""
            raise UserInputError(
                f"--resume found no checkpoint of --output-dir {str(output.path)!r}{done}: there is no complete checkpoint "
                f"in {str(output.staging / CHECKPOINTS_DIR)!r}. Run without --resume to start a new run."
            )
        return found[-1]
    path = Path(config.resume)
    if checkpoint_step(path) is None:
        raise UserInputError(
            f"--resume {str(path)!r} is not a complete checkpoint (expected a checkpoint-<step> folder with {STATE_FILE}); "
            "pass --resume alone to take the newest checkpoint of --output-dir."
        )
    return path


def check_same_settings(config: TrainConfig, checkpoint: Path) -> None:
    """Refuse to resume with settings that change what the run computes."""
    saved = read_json(checkpoint / CONFIG_FILE, "the checkpoint's settings file")
    now = config.to_dict()
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} → {now[k]!r}" for k in changed)
        raise UserInputError(
            f"cannot resume from {str(checkpoint)!r} with different settings ({details}); "
            "resume with the settings of the interrupted run, or start a new run without --resume."
        )


_DATA_FIELDS = ("train_file", "validation_file", "test_file")


def _file_hash(path: str) -> str:
    h = xxhash.xxh3_128()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                h.update(chunk)
    except OSError as err:
        raise filesystem_error(err, path, "read") from None
    return h.hexdigest()


def data_fingerprint(config: TrainConfig, extra_files: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """A content hash of every input file of a run (by setting name), for refusing a resume on changed data.

    Args:
        config: the run's settings (``train_file``, ``validation_file``, ``test_file``, where it has them).
        extra_files: more input files an objective reads (setting name → path).
    """
    files = {name: getattr(config, name) for name in _DATA_FIELDS if getattr(config, name, None)}
    files.update(extra_files or {})
    return {"files": {name: _file_hash(path) for name, path in sorted(files.items())}}


def check_same_data(checkpoint: Path, fingerprint: dict[str, Any], labels: Optional[list[str]] = None) -> None:
    """Refuse to resume from ``checkpoint`` when an input file or the label set differs from when it was written.

    Args:
        checkpoint: the checkpoint folder.
        fingerprint: :func:`data_fingerprint` of the run now (``labels`` added once known).
        labels: the run's label set; compared once the data are read.
    """
    saved = read_json(checkpoint / DATA_FILE, "the checkpoint's data fingerprint") if (checkpoint / DATA_FILE).is_file() else {}
    old_files = saved.get("files", {})
    for name, digest in fingerprint["files"].items():
        if old_files.get(name, digest) != digest:
            flag = "--" + name.replace("_", "-")
            raise UserInputError(
                f"cannot resume from {str(checkpoint)!r}: the {flag} file changed since the checkpoint was written (its "
                "content differs), so the resumed run would mix two datasets; resume with the original file, or start a "
                "new run with --overwrite."
            )
    if labels is not None and saved.get("labels") is not None and saved["labels"] != labels:
        added = sorted(set(labels) - set(saved["labels"]))
        removed = sorted(set(saved["labels"]) - set(labels))
        raise UserInputError(
            f"cannot resume from {str(checkpoint)!r}: the label set changed (added: {', '.join(added) or 'none'}; "
            f"removed: {', '.join(removed) or 'none'}); resume with the original data, or start a new run with --overwrite."
        )


class Checkpoints:
    """Writes, prunes and loads the checkpoints of one run.

    Args:
        staging: the run's staging folder (checkpoints go to its ``checkpoints/`` subfolder).
        config: the run's settings, a ``TrainConfig`` or ``AdaptLmConfig`` (``checkpoint_every``, ``keep_checkpoints``,
            ``to_dict``/``save``; saved in each checkpoint).
        accelerator: the run's accelerator; every process takes part in saving and loading.
    """

    def __init__(self, staging: Path, config: TrainConfig, accelerator: Any, data: Optional[dict[str, Any]] = None):
        self.root = Path(staging) / CHECKPOINTS_DIR
        self.config = config
        self.accelerator = accelerator
        self.data = data or {}  # data_fingerprint() plus the labels, written into each checkpoint
        self.enabled = config.keep_checkpoints > 0

    def due(self, global_step: int) -> bool:
        """Whether a step checkpoint (``--checkpoint-every``) falls on ``global_step``."""
        every = self.config.checkpoint_every
        return self.enabled and every is not None and global_step % every == 0

    def exist(self) -> bool:
        """Whether a complete checkpoint exists (then a failed run keeps its staging folder)."""
        return bool(list_checkpoints(self.root))

    def save(self, state: TrainState, best_weights: Optional[dict[str, torch.Tensor]]) -> Optional[Path]:
        """Write a checkpoint atomically (all processes must call this); return its folder."""
        if not self.enabled:
            return None
        acc = self.accelerator
        final = self.root / f"checkpoint-{state.global_step}"
        tmp = self.root / f".checkpoint-{state.global_step}.tmp"
        try:
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed while writing
                tmp.mkdir(parents=True)
            acc.wait_for_everyone()
            acc.save_state(str(tmp))
            acc.wait_for_everyone()
            if acc.is_main_process:
                self._finish(tmp, final, state, best_weights)
        except OSError as err:
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            raise filesystem_error(err, tmp, "write the checkpoint") from None
        acc.wait_for_everyone()
        return final

    def _finish(self, tmp: Path, final: Path, state: TrainState, best_weights: Optional[dict[str, torch.Tensor]]) -> None:
        if best_weights is not None:
            save_file({k: v.contiguous() for k, v in best_weights.items()}, str(tmp / BEST_WEIGHTS_FILE))
        self.config.save(tmp / CONFIG_FILE)
        write_json(tmp / DATA_FILE, self.data)
        write_text(tmp / STATE_FILE, state.to_json())  # last: marks it complete
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in list_checkpoints(self.root)[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("checkpoint written: %s", final)

    def load(self, path: Path) -> tuple[TrainState, Optional[dict[str, torch.Tensor]]]:
        """Restore model, optimizer, scheduler and RNG states from ``path``; return the loop state and best weights."""
        check_same_settings(self.config, path)
        try:
            state = TrainState.from_json((path / STATE_FILE).read_text(encoding="utf-8"))
        except (ValueError, TypeError) as err:
            raise UserInputError(f"checkpoint {str(path)!r} has a damaged {STATE_FILE} ({err}); resume from an older "
                                 "checkpoint with --resume PATH, or start again with --overwrite.") from None
        if state.num_processes != self.accelerator.num_processes:
            raise UserInputError(
                f"checkpoint {str(path)!r} was written by {state.num_processes} process(es) but this run has "
                f"{self.accelerator.num_processes}; resume with the same number of processes (accelerate launch --num_processes)."
            )
        self.accelerator.load_state(str(path))
        best_file = path / BEST_WEIGHTS_FILE
        best = load_file(str(best_file)) if best_file.is_file() else None
        logger.info("resuming from %s (epoch %d, step %d)", path, state.epoch + 1, state.global_step)
        return state, best

    def remove_all(self) -> None:
        """Delete every checkpoint (a finished run keeps only the model)."""
        shutil.rmtree(self.root, ignore_errors=True)


class StopSignals:
    """While active, SIGINT/SIGTERM only ask the loop to stop at the next step boundary.

    The loop then writes a checkpoint and raises :class:`TrainingInterrupted`. A second signal
    stops at once (the previous handlers are back). Handlers can only be installed from the main
    thread; elsewhere signals keep their usual effect.

    Args:
        accelerator: with several processes, :meth:`requested` agrees across them, so all stop
            at the same step (a signal may reach only some of them).
    """

    def __init__(self, accelerator: Any):
        self.accelerator = accelerator
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum:
            self._restore()
            raise KeyboardInterrupt
        self.signum = signum
        logger.warning("%s received: stopping after the current step (send it again to stop at once)",
                       signal.Signals(signum).name)

    def requested(self) -> int:
        """The signal number that asked to stop (0: none); a collective call with several processes."""
        if self.accelerator.num_processes == 1:
            return self.signum
        flags = self.accelerator.gather(torch.tensor([self.signum], device=self.accelerator.device))
        return int(flags.max().item())
