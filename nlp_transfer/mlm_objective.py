"""The objective of ``adapt-lm``: masked-LM loss on masks drawn per step, and held-out perplexity.

``adapt-lm`` trains through the same loop as ``train`` (:func:`nlp_transfer.loop.fit`: progress bar,
checkpoints, signals, exact resume). Its loader only pads the tokenized texts
(:class:`PadForMasking`); :meth:`MaskedLmObjective.step` draws the masks. They are drawn from a seed
made of the run's seed, the process and the step number, under a forked RNG: so the masks of a step
do not depend on which batches the loader prefetched or a resume skipped, and drawing them does
not move the global random state that dropout uses. A resumed run masks exactly as the
uninterrupted one. The masking itself is ``DataCollatorForLanguageModeling``'s (80% ``[MASK]``, 10%
random token, 10% unchanged; whole words optional).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding

from .errors import UserInputError
from .masked_lm import masked_lm_loss
from .objective import Objective, StepOutput

_TRAINING, _HELD_OUT = 0, 1  # first part of a mask seed: training steps and held-out batches never share masks
_NOT_INPUTS = ("special_tokens_mask", "offset_mapping", "length")


class PadForMasking:
    """Pads tokenized rows into a batch, keeping ``special_tokens_mask`` and the character offsets
    (``offset_mapping``, for whole-word masking) that the masking reads; padding counts as special.

    Args:
        tokenizer: the encoder's tokenizer (its pad token and padding side).
    """

    def __init__(self, tokenizer: Any):
        self.pad = DataCollatorWithPadding(tokenizer)
        self.left = tokenizer.padding_side == "left"

    def __call__(self, rows: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [dict(row) for row in rows]
        offsets = [row.pop("offset_mapping") for row in rows] if "offset_mapping" in rows[0] else None
        batch = dict(self.pad(rows))
        if offsets is not None:  # tokenizer.pad does not pad pairs: (0, 0) at padding, as for special tokens
            width = batch["input_ids"].shape[1]
            padded = torch.zeros(len(rows), width, 2, dtype=torch.long)
            for i, row in enumerate(offsets):
                values = torch.tensor(row, dtype=torch.long).reshape(-1, 2)
                if self.left:
                    padded[i, width - len(values):] = values
                else:
                    padded[i, : len(values)] = values
            batch["offset_mapping"] = padded
        return batch


def _mask_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class MaskedLmObjective(Objective):
    """Masked-LM cross-entropy of each batch, with masks that a resume reproduces (see the module doc).

    Args:
        tokenizer: the encoder's tokenizer ([MASK] and the vocabulary the random replacements come from).
        mlm_probability: fraction of tokens masked for prediction.
        whole_word_masking: mask every piece of a word together.
        seed: base seed of the masks.
        rank: this process's index (each process masks its own batches differently).
    """

    name = "masked-lm"
    reads_every_position = True

    def __init__(self, tokenizer: Any, mlm_probability: float, whole_word_masking: bool, seed: int, rank: int = 0):
        super().__init__(task=None)
        # Whole words are always replaced by [MASK] (transformers has no random replacement for them): said
        # here rather than warned about at every run.
        replace = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0} if whole_word_masking else {}
        self.masker = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability,
                                                      whole_word_mask=whole_word_masking, **replace)
        self.mask_id = tokenizer.mask_token_id
        self.seed, self.rank, self.steps = seed, rank, 0
        self.held_out: list[dict[str, torch.Tensor]] = []  # masked once: every measurement uses the same masks
        self.measured: dict[str, float] = {}  # perplexities measured before training (kept by checkpoints)

    def mask(self, batch: Mapping[str, torch.Tensor], *key: int) -> dict[str, torch.Tensor]:
        """The model inputs of a padded batch with tokens masked and ``labels`` (-100 where not masked).

        The masks depend only on ``key`` (and the base seed). A batch in which no token was drawn
        gets one masked token, so every step has a loss.

        Raises:
            UserInputError: the batch holds no token that can be masked (only special tokens).
        """
        device = batch["input_ids"].device
        special = batch["special_tokens_mask"].cpu()
        offsets = batch.get("offset_mapping")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_mask_seed(self.seed, *key))
            ids, labels = self.masker.torch_mask_tokens(batch["input_ids"].cpu().clone(), special,
                                                        None if offsets is None else offsets.cpu())
            if not bool((labels != -100).any()):
                self._mask_one(ids, labels, special)
        inputs = {k: v for k, v in batch.items() if k not in _NOT_INPUTS}
        return {**inputs, "input_ids": ids.to(device), "labels": labels.to(device)}

    def _mask_one(self, ids: torch.Tensor, labels: torch.Tensor, special: torch.Tensor) -> None:
        candidates = (special == 0).nonzero()
        if not len(candidates):
            raise UserInputError("a batch of texts holds only special tokens, so there is nothing to mask; raise "
                                 "--max-length or drop the empty texts.")
        row, column = candidates[int(torch.randint(len(candidates), ()))].tolist()
        labels[row, column] = ids[row, column]
        ids[row, column] = self.mask_id

    def step(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], progress: float) -> StepOutput:
        masked = self.mask(batch, _TRAINING, self.rank, self.steps)
        self.steps += 1
        return StepOutput(masked_lm_loss(model, masked))

    def mask_held_out(self, batches: list[dict[str, torch.Tensor]]) -> None:
        """Mask the held-out batches once (the same masks on every process and in a resumed run)."""
        self.held_out = [self.mask(batch, _HELD_OUT, i) for i, batch in enumerate(batches)]

    def end_of_epoch(self, model: torch.nn.Module, accelerator: Any) -> dict[str, float]:
        return {"perplexity": perplexity(accelerator.unwrap_model(model), self.held_out, accelerator)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "steps": self.steps, "measured": dict(self.measured)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.steps = int(state["steps"])
        self.measured = {k: float(v) for k, v in state["measured"].items()}


@torch.inference_mode()
def perplexity(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], accelerator: Any) -> float:
    """``exp`` of the mean cross-entropy over every masked token of ``batches`` (each process computes all)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        masked = int((batch["labels"] != -100).sum())
        total += float(masked_lm_loss(model, batch)) * masked
        count += masked
    model.train(was_training)
    return math.exp(total / count)
