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
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserInputError
from .objective import Objective, StepOutput

logger = logging.getLogger(__name__)

HEAD_C = 1.0  # inverse L2 strength of the head, as scikit-learn's LogisticRegression default
HEAD_MAX_ITERATIONS = 500
HEAD_TOLERANCE = 1e-6  # L-BFGS stops when the largest gradient entry is below this


class PairSimilarity(Objective):
    """Squared error between the cosine similarity of a pair's pooled embeddings and its target (1 or 0)."""

    name = "pair-similarity"

    def step(self, model: nn.Module, batch: dict[str, torch.Tensor], progress: float) -> StepOutput:
        targets = batch["pair_targets"]
        inputs = {k: v for k, v in batch.items() if k != "pair_targets"}
        first, second = sentence_embeddings(model, inputs).chunk(2)
        cosine = F.cosine_similarity(first, second, dim=-1)
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


@dataclass
class HeadLayers:
    """The head's projection (a square linear layer before a tanh) and its final classification layer."""

    projection: nn.Linear
    final: nn.Linear


def head_layers(model: nn.Module) -> HeadLayers:
    """The projection and final layer of a BERT-style (pooler + classifier) or RoBERTa-style head.

    Raises:
        UserInputError: a head of another shape (the strategy names the supported ones).
    """
    from .layers import encoder_of

    pooler = getattr(encoder_of(model), "pooler", None)
    classifier = getattr(model, "classifier", None)
    if pooler is not None and isinstance(getattr(pooler, "dense", None), nn.Linear) and isinstance(classifier, nn.Linear):
        return HeadLayers(pooler.dense, classifier)
    if isinstance(getattr(classifier, "dense", None), nn.Linear) and isinstance(getattr(classifier, "out_proj", None),
                                                                                nn.Linear):
        return HeadLayers(classifier.dense, classifier.out_proj)
    raise UserInputError(
        f"--strategy contrastive does not know the head of {type(model).__name__}; it supports BERT-style "
        "(pooler + classifier) and RoBERTa-style (dense + out_proj) sequence classifiers. Use --strategy finetune."
    )


def freeze_head(model: nn.Module) -> None:
    """Keep the head out of the pair phase (it is fit by :func:`fit_head`, not by the optimizer)."""
    layers = head_layers(model)
    for module in (layers.projection, layers.final):
        for p in module.parameters():
            p.requires_grad_(False)


@dataclass
class HeadFit:
    """How the head fit went (logged per epoch and recorded in the summary)."""

    rows: int
    iterations: int
    loss: float
    max_gradient: float
    train_accuracy: float
    converged: bool


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


def set_unit_projection(model: nn.Module) -> None:
    """Make the head's projection scale the layer-normalised pooled vector (norm √hidden) to unit length."""
    projection = head_layers(model).projection
    size = projection.weight.shape[0]
    with torch.no_grad():
        projection.weight.copy_(torch.eye(size) / math.sqrt(size))
        projection.bias.zero_()


def logistic_regression(features: torch.Tensor, labels: torch.Tensor, classes: int,
                        c: float = HEAD_C) -> tuple[torch.Tensor, torch.Tensor, HeadFit]:
    """Multinomial logistic regression with an L2 penalty on the weights, fit by full-batch L-BFGS in float64.

    The objective is the mean cross-entropy plus ``|W|² / (2 c n)`` — scikit-learn's
    ``LogisticRegression(C=c)`` up to the factor ``n``.

    Returns:
        The weight ``(classes, features)``, the bias ``(classes,)`` and how the fit went.
    """
    x, y = features.double(), labels.long()
    n = x.shape[0]
    weight = torch.zeros(classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=HEAD_MAX_ITERATIONS, history_size=20,
                                  tolerance_grad=HEAD_TOLERANCE, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y) + weight.pow(2).sum() / (2 * c * n)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
        loss = objective().detach()
    gradient = max(float(weight.grad.abs().max()), float(bias.grad.abs().max()))
    iterations = int(optimizer.state[weight].get("n_iter", 0))  # L-BFGS keeps its state under the first parameter
    accuracy = float(((x @ weight.T + bias).argmax(-1) == y).double().mean())
    fit = HeadFit(n, iterations, loss.item(), gradient, accuracy, gradient <= HEAD_TOLERANCE * 10)
    return weight.detach(), bias.detach(), fit


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
    final = head_layers(model).final
    weight, bias, fit = logistic_regression(features, labels, final.weight.shape[0])
    with torch.no_grad():
        final.weight.copy_(weight.to(final.weight.dtype))
        final.bias.copy_(bias.to(final.bias.dtype))
        if accelerator.num_processes > 1:
            from accelerate.utils import broadcast

            broadcast(final.weight.data, from_process=0)
            broadcast(final.bias.data, from_process=0)
    if not fit.converged:
        logger.warning("the head fit stopped after %d L-BFGS iterations with a gradient of %.2g (tolerance %g)",
                       fit.iterations, fit.max_gradient, HEAD_TOLERANCE)
    return fit


def head_fit_record(fit: HeadFit) -> dict[str, Any]:
    """``HeadFit`` as JSON-ready values."""
    return asdict(fit)
