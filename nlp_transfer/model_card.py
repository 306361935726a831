"""The model card: ``model_cards/template.md`` rendered with ``huggingface_hub.ModelCard``.

Everything the card says is read from the model folder (``training_config.json``,
``metrics.json``, ``training_summary.json``), so ``nlp-transfer card DIR`` re-renders the same
card at any time, e.g. after a template change or before a push under a new repo id. The task's
results section is a template of its own (``Task.card_template``), rendered into the card.

Text that comes from the user's data (label names) is escaped for Markdown tables, and long
label lists are capped: a card with thousands of labels lists the first ones and says where the
rest are, instead of growing to megabytes.
"""

from __future__ import annotations

import dataclasses
import shlex
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .artifacts import CARD_FILE, CONFIG_FILE, METRICS_FILE, MODEL_CONFIG_FILE, SUMMARY_FILE, read_json, write_text
from .card_tables import card_rows, escape_cell, table_row
from .config import TrainConfig
from .hub_ids import DEFAULT_MODEL
from .feature_settings import head_fit_card_line
from .small_data import fewshot_card_lines
from .plots import plot_links
from .long_text import card_context as long_text_card
from .errors import UserInputError
from .pooling import describe_pooling

CARD_METRICS = ("accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro")
# Settings that make training faster without changing what it learns: training details, not hyperparameters.
SPEED_SETTINGS = ("group_by_length", "fast_cpu_dropout", "cls_only_last_layer", "compact_embeddings",
                  "reuse_freed_memory")
_HYPERPARAMETERS = (
    "epochs", "batch_size", "gradient_accumulation_steps", "learning_rate", "weight_decay", "warmup_ratio",
    "max_grad_norm", "max_length", "seed", "mixed_precision", "metric_for_best_model", "early_stopping_patience",
    "strategy", "freeze_layers", "layer_lr_decay", "lora_r", "lora_alpha", "lora_dropout", "pooling",
    "long_text", "stride", "window_pooling", "max_windows", "head_fraction",
)
# File settings reduced to their names in what a model folder publishes; settings of the run, not the model.
_FILE_SETTINGS = ("train_file", "validation_file", "test_file", "output_dir", "logging_dir", "target_file")
_NOT_REPRODUCED = ("output_dir", "overwrite", "resume", "push_to_hub", "hub_private", "report_to", "logging_dir")


def template_path() -> Path:
    """Path of the card template shipped in the package."""
    return Path(str(resources.files("nlp_transfer.model_cards").joinpath("template.md")))


def _read(directory: Path, name: str) -> dict[str, Any]:
    path = directory / name
    if not path.is_file():
        raise UserInputError(f"{str(directory)!r} has no {name}; it is not a folder written by nlp-transfer train.")
    value = read_json(path, f"the model folder's {name}")
    if not isinstance(value, dict):
        raise UserInputError(f"{str(path)!r} is damaged (expected a JSON object); re-run the training that wrote it.")
    return value


def reported_split(metrics: dict[str, Any]) -> str:
    """The split whose results go into ``model-index``: test when there is one."""
    return "test" if metrics.get("test") else "validation"


def _local_folder(value: Optional[str]) -> bool:
    return bool(value) and (Path(value).is_absolute() or Path(value).exists())


def portable_config(config: dict[str, Any], publish: bool = False) -> dict[str, Any]:
    """A config as a model folder records it: no paths of the training machine, no ``--resume``.

    Data files, the output folder and a local encoder folder are named without their folders.

    Args:
        config: ``TrainConfig.to_dict()`` of the run.
        publish: also reduce the feature-cache folder to its name (it only means something on the
            training machine, where the local folder's copy keeps it).
    """
    portable = {**config, "resume": None}
    for key in _FILE_SETTINGS + (("feature_cache_dir",) if publish else ()):
        if portable.get(key):
            portable[key] = Path(portable[key]).name
    if _local_folder(portable.get("model")):
        portable["model"] = Path(portable["model"]).name
    return portable


