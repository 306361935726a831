"""Experiment tracking (``--report-to``) through accelerate's trackers, and the logged loss curve.

``--report-to tensorboard`` (or mlflow, wandb, ... and comma-separated lists) hands the names to
``Accelerator(log_with=...)``; :class:`TrainingLog` starts the trackers with the run's settings as
hyperparameters and logs, with the optimizer step as x axis: the training loss, learning rate,
throughput and epoch every few steps (at most :data:`CURVE_POINTS` points a run), the epoch's mean
loss and every validation metric at each epoch end, and the test metrics at the end. The same
step losses are kept in the checkpointed state (``loss_curve``) for ``training_curves.png``, with
or without a tracker.

Trackers are optional packages. This module imports only the standard library (``config`` calls
:func:`check_report_to`), checks that a tracker is installed without importing it, and refuses a
missing one before any work, since accelerate would otherwise skip it with a debug message.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any, Optional

from .errors import UserInputError

logger = logging.getLogger(__name__)

# --report-to name → the modules accelerate looks for (any one will do) and our pip extra, if any.
TRACKERS: dict[str, tuple[tuple[str, ...], Optional[str]]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "mlflow": (("mlflow",), "mlflow"),
    "wandb": (("wandb",), None),
    "comet_ml": (("comet_ml",), None),
    "aim": (("aim",), None),
    "clearml": (("clearml",), None),
    "dvclive": (("dvclive",), None),
    "swanlab": (("swanlab",), None),
    "trackio": (("trackio",), None),
}
CURVE_POINTS = 500  # step-loss points kept (and logged) per run, whatever its length


def tracker_names(report_to: str) -> list[str]:
    """The trackers a ``--report-to`` value names (``none``: no tracker).

    Raises:
        UserInputError: a name accelerate does not know.
    """
    names = [name.strip().lower() for name in str(report_to).split(",") if name.strip()]
    if names in ([], ["none"]):
        return []
    unknown = [name for name in names if name not in TRACKERS]
    if unknown or "none" in names:
        raise UserInputError(f"--report-to {report_to!r}: unknown tracker {', '.join(map(repr, unknown or ['none']))}; "
                             f"choose none or one or more (comma-separated) of: {', '.join(TRACKERS)}.")
    return list(dict.fromkeys(names))


def check_report_to(config: Any) -> None:
    """Validate ``config.report_to`` (names only; :func:`check_installed` runs when training starts)."""
    tracker_names(config.report_to)


def check_installed(config: Any) -> None:
    """Refuse, before any work, a tracker whose package is not installed."""
    for name in tracker_names(config.report_to):
        modules, extra = TRACKERS[name]
        if not any(importlib.util.find_spec(module) for module in modules):
            how = f"pip install 'nlp-transfer[{extra}]'" if extra else f"pip install {modules[0]}"
            raise UserInputError(f"--report-to {name} needs the {modules[0]} package, which is not installed; "
                                 f"{how}, or train without --report-to {name}.")


def logging_dir(config: Any) -> Path:
    """Where local trackers write: ``--logging-dir``, else ``logs/`` beside the output folder."""
    return Path(config.logging_dir) if config.logging_dir else Path(config.output_dir).parent / "logs"


def accelerator_kwargs(config: Any) -> dict[str, Any]:
    """The ``Accelerator`` arguments of the run's trackers (none: no arguments, no tracker import)."""
    names = tracker_names(config.report_to)
    if not names:
        return {}
    from accelerate.utils import ProjectConfiguration

    return {"log_with": names, "project_config": ProjectConfiguration(logging_dir=str(logging_dir(config)))}


class TrainingLog:
    """What the loop reports each step and epoch: the loss curve in the state, and the trackers.

    Args:
        run: the :class:`~nlp_transfer.loop.Run` (its accelerator was built with :func:`accelerator_kwargs`).
    """

    def __init__(self, run: Any):
        self.run = run
        self.tracking = bool(tracker_names(run.config.report_to))
        self.every = max(1, run.total_steps // CURVE_POINTS)
        self._meter: Any = None
        self._time = time.perf_counter()  # of the last point

    def start(self, settings: dict[str, Any]) -> None:
        """Start the trackers (main process) with ``settings`` as hyperparameters (None becomes ``"None"``:
        trackers take scalars and strings only)."""
        if not self.tracking:
            return
        config, accelerator = self.run.config, self.run.accelerator
        name = f"{Path(config.output_dir).name}-{time.strftime('%Y%m%d-%H%M%S')}"
        hyperparameters = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in settings.items()}
        accelerator.init_trackers(name, config=hyperparameters)
        if accelerator.is_main_process:
            logger.info("tracking run %s with %s (local files under %s)", name, config.report_to, logging_dir(config))

    def step(self, meter: Any) -> None:
        """After an optimizer step: every :attr:`every` steps, one point of loss, learning rate and throughput."""
        state, loader = self.run.state, self.run.train_loader
        if meter is not self._meter:  # a new epoch, or a resumed one
            self._meter, self._time = meter, meter.started
        if state.global_step % self.every and state.batches_done < len(loader):
            return
        # The window since the last point; its start is in the checkpointed state, so a resumed run logs the same points.
        last_sum, last_batches = state.loss_curve_mark or (0.0, 0)
        loss_sum, batches, now = float(meter.loss_sum), state.batches_done, time.perf_counter()
        if batches <= last_batches:
            return
        loss = (loss_sum - last_sum) / (batches - last_batches)
        rate = (batches - last_batches) * self.run.config.batch_size * self.run.accelerator.num_processes / max(
            now - self._time, 1e-9)
        state.loss_curve_mark, self._time = [loss_sum, batches], now
        epoch = state.epoch + batches / max(1, len(loader))
        state.loss_curve.append([round(epoch, 4), loss, state.global_step])
        if self.tracking:
            self.run.accelerator.log({"train/loss": loss, "train/learning_rate": self.run.scheduler.get_last_lr()[0],
                                      "train/samples_per_s": rate, "train/epoch": epoch}, step=state.global_step)

    def epoch(self, entry: dict[str, Any]) -> None:
        """At an epoch's end: its mean training loss and every validation metric."""
        self.run.state.loss_curve_mark = []  # the next epoch's sums start at 0
        if self.tracking:
            values = {"train/epoch_loss": entry["train_loss"],
                      **{f"validation/{k}": v for k, v in (entry["validation"] or {}).items()}}
            self.run.accelerator.log(values, step=self.run.state.global_step)

    def test(self, report: Optional[dict[str, Any]]) -> None:
        """The test metrics of the best epoch's weights, at the last step."""
        if self.tracking and report:
            values = {f"test/{k}": v for k, v in report.items() if isinstance(v, float)}
            self.run.accelerator.log(values, step=self.run.state.global_step)
