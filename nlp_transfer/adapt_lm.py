"""Domain-adaptive masked-LM pretraining ("don't stop pretraining"): ``nlp-transfer adapt-lm``.

Read top to bottom: :func:`adapt_lm` takes the output folder's lock; :func:`_run` reads and splits
the target texts, loads the encoder with its masked-LM head (a fresh head, trained alone first, with
``--new-mlm-head``), measures held-out perplexity, continues masked-LM training on the texts
(:func:`_train`, a small loop over an ``Accelerator``: the classification loop's validation, best
epoch and exact resume are about a classifier), measures perplexity again and writes the adapted
encoder as a plain encoder folder, atomically. ``train --model DIR`` then fine-tunes from it.

Perplexity is ``exp`` of the mean cross-entropy over the masked tokens of the held-out texts, with
the same masks before and after (drawn once from the seed), so the two numbers are comparable.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from huggingface_hub.utils import tqdm  # the bars `nlp-transfer -q` switches off
from transformers import DataCollatorForLanguageModeling, get_linear_schedule_with_warmup

from .adapt_lm_config import AdaptLmConfig
from .artifacts import OutputDir, share_like_umask, write_json
from .data import TextColumns, load_split
from .errors import UserInputError
from .layers import decay_groups
from .masked_lm import head_parameters, load_masked_lm, masked_lm_loss, save_encoder
from .modeling import check_max_length, load_tokenizer

logger = logging.getLogger(__name__)

CONFIG_FILE = "adapt_lm_config.json"
SUMMARY_FILE = "adapt_lm_summary.json"
MAX_HELD_OUT = 2000


@dataclass
class AdaptLmResult:
    """What :func:`adapt_lm` returns: where the encoder is and the held-out perplexities."""

    output_dir: str
    summary: dict[str, Any]


def adapt_lm(config: AdaptLmConfig) -> AdaptLmResult:
    """Continue masked-LM training of ``config.model`` on the texts of ``config.text_file``; save the encoder.

    Args:
        config: the run's settings (validated at construction).

    Returns:
        The encoder folder and a summary with the held-out perplexity before and after.

    Raises:
        UserInputError: bad texts or options, a model without a masked-LM head (see ``--new-mlm-head``),
            an output folder in the way; nothing is written.
    """
    output = OutputDir(config.output_dir, overwrite=config.overwrite)
    output.lock()
    try:
        output.check()
        return _run(config, output)
    finally:
        output.unlock()


def _run(config: AdaptLmConfig, output: OutputDir) -> AdaptLmResult:
    started = time.perf_counter()
    set_seed(config.seed)
    tokenizer = load_tokenizer(config.model)
    check_max_length(config.model, config.max_length, tokenizer)
    train_ds, held_out = _texts(config, tokenizer)
    model, new_head = load_masked_lm(config.model, config.new_mlm_head)
    accelerator = Accelerator()
    eval_batches = _masked_batches(held_out, tokenizer, config)
    summary: dict[str, Any] = {"texts": {"train": train_ds.num_rows, "held_out": held_out.num_rows},
                               "new_mlm_head": new_head}
    try:
        if new_head and config.head_warmup_steps:
            summary["perplexity_random_head"] = perplexity(model, eval_batches, accelerator)
            _train(model, train_ds, tokenizer, config, accelerator, head_only=True)
        summary["perplexity_before"] = perplexity(model, eval_batches, accelerator)
        summary["train_loss"] = _train(model, train_ds, tokenizer, config, accelerator, head_only=False)
        summary["perplexity_after"] = perplexity(model, eval_batches, accelerator)
        summary["runtime_s"] = round(time.perf_counter() - started, 1)
        _write(model, tokenizer, config, summary, output)
    except BaseException:
        output.discard()
        raise
    logger.info("held-out perplexity %.2f → %.2f", summary["perplexity_before"], summary["perplexity_after"])
    return AdaptLmResult(str(output.path), summary)


def _texts(config: AdaptLmConfig, tokenizer: Any) -> tuple[Any, Any]:
    """The tokenized texts, split into training and held-out rows (seeded)."""
    raw = load_split(config.text_file, "text", TextColumns(config.text_column, None, None), name="TEXT_FILE")
    if config.max_train_samples is not None and config.max_train_samples < raw.num_rows:
        raw = raw.shuffle(seed=config.seed).select(range(config.max_train_samples))
    if raw.num_rows < 2:
        raise UserInputError(f"text file {config.text_file!r} has {raw.num_rows} text; adapt-lm needs at least 2 (some "
                             "to train on, some held out to measure perplexity), and thousands to adapt well.")
    offsets = config.whole_word_masking  # whole-word masking finds word starts from the character offsets

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        enc = tokenizer(batch[config.text_column], truncation=True, max_length=config.max_length,
                        return_special_tokens_mask=True, return_offsets_mapping=offsets)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    ds = raw.map(tokenize, batched=True, remove_columns=raw.column_names, desc="Tokenizing texts")
    n_held = min(MAX_HELD_OUT, max(1, round(config.validation_split * ds.num_rows)))
    order = np.random.default_rng(config.seed).permutation(ds.num_rows)
    return ds.select(np.sort(order[n_held:])), ds.select(np.sort(order[:n_held]))


def _collator(tokenizer: Any, config: AdaptLmConfig, seed: int) -> DataCollatorForLanguageModeling:
    return DataCollatorForLanguageModeling(tokenizer, mlm_probability=config.mlm_probability,
                                           whole_word_mask=config.whole_word_masking, seed=seed)


def _masked_batches(ds: Any, tokenizer: Any, config: AdaptLmConfig) -> list[dict[str, torch.Tensor]]:
    """The held-out texts as masked batches, drawn once, so that every measurement uses the same masks."""
    from .sampler import model_inputs

    collate = _collator(tokenizer, config, seed=config.seed + 1)
    rows = model_inputs(ds)
    return [collate([rows[i] for i in range(start, min(start + 64, len(rows)))]) for start in range(0, len(rows), 64)]


@torch.inference_mode()
def perplexity(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], accelerator: Accelerator) -> float:
    """``exp`` of the mean cross-entropy over every masked token of ``batches``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        masked = int((batch["labels"] != -100).sum())
        if masked:
            total += float(masked_lm_loss(model, batch)) * masked
            count += masked
    model.train(was_training)
    if not count:
        raise UserInputError("no held-out token was masked (the held-out texts are too short); raise "
                             "--validation-split or --mlm-probability.")
    return math.exp(total / count)


