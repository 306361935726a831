"""The training run: CSV → tokenized data → fine-tuned model folder with metrics and card.

Read :func:`train` top to bottom: set up (accelerator, tokenizer, data, model, optimizer,
schedule) → epochs of ``accelerator.backward`` with validation after each → the best epoch's
weights scored on the test set → one folder written atomically. The loop is ours, over
``accelerate.Accelerator``, so the same code runs on one CPU, one GPU or many processes.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from torch.utils.data import BatchSampler, DataLoader
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup

from .version import __version__
from .allocator import reuse_freed_memory
from .checkpoint import Checkpoints, StopSignals, TrainingInterrupted, TrainState, check_same_settings, resume_point
from .config import TrainConfig
from .data import PreparedData, column, prepare_data
from .dropout import use_cpu_dropout
from .embedding_rows import track_decay, train_all_rows, train_used_rows, used_token_ids
from .errors import UserInputError
from .evaluation import eval_loader, evaluate_loader, model_inputs
from .last_layer import train_first_position_only
from .artifacts import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, OutputDir, write_json
from .model_card import train_command, write_card
from .modeling import check_max_length, load_for_training, load_tokenizer, save_model
from .sampler import LengthGroupedSampler
from .strategies import apply_strategy, export_model, param_groups, parameter_counts, unfreeze_for_epoch

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` returns: where the model is and how it scored."""

    output_dir: str
    metrics: dict[str, Any]
    summary: dict[str, Any]
    pushed: Optional[Any] = None  # the hub.PushResult when the run pushed (--push-to-hub)

    def push(self, repo_id: str, **kwargs: Any) -> Any:
        """Push the trained model to a Hub repo; keyword arguments as :func:`nlp_transfer.push_to_hub`."""
        from .hub import push_to_hub

        return push_to_hub(self.output_dir, repo_id, **kwargs)


def train(config: TrainConfig, command: Optional[str] = None, hub_token: Optional[str] = None) -> TrainResult:
    """Fine-tune ``config.model`` on ``config.train_file`` and write the model folder.

    Args:
        config: the run's settings (validated at construction).
        command: the command line that started the run, recorded in the model card.
        hub_token: token for ``config.push_to_hub`` (default: HF_TOKEN or the cached login); never saved.

    Returns:
        The output folder with the validation/test metrics and the training summary.

    Raises:
        UserInputError: bad data, columns or options (nothing is written), or another run holds
            the output folder.
        TrainingInterrupted: SIGINT/SIGTERM stopped the run after a checkpoint (``--resume`` continues it).
        PushError: ``config.push_to_hub`` is set and the push failed (the model folder is complete).
    """
    if config.push_to_hub:
        from .hub import resolve_token

        hub_token = resolve_token(hub_token)  # no token: stop now rather than after the training
    output = OutputDir(config.output_dir, overwrite=config.overwrite)
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
    )
    if accelerator.is_main_process:
        output.lock()  # a second run on the same --output-dir stops here
    try:
        result = _train(config, command, accelerator, output)
    finally:
        output.unlock()
    if config.push_to_hub and accelerator.is_main_process:
        result.pushed = result.push(config.push_to_hub, private=config.hub_private, token=hub_token)
    return result


