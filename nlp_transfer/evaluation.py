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

from .data import TextColumns, label_values, load_split, tokenize
from .errors import UserInputError, check_positive_int
from .long_text import LongText
from .modeling import check_text_room, load_trained, training_settings
from .sampler import eval_loader
from .task import Task, task_for_model
from .windows import check_fits, pool_windows


@torch.inference_mode()
def evaluate_loader(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator, task: Task,
                    desc: str = "Evaluating", window_pooling: Optional[str] = None) -> dict[str, Any]:
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
    """
    was_training = model.training
    model.eval()
    report = task.new_report()
    windows: list[tuple[torch.Tensor, ...]] = []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not accelerator.is_local_main_process):
        references = batch.pop("labels")
        documents = batch.pop("document", None)
        logits = model(**batch).logits
        if documents is not None:
            windows.append(tuple(t.cpu() for t in accelerator.gather_for_metrics((logits, documents, references))))
            continue
        predictions, references = accelerator.gather_for_metrics((task.predictions(logits), references))
        report.add_batch(predictions, references)
    if windows:
        logits, documents, references = (torch.cat(parts) for parts in zip(*windows))
        _, pooled, first = pool_windows(logits, documents, window_pooling or "mean")
        report.add_batch(task.predictions(pooled), references[first])
    model.train(was_training)
    return report.compute()


def evaluate_model(model_dir: str, test_file: str, text_column: Optional[str] = None,
                   text_pair_column: Optional[str] = None, label_column: Optional[str] = None,
                   batch_size: int = 64, max_length: Optional[int] = None) -> dict[str, Any]:
    """Score a trained model folder on a labelled CSV.

    Column names and ``max_length`` default to those the model was trained with
    (``training_config.json``), else ``text`` / ``label`` and the tokenizer's limit. Long texts are
    read as in training (``--long-text``, saved with the model); metrics count texts, not windows.

    Args:
        model_dir: folder written by ``nlp-transfer train`` (or any sequence classifier).
        test_file: CSV with the text and label columns.
        text_column, text_pair_column, label_column: override the saved column names.
        batch_size: rows per forward pass.
        max_length: override the saved truncation length.
    """
    settings = training_settings(model_dir)
    columns = TextColumns(
        text_column or settings.get("text_column", "text"),
        text_pair_column or settings.get("text_pair_column"),
        label_column or settings.get("label_column", "label"),
    )
    check_positive_int(batch_size, "--batch-size")
    accelerator = Accelerator()
    model, tokenizer = load_trained(model_dir)
    task = task_for_model(model.config)
    ds = load_split(test_file, "test", columns, name="TEST_FILE")
    unseen = [v for v in label_values(ds, columns.label, "test", test_file) if v not in task.label2id]
    if unseen:
        raise UserInputError(
            f"test file {test_file!r} has label(s) the model does not know: {', '.join(map(repr, unseen[:5]))}; "
            f"the model's labels are: {', '.join(task.labels)}."
        )
    length = max_length or settings.get("max_length") or min(tokenizer.model_max_length, 512)
    if max_length is not None:
        check_text_room(length, tokenizer, pair=columns.text_pair is not None, flag="max_length")
    # Long texts are read as in training (truncation, head+tail or windows pooled per text).
    long_text = LongText.from_saved(settings, model.config, length, model_dir)
    check_fits(long_text, length, tokenizer, flag="max_length")
    with accelerator.main_process_first():
        ds = tokenize(ds, tokenizer, columns, length, task.label2id, "Tokenizing test data", long_text)
    model, loader = accelerator.prepare(model, eval_loader(ds, tokenizer, batch_size))
    return evaluate_loader(model, loader, accelerator, task, window_pooling=long_text.window_pooling)
