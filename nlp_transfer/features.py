"""Feature extraction: encode each text once, cache the vectors on disk, train the head on them.

With the encoder frozen, its output for a text never changes, so the ``feature-extraction``
strategy runs the encoder once per text (eval mode, no dropout, no graph) and stores its output at
the first position as a ``datasets`` Arrow folder, one per model row (with sliding windows: per
window): the [CLS] vector, or with ``--pooling mean`` the mean-pooled vector that the appended
pooling layer (:mod:`nlp_transfer.pooling`) puts there. The cache key is the content of what
determines the vectors: the encoder's weights (the pooling layer's included) and architecture
settings, the token ids of every row (so the windows), the ``max_length`` and the pooling. A second epoch, a second run with another seed or learning rate,
or the validation pass all read the cache; changing the model, the data or the length re-encodes.

The head trained on the cache is the model's own: for BERT the pooler (dense + tanh on [CLS])
then dropout and the classifier, exactly the path ``BertForSequenceClassification`` takes. The
saved folder is therefore the ordinary classifier, and ``pipeline()`` reproduces its predictions.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import xxhash
from datasets import Dataset, load_from_disk
from torch import nn
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding
from transformers.modeling_outputs import SequenceClassifierOutput

from .data import PreparedData, column
from .errors import UserInputError
from .sampler import training_loader
from . import small_data
from .layers import encoder_of, layer_groups

logger = logging.getLogger(__name__)

# Bump when the way features are computed or stored changes: old cache entries then stop matching.
CACHE_FORMAT = 2  # 2: mean pooling is the pooling layer's layer-normalised mean
# Inputs the encoder reads; together with the weights they determine its output.
_INPUT_COLUMNS = ("input_ids", "token_type_ids", "attention_mask")
# Config entries that describe the head or the file, not the encoder's computation.
_HEAD_CONFIG_KEYS = {
    "id2label", "label2id", "num_labels", "problem_type", "architectures", "_name_or_path",
    "transformers_version", "dtype", "torch_dtype", "classifier_dropout",
}


def default_cache_dir() -> Path:
    """``nlp_transfer_features/`` inside the ``datasets`` cache (honours ``HF_DATASETS_CACHE``)."""
    import datasets.config

    return Path(datasets.config.HF_DATASETS_CACHE) / "nlp_transfer_features"


@dataclass
class CacheStats:
    """What the feature cache did during a run (reported in ``training_summary.json``)."""

    directory: str
    hits: int = 0
    misses: int = 0
    rows_encoded: int = 0
    encode_seconds: float = 0.0


class FeatureHead(nn.Module):
    """The task layers of a sequence classifier, fed cached encoder vectors instead of token ids.

    Args:
        classifier_model: a ``*ForSequenceClassification`` model whose encoder is frozen. It is
            kept whole (and is what gets saved); only its task layers run here.
    """

    def __init__(self, classifier_model: nn.Module):
        super().__init__()
        self.classifier_model = classifier_model
        self._has_pooler = getattr(encoder_of(classifier_model), "pooler", None) is not None
        if not self._has_pooler and isinstance(getattr(classifier_model, "classifier", None), nn.Linear):
            raise UserInputError(
                f"--strategy feature-extraction does not know the head of {type(classifier_model).__name__}; it supports "
                "BERT-style (pooler + classifier) and RoBERTa-style (classification head on [CLS]) models. "
                "Use --strategy freeze with --freeze-layers set to the model's depth instead."
            )

    def forward(self, features: torch.Tensor) -> SequenceClassifierOutput:
        """Logits from [CLS] vectors of shape ``(batch, hidden)`` (the objective computes the loss)."""
        model = self.classifier_model
        sequence = features.unsqueeze(1)  # a one-token "sequence": both head kinds read position 0
        if self._has_pooler:
            logits = model.classifier(model.dropout(encoder_of(model).pooler(sequence)))
        else:
            logits = model.classifier(sequence)
        return SequenceClassifierOutput(logits=logits)


def _update_with_array(h: Any, values: np.ndarray) -> None:
    h.update(str(values.dtype).encode())
    h.update(np.ascontiguousarray(values).data)


def model_fingerprint(classifier_model: nn.Module) -> str:
    """Hash of what makes the encoder's outputs: its embedding and layer weights (a pooling layer's too) and config.

    The head (pooler, classifier) and the label names are left out: they do not change the features.
    """
    h = xxhash.xxh3_128()
    settings = {k: v for k, v in encoder_of(classifier_model).config.to_dict().items() if k not in _HEAD_CONFIG_KEYS}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    groups = layer_groups(classifier_model)
    for params in (groups.embeddings, *groups.layers, groups.fixed):
        for p in params:
            h.update(str(tuple(p.shape)).encode())
            _update_with_array(h, p.detach().to("cpu").contiguous().view(torch.uint8).numpy())
    return h.hexdigest()


def data_fingerprint(ds: Dataset) -> str:
    """Hash of the token ids (and segment ids, masks) of every row, in order."""
    h = xxhash.xxh3_128()
    h.update(str(ds.num_rows).encode())
    for name in _INPUT_COLUMNS:
        if name not in ds.column_names:
            continue
        col = column(ds, name)
        h.update(name.encode())
        _update_with_array(h, pc.list_value_length(col).to_numpy(zero_copy_only=False))
        _update_with_array(h, pc.list_flatten(col).to_numpy(zero_copy_only=False))
    return h.hexdigest()


def cache_key(model_hash: str, data_hash: str, max_length: int, pooling: str) -> str:
    """The folder name of one cached split."""
    h = xxhash.xxh3_128()
    h.update(json.dumps([CACHE_FORMAT, model_hash, data_hash, max_length, pooling]).encode())
    return h.hexdigest()


def _check_pooling(classifier_model: nn.Module, pooling: str) -> None:
    from .pooling import POOLINGS, mean_pooling_layer

    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}")
    if (pooling == "mean") != (mean_pooling_layer(classifier_model) is not None):
        carried = "ends" if pooling == "cls" else "does not end"
        raise ValueError(f"pooling {pooling!r} asked for, but the model {carried} in a mean-pooling layer "
                         "(nlp_transfer.pooling.apply_pooling gives it the pooling)")


@torch.inference_mode()
def encode(classifier_model: nn.Module, ds: Dataset, tokenizer: Any, pooling: str = "cls",
           batch_size: int = 64, device: Any = "cpu") -> np.ndarray:
    """Run the frozen encoder over every row of a tokenized dataset; one vector per row, in row order.

    Args:
        classifier_model: the classifier whose encoder produces the vectors.
        ds: tokenized rows (``input_ids`` … and ``length``).
        tokenizer: pads the batches.
        pooling: ``cls`` or ``mean``: the pooling the model carries (checked; ``mean`` means it ends in
            the pooling layer of :mod:`nlp_transfer.pooling`, whose output at the first position is read).
        batch_size: rows per forward pass.
        device: where the encoder runs.
    """
    _check_pooling(classifier_model, pooling)
    encoder = encoder_of(classifier_model)
    was_training = encoder.training
    encoder.eval()
    order = np.argsort(-column(ds, "length").to_numpy(), kind="stable")  # longest first: little padding
    inputs = ds.select_columns([c for c in _INPUT_COLUMNS if c in ds.column_names])
    collate = DataCollatorWithPadding(tokenizer)
    out: Optional[np.ndarray] = None
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = {k: v.to(device) for k, v in collate(inputs.select(rows).to_list()).items()}
        hidden = encoder(**batch).last_hidden_state
        vectors = hidden[:, 0].float().cpu().numpy()
        if out is None:
            out = np.empty((ds.num_rows, vectors.shape[1]), dtype=np.float32)
        out[rows] = vectors
    encoder.train(was_training)
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


def _to_dataset(vectors: np.ndarray) -> Dataset:
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    return Dataset(pa.table({"features": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])}))


def cached_features(classifier_model: nn.Module, ds: Dataset, tokenizer: Any, max_length: int, pooling: str,
                    cache_dir: str | Path, batch_size: int = 64, device: Any = "cpu",
                    stats: Optional[CacheStats] = None, model_hash: Optional[str] = None) -> Dataset:
    """The encoder vectors of ``ds`` from the cache, computing and storing them on a miss.

    Args:
        classifier_model, ds, tokenizer, pooling, batch_size, device: as for :func:`encode`.
        max_length: the truncation length the rows were tokenized with (part of the key).
        cache_dir: folder holding one ``datasets`` folder per key.
        stats: updated with the hit or miss.
        model_hash: :func:`model_fingerprint` of the model, when already computed.

    Returns:
        A memory-mapped ``Dataset`` with one ``features`` column, row-aligned with ``ds``.
    """
    key = cache_key(model_hash or model_fingerprint(classifier_model), data_fingerprint(ds), max_length, pooling)
    path = Path(cache_dir) / key
    if (path / "state.json").is_file():
        cached = load_from_disk(str(path))
        if cached.num_rows == ds.num_rows:
            if stats is not None:
                stats.hits += 1
            return cached
    start = time.perf_counter()
    vectors = encode(classifier_model, ds, tokenizer, pooling, batch_size, device)
    if stats is not None:
        stats.encode_seconds += time.perf_counter() - start
    staging = path.with_name(f".{key}.{uuid.uuid4().hex[:8]}.incomplete")
    _to_dataset(vectors).save_to_disk(str(staging))
    (staging / "nlp_transfer_features.json").write_text(
        json.dumps({"format": CACHE_FORMAT, "rows": ds.num_rows, "max_length": max_length, "pooling": pooling}) + "\n",
        encoding="utf-8",
    )
    try:
        staging.rename(path)
    except OSError:  # another process stored the same key first; theirs is identical
        shutil.rmtree(staging, ignore_errors=True)
    if stats is not None:
        stats.misses += 1
        stats.rows_encoded += ds.num_rows
    return load_from_disk(str(path))


def _with_labels(features: Dataset, ds: Dataset, documents: bool = False) -> Dataset:
    # Labels come from the current data, not the cache: the same texts may be labelled differently.
    # Class ids, 0/1 rows (multi-label) or numbers (regression), with the type the tokenized data has.
    features = features.add_column("labels", column(ds, "labels").to_pylist(), feature=ds.features["labels"])
    if documents and "document" in ds.column_names:  # sliding windows: scoring pools them per text
        features = features.add_column("document", column(ds, "document").to_pylist())
    return features.with_format("torch")


@dataclass
class FeatureData:
    """What :func:`feature_loaders` builds: the head to train, its loaders, the cached splits, cache stats."""

    head: FeatureHead
    train_loader: DataLoader
    val_loader: Optional[DataLoader]
    stats: CacheStats
    train: Dataset  # cached vectors with labels (torch format)
    validation: Optional[Dataset]


def feature_loaders(model: nn.Module, data: PreparedData, tokenizer: Any, config: Any, device: Any,
                    processes: int = 1) -> FeatureData:
    """Wrap ``model`` in its :class:`FeatureHead` and build loaders over cached train/validation features.

    Args:
        model: the classifier with its encoder frozen (``strategies.apply_strategy``).
        data: the tokenized splits.
        tokenizer: pads batches for the encoder.
        config: the run's :class:`TrainConfig` (pooling, max_length, batch sizes, seed, cache folder, head solver).
        device: where the encoder runs on a cache miss.
        processes: training processes (the small-data step floor counts each one's steps).

    Returns:
        The head, the shuffled training loader (without batches under ``--head-solver lbfgs``: the head is
        fit at the epoch's end), the validation loader, the cached splits and the cache stats.
    """
    head = FeatureHead(model)
    model.to(device)
    cache_dir = Path(config.feature_cache_dir) if config.feature_cache_dir else default_cache_dir()
    stats = CacheStats(directory=str(cache_dir))
    model_hash = model_fingerprint(model)
    splits = {}
    for name, ds in (("train", data.train), ("validation", data.validation)):
        if ds is None:  # the small-data policy trains on every row
            continue
        features = cached_features(model, ds, tokenizer, config.max_length, config.pooling, cache_dir,
                                   config.eval_batch_size, device, stats, model_hash)
        splits[name] = _with_labels(features, ds, documents=name == "validation")
    if stats.rows_encoded:
        logger.info("encoded %d texts once; features cached in %s", stats.rows_encoded, cache_dir)
    else:
        logger.info("all features read from the cache in %s (no encoder passes)", cache_dir)
    train = splits["train"]
    if getattr(config, "head_solver", None) == "lbfgs":
        train_loader = no_steps(train)
        if data.small_data is not None:  # one fit to convergence: no optimizer steps to add
            data.small_data.min_steps = 0
    else:  # a plain shuffle whose order depends only on (seed, epoch), so a resumed run sees the same batches
        passes = small_data.passes_per_epoch(config, train.num_rows, data.small_data, processes)
        train_loader = training_loader(train, np.zeros(train.num_rows), config.batch_size, config.seed,
                                       group_by_length=False, passes=passes)
    val_loader = DataLoader(splits["validation"], batch_size=config.eval_batch_size, shuffle=False) \
        if "validation" in splits else None
    return FeatureData(head, train_loader, val_loader, stats, train, splits.get("validation"))


def stats_dict(stats: CacheStats) -> dict[str, Any]:
    """``CacheStats`` as JSON-ready values."""
    return asdict(stats)


def no_steps(dataset: Dataset) -> DataLoader:
    """A training loader without batches: the head is fit at the epoch's end (``--head-solver lbfgs``), not by steps."""
    return training_loader(dataset.select([]), np.zeros(0), 1, 0, group_by_length=False)


def fit_head_on_cache(head: FeatureHead, train: Dataset, validation: Optional[Dataset], config: Any,
                      accelerator: Any) -> dict[str, Any]:
    """Fit the head as a logistic regression on the cached vectors, its L2 strength picked by ``--metric-for-best-model``.

    Args:
        head: the :class:`FeatureHead` the run trains (changed in place).
        train, validation: the cached-feature splits (``features`` and ``labels`` columns, torch format).
        config: the run's settings (``metric_for_best_model``).
        accelerator: the run's accelerator.

    Returns:
        The fit's record for the epoch's history (:func:`nlp_transfer.linear_head.fit_on_features`).
    """
    from .linear_head import fit_on_features
    from .metrics import compute_report

    classes = head.classifier_model.config.num_labels
    names = [str(i) for i in range(classes)]

    def score(predicted: list[int], true: list[int]) -> float:
        return compute_report(predicted, true, names)[config.metric_for_best_model]

    def rows(ds: Optional[Dataset]) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        if ds is None or ds.num_rows == 0:
            return None
        everything = ds.select_columns(["features", "labels"])[:]  # torch format: one tensor per column
        return everything["features"], everything["labels"]

    record = fit_on_features(head, rows(train), rows(validation), classes, score, accelerator)
    if accelerator.is_main_process:
        tried = ", ".join(f"{t['c']:g}: {t['score']:.4f}" for t in record["grid"] if t["score"] is not None)
        logger.info("head fit by L-BFGS logistic regression (C=%g%s)", record["c"],
                    f"; {config.metric_for_best_model} by C (cross-validation and validation rows): {tried}" if tried
                    else ", too few rows to pick C")
    return record