def _train(model: torch.nn.Module, ds: Any, tokenizer: Any, config: AdaptLmConfig, accelerator: Accelerator,
           head_only: bool) -> float:
    """Masked-LM training: the fresh head alone for ``head_warmup_steps`` steps, or everything for ``epochs``.

    Returns the mean training loss.
    """
    from .sampler import model_inputs, training_loader

    params = head_parameters(model) if head_only else [p for p in model.parameters()]
    trainable = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    lengths = ds.with_format("arrow")["length"].to_numpy()
    loader = training_loader(model_inputs(ds), lengths, config.batch_size, config.seed,
                             collate_fn=_collator(tokenizer, config, seed=config.seed + (2 if head_only else 3)))
    steps = config.head_warmup_steps if head_only else len(loader) * config.epochs
    # A fresh head learns fast at a high rate; the pretrained encoder wants a gentle one.
    lr = 1e-3 if head_only else config.learning_rate
    optimizer = torch.optim.AdamW(decay_groups(params, lr, config.weight_decay, None), lr=lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(0.06 * steps), steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    model.train()
    desc = "Training the new masked-LM head" if head_only else "Adapting"
    losses, step, epoch = [], 0, 0
    with tqdm(total=steps, desc=desc, disable=not accelerator.is_local_main_process) as bar:
        while step < steps:
            loader.set_epoch(epoch)
            before = step
            for batch in loader:
                if step == steps:
                    break
                if not int((batch["labels"] != -100).sum()):
                    continue  # nothing masked in this batch of short texts: no loss to learn from
                loss = masked_lm_loss(model, batch)
                if not math.isfinite(value := float(loss.detach())):
                    raise UserInputError(f"the masked-LM loss became {value} at step {step + 1}; lower "
                                         f"--learning-rate (now {config.learning_rate:g}).")
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(value)
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
            epoch += 1
            if step == before:
                raise UserInputError("no token of the training texts was masked in a whole pass (the texts are too "
                                     "short); raise --mlm-probability or use longer texts.")
    for p in model.parameters():
        p.requires_grad_(True)
    return float(np.mean(losses)) if losses else math.nan


def _write(model: torch.nn.Module, tokenizer: Any, config: AdaptLmConfig, summary: dict[str, Any],
           output: OutputDir) -> None:
    """The encoder folder, its settings and summary, written in the staging folder and moved into place."""
    staging = output.create_staging()
    save_encoder(model, config.model, tokenizer, staging)
    settings = {**config.to_dict(), "text_file": Path(config.text_file).name, "output_dir": Path(config.output_dir).name}
    write_json(staging / CONFIG_FILE, settings)
    write_json(staging / SUMMARY_FILE, summary)
    share_like_umask(staging)
    output.commit()
