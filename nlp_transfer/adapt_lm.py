"""Domain-adaptive masked-LM pretraining ("don't stop pretraining"): ``nlp-transfer adapt-lm``.

Read top to bottom: :func:`adapt_lm` takes the output folder's lock; :func:`_run` reads and splits
the target texts, loads the encoder with its masked-LM head (a fresh head, trained alone first, with
``--new-mlm-head``), measures held-out perplexity, and continues masked-LM training on the texts
through the loop of ``train`` (:func:`nlp_transfer.loop.fit` with a
:class:`~nlp_transfer.mlm_objective.MaskedLmObjective`): progress bar, a checkpoint at each epoch
end, every ``--checkpoint-every`` steps and on SIGINT/SIGTERM, and an exact ``--resume`` (same text
order, same masks, same optimizer and schedule state). The held-out perplexity is measured after
each epoch; the adapted encoder is written as a plain encoder folder, atomically. ``train --model
DIR`` then fine-tunes from it.

Perplexity is ``exp`` of the mean cross-entropy over the masked tokens of the held-out texts, with
the same masks at every measurement (drawn once from the seed), so the numbers are comparable.
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
from transformers import get_linear_schedule_with_warmup

from .adapt_lm_config import AdaptLmConfig
from .artifacts import OutputDir, share_like_umask, write_json
from .checkpoint import Checkpoints, TrainState, check_same_data, check_same_settings, data_fingerprint, resume_point
from .data import TextColumns, load_split
from .errors import UserInputError
from .layers import decay_groups
from .loop import Run, fit, on_failure
from .masked_lm import head_parameters, load_masked_lm, save_encoder
from .mlm_objective import MaskedLmObjective, PadForMasking, perplexity
from .modeling import check_max_length, load_tokenizer
from .objective import CyclingSource
from .sampler import model_inputs, training_loader
from .strategy_base import Strategy

logger = logging.getLogger(__name__)

CONFIG_FILE = "adapt_lm_config.json"
SUMMARY_FILE = "adapt_lm_summary.json"
MAX_HELD_OUT = 2000
HEAD_LEARNING_RATE = 1e-3  # a fresh head learns fast at a high rate; the pretrained encoder wants a gentle one


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
        The encoder folder and a summary with the held-out perplexity before, after each epoch and after.

    Raises:
        UserInputError: bad texts or options, a model without a masked-LM head (see ``--new-mlm-head``),
            an output folder in the way, or a ``--resume`` on other settings or texts; nothing is written.
        TrainingInterrupted: SIGINT/SIGTERM stopped the run after a checkpoint (``--resume`` continues it).
    """
    output = OutputDir(config.output_dir, overwrite=config.overwrite)
    accelerator = Accelerator()
    if accelerator.is_main_process:
        output.lock()  # a second run on the same --output-dir stops here
    try:
        return _run(config, output, accelerator)
    finally:
        output.unlock()


def _run(config: AdaptLmConfig, output: OutputDir, accelerator: Accelerator) -> AdaptLmResult:
    output.check()
    resume_from = resume_point(config, output)
    if resume_from is not None:
        check_same_settings(config, resume_from)
    set_seed(config.seed)
    tokenizer = load_tokenizer(config.model)
    check_max_length(config.model, config.max_length, tokenizer)
    with accelerator.main_process_first():
        train_ds, held_out = _texts(config, tokenizer)
    fingerprint = data_fingerprint(config, {"text_file": config.text_file})
    if resume_from is not None:
        check_same_data(resume_from, fingerprint)
    model, new_head = load_masked_lm(config.model, config.new_mlm_head)
    model.to(accelerator.device)
    objective = _objective(config, tokenizer, accelerator, config.seed)
    objective.mask_held_out(_held_out_batches(held_out, tokenizer))
    if resume_from is None:
        if accelerator.is_main_process:
            output.discard()  # leftovers of a crashed run, or an unfinished one given up with --overwrite
        objective.measured = _measure_before(model, train_ds, tokenizer, config, accelerator, objective, new_head)
    run = _prepare(model, objective, train_ds, tokenizer, config, accelerator,
                   Checkpoints(output.staging, config, accelerator, fingerprint))
    if resume_from is not None:
        run.state, run.best_weights = run.checkpoints.load(resume_from)
        objective.load_state_dict(run.state.objective)
    if accelerator.is_main_process:
        output.create_staging()
    accelerator.wait_for_everyone()
    try:
        fit(run)
        run.state.elapsed_seconds = time.perf_counter() - run.started
        summary = _summary(run, {"train": train_ds.num_rows, "held_out": held_out.num_rows}, new_head)
        _write(accelerator.unwrap_model(run.model), tokenizer, config, summary, output, run)
    except BaseException as err:
        on_failure(err, run, output)
        raise
    if accelerator.is_main_process:
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


def _held_out_batches(ds: Any, tokenizer: Any) -> list[dict[str, torch.Tensor]]:
    """The held-out texts as padded batches of 64 (masked once by the objective)."""
    rows, pad = model_inputs(ds), PadForMasking(tokenizer)
    return [pad([rows[i] for i in range(start, min(start + 64, len(rows)))]) for start in range(0, len(rows), 64)]