def _train(config: TrainConfig, command: Optional[str], accelerator: Accelerator, output: OutputDir) -> TrainResult:
    output.check()
    if config.strategy == "gradual-unfreeze" and accelerator.num_processes > 1:
        # DDP fixes the set of synchronised parameters when it wraps the model; layers unfrozen
        # later would train apart on each process.
        raise UserInputError(
            f"--strategy gradual-unfreeze runs in one process, but {accelerator.num_processes} were launched; "
            "run it without accelerate launch, or use --strategy freeze for multi-process training."
        )
    resume_from = resume_point(config, output)
    if resume_from is not None:
        check_same_settings(config, resume_from)
    set_seed(config.seed)

    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    check_max_length(config.model, config.max_length, tokenizer, trust_remote_code=config.trust_remote_code)
    with accelerator.main_process_first():
        data = prepare_data(config, tokenizer)

    set_seed(config.seed)  # the head's initialisation must not depend on data preparation
    model = apply_strategy(load_for_training(
        config.model, data.labels, allow_pickle=config.allow_pickle, trust_remote_code=config.trust_remote_code
    ), config)
    # What the speed options did to this run, for training_summary.json.
    speedups: dict[str, Any] = {"fast_cpu_dropout": 0, "cls_only_last_layer": False, "compact_embeddings": None}
    if config.fast_cpu_dropout and accelerator.device.type == "cpu":
        speedups["fast_cpu_dropout"] = use_cpu_dropout(model)
    if config.cls_only_last_layer and config.strategy != "feature-extraction":
        speedups["cls_only_last_layer"] = train_first_position_only(model)
    feature_cache = None
    if config.strategy == "feature-extraction":  # the head trains on encoder outputs computed once and cached
        from .features import feature_loaders

        with accelerator.main_process_first():
            model, train_loader, val_loader, feature_cache = feature_loaders(
                model, data, tokenizer, config, accelerator.device
            )
    else:
        train_loader = _train_loader(data, tokenizer, config)
        val_loader = eval_loader(data.validation, tokenizer, config.eval_batch_size)
    # Counted on the unsharded loader: accelerate steps a prepared scheduler once per process.
    steps_per_epoch = math.ceil(len(train_loader) / config.gradient_accumulation_steps)
    total_steps = steps_per_epoch * config.epochs
    groups = param_groups(model, config)
    embedding = _compact_embedding(model, groups, data, config, accelerator)
    optimizer = _optimizer(model, groups, config)
    if embedding is not None:
        track_decay(embedding, optimizer)
        speedups["compact_embeddings"] = {"trained_rows": len(embedding.used), "rows": embedding.num_embeddings}
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, scheduler
    )

    checkpoints = Checkpoints(output.staging, config, accelerator)
    state, best_weights = TrainState(num_processes=accelerator.num_processes), None
    if resume_from is not None:
        state, best_weights = checkpoints.load(resume_from)
    elif accelerator.is_main_process:
        output.discard()  # leftovers of a crashed run, or an unfinished one given up with --overwrite
    staging = output.create_staging() if accelerator.is_main_process else output.staging
    accelerator.wait_for_everyone()
    try:
        with reuse_freed_memory():
            history, best = _fit(config, accelerator, model, optimizer, scheduler, train_loader, val_loader, data,
                                 checkpoints, state, best_weights)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.load_state_dict(best["state"])
        if embedding is not None:
            train_all_rows(embedding)
        counts = parameter_counts(unwrapped)
        unwrapped = export_model(unwrapped)  # the plain classifier that is saved: LoRA merged, feature head unwrapped
        metrics = {"validation": best["validation"], "test": None}
        if data.test is not None:
            test_loader = accelerator.prepare(eval_loader(data.test, tokenizer, config.eval_batch_size))
            metrics["test"] = evaluate_loader(unwrapped, test_loader, accelerator, data.labels, desc="Testing")
        summary = _summary(config, data, history, best, command)
        summary.update(strategy=config.strategy, **counts, speedups=speedups)
        if feature_cache is not None:
            summary["feature_cache"] = vars(feature_cache)
        if accelerator.is_main_process:
            save_model(unwrapped, tokenizer, staging, config.max_length)
            config.save(staging / CONFIG_FILE)
            write_json(staging / METRICS_FILE, metrics)
            write_json(staging / SUMMARY_FILE, summary)
            write_card(staging, location=output.path)
            checkpoints.remove_all()
            output.commit()
        accelerator.wait_for_everyone()
    except BaseException as err:
        if accelerator.is_main_process:
            if not checkpoints.exist():
                output.discard()
            elif not isinstance(err, TrainingInterrupted):
                logger.error("the run failed; its checkpoints are kept in %s: fix the cause and run the same "
                             "command with --resume to continue", checkpoints.root)
        raise
    finally:
        accelerator.end_training()
    return TrainResult(str(output.path), metrics, summary)


def _train_loader(data: PreparedData, tokenizer: Any, config: TrainConfig) -> DataLoader:
    lengths = column(data.train, "length").to_numpy()
    # Either way the order of epoch e depends only on (seed, e), so a resumed run sees the same
    # batches; groups of one batch (mega_batch_factor=1) are a plain shuffle.
    group = 50 if config.group_by_length else 1
    sampler = LengthGroupedSampler(lengths, config.batch_size, seed=config.seed, mega_batch_factor=group)
    return DataLoader(
        model_inputs(data.train),
        batch_sampler=BatchSampler(sampler, config.batch_size, drop_last=False),
        collate_fn=DataCollatorWithPadding(tokenizer),
        # Iterating a DataLoader draws a seed from this generator, not from the global RNG that
        # dropout uses, so skipping batches on resume leaves the dropout sequence exact.
        generator=torch.Generator().manual_seed(config.seed),
    )


