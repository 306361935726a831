"""The training loop: :func:`fit` over an ``accelerate.Accelerator``, readable in one screen.

Epochs of steps (the objective computes the loss, ``accelerator.backward``, clip, optimizer and
scheduler step), then validation, best-epoch selection and early stopping on the typed
:class:`~nlp_transfer.checkpoint.TrainState`, a checkpoint at each epoch end, every
``--checkpoint-every`` steps and on SIGINT/SIGTERM. Nothing here knows the loss, the strategy
or the speed options: they come in through :class:`Run`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from accelerate.utils import DistributedType
from huggingface_hub.utils import tqdm  # the bars `nlp-transfer -q` switches off

from .checkpoint import Checkpoints, StopSignals, TrainingInterrupted, TrainState
from .errors import UserInputError
from .evaluation import evaluate_loader
from .objective import Objective, StepOutput

logger = logging.getLogger(__name__)


class TrainingDiverged(UserInputError):
    """The training loss became NaN or infinite: the settings (usually the learning rate) are the fix."""


@dataclass
class Run:
    """The prepared pieces of one training run, as the loop needs them."""

    config: Any
    accelerator: Any
    model: torch.nn.Module  # prepared by the accelerator
    objective: Objective
    strategy: Any
    task: Any
    optimizer: Any
    scheduler: Any
    train_loader: Any
    val_loader: Any
    checkpoints: Checkpoints
    state: TrainState
    total_steps: int  # optimizer steps of the whole run on each process: progress = global_step / total_steps
    training_modules: list[torch.nn.Module] = field(default_factory=list)  # the objective's, prepared
    best_weights: Optional[dict[str, torch.Tensor]] = None
    started: float = field(default_factory=time.perf_counter)
    log: Optional[Any] = None  # a tracking.TrainingLog: loss curve and experiment trackers

    def save_checkpoint(self) -> Optional[Path]:
        self.state.elapsed_seconds = time.perf_counter() - self.started
        self.state.objective = self.objective.state_dict()
        return self.checkpoints.save(self.state, self.best_weights)

    def keep_best_weights(self) -> None:
        weights = self.accelerator.unwrap_model(self.model).state_dict()
        self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}


def fit(run: Run) -> None:
    """Train from ``run.state`` (fresh or resumed) to the last epoch or early stopping.

    Raises:
        TrainingInterrupted: SIGINT/SIGTERM stopped the run after a checkpoint.
        TrainingDiverged: the loss became non-finite (checkpoints written before are kept).
    """
    state, config = run.state, run.config
    run.started = time.perf_counter() - state.elapsed_seconds
    with StopSignals(run.accelerator) as stop:
        for epoch in range(state.epoch, config.epochs):
            run.strategy.on_epoch(run.accelerator.unwrap_model(run.model), epoch)
            meter = _train_epoch(run, epoch, stop)
            done = run.strategy.end_of_epoch(run.accelerator.unwrap_model(run.model), run.accelerator)
            validation = None if run.val_loader is None else \
                evaluate_loader(run.model, run.val_loader, run.accelerator, run.task, desc="Validating",
                                window_pooling=config.window_pooling, with_loss=True)
            stopping = _end_epoch(run, epoch, meter, validation, done)
            path = run.save_checkpoint()
            signum = stop.requested()
            if signum and state.epoch < config.epochs:
                raise TrainingInterrupted(signum, path)
            if stopping:
                break


def out_of_memory(err: BaseException, config: Any) -> Optional[UserInputError]:
    """One sentence with the levers when ``err`` is the device running out of memory (None otherwise)."""
    text = str(err)
    if not (isinstance(err, torch.OutOfMemoryError) or isinstance(err, RuntimeError)
            and ("out of memory" in text or "can't allocate memory" in text)):
        return None
    smaller = max(1, config.batch_size // 2)
    return UserInputError(
        f"ran out of memory while training with --batch-size {config.batch_size} and --max-length {config.max_length} "
        f"({text.splitlines()[0][:200]}); pass --batch-size {smaller} --gradient-accumulation-steps "
        f"{config.gradient_accumulation_steps * config.batch_size // smaller} (the same effective batch), a smaller "
        "--max-length, or --mixed-precision bf16 on a GPU. Checkpoints written so far are kept; resume needs the "
        "same settings, so start again with --overwrite."
    )


def on_failure(err: BaseException, run: Run, output: Any) -> None:
    """A failed run keeps its staging folder only when it holds checkpoints worth resuming (train and adapt-lm).

    Args:
        err: what stopped the run.
        run: the run (its checkpoints and accelerator).
        output: the run's output folder (an ``artifacts.OutputDir``).
    """
    if not run.accelerator.is_main_process:
        return
    if not run.checkpoints.exist():
        output.discard()
    elif isinstance(err, KeyboardInterrupt) and not isinstance(err, TrainingInterrupted):
        logger.warning("interrupted; the checkpoints are kept in %s: run the same command with --resume to continue",
                       run.checkpoints.root)
    elif not isinstance(err, (KeyboardInterrupt, UserInputError)):
        logger.error("the run failed; its checkpoints are kept in %s: fix the cause and run the same command with "
                     "--resume to continue", run.checkpoints.root)


def _train_epoch(run: Run, epoch: int, stop: StopSignals) -> "EpochMeter":
    state, acc = run.state, run.accelerator
    run.model.train()
    for module in run.training_modules:
        module.train()
    run.train_loader.set_epoch(epoch)
    # Resuming mid-epoch: the sampler gives the same order (seed + epoch), minus the batches done.
    batches = acc.skip_first_batches(run.train_loader, state.batches_done) if state.batches_done else run.train_loader
    meter = EpochMeter(run, epoch)
    try:
        for batch in batches:
            meter.add(_train_step(run, batch), batch)
            if not acc.sync_gradients:
                continue
            state.global_step += 1
            if run.log is not None:
                run.log.step(meter)
            # The epoch's last step is saved after validation, with the epoch-end checkpoint.
            mid_epoch = state.batches_done < len(run.train_loader)
            signum = stop.requested() if mid_epoch else 0
            if mid_epoch and (signum or run.checkpoints.due(state.global_step)):
                meter.flush()
                path = run.save_checkpoint()
                if signum:
                    raise TrainingInterrupted(signum, path)
        meter.flush()
    finally:
        meter.close()
    return meter


def _train_step(run: Run, batch: dict[str, Any]) -> StepOutput:
    acc, config = run.accelerator, run.config
    with acc.accumulate(run.model, *run.training_modules):
        out = run.objective.step(run.model, batch, run.state.global_step / max(1, run.total_steps))
        acc.backward(out.loss)
        if acc.sync_gradients and config.max_grad_norm > 0:
            clip_gradients(acc, run.model, run.optimizer, config.max_grad_norm)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
    return out


def _end_epoch(run: Run, epoch: int, meter: "EpochMeter", validation: Optional[dict[str, Any]],
               strategy_work: dict[str, Any]) -> bool:
    """Record the epoch, keep the best weights (the latest without validation); return whether early stopping ends the run."""
    state, config = run.state, run.config
    metric = config.metric_for_best_model
    measured = run.objective.end_of_epoch(run.model, run.accelerator)
    # An epoch without steps (a head fit by L-BFGS at its end) reports the fit's training loss.
    loss = meter.mean_loss() if len(run.train_loader) else (strategy_work.get("head_fit") or {}).get("train_loss", math.nan)
    entry = {"epoch": epoch + 1, "train_loss": loss,
             "validation": run.task.headline(validation) if validation is not None else None,
             **({"train_logs": meter.mean_logs()} if meter.log_sums else {}),
             **({"objective": measured} if measured else {}), **({"strategy": strategy_work} if strategy_work else {})}
    if state.end_epoch(entry, validation[metric] if validation is not None else None, validation):
        run.keep_best_weights()
    if run.log is not None:
        run.log.epoch(entry)
    if run.accelerator.is_main_process and validation is None:
        logger.info("epoch %d: train loss %.4f (no validation data: the last epoch is kept)", epoch + 1,
                    entry["train_loss"])
    elif run.accelerator.is_main_process:
        shown = run.task.history_metrics[0]  # accuracy, micro F1 (multi-label) or RMSE (regression)
        logger.info("epoch %d: train loss %.4f, validation %s %.4f, %s %.4f", epoch + 1, entry["train_loss"], shown,
                    validation.get(shown, math.nan), metric, validation[metric])
    patience = config.early_stopping_patience
    if patience is not None and state.patience >= patience:
        state.epoch = config.epochs  # a resume goes straight to the test set
        if run.accelerator.is_main_process:
            logger.info("early stopping: no better %s for %d epochs", metric, state.patience)
        return True
    return False


class EpochMeter:
    """The running sums of an epoch (loss, logs, tokens) and its progress bar.

    Sums stay on the device and are read every 10 batches (the progress bar, and the check that
    the loss is finite) and when a checkpoint is written, so a GPU is not stalled every step.
    """

    def __init__(self, run: Run, epoch: int):
        self.run, self.acc, state = run, run.accelerator, run.state
        rank = self.acc.process_index
        resumed = state.batches_done > 0
        self.loss_sum = torch.tensor(state.loss_sums[rank] if resumed else 0.0, device=self.acc.device)
        saved_logs = state.log_sums[rank] if resumed and state.log_sums else {}
        self.log_sums = {k: torch.tensor(v, device=self.acc.device) for k, v in saved_logs.items()}
        self.real_tokens = torch.zeros((), dtype=torch.long, device=self.acc.device)
        self.started = time.perf_counter()
        self.bar = tqdm(total=len(run.train_loader), initial=state.batches_done,
                        desc=f"Epoch {epoch + 1}/{run.config.epochs}", disable=not self.acc.is_local_main_process)

    def add(self, out: StepOutput, batch: dict[str, Any]) -> None:
        state = self.run.state
        self.loss_sum += out.loss.detach().float()
        for name, value in out.logs.items():
            self.log_sums[name] = self.log_sums.get(name, torch.zeros((), device=self.acc.device)) + value.float()
        state.batches_done += 1
        if "attention_mask" in batch:  # cached-feature batches hold vectors, not tokens
            self.real_tokens += batch["attention_mask"].sum()
            state.padded += batch["attention_mask"].numel()
        self.bar.update(1)
        if state.batches_done % 10 == 0 or state.batches_done == len(self.run.train_loader):
            self.check_finite()
            self.bar.set_postfix(loss=f"{self.loss_sum.item() / state.batches_done:.4f}",
                                 lr=f"{self.run.scheduler.get_last_lr()[0]:.2e}")

    def check_finite(self) -> None:
        """Stop the run when the loss has become NaN or infinite (agreed across processes)."""
        total = self.loss_sum if self.acc.num_processes == 1 else self.acc.reduce(self.loss_sum.clone(), "sum")
        if math.isfinite(float(total)):
            return
        state, config = self.run.state, self.run.config
        kept = f" checkpoints written before it are kept in {str(self.run.checkpoints.root)!r};" if \
            self.run.checkpoints.exist() else ""
        # train's other levers; adapt-lm has neither option (its clipping is fixed, it runs in full precision)
        levers = "keep --max-grad-norm on, or use --mixed-precision no, " if hasattr(config, "mixed_precision") else ""
        raise TrainingDiverged(
            f"the training loss became NaN or infinite by step {state.global_step + 1} of epoch {state.epoch + 1} "
            f"(learning rate then {self.run.scheduler.get_last_lr()[0]:.3g}), so the weights are useless and the run "
            f"stopped;{kept} lower --learning-rate (now {config.learning_rate:g}; 1e-5 to 2e-4 is usual for encoders), "
            f"{levers}and start again with --overwrite."
        )

    def flush(self) -> None:
        """Move the device sums into the state (before a checkpoint and at the epoch's end)."""
        state = self.run.state
        self.check_finite()
        state.loop_seconds += time.perf_counter() - self.started
        self.started = time.perf_counter()
        state.loss_sums = self.acc.gather(self.loss_sum.reshape(1)).tolist()
        if self.log_sums:
            names = sorted(self.log_sums)
            values = self.acc.gather(torch.stack([self.log_sums[n] for n in names]).reshape(1, -1)).tolist()
            state.log_sums = [dict(zip(names, row)) for row in values]
        state.tokens += int(self.real_tokens)
        self.real_tokens.zero_()

    def mean_loss(self) -> float:
        return sum(self.run.state.loss_sums) / len(self.run.state.loss_sums) / max(1, len(self.run.train_loader))

    def mean_logs(self) -> dict[str, float]:
        rows = self.run.state.log_sums
        steps = max(1, len(self.run.train_loader))
        return {name: sum(row[name] for row in rows) / len(rows) / steps for name in rows[0]} if rows else {}

    def close(self) -> None:
        self.bar.close()


def clip_gradients(accelerator: Any, model: torch.nn.Module, optimizer: Any, max_norm: float) -> None:
    """``accelerator.clip_grad_norm_`` over everything the optimizer trains, minus its no-op multiply on CPU.

    Clipping scales every gradient by ``min(1, max_norm / (norm + 1e-6))``; torch multiplies even
    when that factor is exactly 1 so that a GPU never waits on the host. On the CPU the comparison
    costs nothing and skipping the multiply (a pass over all 22.7 M gradients of the default
    encoder, ~2% of a step) leaves every gradient bit-identical. The norm covers the model's
    parameters in the model's order (as accelerate sums them), then what only the optimizer holds:
    an objective's training-only modules and the compact embedding table.
    """
    parameters = [p for p in model.parameters() if p.grad is not None]
    known = {id(p) for p in parameters}
    extra = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None and id(p) not in known]
    plain = accelerator.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU)
    if not plain or accelerator.device.type != "cpu":
        # The model's own parameter list when it is all there is: FSDP recognises the model by it.
        accelerator.clip_grad_norm_([*parameters, *extra] if extra else model.parameters(), max_norm)
        return
    parameters += extra
    accelerator.unscale_gradients()
    total = torch.nn.utils.get_total_norm([p.grad for p in parameters])
    if not max_norm / (total + 1e-6) >= 1.0:  # "not >=" so that a NaN norm still propagates as torch does
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