def train_command(config: dict[str, Any]) -> str:
    """The ``nlp-transfer train`` command line that trains the model ``config`` describes.

    The CLI and the API take the same settings, so the command is exact; settings at their
    default and those that do not change the model (output folder, resume, push) are left out.
    """
    words = ["nlp-transfer", "train", config["train_file"]]
    for f in dataclasses.fields(TrainConfig):
        if f.name == "train_file" or f.name in _NOT_REPRODUCED or f.name not in config:
            continue
        value = config[f.name]
        if value == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            words += [flag, str(value)]
    return shlex.join(words)


def portable_command(command: str, config: dict[str, Any], token: Optional[str] = None) -> str:
    """A typed ``nlp-transfer`` command as it reproduces the run from scratch, elsewhere.

    ``--resume`` (and its path) is dropped; data files, the output folder, a local encoder folder and
    the feature-cache folder are named without their folders; the Hub token, if it appears in any
    spelling, is replaced by ``***``.
    """
    keys = _FILE_SETTINGS + ("feature_cache_dir",) + (("model",) if _local_folder(config.get("model")) else ())
    replace = {config[key]: Path(config[key]).name for key in keys if config.get(key)}
    words, skip_path = [], False
    for word in shlex.split(command):
        if skip_path:
            skip_path = False
            if not word.startswith("-") and config.get("resume") not in (None, "latest"):
                continue
        if word == "--resume" or word.startswith("--resume="):
            skip_path = word == "--resume"
            continue
        words.append(replace.get(word, word))
    text = shlex.join(words)
    return text.replace(token, "***") if token else text


def _dataset(config: dict[str, Any]) -> tuple[str, bool]:
    """The dataset's name for the card: ``--dataset-name``, else one derived from the training file's path."""
    if config.get("dataset_name"):
        return config["dataset_name"], True
    train_file = Path(config["train_file"])
    generic = train_file.stem.lower() in ("train", "training", "data", "dataset", "all")
    return (train_file.parent.name if generic and train_file.parent.name else train_file.stem), False


def card_context(directory: str | Path, repo_id: Optional[str] = None,
                 location: Optional[str | Path] = None) -> dict[str, Any]:
    """The data the template is rendered with (``card_data`` plus template variables)."""
    from .task import TASKS, SingleLabelClassification

    directory = Path(directory)
    config, metrics, summary = (_read(directory, name) for name in (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE))
    problem = read_json(directory / MODEL_CONFIG_FILE, "the model's config.json").get("problem_type") \
        if (directory / MODEL_CONFIG_FILE).is_file() else None
    task = TASKS.get(problem or "", SingleLabelClassification)(summary["labels"])
    location = Path(location) if location is not None else directory  # training renders in a staging folder
    model_name = repo_id.split("/")[-1] if repo_id else location.name
    base_model = config["model"]
    local = base_model == summary.get("local_base_model") or _local_folder(base_model)
    is_hub_id = not local and base_model.count("/") <= 1
    dataset_name, named = _dataset(config)
    context = {
        "model_name": model_name, "model_ref": repo_id or str(location),
        # A local encoder folder means nothing to a reader on the Hub: show its name, without a link.
        "base_model": base_model if is_hub_id else Path(base_model).name,
        "base_model_url": f"https://huggingface.co/{base_model}" if is_hub_id else None,
        "default_model": base_model == DEFAULT_MODEL,
        "strategy_description": _strategy_description(config.get("strategy", "finetune")),
        "pooling_description": describe_pooling(config.get("pooling")),
        "dataset_name": dataset_name if named else None,
        "warnings": summary.get("warnings", []),
        "plots": plot_links(directory),  # issue 20: the PNGs of the folder, linked relatively
        **card_rows(task, config, metrics, summary),
        **_procedure(config, summary),
        "history_metrics": task.history_metrics, "pipeline_kwargs": task.pipeline_kwargs,
        "card_metrics": task.card_metrics, "class_weights": summary.get("class_weights"),
        "class_weights_kind": "BCE pos_weight per label" if task.name == "multi_label_classification" else "per class",
    }
    context["task_section"] = jinja2.Template(task.card_section(), keep_trailing_newline=True).render(**context)
    context.update(long_text_card(config, summary, problem))
    section = _render_part("long_text.md", context).strip()
    context["long_text_section"] = f"{section}\n\n" if section else ""
    context["card_data"] = _card_data(config, metrics, context, dataset_name, named, is_hub_id)
    return context