def _compact_embedding(model, groups: list[dict[str, Any]], data: PreparedData, config: TrainConfig,
                       accelerator: Accelerator) -> Optional[torch.nn.Embedding]:
    """With ``--compact-embeddings`` on one CPU process: put the word embedding's rows that the training
    set uses (see :mod:`nlp_transfer.embedding_rows`) in ``groups`` in place of its weight. Returns the
    embedding, or None where it does not apply."""
    if not (config.compact_embeddings and accelerator.device.type == "cpu" and accelerator.num_processes == 1):
        return None
    if config.strategy in ("feature-extraction", "gradual-unfreeze"):  # no encoder training / trainability changes
        return None
    embedding = model.get_input_embeddings()
    if type(embedding) is not torch.nn.Embedding or not embedding.weight.requires_grad or embedding.sparse:
        return None
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None and output.weight is embedding.weight:  # tied to an output layer: every row trains
        return None
    weight = embedding.weight
    pad = model.config.pad_token_id
    used = used_token_ids((chunk.flatten().to_numpy() for chunk in column(data.train, "input_ids").chunks),
                          embedding.num_embeddings, always=() if pad is None else (pad,))
    rows = train_used_rows(embedding, used)
    for group in groups:
        group["params"] = [rows if p is weight else p for p in group["params"]]
    return embedding


