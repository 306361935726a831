"""The model card: ``model_cards/template.md`` rendered with ``huggingface_hub.ModelCard``.

Everything the card says is read from the model folder (``training_config.json``,
``metrics.json``, ``training_summary.json``), so ``nlp-transfer card DIR`` re-renders the same
card at any time, e.g. after a template change or before a push under a new repo id.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .artifacts import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE
from .config import DEFAULT_MODEL
from .errors import UserInputError

CARD_METRICS = ("accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro")

_STRATEGIES = {
    "finetune": "full fine-tuning: every weight of the encoder and the head trained",
    "feature-extraction": "feature extraction: the encoder frozen, only the classification head trained",
    "freeze": "partial freezing: embeddings and the bottom encoder layers frozen, the rest trained",
    "gradual-unfreeze": "gradual unfreezing: encoder layers unfrozen one group per epoch from the top",
    "lora": "LoRA: low-rank adapters trained and merged into the weights",
}


def template_path() -> Path:
    """Path of the card template shipped in the package."""
    return Path(str(resources.files("nlp_transfer.model_cards").joinpath("template.md")))


def _read_json(directory: Path, name: str) -> dict[str, Any]:
    path = directory / name
    if not path.is_file():
        raise UserInputError(f"{str(directory)!r} has no {name}; it is not a folder written by nlp-transfer train.")
    return json.loads(path.read_text(encoding="utf-8"))


def reported_split(metrics: dict[str, Any]) -> str:
    """The split whose results go into ``model-index``: test when there is one."""
    return "test" if metrics.get("test") else "validation"


def card_context(
    directory: str | Path, repo_id: Optional[str] = None, location: Optional[str | Path] = None
) -> dict[str, Any]:
    """The data the template is rendered with (``card_data`` plus template variables)."""
    directory = Path(directory)
    config = _read_json(directory, CONFIG_FILE)
    metrics = _read_json(directory, METRICS_FILE)
    summary = _read_json(directory, SUMMARY_FILE)
    strategy = config.get("strategy", "finetune")
    base_model = config["model"]
    # Training renders the card in a staging folder: name the model after where it will live.
    location = Path(location) if location is not None else directory
    model_name = repo_id.split("/")[-1] if repo_id else location.name
    split = reported_split(metrics)
    dataset_name = config.get("dataset_name")
    eval_results = [
        EvalResult(
            task_type="text-classification",
            task_name="Text Classification",
            dataset_type=dataset_name or "csv",
            dataset_name=dataset_name or Path(config.get("test_file") or config["train_file"]).name,
            dataset_split=split,
            metric_type=name.split("_")[0],
            metric_name=name,
            metric_config=name.split("_")[1] if "_" in name else None,
            metric_value=float(metrics[split][name]),
        )
        for name in CARD_METRICS
    ]
    card_data = ModelCardData(
        model_name=model_name,
        base_model=base_model if not Path(base_model).exists() else None,
        library_name="transformers",
        pipeline_tag="text-classification",
        license=config.get("license"),
        language=config.get("language"),
        datasets=[dataset_name] if dataset_name else None,
        metrics=["accuracy", "f1", "precision", "recall"],
        tags=["nlp-transfer", "text-classification", strategy],
        eval_results=eval_results,
    )
    hyper_keys = (
        "epochs", "batch_size", "gradient_accumulation_steps", "learning_rate", "weight_decay", "warmup_ratio",
        "max_grad_norm", "max_length", "seed", "mixed_precision", "group_by_length", "fast_cpu_dropout",
        "cls_only_last_layer", "compact_embeddings", "metric_for_best_model", "early_stopping_patience",
        "strategy", "freeze_layers", "layer_lr_decay", "lora_r", "lora_alpha", "pooling",
    )
    hyperparameters = {k: config[k] for k in hyper_keys if k in config and config[k] is not None}
    is_hub_id = not Path(base_model).exists()
    data_files = {
        split: Path(config[key]).name
        for split, key in (("train", "train_file"), ("validation", "validation_file"), ("test", "test_file"))
        if config.get(key)
    }
    return {
        "card_data": card_data,
        "model_name": model_name,
        "model_ref": repo_id or str(location),
        # A local encoder folder means nothing to a reader on the Hub: show its name, without a link.
        "base_model": base_model if is_hub_id else Path(base_model).name,
        "base_model_url": f"https://huggingface.co/{base_model}" if is_hub_id else None,
        "data_files": data_files,
        "strategy_description": _STRATEGIES.get(strategy, strategy),
        "labels": summary["labels"],
        "label_counts": summary["label_counts"],
        "count_splits": list(summary["label_counts"]),
        "validation_source": summary.get("validation_source", "file"),
        "text_column": config["text_column"],
        "text_pair_column": config.get("text_pair_column"),
        "label_column": config["label_column"],
        "dataset_name": dataset_name,
        "result_splits": [
            {"name": name, "metrics": metrics[name]} for name in ("test", "validation") if metrics.get(name)
        ],
        "has_test": bool(metrics.get("test")),
        "hyperparameters": hyperparameters,
        "metric_for_best_model": config["metric_for_best_model"],
        "best_epoch": summary.get("best_epoch"),
        "epochs_run": summary.get("epochs_run"),
        "history": summary.get("history", []),
        "train_runtime_s": summary.get("train_runtime_s", 0.0),
        "hardware": summary.get("hardware", "unknown hardware"),
        "versions": summary.get("versions", {}),
        "command": summary.get("command") or train_command(config),
        "max_length": config["max_length"],
        "truncated_fraction": summary.get("truncated_fraction", 0.0),
        "default_model": base_model == DEFAULT_MODEL,
    }


# Settings that do not change the trained model, left out of the reproduce command.
_NOT_REPRODUCED = ("output_dir", "overwrite", "resume", "push_to_hub", "hub_private")


def train_command(config: dict[str, Any]) -> str:
    """The ``nlp-transfer train`` command line that trains the model ``config`` describes.

    Used for the card's "reproduce" section when the run was started from Python: the CLI and
    the API take the same settings, so the command is exact. Settings at their default are left out.
    """
    import dataclasses
    import shlex

    from .config import TrainConfig

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


def render_card(
    directory: str | Path, repo_id: Optional[str] = None, location: Optional[str | Path] = None
) -> ModelCard:
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


def write_card(
    directory: str | Path, repo_id: Optional[str] = None, location: Optional[str | Path] = None
) -> Path:
    """Render the card and save it as ``README.md`` in the model folder; return its path."""
    path = Path(directory) / "README.md"
    render_card(directory, repo_id, location).save(path)
    return path
