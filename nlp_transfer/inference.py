"""Predicting with a trained classifier: ``load_classifier`` and the CSV path of ``nlp-transfer predict``.

A :class:`Classifier` applies the preprocessing the model was trained with (truncation at the
training ``max_length``, the text and pair columns of ``training_config.json``), so its outputs
equal ``transformers.pipeline("text-classification", model=DIR)`` called with ``truncation=True``.
A model trained with ``--long-text head-tail`` or ``sliding-window`` reads long texts the same way
here (windows scored and their logits pooled per text: one result per text, in input order);
``pipeline()`` alone would read only the first ``max_length`` tokens.
It is faster because texts are tokenized in one batched call, sorted by length so batches carry
little padding, and run under ``torch.inference_mode``; results come back in input order.

:func:`predict_csv` streams a CSV through the classifier in chunks and writes as it goes, so
memory does not grow with the file. Under ``accelerate launch`` / ``torchrun`` every process
predicts its share of each chunk and the main process writes one file in input order.
"""

from __future__ import annotations

import contextlib
import csv
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .artifacts import check_output_file, filesystem_error
from .csv_files import CsvHeader, check_file, data_rows, read_header, require_columns
from .errors import UserInputError, check_positive_int
from .evaluation import with_threshold
from .modeling import check_text_room, load_trained, position_limit, training_settings
from .predictions import PREDICTION_COLUMNS, output_rows, prediction_columns, top_k_labels  # noqa: F401  (re-exported)
from .task import Task, task_for_model
from .onnx_model import load_onnx_trained, resolve_backend
from .long_text import LongText
from .windows import check_fits, encode_texts, pool_windows

QUANTIZE_CHOICES = ("int8",)


