"""The training run: CSV → tokenized data → fine-tuned model folder with metrics and card.

Read it top to bottom, in dependency order: :func:`train` takes the output folder's lock and
builds the accelerator; :func:`_setup` loads the tokenizer, data, task and model, applies the
strategy and the speed options and prepares optimizer, schedule and loaders;
:func:`nlp_transfer.loop.fit` trains; :func:`_finish` scores the best epoch's weights on the
test set and writes one folder atomically. The same code runs on one CPU, one GPU or many
processes under ``accelerate launch``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import get_linear_schedule_with_warmup

from .artifacts import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, OutputDir, share_like_umask, write_json
from .checkpoint import Checkpoints, TrainState, check_same_data, check_same_settings, data_fingerprint, resume_point
from .config import TrainConfig
from .data import prepare_data
from .data_report import check_before_training
from .errors import UserInputError
from .evaluation import eval_loader, evaluate_loader
from .layers import decay_groups, layer_groups
from .long_text import LongText, record_long_text
from .loop import Run, fit, on_failure, out_of_memory
from .model_card import portable_command, portable_config, train_command, write_card
from .modeling import check_max_length, load_for_training, load_tokenizer, save_model
from .plots import draw_plots_after_training
from .pooling import apply_pooling, resolve_pooling
from .speed import SPEED_OPTION_NAMES, SpeedContext, SpeedOptions, default_options
from .strategies import parameter_counts, strategy_for
from .summary import build_summary
from .task import THRESHOLDS_KEY, make_task
from .tracking import TrainingLog, accelerator_kwargs, check_installed

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
        UserInputError: bad data, columns or options (nothing is written), another run holds the
            output folder, or training diverged (checkpoints written before it are kept).
        TrainingInterrupted: SIGINT/SIGTERM stopped the run after a checkpoint (``--resume`` continues it).
        PushError: ``config.push_to_hub`` is set and the push failed (the model folder is complete).
    """
    resolve_pooling(config)  # before the resume check and the recorded command: both name the pooling run
    if config.push_to_hub:
        from .hub import resolve_token

        hub_token = resolve_token(hub_token)  # no token: stop now rather than after the training
    check_installed(config)  # a --report-to tracker that is missing stops the run here
    output = OutputDir(config.output_dir, overwrite=config.overwrite)
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        **accelerator_kwargs(config),
    )
    if accelerator.is_main_process:
        output.lock()  # a second run on the same --output-dir stops here
    try:
        result = _run(config, _reproduce_command(config, command, hub_token), accelerator, output)
    finally:
        output.unlock()
    if config.push_to_hub and accelerator.is_main_process:
        result.pushed = result.push(config.push_to_hub, private=config.hub_private, token=hub_token)
    return result


def _run(config: TrainConfig, command: str, accelerator: Accelerator, output: OutputDir) -> TrainResult:
    output.check()
    with accelerator.main_process_first():  # the checks of `inspect`, before any model: errors stop the run here
        check_before_training(config, log=accelerator.is_main_process)
    strategy = strategy_for(config)
    if not strategy.supports_multiple_processes and accelerator.num_processes > 1:
        raise UserInputError(
            f"--strategy {config.strategy} runs in one process, but {accelerator.num_processes} were launched; "
            "run it without accelerate launch, or use --strategy freeze for multi-process training."
        )
    resume_from = resume_point(config, output)
    if resume_from is not None:
        check_same_settings(config, resume_from)
    run, data, tokenizer, speed, extras = _setup(config, accelerator, output, strategy)
    if resume_from is not None:
        check_same_data(resume_from, run.checkpoints.data, data.labels)
        run.state, run.best_weights = run.checkpoints.load(resume_from)
        run.objective.load_state_dict(run.state.objective)
    elif accelerator.is_main_process:
        output.discard()  # leftovers of a crashed run, or an unfinished one given up with --overwrite
    if accelerator.is_main_process:
        output.create_staging()
    accelerator.wait_for_everyone()
    try:
        run.log.start(portable_config(config.to_dict(), publish=True))  # local paths by their names
        with speed.during_fit():
            fit(run)
        run.state.elapsed_seconds = time.perf_counter() - run.started
        return _finish(run, data, tokenizer, speed, output, command, extras)
    except BaseException as err:
        memory = out_of_memory(err, config)
        on_failure(memory or err, run, output)
        if memory is not None:
            raise memory from None
        raise
    finally:
        accelerator.end_training()