def _optimizer(model: torch.nn.Module, groups: list[dict[str, Any]], config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over ``groups`` (from :func:`param_groups`: no weight decay on biases and LayerNorm weights,
    per-layer rates)."""
    device = next(model.parameters()).device
    # One fused kernel for the whole update (CPU and CUDA), as the Trainer's default adamw_torch_fused.
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=config.learning_rate, fused=fused, foreach=None if fused else True)


def _clip_gradients(accelerator: Accelerator, model: torch.nn.Module, optimizer, max_norm: float) -> None:
    """``accelerator.clip_grad_norm_``, minus its no-op multiply on CPU.

    Clipping scales every gradient by ``min(1, max_norm / (norm + 1e-6))``; torch multiplies even
    when that factor is exactly 1 so that a GPU never waits on the host. On the CPU the comparison
    costs nothing and skipping the multiply (a pass over all 22.7 M gradients of the default
    encoder, ~2% of a step) leaves every gradient bit-identical.
    """
    plain = accelerator.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU)
    if not plain or accelerator.device.type != "cpu":
        accelerator.clip_grad_norm_(model.parameters(), max_norm)
        return
    accelerator.unscale_gradients()
    # In the model's order, as accelerate sums them, then what only the optimizer holds (the table
    # of --compact-embeddings).
    parameters = [p for p in model.parameters() if p.grad is not None]
    known = {id(p) for p in parameters}
    parameters += [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None and id(p) not in known]
    total = torch.nn.utils.get_total_norm([p.grad for p in parameters])
    if not max_norm / (total + 1e-6) >= 1.0:  # "not >=" so that a NaN norm still propagates as torch does
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)


def _fit(config, accelerator, model, optimizer, scheduler, train_loader, val_loader, data, checkpoints, state,
         best_weights):
    """The epoch loop, from ``state`` (fresh or loaded from a checkpoint); returns the per-epoch history
    and the best epoch (weights kept on CPU).

    A checkpoint is written every ``--checkpoint-every`` optimizer steps, after each epoch's
    validation, and when SIGINT/SIGTERM asks to stop (then :class:`TrainingInterrupted` is raised).
    """
    start = time.perf_counter() - state.elapsed_seconds

    def save() -> Optional[Path]:
        state.elapsed_seconds = time.perf_counter() - start
        return checkpoints.save(state, best_weights)

    with StopSignals(accelerator) as stop:
        for epoch in range(state.epoch, config.epochs):
            model.train()
            unfreeze_for_epoch(accelerator.unwrap_model(model), config, epoch)
            train_loader.set_epoch(epoch)
            # Resuming mid-epoch: the sampler gives the same order (seed + epoch), minus the batches done.
            batches = accelerator.skip_first_batches(train_loader, state.batches_done) if state.batches_done else train_loader
            progress = tqdm(
                total=len(train_loader), initial=state.batches_done, desc=f"Epoch {epoch + 1}/{config.epochs}",
                disable=not accelerator.is_local_main_process,
            )
            resumed_sum = state.loss_sums[accelerator.process_index] if state.batches_done else 0.0
            loss_sum = torch.tensor(resumed_sum, dtype=torch.float32, device=accelerator.device)
            epoch_start = time.perf_counter()
            # Counted on the device and read at the epoch's end: a read per step would stall a GPU.
            real_tokens = torch.zeros((), dtype=torch.long, device=accelerator.device)
            for batch in batches:
                with accelerator.accumulate(model):
                    loss = model(**batch).loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.max_grad_norm > 0:
                        _clip_gradients(accelerator, model, optimizer, config.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                loss_sum += loss.detach()
                state.batches_done += 1
                if "attention_mask" in batch:  # cached-feature batches hold vectors, not tokens
                    real_tokens += batch["attention_mask"].sum()
                    state.padded += batch["attention_mask"].numel()
                progress.update(1)
                # Counted by the loop: a disabled bar (processes other than the main one) counts nothing.
                if state.batches_done % 10 == 0 or state.batches_done == len(train_loader):
                    progress.set_postfix(loss=f"{loss_sum.item() / state.batches_done:.4f}",
                                         lr=f"{scheduler.get_last_lr()[0]:.2e}")
                if not accelerator.sync_gradients:
                    continue
                state.global_step += 1
                # The epoch's last step is saved after validation, with the epoch-end checkpoint.
                mid_epoch = state.batches_done < len(train_loader)
                signum = stop.requested() if mid_epoch else 0
                if mid_epoch and (signum or checkpoints.due(state.global_step)):
                    state.loop_seconds += time.perf_counter() - epoch_start
                    epoch_start = time.perf_counter()
                    state.loss_sums = accelerator.gather(loss_sum.reshape(1)).tolist()
                    state.tokens += int(real_tokens)
                    real_tokens.zero_()
                    path = save()
                    if signum:
                        progress.close()
                        raise TrainingInterrupted(signum, path)
            progress.close()
            state.loop_seconds += time.perf_counter() - epoch_start
            state.tokens += int(real_tokens)
            train_loss = accelerator.reduce(loss_sum, reduction="mean").item() / max(1, len(train_loader))
            validation = evaluate_loader(model, val_loader, accelerator, data.labels, desc="Validating")
            score = validation[config.metric_for_best_model]
            state.history.append({"epoch": epoch + 1, "train_loss": train_loss, "validation": _headline(validation)})
            if accelerator.is_main_process:
                logger.info(
                    "epoch %d: train loss %.4f, validation accuracy %.4f, %s %.4f",
                    epoch + 1, train_loss, validation["accuracy"], config.metric_for_best_model, score,
                )
            state.epoch, state.batches_done, state.loss_sums = epoch + 1, 0, []
            if score > state.best["score"]:
                weights = accelerator.unwrap_model(model).state_dict()
                best_weights = {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}
                state.best = {"score": score, "epoch": epoch + 1, "validation": validation}
                state.patience = 0
            else:
                state.patience += 1
            stopping = config.early_stopping_patience is not None and state.patience >= config.early_stopping_patience
            if stopping:
                state.epoch = config.epochs  # a resume goes straight to the test set
            path = save()
            signum = stop.requested()
            if signum and state.epoch < config.epochs:
                raise TrainingInterrupted(signum, path)
            if stopping:
                if accelerator.is_main_process:
                    logger.info("early stopping: no better %s for %d epochs", config.metric_for_best_model, state.patience)
                break
    best = {**state.best, "state": best_weights, "runtime": time.perf_counter() - start,
            "loop_seconds": state.loop_seconds, "tokens": state.tokens, "padded": state.padded}
    return state.history, best


def _headline(report: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in report.items() if isinstance(v, float)}


def _summary(config: TrainConfig, data: PreparedData, history, best, command: Optional[str]) -> dict[str, Any]:
    import accelerate
    import datasets
    import transformers

    real, padded = best["tokens"], best["padded"]
    rows = data.train.num_rows * len(history)
    return {
        "labels": data.labels,
        "label_counts": data.label_counts,
        "validation_source": data.validation_source,
        "truncated_fraction": data.truncated_fraction,
        "epochs_run": len(history),
        "best_epoch": best["epoch"],
        "history": history,
        "train_runtime_s": best["runtime"],
        "train_loop_s": best["loop_seconds"],
        "train_samples_per_s": rows / best["loop_seconds"] if best["loop_seconds"] else 0.0,
        "train_tokens_per_s": real / best["loop_seconds"] if best["loop_seconds"] else 0.0,
        "padding_fraction": 1 - real / padded if padded else 0.0,
        "hardware": _hardware(),
        "versions": {
            "nlp-transfer": __version__, "transformers": transformers.__version__, "torch": torch.__version__,
            "accelerate": accelerate.__version__, "datasets": datasets.__version__, "python": platform.python_version(),
        },
        "command": command or _default_command(config),
    }


def _hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} × {torch.cuda.get_device_name(0)}"
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def _default_command(config: TrainConfig) -> str:
    return train_command(config.to_dict())  # a run started from Python: the equivalent CLI command
