"""A sequence classifier's head fit as a logistic regression: full batch, L-BFGS, to convergence.

Two strategies fit the head this way instead of with gradient steps:

- ``contrastive`` fits it after every epoch on the pair-tuned encoder's vectors
  (:func:`nlp_transfer.contrastive.fit_head`);
- ``feature-extraction`` (``--head-solver lbfgs``, the default for single-label data) fits it once
  on the cached vectors of the frozen encoder, with the L2 strength picked by cross-validation on
  the training rows and by the validation split (:func:`fit_on_features`).

Both set the projection before the final layer (BERT's pooler, RoBERTa's head dense layer) to
scale the layer-normalised pooled vector to unit length; its tanh is then nearly linear, so the
head is a multinomial logistic regression on normalised embeddings, inside a standard
``*ForSequenceClassification`` that ``pipeline()`` loads.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserInputError

logger = logging.getLogger(__name__)

HEAD_C = 1.0  # inverse L2 strength of the head, as scikit-learn's LogisticRegression default
HEAD_MAX_ITERATIONS = 500
HEAD_TOLERANCE = 1e-6  # L-BFGS stops when the largest gradient entry is below this
# Inverse L2 strengths tried by feature extraction, strongest penalty first (half-decade steps).
C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
CV_FOLDS = 5  # cross-validation folds of the training rows that help pick C


@dataclass
class HeadLayers:
    """The head's projection (a square linear layer before a tanh) and its final classification layer."""

    projection: nn.Linear
    final: nn.Linear


def head_layers(model: nn.Module, strategy: str = "contrastive") -> HeadLayers:
    """The projection and final layer of a BERT-style (pooler + classifier) or RoBERTa-style head.

    Raises:
        UserInputError: a head of another shape (naming ``strategy`` and the supported heads).
    """
    from .layers import encoder_of

    pooler = getattr(encoder_of(model), "pooler", None)
    classifier = getattr(model, "classifier", None)
    if pooler is not None and isinstance(getattr(pooler, "dense", None), nn.Linear) and isinstance(classifier, nn.Linear):
        return HeadLayers(pooler.dense, classifier)
    if isinstance(getattr(classifier, "dense", None), nn.Linear) and isinstance(getattr(classifier, "out_proj", None),
                                                                                nn.Linear):
        return HeadLayers(classifier.dense, classifier.out_proj)
    fallback = "--head-solver adamw" if strategy == "feature-extraction" else "--strategy finetune"
    raise UserInputError(
        f"--strategy {strategy} does not know the head of {type(model).__name__}; it supports BERT-style "
        f"(pooler + classifier) and RoBERTa-style (dense + out_proj) sequence classifiers. Use {fallback}."
    )


@dataclass
class HeadFit:
    """How the head fit went (logged per epoch and recorded in the summary)."""

    rows: int
    iterations: int
    loss: float
    max_gradient: float
    train_accuracy: float
    converged: bool


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


def set_final_layer(model: nn.Module, weight: torch.Tensor, bias: torch.Tensor, accelerator: Any) -> None:
    """Copy a fitted weight and bias into the final layer; under several processes the main process's wins."""
    final = head_layers(model).final
    with torch.no_grad():
        final.weight.copy_(weight.to(final.weight.dtype))
        final.bias.copy_(bias.to(final.bias.dtype))
        if accelerator.num_processes > 1:
            from accelerate.utils import broadcast

            broadcast(final.weight.data, from_process=0)
            broadcast(final.bias.data, from_process=0)


def warn_unconverged(fit: HeadFit) -> None:
    """Log a warning when L-BFGS stopped before the gradient tolerance."""
    if not fit.converged:
        logger.warning("the head fit stopped after %d L-BFGS iterations with a gradient of %.2g (tolerance %g)",
                       fit.iterations, fit.max_gradient, HEAD_TOLERANCE)


def head_fit_record(fit: HeadFit) -> dict[str, Any]:
    """``HeadFit`` as JSON-ready values."""
    return asdict(fit)