def _render_part(name: str, context: dict[str, Any]) -> str:
    """A template of ``nlp_transfer.model_cards`` rendered with the card's variables."""
    text = resources.files("nlp_transfer.model_cards").joinpath(name).read_text(encoding="utf-8")
    return jinja2.Template(text, keep_trailing_newline=True).render(**context)


def _strategy_description(name: str) -> str:
    from .strategies import STRATEGIES

    return STRATEGIES[name].description if name in STRATEGIES else name


def _procedure(config: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """The training-procedure part of the card: hyperparameters, speed settings, history, reproduce command."""
    hyper = [table_row([k, escape_cell(str(config[k]))]) for k in _HYPERPARAMETERS
             if k in config and config[k] is not None]
    speed = summary.get("speedups") or {}
    applied = [f"`{name}`: {record['effect']}" for name, record in speed.items() if record]
    skipped = summary.get("speedups_skipped") or {}
    return {
        "hyperparameter_rows": hyper,
        "objective_details": [f"`{k}`: {escape_cell(str(v))}" for k, v in (summary.get("objective") or {}).items()],
        "speed_settings": applied,
        "speed_skipped": [f"`{name}`: {reason}" for name, reason in skipped.items() if reason != "switched off"],
        "metric_for_best_model": config["metric_for_best_model"],
        "best_epoch": summary.get("best_epoch"), "epochs_run": summary.get("epochs_run"),
        "history": summary.get("history", []),
        "train_runtime_s": summary.get("train_runtime_s") or 0.0,
        "hardware": summary.get("hardware", "unknown hardware"), "versions": summary.get("versions", {}),
        "command": summary.get("command") or train_command(portable_config(config, publish=True)),
        "max_length": config["max_length"], "truncated_fraction": summary.get("truncated_fraction") or 0.0,
        "has_validation": any(entry.get("validation") for entry in summary.get("history", [])),
        "fewshot_lines": fewshot_card_lines(summary),
        "head_fit_line": head_fit_card_line(summary, config["metric_for_best_model"]),
    }


def _card_data(config: dict[str, Any], metrics: dict[str, Any], context: dict[str, Any], dataset: str,
               named: bool, is_hub_id: bool) -> ModelCardData:
    split = reported_split(metrics)
    eval_results = [
        EvalResult(
            task_type="text-classification", task_name="Text Classification", dataset_type=dataset,
            dataset_name=dataset, dataset_split=split, metric_type=name.split("_")[0], metric_name=name,
            metric_config=name.split("_")[1] if "_" in name else None, metric_value=float(metrics[split][name]),
        )
        for name in context.get("card_metrics", CARD_METRICS)
        if isinstance((metrics.get(split) or {}).get(name), (int, float))
    ]
    return ModelCardData(
        model_name=context["model_name"], base_model=config["model"] if is_hub_id else None,
        library_name="transformers", pipeline_tag="text-classification", license=config.get("license"),
        language=config.get("language"), datasets=[dataset] if named else None,
        metrics=["accuracy", "f1", "precision", "recall"],
        tags=["nlp-transfer", "text-classification", config.get("strategy", "finetune")],
        eval_results=eval_results or None,
    )


def render_card(directory: str | Path, repo_id: Optional[str] = None,
                location: Optional[str | Path] = None) -> ModelCard:
    """Render the model card of a trained model folder.

    Args:
        directory: a folder written by ``nlp-transfer train``.
        repo_id: the Hub repo the card will live in (used in the usage snippets and the title).
        location: the folder the model will be used from when that is not ``directory`` (a staging
            folder that is renamed afterwards); ignored when ``repo_id`` is given.
    """
    context = card_context(directory, repo_id, location)
    card_data = context.pop("card_data")
    return ModelCard.from_template(card_data, template_path=str(template_path()), **context)


def write_card(directory: str | Path, repo_id: Optional[str] = None, location: Optional[str | Path] = None) -> Path:
    """Render the card and save it as ``README.md`` in the model folder; return its path."""
    return write_text(Path(directory) / CARD_FILE, str(render_card(directory, repo_id, location)))