@dataclass
class Classifier:
    """A trained sequence classifier with the preprocessing it was trained with.

    Build one with :func:`load_classifier`.

    Attributes:
        model: the ``*ForSequenceClassification`` model, in eval mode.
        tokenizer: its fast tokenizer.
        labels: label names in the model's id order (the columns of :meth:`predict_proba`).
        max_length: texts are cut at this many tokens, as in training.
        text_column, text_pair_column: the CSV columns the model was trained on.
        device: where the model runs.
        task: the model's :class:`~nlp_transfer.task.Task` (how scores become answers: the best label,
            every label at or above its threshold (multi-label), or the value (regression)).
        label_separator: joins a multi-label answer in the CSV written by :func:`predict_csv`.
        long_text: how texts longer than ``max_length`` are read (as in training).
    """

    model: Any
    tokenizer: Any
    labels: list[str]
    max_length: int
    text_column: str = "text"
    text_pair_column: Optional[str] = None
    device: torch.device = torch.device("cpu")
    task: Optional[Task] = None
    label_separator: str = ","
    long_text: LongText = LongText()

    def __post_init__(self) -> None:
        if self.task is None:
            self.task = task_for_model(self.model.config)

    def predict_proba(self, texts: Sequence[str] | str, text_pairs: Optional[Sequence[str]] = None,
                      batch_size: int = 64) -> np.ndarray:
        """Scores as ``pipeline()`` computes them, shape ``(len(texts), len(self.labels))``, rows in input order:
        softmax probabilities, per-label sigmoid probabilities (multi-label) or the value (regression, one column).

        Args:
            texts: the texts (a single string counts as one text). Empty strings are predicted too.
            text_pairs: second texts, one per text, for a model trained on sentence pairs.
            batch_size: texts per forward pass.
        """
        texts = _as_texts(texts, "texts")
        pairs = None if text_pairs is None else _as_texts(text_pairs, "text_pairs")
        if pairs is not None and len(pairs) != len(texts):
            raise UserInputError(f"got {len(texts)} texts but {len(pairs)} text_pairs; pass one pair per text.")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise UserInputError(f"batch_size must be a positive integer; got {batch_size!r}.")
        if not texts:
            return np.empty((0, len(self.labels)), dtype=np.float32)
        # Tokenize everything once in one batched (Rust) call, then pad batch by batch. Longest
        # first, so each batch pads to a length close to its own texts and an out-of-memory error
        # shows at once. With sliding windows a text gives several rows, pooled per text at the end.
        encoded = encode_texts(self.tokenizer, texts, pairs, self.max_length, self.long_text)
        features = encoded.features
        order = np.argsort(-np.asarray([len(ids) for ids in features["input_ids"]]), kind="stable")
        logits = torch.empty((len(order), len(self.labels)), dtype=torch.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                batch = self.tokenizer.pad(
                    {key: [values[i] for i in rows] for key, values in features.items()}, return_tensors="pt"
                ).to(self.device)
                logits[torch.from_numpy(rows)] = self.model(**batch).logits.float().cpu()
            if self.long_text.windows:
                _, logits, _ = pool_windows(logits, torch.tensor(encoded.documents), self.long_text.window_pooling)
            return self._normalise(logits).numpy()

    def predict(self, texts: Sequence[str] | str, text_pairs: Optional[Sequence[str]] = None, top_k: int = 1,
                batch_size: int = 64) -> list[Any]:
        """Predictions in input order, as the model's task answers.

        Single-label: one ``{"label", "score"}`` dict per text. Multi-label: per text, the list of
        ``{"label", "score"}`` of every label whose probability reaches its threshold (saved in the
        model's ``config.json``), best first, possibly empty. Regression: the predicted value per text.

        Args:
            texts: the texts (a single string counts as one text).
            text_pairs: second texts, one per text, for sentence-pair models.
            top_k: more than 1 gives instead the ``top_k`` most likely labels per text, best first
                (capped at the number of labels), whatever the thresholds; not for regression.
            batch_size: texts per forward pass.
        """
        self.check_top_k(top_k)
        probs = self.predict_proba(texts, text_pairs, batch_size)
        if top_k == 1:
            return self.task.decide(probs)
        ranked, scores = top_k_labels(probs, top_k)
        return [[{"label": self.labels[i], "score": float(s)} for i, s in zip(ids, row)]
                for ids, row in zip(ranked, scores)]

    def check_top_k(self, top_k: Any) -> None:
        """Refuse a ``top_k`` that is not a positive integer, or above 1 for a regression model."""
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise UserInputError(f"top_k must be a positive integer; got {top_k!r}.")
        if top_k > 1 and self.task.problem_type == "regression":
            raise UserInputError("top_k applies to classifiers; a regression model predicts one value per text.")

    def _normalise(self, logits: torch.Tensor) -> torch.Tensor:
        # The same choice pipeline("text-classification") makes, so scores agree with it.
        if self.model.config.problem_type is None and len(self.labels) == 1:
            return torch.sigmoid(logits)
        return self.task.probabilities(logits)


def _as_texts(values: Sequence[str] | str, name: str) -> list[str]:
    if isinstance(values, str):
        return [values]
    values = list(values)
    bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
    if bad is not None:
        raise UserInputError(
            f"{name}[{bad}] is {type(values[bad]).__name__} ({values[bad]!r}), not a string; "
            "pass strings (use '' for a missing text)."
        )
    return values


def load_classifier(path_or_repo_id: str | os.PathLike, device: Optional[str | torch.device] = None,
                    quantize: Optional[str] = None, threshold: Optional[float] = None,
                    backend: Optional[str] = None) -> Classifier:
    """Load a trained classifier (a local folder or a Hub repo id) ready to predict.

    Args:
        path_or_repo_id: a folder written by ``nlp-transfer train`` or any ``*ForSequenceClassification``
            model with a fast tokenizer.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default: the GPU when there is one, else the CPU.
        quantize: ``"int8"`` converts the Linear layers to dynamically quantized int8 (CPU only):
            faster on CPU at a small accuracy cost. Off by default.
        threshold: multi-label models only: decide every label at this probability instead of
            the per-label thresholds saved in ``config.json``.
        backend: ``"pytorch"`` or ``"onnx"`` (a folder from ``nlp-transfer export --format onnx``, run
            by ONNX Runtime on the CPU); default: ``"onnx"`` for a folder with only ``model.onnx``.

    Raises:
        UserInputError: not a sequence classifier, unknown ``quantize``, int8 on a GPU, or a
            ``threshold`` for a model that is not multi-label.
    """
    name = str(path_or_repo_id)
    onnx = resolve_backend(name, backend) == "onnx"
    device = _device_for(device, quantize, onnx)
    model, tokenizer = load_onnx_trained(name) if onnx else load_trained(name)
    task = with_threshold(task_for_model(model.config), threshold)
    settings = training_settings(name)
    if quantize == "int8":
        model = _quantize_int8(model)
    model.to(device)
    id2label = {int(i): str(label) for i, label in model.config.id2label.items()}
    max_length = settings.get("max_length") or position_limit(model.config, tokenizer)
    if not isinstance(max_length, int) or isinstance(max_length, bool):
        raise UserInputError(f"the max_length saved in {name!r}'s training_config.json is {max_length!r}, not a number of "
                             "tokens; fix the file or re-run the training that wrote it.")
    text_pair_column = settings.get("text_pair_column")
    check_text_room(max_length, tokenizer, pair=text_pair_column is not None, flag="the saved max_length")
    long_text = LongText.from_saved(settings, model.config, max_length, name)
    check_fits(long_text, max_length, tokenizer, flag="the saved max_length")
    return Classifier(
        model=model,
        tokenizer=tokenizer,
        labels=[id2label[i] for i in range(len(id2label))],
        max_length=max_length,
        text_column=settings.get("text_column") or "text",
        text_pair_column=text_pair_column,
        device=device,
        task=task,
        label_separator=settings.get("label_separator") or ",",
        long_text=long_text,
    )


def _device_for(device: Optional[str | torch.device], quantize: Optional[str], onnx: bool) -> torch.device:
    """Where :func:`load_classifier` runs the model: the asked device, else the GPU when there is one
    (int8 and ONNX run on the CPU). Refuses combinations that cannot run, in one sentence."""
    if onnx and quantize is not None:
        raise UserInputError("quantize applies to the PyTorch backend; quantize an ONNX model when exporting it "
                             "(nlp-transfer export --quantize int8).")
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise UserInputError(f"quantize {quantize!r} is unknown; choose {', '.join(QUANTIZE_CHOICES)} or leave it off.")
    if device is None:
        device = "cuda" if torch.cuda.is_available() and quantize is None and not onnx else "cpu"
    device = torch.device(device)
    if quantize is not None and device.type != "cpu":
        raise UserInputError(f"quantize={quantize!r} runs on the CPU only; pass device='cpu' or drop quantize.")
    if onnx and device.type != "cpu":
        raise UserInputError(f"the ONNX backend runs on the CPU; pass device='cpu' (got {str(device)!r}).")
    return device


def _quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """The model with its Linear layers dynamically quantized to int8 (CPU).

    torch 2.13 marks ``torch.ao.quantization`` as deprecated in favour of torchao, but torchao's
    int8 path targets GPUs and is not a dependency here; the CPU kernels of ``quantize_dynamic`` are
    what makes int8 faster on a CPU. Only its two deprecation warnings are silenced, and only
    around this call: they tell the user nothing they can act on.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
                                category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def _chunks(rows: Iterator[list[str]], size: int) -> Iterator[list[list[str]]]:
    """``rows`` in lists of ``size`` (the last one shorter)."""
    chunk: list[list[str]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class _Job:
    """What one ``predict_csv`` call reads, predicts and writes."""

    clf: Classifier
    source: Path
    header: CsvHeader
    output: Path
    added: list[str]
    text_at: int
    pair_at: Optional[int]
    top_k: int
    batch_size: int
    chunk_size: int


def predict_csv(model: str, input_file: str, output_file: str, text_column: Optional[str] = None,
                text_pair_column: Optional[str] = None, top_k: int = 1, batch_size: int = 64,
                quantize: Optional[str] = None, chunk_size: int = 4096, progress: bool = True,
                threshold: Optional[float] = None, backend: Optional[str] = None) -> dict[str, Any]:
    """Predict every row of a CSV and write it, with its prediction, to ``output_file``.

    The output keeps every named input column (an unnamed, empty column, e.g. from a trailing comma,
    is left out) and appends :func:`prediction_columns`. It is written to a hidden
    ``.<name>.incomplete`` file next to ``output_file`` and renamed at the end, so a failed run
    leaves no partial file (nor the folders it created). Rows are read ``chunk_size`` at a time
    (constant memory). Under a multi-process launch each process predicts its share of every chunk
    and the main process writes.

    Args:
        model: a trained classifier folder or Hub repo id.
        input_file: the CSV to predict.
        output_file: where the predictions CSV goes (replaced if it exists; never the input).
        text_column, text_pair_column: override the columns the model was trained on.
        top_k: also write the ``top_k`` best labels and their probabilities.
        batch_size: texts per forward pass.
        quantize: ``"int8"`` for dynamic int8 quantization on the CPU.
        chunk_size: rows read at a time.
        progress: show a progress bar (rows/s) on the main process.
        threshold: multi-label only: one threshold for every label instead of the saved ones.
        backend: ``"pytorch"`` or ``"onnx"``; default: detected from the folder (see :func:`load_classifier`).

    Returns:
        ``{"output", "rows", "processes", "seconds", "rows_per_second"}``.
    """
    from accelerate import PartialState

    for name, value in (("--top-k", top_k), ("--batch-size", batch_size), ("chunk_size", chunk_size)):
        check_positive_int(value, name)
    path = check_file(input_file, "input")
    header = read_header(path, "input")
    # Nor may the output replace a file of the model folder.
    out = check_output_file(output_file, [path, *(p for p in Path(model).glob("*") if p.is_file())])

    # The columns default to those saved with the model, so it loads before the header is checked.
    on_cpu = quantize is not None or resolve_backend(model, backend) == "onnx" or not torch.cuda.is_available()
    state = PartialState(cpu=on_cpu)
    clf = load_classifier(model, device=state.device, quantize=quantize, threshold=threshold, backend=backend)
    text_column = text_column or clf.text_column
    text_pair_column = text_pair_column or clf.text_pair_column
    added = _checked_columns(clf, header, path, text_column, text_pair_column, top_k)
    job = _Job(clf, path, header, out, added, header.named.index(text_column),
               header.named.index(text_pair_column) if text_pair_column else None, top_k, batch_size,
               max(chunk_size, batch_size * state.num_processes))
    started = time.perf_counter()
    rows_done = _write_predictions(job, state, progress)
    seconds = time.perf_counter() - started
    return {"output": str(out), "rows": rows_done, "processes": state.num_processes, "seconds": round(seconds, 3),
            "rows_per_second": round(rows_done / seconds, 1) if seconds > 0 else None}


def _checked_columns(clf: Classifier, header: Any, path: Path, text_column: str, text_pair_column: Optional[str],
                     top_k: int) -> list[str]:
    """The columns predict appends, after checking that the input has the text columns and none of those."""
    require_columns(header, {text_column: "--text-column", **({text_pair_column: "--text-pair-column"} if text_pair_column else {})},
                    "input", path)
    clf.check_top_k(top_k)
    added = prediction_columns(min(top_k, len(clf.labels)), clf.task.problem_type)
    clash = [c for c in added if c in header.named]
    if clash:
        raise UserInputError(
            f"input file {str(path)!r} already has column(s) {', '.join(map(repr, clash))}, which predict adds; "
            "rename or drop them (is this already a predictions file?)."
        )
    return added


def _write_predictions(job: _Job, state: Any, progress: bool) -> int:
    """Stream ``job.source`` through the classifier into ``job.output``, all or nothing; return the rows."""
    from accelerate.utils import gather_object

    out = job.output
    created = [d for d in (out.parent, *out.parent.parents) if not d.exists()] if state.is_main_process else []
    staging = out.with_name(f".{out.name}.incomplete")
    rows_done = 0
    try:
        if state.is_main_process:
            out.parent.mkdir(parents=True, exist_ok=True)
        # Only the main process writes; the others predict their shares and hand them over.
        sink = staging.open("w", encoding="utf-8", newline="") if state.is_main_process else contextlib.nullcontext()
        with data_rows(job.source, job.header) as rows, sink as dst_file:
            dst = csv.writer(dst_file) if dst_file is not None else None
            if dst is not None:
                dst.writerow([*job.header.named, *job.added])
            bar = tqdm(desc="Predicting", unit=" rows", disable=not (progress and state.is_main_process))
            for chunk in _chunks(rows, job.chunk_size):
                with state.split_between_processes(chunk) as share:
                    probs = job.clf.predict_proba([r[job.text_at] for r in share],
                                                  None if job.pair_at is None else [r[job.pair_at] for r in share],
                                                  job.batch_size)
                parts = gather_object([probs])
                if dst is not None:
                    dst.writerows(output_rows(job.clf, chunk, np.concatenate(parts), job.top_k))
                rows_done += len(chunk)
                bar.update(len(chunk))
            bar.close()
        if state.is_main_process:
            staging.replace(out)
    except BaseException as err:
        if state.is_main_process:
            staging.unlink(missing_ok=True)
            for folder in created:  # deepest first
                with contextlib.suppress(OSError):
                    folder.rmdir()
        if isinstance(err, OSError):
            read = getattr(err, "filename", None) == str(job.source)
            raise filesystem_error(err, job.source if read else out, "read" if read else "write") from None
        raise
    return rows_done