def _objective(config: AdaptLmConfig, tokenizer: Any, accelerator: Accelerator, seed: int) -> MaskedLmObjective:
    return MaskedLmObjective(tokenizer, config.mlm_probability, config.whole_word_masking, seed,
                             rank=accelerator.process_index)


def _loader(ds: Any, tokenizer: Any, config: AdaptLmConfig) -> Any:
    """The seeded, epoch-shuffled, length-grouped loader of the training texts (padded, not masked)."""
    lengths = ds.with_format("arrow")["length"].to_numpy()
    return training_loader(model_inputs(ds), lengths, config.batch_size, config.seed,
                           collate_fn=PadForMasking(tokenizer))


def _measure_before(model: torch.nn.Module, ds: Any, tokenizer: Any, config: AdaptLmConfig, accelerator: Accelerator,
                    objective: MaskedLmObjective, new_head: bool) -> dict[str, float]:
    """Held-out perplexity before adaptation (a fresh head is trained alone first, and scored before that too)."""
    measured = {}
    if new_head and config.head_warmup_steps:
        measured["perplexity_random_head"] = perplexity(model, objective.held_out, accelerator)
        _warm_up_head(model, ds, tokenizer, config, accelerator)
    measured["perplexity_before"] = perplexity(model, objective.held_out, accelerator)
    return measured


def _warm_up_head(model: torch.nn.Module, ds: Any, tokenizer: Any, config: AdaptLmConfig,
                  accelerator: Accelerator) -> None:
    """Train the fresh masked-LM head alone (the encoder frozen) for ``--head-warmup-steps`` steps.

    Short and before the first checkpoint: a run stopped here starts again. Its optimizer is
    released from the accelerator afterwards, so checkpoints hold only the adaptation's.
    """
    params = head_parameters(model)
    trainable = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    objective = _objective(config, tokenizer, accelerator, config.seed + 2)
    steps = config.head_warmup_steps
    optimizer = torch.optim.AdamW(decay_groups(params, HEAD_LEARNING_RATE, config.weight_decay, None),
                                  lr=HEAD_LEARNING_RATE)
    scheduled = steps * accelerator.num_processes  # accelerate steps a prepared scheduler once per process
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(0.06 * scheduled), scheduled)
    prepared, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, _loader(ds, tokenizer, config),
                                                                 scheduler)
    batches = CyclingSource(loader, accelerator)
    bar = tqdm(range(steps), desc="Training the new masked-LM head", disable=not accelerator.is_local_main_process)
    for step in bar:
        loss = objective.step(prepared, batches.next(), step / steps).loss
        if not math.isfinite(value := float(loss.detach())):
            raise UserInputError(f"the masked-LM loss of the new head became {value} at step {step + 1}; "
                                 "lower --head-warmup-steps or check the texts.")
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(True)
    accelerator.free_memory()


def _prepare(model: torch.nn.Module, objective: MaskedLmObjective, ds: Any, tokenizer: Any, config: AdaptLmConfig,
             accelerator: Accelerator, checkpoints: Checkpoints) -> Run:
    """Optimizer (AdamW, linear warm-up over 6% of the steps, then decay), loader and model, prepared for the loop."""
    loader = _loader(ds, tokenizer, config)
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(decay_groups(params, config.learning_rate, config.weight_decay, None),
                                  lr=config.learning_rate)
    scheduled = len(loader) * config.epochs  # unsharded: accelerate steps a prepared scheduler once per process
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(0.06 * scheduled), scheduled)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    # No classification task and no validation loader: the objective measures perplexity after each epoch.
    return Run(config, accelerator, model, objective, Strategy(config), None, optimizer, scheduler, loader, None,
               checkpoints, TrainState(num_processes=accelerator.num_processes), len(loader) * config.epochs)


def _summary(run: Run, texts: dict[str, int], new_head: bool) -> dict[str, Any]:
    """The run's numbers for ``adapt_lm_summary.json`` and the command's output."""
    history = run.state.history
    return {"texts": texts, "new_mlm_head": new_head, **run.objective.measured,
            "perplexity_after": history[-1]["objective"]["perplexity"],
            "perplexity_per_epoch": [entry["objective"]["perplexity"] for entry in history],
            "train_loss": history[-1]["train_loss"], "history": history,
            "train_runtime_s": round(run.state.elapsed_seconds, 1)}


def _write(model: torch.nn.Module, tokenizer: Any, config: AdaptLmConfig, summary: dict[str, Any],
           output: OutputDir, run: Run) -> None:
    """The encoder folder, its settings and summary, written in the staging folder and moved into place."""
    if run.accelerator.is_main_process:
        staging = output.staging
        # The pooling a `train --model` run on the folder uses by default: the base's (sentence encoders: mean).
        summary["pooling"] = save_encoder(model, config.model, tokenizer, staging)
        settings = {**config.to_dict(), "text_file": Path(config.text_file).name,
                    "output_dir": Path(config.output_dir).name}
        write_json(staging / CONFIG_FILE, settings)
        write_json(staging / SUMMARY_FILE, summary)
        run.checkpoints.remove_all()
        share_like_umask(staging)
        output.commit()
    run.accelerator.wait_for_everyone()
