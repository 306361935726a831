"""The training run: CSV → tokenized data → fine-tuned model folder with metrics and card.

Read :func:`train` top to bottom: set up (accelerator, tokenizer, data, model, optimizer,
schedule) → epochs of ``accelerator.backward`` with validation after each → the best epoch's
weights scored on the test set → one folder written atomically. The loop is ours, over
``accelerate.Accelerator``, so the same code runs on one CPU, one GPU or many processes.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import BatchSampler, DataLoader, RandomSampler
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup

from . import __version__
from .config import TrainConfig
from .data import PreparedData, column, prepare_data
from .evaluation import eval_loader, evaluate_loader, model_inputs
from .model_card import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, train_command, write_card
from .modeling import check_max_length, load_for_training, load_tokenizer, save_model
from .outputs import OutputDir
from .sampler import LengthGroupedSampler

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
        UserInputError: bad data, columns or options (nothing is written).
        PushError: ``config.push_to_hub`` is set and the push failed (the model folder is complete).
    """
    if config.push_to_hub:
        from .hub import resolve_token

        hub_token = resolve_token(hub_token)  # no token: stop now rather than after the training
    output = OutputDir(config.output_dir, overwrite=config.overwrite)
    output.check()
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
    )
    set_seed(config.seed)

    tokenizer = load_tokenizer(config.model)
    check_max_length(config.model, config.max_length, tokenizer)
    with accelerator.main_process_first():
        data = prepare_data(config, tokenizer)

    set_seed(config.seed)  # the head's initialisation must not depend on data preparation
    model = load_for_training(config.model, data.labels)
    train_loader = _train_loader(data, tokenizer, config)
    # Counted on the unsharded loader: accelerate steps a prepared scheduler once per process.
    steps_per_epoch = math.ceil(len(train_loader) / config.gradient_accumulation_steps)
    total_steps = steps_per_epoch * config.epochs
    optimizer = _optimizer(model, config)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)
    val_loader = eval_loader(data.validation, tokenizer, config.eval_batch_size)
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, scheduler
    )

    staging = output.create_staging() if accelerator.is_main_process else output.staging
    try:
        history, best = _fit(config, accelerator, model, optimizer, scheduler, train_loader, val_loader, data)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.load_state_dict(best["state"])
        metrics = {"validation": best["validation"], "test": None}
        if data.test is not None:
            test_loader = accelerator.prepare(eval_loader(data.test, tokenizer, config.eval_batch_size))
            metrics["test"] = evaluate_loader(model, test_loader, accelerator, data.labels, desc="Testing")
        summary = _summary(config, data, history, best, command)
        if accelerator.is_main_process:
            save_model(unwrapped, tokenizer, staging, config.max_length)
            config.save(staging / CONFIG_FILE)
            _write_json(staging / METRICS_FILE, metrics)
            _write_json(staging / SUMMARY_FILE, summary)
            write_card(staging, location=output.path)
            output.commit()
        accelerator.wait_for_everyone()
    except BaseException:
        if accelerator.is_main_process:
            output.discard()
        raise
    finally:
        accelerator.end_training()
    result = TrainResult(str(output.path), metrics, summary)
    if config.push_to_hub and accelerator.is_main_process:
        result.pushed = result.push(config.push_to_hub, private=config.hub_private, token=hub_token)
    return result


def _train_loader(data: PreparedData, tokenizer: Any, config: TrainConfig) -> DataLoader:
    lengths = column(data.train, "length").to_numpy()
    if config.group_by_length:
        sampler = LengthGroupedSampler(lengths, config.batch_size, seed=config.seed)
    else:
        sampler = RandomSampler(range(len(lengths)), generator=torch.Generator().manual_seed(config.seed))
    return DataLoader(
        model_inputs(data.train),
        batch_sampler=BatchSampler(sampler, config.batch_size, drop_last=False),
        collate_fn=DataCollatorWithPadding(tokenizer),
    )


def _optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and LayerNorm weights (the 1-d parameters)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate, foreach=True)


def _fit(config, accelerator, model, optimizer, scheduler, train_loader, val_loader, data):
    """The epoch loop; returns the per-epoch history and the best epoch (weights kept on CPU)."""
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"score": -math.inf}
    patience = 0
    start = time.perf_counter()
    tokens = padded = 0
    for epoch in range(config.epochs):
        model.train()
        train_loader.set_epoch(epoch)
        progress = tqdm(
            total=len(train_loader), desc=f"Epoch {epoch + 1}/{config.epochs}",
            disable=not accelerator.is_local_main_process,
        )
        loss_sum = torch.zeros((), device=accelerator.device)
        for batch in train_loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
            tokens += int(batch["attention_mask"].sum())
            padded += batch["attention_mask"].numel()
            progress.update(1)
            if progress.n % 10 == 0 or progress.n == progress.total:
                progress.set_postfix(loss=f"{loss_sum.item() / progress.n:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        progress.close()
        train_loss = accelerator.reduce(loss_sum, reduction="mean").item() / max(1, len(train_loader))
        validation = evaluate_loader(model, val_loader, accelerator, data.labels, desc="Validating")
        score = validation[config.metric_for_best_model]
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "validation": _headline(validation)})
        if accelerator.is_main_process:
            logger.info(
                "epoch %d: train loss %.4f, validation accuracy %.4f, %s %.4f",
                epoch + 1, train_loss, validation["accuracy"], config.metric_for_best_model, score,
            )
        if score > best["score"]:
            state = accelerator.unwrap_model(model).state_dict()
            best = {
                "score": score, "epoch": epoch + 1, "validation": validation,
                "state": {k: v.detach().to("cpu", copy=True) for k, v in state.items()},
            }
            patience = 0
        else:
            patience += 1
            if config.early_stopping_patience is not None and patience >= config.early_stopping_patience:
                if accelerator.is_main_process:
                    logger.info("early stopping: no better %s for %d epochs", config.metric_for_best_model, patience)
                break
    best["runtime"] = time.perf_counter() - start
    best["tokens"], best["padded"] = tokens, padded
    return history, best


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
        "train_samples_per_s": rows / best["runtime"] if best["runtime"] else 0.0,
        "train_tokens_per_s": real / best["runtime"] if best["runtime"] else 0.0,
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


def _write_json(path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
