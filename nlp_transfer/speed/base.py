"""The speed-option interface: :class:`SpeedOption`, its context, and the collection that runs them."""


from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence


@dataclass
class SpeedContext:
    """What the options look at to decide whether they apply, and what they act on.

    Attributes:
        config: the run's :class:`~nlp_transfer.config.TrainConfig`.
        device_type: ``"cpu"``, ``"cuda"``, ...
        num_processes: processes of the run (accelerate).
        strategy: the run's :class:`~nlp_transfer.strategies.Strategy`.
        objective: the run's :class:`~nlp_transfer.objective.Objective`.
        model: the model about to be trained (before ``accelerator.prepare``).
        token_datasets: every tokenized dataset whose ``input_ids`` the model reads in training.
    """

    config: Any
    device_type: str
    num_processes: int
    strategy: Any
    objective: Any
    model: Any = None
    token_datasets: Sequence[Any] = ()


class SpeedOption:
    """One speed option; subclasses override the hooks they need."""

    name = ""  # the TrainConfig field that switches it on
    effect = ""  # one sentence for the summary: what it changes

    def skip_reason(self, ctx: SpeedContext) -> Optional[str]:
        """Why the option does not apply to this run (None: it applies)."""
        return None

    def on_model(self, ctx: SpeedContext) -> dict[str, Any] | str:
        """Apply to the model; return details for the summary, or the reason it found nothing to do."""
        return {}

    def on_param_groups(self, ctx: SpeedContext, groups: list[dict[str, Any]]) -> None:
        """Adjust the optimizer's parameter groups (in place) before the optimizer is built."""

    def on_optimizer(self, ctx: SpeedContext, optimizer: Any) -> None:
        """Attach to the optimizer once it exists."""

    def during_fit(self) -> contextlib.AbstractContextManager:
        """A context entered around the training loop."""
        return contextlib.nullcontext()

    def undo(self, ctx: SpeedContext) -> None:
        """Leave the model as a plain one again (before evaluation on the test set and saving)."""

    def report(self) -> dict[str, Any]:
        """Details known only after training started, added to the summary record."""
        return {}


@dataclass
class SpeedOptions:
    """The speed options of one run: which applied, their hooks, and their summary record."""

    ctx: SpeedContext
    options: list[SpeedOption] = field(default_factory=list)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @classmethod
    def select(cls, ctx: SpeedContext, available: Sequence[SpeedOption]) -> "SpeedOptions":
        """The options switched on in ``ctx.config`` that apply to this run."""
        chosen = cls(ctx)
        for option in available:
            reason = "switched off" if not getattr(ctx.config, option.name) else option.skip_reason(ctx)
            if reason is None:
                chosen.options.append(option)
            else:
                chosen.skipped[option.name] = reason
        return chosen

    def on_model(self) -> None:
        """Apply every option to ``ctx.model``; options that find nothing to do move to ``skipped``."""
        for option in list(self.options):
            details = option.on_model(self.ctx)
            if isinstance(details, str):
                self.options.remove(option)
                self.skipped[option.name] = details
            else:
                self.details[option.name] = {"effect": option.effect, **details}

    def on_param_groups(self, groups: list[dict[str, Any]]) -> None:
        for option in self.options:
            option.on_param_groups(self.ctx, groups)

    def on_optimizer(self, optimizer: Any) -> None:
        for option in self.options:
            option.on_optimizer(self.ctx, optimizer)

    @contextlib.contextmanager
    def during_fit(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for option in self.options:
                stack.enter_context(option.during_fit())
            yield

    def undo(self) -> None:
        for option in reversed(self.options):
            option.undo(self.ctx)

    def record(self, names: Sequence[str]) -> dict[str, Any]:
        """``{"speedups": {name: details or None}, "speedups_skipped": {name: reason}}`` for ``names``."""
        for option in self.options:
            self.details[option.name].update(option.report())
        return {
            "speedups": {name: self.details.get(name) for name in names},
            "speedups_skipped": {name: reason for name, reason in self.skipped.items()},
        }
