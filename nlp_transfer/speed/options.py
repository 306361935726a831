"""The four speed options behind the :class:`~nlp_transfer.speed.SpeedOption` interface."""

from __future__ import annotations

import contextlib
from typing import Any

from .base import SpeedContext, SpeedOption


class FastCpuDropout(SpeedOption):
    """Dropout masks from 16 random bits per element on the CPU (:mod:`.dropout`)."""

    name = "fast_cpu_dropout"
    effect = ("dropout masks drawn from 16 random bits per element instead of one float each (same rate to 5 "
              "decimals), on the CPU")

    def skip_reason(self, ctx: SpeedContext) -> str | None:
        return None if ctx.device_type == "cpu" else f"training runs on {ctx.device_type}, not the CPU"

    def on_model(self, ctx: SpeedContext) -> dict[str, Any] | str:
        from .dropout import use_cpu_dropout

        swapped = use_cpu_dropout(ctx.model)
        return {"dropout_modules_swapped": swapped} if swapped else "the model has no nn.Dropout modules"

    def undo(self, ctx: SpeedContext) -> None:
        from .dropout import restore_torch_dropout

        restore_torch_dropout(ctx.model)


class ClsOnlyLastLayer(SpeedOption):
    """The last encoder layer computed at the first position only while training (:mod:`.last_layer`)."""

    name = "cls_only_last_layer"
    effect = ("the last encoder layer computes its query, attention output and feed-forward block at the [CLS] "
              "position only while training, the one position the classification head reads")

    def skip_reason(self, ctx: SpeedContext) -> str | None:
        if not ctx.strategy.runs_encoder_in_training:
            return f"--strategy {ctx.strategy.name} does not run the encoder in the training loop"
        if ctx.objective.reads_every_position:
            return f"the {ctx.objective.name} objective reads the last layer at every position"
        return None

    def on_model(self, ctx: SpeedContext) -> dict[str, Any] | str:
        from .last_layer import train_first_position_only

        if train_first_position_only(ctx.model):
            return {}
        return (f"{type(ctx.model).__name__} is not a known first-position classifier (BERT, RoBERTa, XLM-R, "
                "CamemBERT, ELECTRA with eager or SDPA attention)")

    def undo(self, ctx: SpeedContext) -> None:
        from .last_layer import train_full_last_layer

        train_full_last_layer(ctx.model)


class CompactEmbeddings(SpeedOption):
    """AdamW over the word-embedding rows the training data uses (:mod:`.embedding_rows`)."""

    name = "compact_embeddings"
    effect = ("AdamW updates only the word-embedding rows of tokens that occur in the training data; the other "
              "rows get their weight decay in closed form")

    def __init__(self) -> None:
        self.embedding: Any = None

    def skip_reason(self, ctx: SpeedContext) -> str | None:
        if ctx.device_type != "cpu":
            return f"training runs on {ctx.device_type} (the full-table update is cheap there)"
        if ctx.num_processes > 1:
            return f"{ctx.num_processes} processes (the compact table would not be synchronised by DDP)"
        if not ctx.strategy.trains_every_embedding_row:
            return f"--strategy {ctx.strategy.name} does not train the whole embedding table at every step"
        return None

    def on_model(self, ctx: SpeedContext) -> dict[str, Any] | str:
        import torch

        embedding = ctx.model.get_input_embeddings()
        if type(embedding) is not torch.nn.Embedding or embedding.sparse:
            return "the input embedding is not a plain dense nn.Embedding"
        if not embedding.weight.requires_grad:
            return "the input embedding is frozen"
        output = ctx.model.get_output_embeddings() if hasattr(ctx.model, "get_output_embeddings") else None
        if output is not None and output.weight is embedding.weight:
            return "the input embedding is tied to an output layer, so every row trains"
        self.embedding = embedding
        return {}

    def on_param_groups(self, ctx: SpeedContext, groups: list[dict[str, Any]]) -> None:
        from .embedding_rows import train_used_rows, used_token_ids

        embedding, pad = self.embedding, ctx.model.config.pad_token_id
        weight = embedding.weight
        chunks = (chunk.flatten().to_numpy() for ds in ctx.token_datasets
                  for chunk in ds.with_format("arrow")["input_ids"].chunks)
        used = used_token_ids(chunks, embedding.num_embeddings, always=() if pad is None else (pad,))
        rows = train_used_rows(embedding, used)
        for group in groups:
            group["params"] = [rows if p is weight else p for p in group["params"]]

    def on_optimizer(self, ctx: SpeedContext, optimizer: Any) -> None:
        from .embedding_rows import track_decay

        track_decay(self.embedding, optimizer)

    def undo(self, ctx: SpeedContext) -> None:
        from .embedding_rows import train_all_rows

        train_all_rows(self.embedding)

    def report(self) -> dict[str, Any]:
        return {"trained_rows": len(self.embedding.used), "rows": self.embedding.num_embeddings}


class ReuseFreedMemory(SpeedOption):
    """Freed blocks kept in the glibc heap while training (:mod:`.allocator`)."""

    name = "reuse_freed_memory"
    effect = ("large freed blocks stay in the glibc heap during training instead of being unmapped and faulted "
              "in again every step; the process's setting is restored afterwards")

    def skip_reason(self, ctx: SpeedContext) -> str | None:
        from .allocator import available

        return None if available() else "the C library is not glibc"

    def during_fit(self) -> contextlib.AbstractContextManager:
        from .allocator import reuse_freed_memory

        return reuse_freed_memory()
