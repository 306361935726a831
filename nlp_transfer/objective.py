"""Objectives: what one training step computes.

The loop (:mod:`nlp_transfer.loop`) knows nothing about losses. Each step it hands the batch of
the labelled training data and the run's progress (0 → 1) to an :class:`Objective`, which returns
the loss to back-propagate and any per-step values to log. An objective may also bring:

- extra batch sources (:class:`CyclingSource`): e.g. a loader of unlabelled target-domain texts
  that restarts when exhausted; its position is checkpointed and resumed exactly;
- training-only modules (e.g. a domain discriminator): optimised, clipped and checkpointed with the
  model, never saved into the model folder;
- the datasets whose tokens the model reads in training (the compact-embedding speed option
  prepares their rows), and whether its loss reads the encoder at every position (then the
  [CLS]-only last layer switches itself off).

A new objective is one subclass registered in :data:`OBJECTIVES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Optional

import torch
from torch import nn

from .task import Task


@dataclass
class StepOutput:
    """What a training step computed: the loss to back-propagate and extra values to log.

    ``logs`` values are detached scalar tensors; the loop averages them over the epoch's steps
    (read once per epoch, so a GPU never waits for them).
    """

    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


class CyclingSource:
    """A prepared loader read batch by batch, restarting (with the next epoch's order) when exhausted.

    Its position (how many passes completed, batches read in the current one) is part of every
    checkpoint, so a resumed run reads exactly the batches the uninterrupted one would have.

    Args:
        loader: a ``DataLoader`` prepared by the accelerator (it must support ``set_epoch``).
        accelerator: the run's accelerator (``skip_first_batches`` on resume).
    """

    def __init__(self, loader: Any, accelerator: Any):
        self.loader = loader
        self.accelerator = accelerator
        self.passes = 0
        self.position = 0
        self._batches: Optional[Any] = None

    def __len__(self) -> int:
        return len(self.loader)

    def next(self) -> Any:
        """The next batch, starting a new pass over the data when the current one is done."""
        if self._batches is None:
            self._start()
        try:
            batch = next(self._batches)
        except StopIteration:
            self.passes, self.position = self.passes + 1, 0
            self._start()
            batch = next(self._batches)
        self.position += 1
        return batch

    def _start(self) -> None:
        self.loader.set_epoch(self.passes)
        loader = self.loader
        if self.position:
            loader = self.accelerator.skip_first_batches(self.loader, self.position)
        self._batches = iter(loader)

    def state_dict(self) -> dict[str, int]:
        """The position, for a checkpoint."""
        return {"passes": self.passes, "position": self.position}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Continue from a checkpointed position (the next batch is the one after it)."""
        self.passes, self.position = int(state["passes"]), int(state["position"])
        self._batches = None


class Objective:
    """What a training step computes. Subclasses override :meth:`step` and, when needed, the rest.

    Args:
        task: the run's task (labels, loss, predictions).
    """

    name: ClassVar[str] = ""
    reads_every_position: ClassVar[bool] = False

    def __init__(self, task: Task):
        self.task = task
        self.sources: dict[str, CyclingSource] = {}
        self.prepared: dict[str, nn.Module] = {}  # modules() after accelerator.prepare: call these in step()

    def modules(self) -> dict[str, nn.Module]:
        """Training-only modules: optimised, clipped and checkpointed with the model, never saved with it.

        The trainer prepares them with the accelerator and puts the prepared ones (DDP-wrapped
        under several processes) in :attr:`prepared`; :meth:`step` must call those.
        """
        return {}

    def token_datasets(self, data: Any) -> list[Any]:
        """Every tokenized dataset whose ``input_ids`` the model reads in training."""
        return [data.train]

    def add_sources(self, accelerator: Any, data: Any, tokenizer: Any) -> None:
        """Build and register extra batch sources (:class:`CyclingSource` in ``self.sources``).

        Called once the model is prepared; prepare each source's loader with ``accelerator``.

        Args:
            accelerator: the run's accelerator.
            data: the run's :class:`~nlp_transfer.data.PreparedData`.
            tokenizer: pads batches.
        """

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor], progress: float) -> StepOutput:
        """The loss of one batch of labelled training data at ``progress`` (0 at the start, 1 at the end)."""
        raise NotImplementedError

    def end_of_epoch(self, model: nn.Module, accelerator: Any) -> dict[str, float]:
        """Measurements of the objective after an epoch's validation (e.g. a discriminator's accuracy on
        held-out batches), recorded in that epoch's history entry under ``"objective"``; every process
        calls it."""
        return {}

    def summary(self) -> dict[str, Any]:
        """What the objective was (its weights, schedules, sources) for ``training_summary.json`` and the card."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold beyond module weights (e.g. source positions)."""
        return {"sources": {name: source.state_dict() for name, source in self.sources.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        for name, position in state.get("sources", {}).items():
            self.sources[name].load_state_dict(position)


class Classification(Objective):
    """Supervised loss of the task on the labelled training rows."""

    name = "classification"

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor], progress: float) -> StepOutput:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits
        return StepOutput(self.task.loss(logits, batch["labels"]))


OBJECTIVES: dict[str, type[Objective]] = {Classification.name: Classification}
