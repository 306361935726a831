"""Domain-adversarial training (DANN, Ganin et al. 2016): the objective of ``--strategy dann``.

Each step reads a batch of labelled source rows and a batch of target-domain rows (a
:class:`~nlp_transfer.objective.CyclingSource`, so the shorter set cycles with a resumable position)
in one forward pass, and minimises ``L = a·L_src + b·L_tgt + c·L_adv``:

- ``L_src``: the task's loss on the source rows;
- ``L_tgt``: the task's loss on the target rows that carry a label (none, some or all of them);
- ``L_adv``: a domain discriminator's binary cross-entropy (source 0, target 1) on the pooled vector
  the classification head reads. The vector reaches the discriminator through a gradient-reversal
  layer: the discriminator learns to tell the domains apart while the encoder receives the reversed
  gradient, scaled by ``λ(p) = 2/(1+exp(-10p)) - 1`` over the run's progress ``p`` (or 1), and so
  learns features that do not tell them apart.

The discriminator is a training-only module: optimised, clipped and checkpointed with the model,
never saved into the model folder. After each epoch its balanced accuracy on held-out rows (the
source validation set and a held-out tenth of the target texts) goes into the epoch history; near
0.5 means the features no longer separate the domains.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import torch
from torch import nn

from .domain_data import TargetData, load_target
from .errors import UserInputError
from .objective import CyclingSource, Objective, StepOutput


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient times ``-coefficient`` backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.neg() * ctx.coefficient, None


def reverse_gradient(x: torch.Tensor, coefficient: float) -> torch.Tensor:
    """``x`` unchanged, but the gradient flowing back through it is multiplied by ``-coefficient``."""
    return _ReverseGradient.apply(x, coefficient)


def grl_coefficient(progress: float, schedule: str) -> float:
    """The reversal coefficient λ at ``progress`` in [0, 1]: ``2/(1+exp(-10p)) - 1`` (ganin) or 1 (constant).

    The ganin ramp starts at 0, so the discriminator's noisy early gradients do not disturb the
    encoder before the classifier has learned anything; it is 0.99 by p = 0.5.
    """
    if schedule == "constant":
        return 1.0
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


def make_discriminator(size: int, hidden: int, seed: int) -> nn.Module:
    """A one-hidden-layer MLP giving one domain logit, initialised from ``seed``.

    It is built under a forked RNG, so creating it does not move the global random state that
    dropout draws from (a run with ``--adversarial-weight 0`` matches plain fine-tuning).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, 1))


def _head_input(model: nn.Module) -> tuple[nn.Module, str]:
    """The module whose output (or input) is the pooled vector the classification head reads."""
    from .layers import encoder_of

    pooler = getattr(encoder_of(model), "pooler", None)
    if pooler is not None:
        return pooler, "output"  # BERT: pooler(hidden[:, 0]) → dropout → classifier
    if isinstance(getattr(model, "pre_classifier", None), nn.Module):
        return model.pre_classifier, "input"  # DistilBERT: hidden[:, 0] → pre_classifier
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Module) and not isinstance(classifier, nn.Linear):
        return classifier, "first-position input"  # RoBERTa, ELECTRA: a head that reads hidden[:, 0]
    raise LookupError


def feature_size(model: nn.Module, name: str) -> int:
    """Width of the pooled vector the discriminator reads, refusing a model where it cannot be found."""
    from .layers import unwrap_peft

    try:
        _head_input(model)
    except LookupError:
        raise UserInputError(
            f"--strategy dann cannot find the pooled vector that the classification head of model {name!r} "
            f"({type(model).__name__}) reads; use a BERT, RoBERTa, ELECTRA or DistilBERT style encoder."
        ) from None
    config = unwrap_peft(model).config
    return int(getattr(config, "hidden_size", None) or config.dim)


class FeatureTap:
    """Captures the pooled vector of a forward pass through a hook on the module that computes it."""

    def __init__(self, model: nn.Module):
        module, self.where = _head_input(getattr(model, "module", model))
        self.active = False
        self.value: Optional[torch.Tensor] = None
        if self.where == "output":
            self.handle = module.register_forward_hook(lambda _m, _args, out: self._keep(out))
        else:
            self.handle = module.register_forward_pre_hook(lambda _m, args: self._keep(args[0]))

    def _keep(self, value: torch.Tensor) -> None:
        if self.active:
            self.value = value[:, 0] if self.where == "first-position input" else value

    @contextlib.contextmanager
    def capturing(self) -> Iterator[None]:
        """Keep the vector of the forward passes run inside the block."""
        self.active = True
        try:
            yield
        finally:
            self.active = False

    def take(self) -> torch.Tensor:
        """The captured vector (the reference is dropped, so it is not kept alive)."""
        value, self.value = self.value, None
        if value is None:
            raise RuntimeError("the model's forward pass did not reach its pooled output")
        return value


