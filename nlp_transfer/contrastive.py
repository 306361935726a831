"""Contrastive few-shot training (SetFit's recipe, on our loop): pair-tuned encoder, then a fitted head.

The ``contrastive`` strategy trains in two phases every epoch:

1. **Pairs** (the loop's steps): the encoder is tuned on sentence pairs (:mod:`nlp_transfer.pairs`)
   with :class:`PairSimilarity`: the cosine similarity of the two texts' mean-pooled embeddings is
   pulled towards 1 for a pair of the same class and towards 0 for two classes (squared error).
   The embedding is the model's own pooled vector: the first-position output of the mean-pooling
   layer the model ends in (:mod:`nlp_transfer.pooling`), so the encoder is tuned on exactly the
   vector the saved classifier reads.
2. **Head** (:func:`fit_head`, at the end of every epoch, before validation): the frozen tuned
   encoder embeds every training row once (eval mode, no dropout) and the classification layer
   is fit on those vectors to convergence: multinomial logistic regression with an L2 penalty
   (scikit-learn's default strength, C = 1), full batch, L-BFGS. The projection before it (BERT's
   pooler, RoBERTa's head dense layer) is set to scale the layer-normalised pooled vector to unit
   length; its tanh is then nearly linear, so the head is the logistic regression SetFit fits on
   normalised embeddings, inside a standard ``*ForSequenceClassification``.

Validation (when there is any) scores the whole classifier after phase 2, so best-epoch
selection compares real classifiers. Both phases are deterministic given the seed, so a resumed
run (its checkpoints hold the encoder, the head and the optimizer) ends with the same model.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .linear_head import HeadFit, head_layers, logistic_regression, set_final_layer, set_unit_projection, warn_unconverged
from .objective import Objective, StepOutput

logger = logging.getLogger(__name__)

PAIR_KEYS = ("pair_first", "pair_second", "pair_targets")  # batch keys of the pairs, not model inputs


class PairSimilarity(Objective):
    """Squared error between the cosine similarity of a pair's pooled embeddings and its target (1 or 0)."""

    name = "pair-similarity"

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor], progress: float) -> StepOutput:
        targets = batch["pair_targets"]
        inputs = {k: v for k, v in batch.items() if k not in PAIR_KEYS}
        texts = sentence_embeddings(model, inputs)  # each distinct text of the batch once
        cosine = F.cosine_similarity(texts[batch["pair_first"]], texts[batch["pair_second"]], dim=-1)
        loss = F.mse_loss(cosine, targets)
        positive = targets > 0.5
        with torch.no_grad():
            logs = {
                "cosine_same_class": (cosine * positive).sum() / positive.sum().clamp(min=1),
                "cosine_other_class": (cosine * ~positive).sum() / (~positive).sum().clamp(min=1),
            }
        return StepOutput(loss, logs)

    def token_datasets(self, data: Any) -> list[Any]:
        return [data.train]

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "loss": "squared error of cosine(pooled a, pooled b) against 1 (same class) / 0"}


def sentence_embeddings(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The pooled vector of each text: the last encoder layer's (the mean-pooling layer's) first position.

    Called on the prepared model (one forward pass, so several processes synchronise gradients once).
    """
    out = model(**inputs, output_hidden_states=True)
    return out.hidden_states[-1][:, 0]


def freeze_head(model: nn.Module) -> None:
    """Keep the head out of the pair phase (it is fit by :func:`fit_head`, not by the optimizer)."""
    layers = head_layers(model)
    for module in (layers.projection, layers.final):
        for p in module.parameters():
            p.requires_grad_(False)


@torch.no_grad()  # not inference_mode: the head fit differentiates through these tensors
def final_layer_inputs(model: nn.Module, loader: Any, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """What the final classification layer reads for every row of ``loader`` (eval mode), and the labels."""
    final = head_layers(model).final
    captured: list[torch.Tensor] = []
    hook = final.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach().float()))
    was_training = model.training
    model.eval()
    labels = []
    try:
        for batch in loader:
            labels.append(batch.pop("labels"))
            model(**{k: v.to(device) for k, v in batch.items()})
    finally:
        hook.remove()
        model.train(was_training)
    features = torch.cat([c.reshape(c.shape[0], -1) for c in captured]).cpu()
    return features, torch.cat(labels).cpu()


def fit_head(model: nn.Module, loader: Any, device: Any, accelerator: Any) -> HeadFit:
    """Phase 2: fit the final classification layer on the frozen encoder's vectors of the training rows.

    Args:
        model: the unwrapped classifier (its encoder just tuned on pairs).
        loader: every training row once, with ``labels`` (not sharded: every process fits the same head).
        device: where the encoder runs.
        accelerator: the run's accelerator; under several processes the main process's head is broadcast.
    """
    set_unit_projection(model)
    features, labels = final_layer_inputs(model, loader, device)
    weight, bias, fit = logistic_regression(features, labels, head_layers(model).final.weight.shape[0])
    set_final_layer(model, weight, bias, accelerator)
    warn_unconverged(fit)
    return fit
