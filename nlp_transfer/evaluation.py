"""Scoring a classifier on labelled data: the evaluation loop and ``nlp-transfer evaluate``.

The same loop serves validation during training and the ``evaluate`` command, and works under
``accelerate launch``: each process scores its shard and ``gather_for_metrics`` collects every
row exactly once.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from huggingface_hub.utils import tqdm  # the bars `nlp-transfer -q` switches off
from accelerate import Accelerator
from torch.utils.data import DataLoader

from .data import TextColumns, load_split, tokenize
from .errors import check_positive_int
from .labels import label_reader
from .long_text import LongText
from .modeling import check_text_room, load_trained, training_settings
from .onnx_model import load_onnx_trained, resolve_backend
from .sampler import eval_loader
from .task import Task, task_for_model
from .windows import check_fits, pool_windows


@torch.inference_mode()
def evaluate_loader(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator, task: Task,
                    desc: str = "Evaluating", window_pooling: Optional[str] = None,
                    with_loss: bool = False) -> dict[str, Any]:
    """Score ``model`` on a prepared loader and return the task's metrics report.

    Batches with a ``document`` column hold sliding windows: their logits are gathered from every
    process, pooled per text (:func:`~nlp_transfer.windows.pool_windows`) and only then turned into
    predictions, so the report counts each text once, whatever its number of windows.


    Args:
        model: a sequence classifier (possibly wrapped by ``accelerator.prepare``).
        loader: a loader prepared by ``accelerator`` with a ``labels`` column.
        accelerator: the run's accelerator, used to gather predictions from every process.
        task: turns logits into predictions and computes the report.
        desc: progress bar title.
        window_pooling: ``mean`` (the default) or ``max`` of the window logits of a text.
        with_loss: also report ``loss``, the task's loss averaged over the rows (the validation
            curve of training; the metrics of a saved model stay what its predictions give).
    """
    was_training = model.training
    model.eval()
    report = task.new_report()
    loss_sum, rows = 0.0, 0
    windows: list[tuple[torch.Tensor, ...]] = []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not accelerator.is_local_main_process):
        references = batch.pop("labels")
        documents = batch.pop("document", None)
        logits = model(**batch).logits
        if documents is not None:
            windows.append(tuple(t.cpu() for t in accelerator.gather_for_metrics((logits, documents, references))))
            continue
        if with_loss:  # logits are gathered, so that the loss covers each row once, as the metrics do
            logits, references = accelerator.gather_for_metrics((logits, references))
            loss_sum += float(task.loss(logits.float(), references)) * len(references)
            rows += len(references)
            predictions = task.predictions(logits)
        else:
            predictions, references = accelerator.gather_for_metrics((task.predictions(logits), references))
        report.add_batch(predictions, references)
    if windows:
        logits, documents, references = (torch.cat(parts) for parts in zip(*windows))
        _, pooled, first = pool_windows(logits, documents, window_pooling or "mean")
        loss_sum += float(task.loss(pooled.float(), references[first])) * len(first)
        rows += len(first)
        report.add_batch(task.predictions(pooled), references[first])
    model.train(was_training)
    result = report.compute()
    return {**result, "loss": loss_sum / rows if rows else float("nan")} if with_loss else result


def evaluate_model(model_dir: str, test_file: str, text_column: Optional[str] = None,
                   text_pair_column: Optional[str] = None, label_column: Optional[str] = None,
                   batch_size: int = 64, max_length: Optional[int] = None,
                   threshold: Optional[float] = None, backend: Optional[str] = None) -> dict[str, Any]:
    """Score a trained model folder on a labelled CSV.

    Column names, the label layout (multi-label separator or 0/1 columns, regression) and
    ``max_length`` default to those the model was trained with (``training_config.json``), else
    ``text`` / ``label`` and the tokenizer's limit. A multi-label model is scored at the thresholds
    saved in its ``config.json``. Long texts are read as in training (``--long-text``, saved with
    the model); metrics count texts, not windows.

    Args:
        model_dir: folder written by ``nlp-transfer train`` (or any sequence classifier).
        test_file: CSV with the text and label columns.
        text_column, text_pair_column, label_column: override the saved column names.
        batch_size: rows per forward pass.
        max_length: override the saved truncation length.
        threshold: multi-label only: one threshold for every label instead of the saved ones.
        backend: ``"pytorch"`` or ``"onnx"`` (an exported folder, run by ONNX Runtime on the CPU in
            this one process); default: detected from the folder's files.
    """
    settings = training_settings(model_dir)
    columns = TextColumns(
        text_column or settings.get("text_column", "text"),
        text_pair_column or settings.get("text_pair_column"),
        None,
    )
    check_positive_int(batch_size, "--batch-size")
    onnx = resolve_backend(model_dir, backend) == "onnx"
    accelerator = Accelerator(cpu=onnx)
    model, tokenizer = load_onnx_trained(model_dir) if onnx else load_trained(model_dir)
    task = with_threshold(task_for_model(model.config), threshold)
    reader = label_reader({**settings, **({"label_column": label_column} if label_column else {}),
                           **_layout_of(task)})
    ds = load_split(test_file, "test", columns, name="TEST_FILE", label_columns=reader.columns)
    reader.check(ds, "test", test_file, task.labels)
    length = max_length or settings.get("max_length") or min(tokenizer.model_max_length, 512)
    if max_length is not None:
        check_text_room(length, tokenizer, pair=columns.text_pair is not None, flag="max_length")
    # Long texts are read as in training (truncation, head+tail or windows pooled per text).
    long_text = LongText.from_saved(settings, model.config, length, model_dir)
    check_fits(long_text, length, tokenizer, flag="max_length")
    with accelerator.main_process_first():
        ds = tokenize(ds, tokenizer, columns, length, reader.encoder(task.labels), "Tokenizing test data",
                      long_text)
    loader = eval_loader(ds, tokenizer, batch_size)
    # An ONNX session is not a torch model to place or wrap: only the loader is prepared.
    model, loader = (model, accelerator.prepare(loader)) if onnx else accelerator.prepare(model, loader)
    return evaluate_loader(model, loader, accelerator, task, window_pooling=long_text.window_pooling)


def _layout_of(task: Task) -> dict[str, Any]:
    """Label-layout settings implied by the saved model itself (for folders without training_config.json)."""
    if task.problem_type == "regression":
        return {"task": "regression"}
    if task.problem_type == "multi_label_classification":
        return {"multi_label": True}
    return {"task": "classification", "multi_label": False, "label_columns": None}


def with_threshold(task: Task, threshold: Optional[float]) -> Task:
    """``task`` deciding every label at ``threshold`` (multi-label only); ``task`` itself when None.

    Raises:
        UserInputError: a threshold for a model that is not multi-label, or one outside (0, 1).
    """
    if threshold is None:
        return task
    from .task_config import check_threshold

    check_threshold(threshold, task.problem_type == "multi_label_classification")
    task.thresholds = [float(threshold)] * len(task.labels)
    task.threshold_source = f"--threshold {threshold}"
    return task