def join_batches(first: Mapping[str, torch.Tensor], second: Mapping[str, torch.Tensor],
                 pad_id: int) -> dict[str, torch.Tensor]:
    """Stack two padded token batches into one, padding both to the longer length."""
    length = max(first["input_ids"].shape[1], second["input_ids"].shape[1])
    joined = {}
    for key in first:
        fill = pad_id if key == "input_ids" else 0
        parts = [nn.functional.pad(batch[key], (0, length - batch[key].shape[1]), value=fill) for batch in (first, second)]
        joined[key] = torch.cat(parts)
    return joined


class DannObjective(Objective):
    """``a·L_src + b·L_tgt + c·L_adv`` over a source batch and a target batch per step (see the module doc).

    Args:
        task: the run's task.
        config: the run's ``TrainConfig`` (target file and columns, weights, schedule, discriminator size).
        feature_size: width of the pooled vector.
    """

    name = "dann"

    def __init__(self, task: Any, config: Any, feature_size: int):
        super().__init__(task)
        self.config = config
        self.weights = (config.source_weight, config.target_weight, config.adversarial_weight)
        # With b = c = 0 the target rows change nothing: they are not read at all.
        self.reads_target = config.target_weight > 0 or config.adversarial_weight > 0
        self.discriminator = (make_discriminator(feature_size, config.discriminator_hidden, config.seed)
                              if config.adversarial_weight > 0 else None)
        self.target: Optional[TargetData] = None
        self.held_out: list[Any] = []  # prepared loaders: source validation, target held-out
        self.accuracy_history: list[float] = []
        self.pad_id = 0
        self._tap: Optional[FeatureTap] = None

    def modules(self) -> dict[str, nn.Module]:
        return {"discriminator": self.discriminator} if self.discriminator is not None else {}

    def _load_target(self, labels: list[str], tokenizer: Any = None) -> TargetData:
        if self.target is None:
            if tokenizer is None:
                from .modeling import load_tokenizer

                tokenizer = load_tokenizer(self.config.model, trust_remote_code=self.config.trust_remote_code)
            self.target = load_target(self.config, tokenizer, labels)
        return self.target

    def token_datasets(self, data: Any) -> list[Any]:
        target = self._load_target(data.labels)  # read and checked here: before any training or writing
        return [data.train, target.train] if self.reads_target else [data.train]

    def add_sources(self, accelerator: Any, data: Any, tokenizer: Any) -> None:
        from transformers import DataCollatorWithPadding

        from .sampler import eval_loader, model_inputs, training_loader

        target = self._load_target(data.labels, tokenizer)
        self.pad_id = tokenizer.pad_token_id or 0
        if not self.reads_target:
            return
        config = self.config
        lengths = target.train.with_format("arrow")["length"].to_numpy()
        loader = training_loader(model_inputs(target.train), lengths, config.batch_size, config.seed + 1,
                                 config.group_by_length, DataCollatorWithPadding(tokenizer))
        self.sources["target"] = CyclingSource(accelerator.prepare(loader), accelerator)
        if self.discriminator is not None:
            self.held_out = [accelerator.prepare(eval_loader(ds, tokenizer, config.eval_batch_size))
                             for ds in (data.validation, target.held_out)]

    def _tap_for(self, model: nn.Module) -> FeatureTap:
        if self._tap is None:
            self._tap = FeatureTap(model)
        return self._tap

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor], progress: float) -> StepOutput:
        a, b, c = self.weights
        labels = batch["labels"]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if not self.reads_target:
            return StepOutput(a * self.task.loss(model(**inputs).logits, labels))
        target = dict(self.sources["target"].next())
        target_labels = target.pop("labels")
        tap = self._tap_for(model)
        with tap.capturing():
            logits = model(**join_batches(inputs, target, self.pad_id)).logits
        features = tap.take()
        n = labels.shape[0]
        loss_source = self.task.loss(logits[:n], labels)
        logs = {"loss_source": loss_source.detach()}
        target_labels = self._with_pseudo_labels(logits[n:], target_labels, logs)
        known = target_labels >= 0
        loss_target = self.task.loss(logits[n:][known], target_labels[known]) if bool(known.any()) \
            else logits.new_zeros(())
        loss = a * loss_source + b * loss_target
        logs["loss_target"] = loss_target.detach()
        if self.discriminator is not None:
            coefficient = grl_coefficient(progress, self.config.grl_schedule)
            domain_logits = self.prepared["discriminator"](reverse_gradient(features, coefficient)).squeeze(-1)
            domains = torch.cat([labels.new_zeros(n), labels.new_ones(target_labels.shape[0])]).to(domain_logits.dtype)
            loss_adversarial = nn.functional.binary_cross_entropy_with_logits(domain_logits, domains)
            loss = loss + c * loss_adversarial
            logs.update(loss_adversarial=loss_adversarial.detach(),
                        grl_coefficient=torch.tensor(coefficient, device=logits.device),
                        discriminator_train_accuracy=((domain_logits.detach() > 0) == (domains > 0.5)).float().mean())
        return StepOutput(loss, logs)

    def _with_pseudo_labels(self, logits: torch.Tensor, labels: torch.Tensor,
                            logs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``labels`` with the confident predictions filled in for unlabelled rows (``--pseudo-label-threshold``)."""
        threshold = self.config.pseudo_label_threshold
        if threshold is None:
            return labels
        confidence, predicted = self.task.probabilities(logits.detach()).max(dim=-1)
        pseudo = (labels < 0) & (confidence >= threshold)
        logs["pseudo_labelled_fraction"] = pseudo.float().mean()
        return torch.where(pseudo, predicted, labels)

    @torch.inference_mode()
    def _held_out_accuracy(self, model: nn.Module, accelerator: Any) -> list[float]:
        """The discriminator's accuracy on each held-out domain (source validation rows, held-out target rows)."""
        discriminator, tap = self.prepared["discriminator"], self._tap_for(model)
        was_training = model.training
        model.eval()
        discriminator.eval()
        accuracies = []
        for domain, loader in enumerate(self.held_out):
            correct = total = 0
            for batch in loader:
                batch = {k: v for k, v in batch.items() if k != "labels"}
                with tap.capturing():
                    model(**batch)
                predicted = (discriminator(tap.take()).squeeze(-1) > 0).long()
                predicted = accelerator.gather_for_metrics(predicted)
                correct, total = correct + int((predicted == domain).sum()), total + predicted.numel()
            accuracies.append(correct / max(1, total))
        model.train(was_training)
        discriminator.train()
        return accuracies

    def end_of_epoch(self, model: nn.Module, accelerator: Any) -> dict[str, float]:
        if self.discriminator is None:
            return {}
        source, target = self._held_out_accuracy(model, accelerator)
        balanced = (source + target) / 2
        self.accuracy_history.append(balanced)
        return {"discriminator_accuracy": balanced, "discriminator_accuracy_source": source,
                "discriminator_accuracy_target": target}

    def summary(self) -> dict[str, Any]:
        a, b, c = self.weights
        config, target = self.config, self.target
        summary: dict[str, Any] = {
            "loss": f"{a:g}·L_src + {b:g}·L_tgt + {c:g}·L_adv",
            "target_file": Path(config.target_file).name,
            "target_rows": target.counts() if target is not None else None,
        }
        if config.pseudo_label_threshold is not None:
            summary["pseudo_labels"] = (f"unlabelled target rows predicted with probability ≥ "
                                        f"{config.pseudo_label_threshold:g} count in L_tgt with that label")
        if self.discriminator is not None:
            summary.update({
                "gradient_reversal_schedule": ("2/(1+exp(-10p)) - 1 over training progress p"
                                               if config.grl_schedule == "ganin" else "constant 1"),
                "discriminator": f"MLP {self.discriminator[0].in_features} → {config.discriminator_hidden} → 1, "
                                 "training only (not saved)",
                "discriminator_accuracy_per_epoch": [round(x, 4) for x in self.accuracy_history],
                "discriminator_accuracy_meaning": ("balanced accuracy on held-out source validation and target rows; "
                                                   "0.5 means the features no longer tell the domains apart"),
            })
        return summary

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "discriminator_accuracy": list(self.accuracy_history)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.accuracy_history = [float(x) for x in state.get("discriminator_accuracy", [])]