@torch.no_grad()
def final_inputs_of_features(head: nn.Module, features: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """What the final layer reads for cached encoder vectors, run through ``head`` (eval mode: no dropout)."""
    final = head_layers(head.classifier_model, "feature-extraction").final
    captured: list[torch.Tensor] = []
    hook = final.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach().float()))
    was_training = head.training
    head.eval()
    try:
        for start in range(0, features.shape[0], batch_size):
            head(features[start:start + batch_size])
    finally:
        hook.remove()
        head.train(was_training)
    return torch.cat([c.reshape(c.shape[0], -1) for c in captured]).cpu()


def _cross_validated_predictions(x: torch.Tensor, y: torch.Tensor, classes: int, c: float) -> Optional[torch.Tensor]:
    """Out-of-fold predictions of :data:`CV_FOLDS`-fold cross-validation (seeded folds); None for too few rows."""
    if len(y) < 2 * CV_FOLDS:
        return None
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    predicted = torch.empty(len(y), dtype=torch.long)
    for fold in order.chunk(CV_FOLDS):
        keep = torch.ones(len(y), dtype=torch.bool)
        keep[fold] = False
        weight, bias, _ = logistic_regression(x[keep], y[keep], classes, c)
        predicted[fold] = (x[fold].double() @ weight.T + bias).argmax(-1)
    return predicted


def fit_on_features(head: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
                    validation: Optional[tuple[torch.Tensor, torch.Tensor]], classes: int,
                    score: Callable[[list[int], list[int]], float], accelerator: Any) -> dict[str, Any]:
    """Feature extraction's head: a logistic regression fit on the training rows at the best C of :data:`C_GRID`.

    Each C is scored by :data:`CV_FOLDS`-fold cross-validation on the training rows and on the
    validation rows (a fit on all training rows), the two weighted by their row counts: a few hundred
    validation rows alone differ between neighbouring C by one or two rows. The strongest penalty
    wins ties; with neither score available (under 10 rows, no validation) C is :data:`HEAD_C`.

    Args:
        head: the :class:`nlp_transfer.features.FeatureHead` (its classifier model is changed in place).
        train: cached vectors of the training rows and their class ids.
        validation: the same for the validation rows, or None.
        classes: number of classes.
        score: ``score(predicted, true)``, higher is better (the run's ``--metric-for-best-model``).
        accelerator: the run's accelerator (the main process's head is broadcast).

    Returns:
        What was done, for the history: the chosen ``c``, each tried one's scores, the final fit.
    """
    set_unit_projection(head.classifier_model)
    x_train, y_train = final_inputs_of_features(head, train[0]), train[1]
    x_val = final_inputs_of_features(head, validation[0]) if validation is not None else None
    can_cv = len(y_train) >= 2 * CV_FOLDS
    grid = C_GRID if can_cv or x_val is not None else (HEAD_C,)
    tried, best = [], None
    for c in grid:
        weight, bias, fit = logistic_regression(x_train, y_train, classes, c)
        entry: dict[str, Any] = {"c": c, "cv_score": None, "validation_score": None, "score": None}
        parts = []
        folds = _cross_validated_predictions(x_train, y_train, classes, c) if len(grid) > 1 and can_cv else None
        if folds is not None:
            entry["cv_score"] = score(folds.tolist(), y_train.tolist())
            parts.append((entry["cv_score"], len(y_train)))
        if x_val is not None:
            entry["validation_score"] = score((x_val.double() @ weight.T + bias).argmax(-1).tolist(),
                                              validation[1].tolist())
            parts.append((entry["validation_score"], len(validation[1])))
        if parts:
            entry["score"] = sum(v * n for v, n in parts) / sum(n for _, n in parts)
        tried.append(entry)
        if best is None or (entry["score"] is not None and entry["score"] > best[0]):
            best = (entry["score"], c, weight, bias, fit)
    _, c, weight, bias, fit = best
    set_final_layer(head.classifier_model, weight, bias, accelerator)
    warn_unconverged(fit)
    with torch.no_grad():
        train_loss = float(F.cross_entropy(x_train.double() @ weight.T + bias, y_train.long()))
    return {"solver": "lbfgs", "c": c, "cv_folds": CV_FOLDS if can_cv and len(grid) > 1 else 0, "grid": tried,
            "train_loss": train_loss, **head_fit_record(fit)}