def _setup(config: TrainConfig, accelerator: Accelerator, output: OutputDir,
           strategy: Any) -> tuple[Run, Any, Any, SpeedOptions, dict[str, Any]]:
    """Tokenizer, data, task, model, strategy, speed options, optimizer, schedule and loaders, prepared."""
    set_seed(config.seed)
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    check_max_length(config.model, config.max_length, tokenizer, trust_remote_code=config.trust_remote_code,
                     pair=config.text_pair_column is not None)
    with accelerator.main_process_first():
        data = prepare_data(config, tokenizer)
    task = make_task(config, data.labels, data.label_counts["train"], data.train.num_rows)
    set_seed(config.seed)  # the head's initialisation must not depend on data preparation
    model = load_for_training(config.model, data.labels, allow_pickle=config.allow_pickle,
                              trust_remote_code=config.trust_remote_code, problem_type=task.problem_type)
    apply_pooling(model, config.pooling, config.model)
    if hasattr(model.config, THRESHOLDS_KEY):  # a multi-label classifier as the base: its thresholds do not carry over
        delattr(model.config, THRESHOLDS_KEY)
    strategy.check_model(model)
    model = strategy.apply(model)
    objective = strategy.make_objective(task)
    speed = SpeedOptions.select(SpeedContext(config, accelerator.device.type, accelerator.num_processes, strategy,
                                             objective, model, objective.token_datasets(data)), default_options())
    speed.on_model()
    trained = strategy.training_data(model, data, tokenizer, accelerator)
    # Counted on the unsharded loader: accelerate steps a prepared scheduler once per process.
    total_steps = math.ceil(len(trained.train_loader) / config.gradient_accumulation_steps) * config.epochs
    groups = _param_groups(trained.model, strategy, objective, config)
    speed.on_param_groups(groups)
    optimizer = _optimizer(trained.model, groups, config)
    speed.on_optimizer(optimizer)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)
    names, modules = zip(*objective.modules().items()) if objective.modules() else ((), ())
    prepared = accelerator.prepare(trained.model, optimizer, trained.train_loader, trained.val_loader, scheduler,
                                   *modules)
    model, optimizer, train_loader, val_loader, scheduler, *modules = prepared
    objective.prepared = dict(zip(names, modules))  # DDP-wrapped where there are several processes
    # Read once the files are known to be good CSVs; a resume on other data is refused with it.
    fingerprint = {**data_fingerprint(config, strategy.input_files()), "labels": data.labels}
    run = Run(config, accelerator, model, objective, strategy, task, optimizer, scheduler, train_loader, val_loader,
              Checkpoints(output.staging, config, accelerator, fingerprint),
              TrainState(num_processes=accelerator.num_processes), _steps_per_process(train_loader, config), modules)
    objective.add_sources(accelerator, data, tokenizer)
    run.log = TrainingLog(run)
    # The card links a Hub id; a local encoder folder is recorded by name only (its path means nothing elsewhere).
    local = {"local_base_model": Path(config.model).name} if Path(config.model).exists() else {}
    weights = {"class_weights": dict(zip(task.labels, task.class_weights.tolist()))} if task.class_weights is not None else {}
    small = {"small_data": data.small_data.to_dict()} if data.small_data is not None and data.small_data.applied else {}
    long_text = {"long_text": data.long_text} if data.long_text else {}
    return run, data, tokenizer, speed, {"strategy": config.strategy, **local, **small, **trained.summary, **weights,
                                            **long_text}


