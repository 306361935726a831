"""Train only the word-embedding rows that the training data uses.

The word embedding is half of the default encoder (30522 × 384 = 11.7 M of 22.7 M parameters), but
a fine-tuning set uses a few thousand of its rows. With a plain ``nn.Embedding`` every step still
allocates and zeroes a gradient for the whole table, reads all of it for the gradient norm and
runs AdamW over all of it: ~9% of a CPU step for rows that cannot change. A row whose token never
occurs in the training data gets a zero gradient at every step, so AdamW's moments stay zero and
its only change is weight decay, ``w ← w·(1 - lr·wd)``.

:func:`train_used_rows` therefore gives the optimizer a compact table of the used rows (every
token id of the training set, plus padding) and leaves the rest out of backward, the gradient norm
and AdamW. The unused rows get their decay in closed form, ``initial · Π(1 - lr_t·wd)``, whenever
the full table is read: in evaluation mode and by ``state_dict()`` (checkpoints, the best epoch's
copy, the saved model). The product is kept in the optimizer state, so checkpoints carry it. What
is learned is AdamW's update on every row, the same up to float rounding (tested); the saved
folder is the standard one.

It is used for single-process CPU training only: under DDP the compact table would not be
synchronised, and on a GPU the full-table update costs little.
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SCALE_KEY = "unused_row_scale"  # in the optimizer state of the compact table: Π(1 - lr_t·wd) so far


class _UsedRowsEmbedding(nn.Embedding):
    """An ``nn.Embedding`` that, in training mode, looks tokens up in a compact table of used rows.

    Set up by :func:`train_used_rows`; ``weight`` keeps its name and shape and is brought up to date
    (:meth:`sync`) before anything reads it.
    """

    rows: nn.Parameter  # (used, dim), what the optimizer updates; not registered, so not in state_dict()
    used: torch.Tensor  # sorted token ids of the rows
    compact: torch.Tensor  # token id -> row of ``rows``, -1 where unused
    compact_padding: Optional[int]  # the padding row's place in ``rows``
    initial: torch.Tensor  # the table when training started
    optimizer: Optional[torch.optim.Optimizer]
    synced: tuple[int, float]

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training:
            self.sync()
            return super().forward(input)
        index = self.compact[input]
        if index.numel() and int(index.min()) < 0:
            unknown = torch.unique(input[index < 0])[:10].tolist()
            raise RuntimeError(f"token ids {unknown} are not among the rows prepared for training")
        return F.embedding(index, self.rows, self.compact_padding, None, self.norm_type, self.scale_grad_by_freq,
                           False)

    def scale(self) -> float:
        """``Π(1 - lr_t·wd)`` over the optimizer steps taken so far: the factor of every unused row."""
        if self.optimizer is None:
            return 1.0
        return float(self.optimizer.state.get(self.rows, {}).get(SCALE_KEY, 1.0))

    def sync(self) -> None:
        """Write the trained rows and the decayed unused rows into ``weight``."""
        version = (self.rows._version, self.scale())
        if version == self.synced:
            return
        with torch.no_grad():
            self.weight.copy_(self.initial).mul_(version[1])
            self.weight.index_copy_(0, self.used, self.rows)
        self.synced = (self.rows._version, version[1])

    def gather(self) -> None:
        """Take the rows from ``weight`` (after ``load_state_dict``: a resumed checkpoint)."""
        with torch.no_grad():
            self.rows.copy_(self.weight.index_select(0, self.used))
        self.synced = (self.rows._version, self.scale())


def _sync_before_reading(module, prefix, keep_vars) -> None:
    module.sync()


def _gather_after_loading(module, incompatible_keys) -> None:
    module.gather()


def used_token_ids(token_lists: Iterable[np.ndarray], vocab_size: int, always: Iterable[int] = ()) -> torch.Tensor:
    """Sorted unique ids in ``token_lists`` plus ``always``; raises if one is outside the vocabulary."""
    seen = np.zeros(vocab_size, dtype=bool)
    for ids in token_lists:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise ValueError(f"token ids outside the embedding's {vocab_size} rows")
        seen[ids] = True
    for token in always:
        if token is not None:
            seen[token] = True
    return torch.from_numpy(np.flatnonzero(seen))


def train_used_rows(embedding: nn.Embedding, used: torch.Tensor) -> nn.Parameter:
    """Train only rows ``used`` of ``embedding``; returns the compact table to give the optimizer in
    place of ``embedding.weight``. Call :func:`track_decay` once the optimizer exists."""
    if type(embedding) is not nn.Embedding or embedding.max_norm is not None or embedding.sparse:
        raise TypeError(f"expected a plain nn.Embedding, got {embedding!r}")
    weight = embedding.weight
    if embedding.padding_idx is not None:  # the padding row is looked up (and kept at zero gradient) too
        used = torch.unique(torch.cat([used, torch.tensor([embedding.padding_idx])]))
    embedding.__class__ = _UsedRowsEmbedding
    embedding.used = used.to(weight.device)
    embedding.compact = torch.full((weight.shape[0],), -1, dtype=torch.long, device=weight.device)
    embedding.compact[embedding.used] = torch.arange(len(used), device=weight.device)
    embedding.compact_padding = None if embedding.padding_idx is None else int(embedding.compact[embedding.padding_idx])
    embedding.initial = weight.detach().clone()
    embedding.optimizer = None
    # Plain attribute, not a registered parameter: the module's state_dict keeps its usual keys.
    object.__setattr__(embedding, "rows", nn.Parameter(weight.detach().index_select(0, embedding.used)))
    embedding.synced = (embedding.rows._version, 1.0)
    weight.requires_grad_(False)
    embedding._nlp_transfer_hooks = [
        embedding.register_state_dict_pre_hook(_sync_before_reading),
        embedding.register_load_state_dict_post_hook(_gather_after_loading),
    ]
    return embedding.rows


def track_decay(embedding: nn.Embedding, optimizer: torch.optim.Optimizer) -> None:
    """Count the weight decay that ``optimizer`` applies to the unused rows, step by step."""
    embedding.optimizer = optimizer
    rows = embedding.rows

    def after_step(opt, args, kwargs) -> None:
        state = opt.state.get(rows)
        if not state:  # AdamW skipped it: no gradient yet
            return
        # Looked up each time: loading a checkpoint replaces the group dicts.
        group = next(g for g in opt.param_groups if any(p is rows for p in g["params"]))
        state[SCALE_KEY] = float(state.get(SCALE_KEY, 1.0)) * (1.0 - group["lr"] * group["weight_decay"])

    embedding._nlp_transfer_hooks.append(optimizer.register_step_post_hook(after_step))


def train_all_rows(embedding: nn.Embedding) -> None:
    """Write the trained rows back and make ``embedding`` a plain ``nn.Embedding`` again."""
    if not isinstance(embedding, _UsedRowsEmbedding):
        return
    embedding.sync()
    for hook in embedding._nlp_transfer_hooks:
        hook.remove()
    for name in ("rows", "used", "compact", "compact_padding", "initial", "optimizer", "synced",
                 "_nlp_transfer_hooks"):
        embedding.__dict__.pop(name, None)
    embedding.__class__ = nn.Embedding
    embedding.weight.requires_grad_(True)