def _steps_per_process(train_loader: Any, config: TrainConfig) -> int:
    """Optimizer steps each process takes in the run (the progress denominator): with N processes each
    reads 1/N of the batches, so the unsharded count (the scheduler's) would stop progress at 1/N."""
    return math.ceil(len(train_loader) / config.gradient_accumulation_steps) * config.epochs


def _param_groups(model: torch.nn.Module, strategy: Any, objective: Any, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups of the model (no decay on biases/LayerNorm, layer-wise rates) and of the objective's modules."""
    params = strategy.trainable_parameters(model)
    depths = layer_groups(model).depths() if config.layer_lr_decay is not None else None
    groups = decay_groups(params, config.learning_rate, config.weight_decay, config.layer_lr_decay, depths)
    for module in objective.modules().values():
        groups += decay_groups([p for p in module.parameters() if p.requires_grad], config.learning_rate,
                               config.weight_decay, None)
    return groups


def _optimizer(model: torch.nn.Module, groups: list[dict[str, Any]], config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over ``groups``."""
    device = next(model.parameters()).device
    # One fused kernel for the whole update (CPU and CUDA), as the Trainer's default adamw_torch_fused.
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=config.learning_rate, fused=fused, foreach=None if fused else True)


def _finish(run: Run, data: Any, tokenizer: Any, speed: SpeedOptions, output: OutputDir, command: str,
            extras: dict[str, Any]) -> TrainResult:
    """Score the best epoch's weights on the test set and write the model folder."""
    config, accelerator, state = run.config, run.accelerator, run.state
    unwrapped = accelerator.unwrap_model(run.model)
    unwrapped.load_state_dict(run.best_weights)
    speed_record = speed.record(SPEED_OPTION_NAMES)
    speed.undo()
    counts = parameter_counts(unwrapped)
    model = run.strategy.export(unwrapped)  # the plain classifier that is saved: LoRA merged, feature head unwrapped
    metrics = {"validation": state.best.validation, "test": None}
    run.task.adopt(state.best.validation)  # e.g. multi-label thresholds tuned on validation: used from here on
    model.config.update(run.task.config_entries())
    if data.test is not None:
        test_loader = accelerator.prepare(eval_loader(data.test, tokenizer, config.eval_batch_size))
        metrics["test"] = evaluate_loader(model, test_loader, accelerator, run.task, desc="Testing",
                                          window_pooling=config.window_pooling)
    run.log.test(metrics["test"])
    warnings = [w for split, report in metrics.items() if report for w in run.task.warnings(report, split)]
    for warning in warnings if accelerator.is_main_process else ():  # once, not once per process
        logger.warning("%s", warning)
    summary = build_summary(data, state, command, {
        **extras, **counts, **speed_record, "warnings": warnings, "loss_curve": state.loss_curve,
        **({"objective": run.objective.summary()} if run.objective.summary() else {})})
    if accelerator.is_main_process:
        staging = output.staging
        # The backend keeps whatever truncation/padding it last ran with (the base model's own when the
        # tokenized data came from the cache): save it neutral, so the folder is the same however the run got there.
        tokenizer.backend_tokenizer.no_truncation()
        tokenizer.backend_tokenizer.no_padding()
        record_long_text(model.config, LongText.from_config(config))  # config.json says how it reads long texts
        save_model(model, tokenizer, staging, config.max_length)
        write_json(staging / CONFIG_FILE, portable_config(config.to_dict()))
        write_json(staging / METRICS_FILE, metrics)
        write_json(staging / SUMMARY_FILE, summary)
        draw_plots_after_training(staging)  # before the card, which links them
        write_card(staging, location=output.path)
        run.checkpoints.remove_all()
        share_like_umask(staging)
        output.commit()
    accelerator.wait_for_everyone()
    return TrainResult(str(output.path), metrics, summary)


def _reproduce_command(config: TrainConfig, command: Optional[str], token: Optional[str]) -> str:
    """The command that trains this model from scratch: the one typed (without --resume, data files by
    name, no token), or for a run started from Python the equivalent CLI command."""
    settings = config.to_dict()
    if command is None:
        return train_command(portable_config(settings, publish=True))
    return portable_command(command, settings, token)
