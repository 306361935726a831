"""Settings of the ``feature-extraction`` strategy: how its head is fit (imports no torch)."""

from __future__ import annotations

import logging
from typing import Any

from .errors import UserInputError

logger = logging.getLogger(__name__)

HEAD_SOLVERS = ("lbfgs", "adamw")
# Settings of the gradient loop that an L-BFGS fit does not use.
_LOOP_SETTINGS = ("epochs", "learning_rate", "warmup_ratio", "early_stopping_patience")


def single_label(config: Any) -> bool:
    """Whether the run's data are single-label classes (not multi-label, not regression)."""
    return getattr(config, "task", "classification") == "classification" and not getattr(config, "multi_label", False) \
        and not getattr(config, "label_columns", None)


def check_head_solver(config: Any) -> None:
    """Resolve ``--head-solver`` (lbfgs for single-label data, adamw otherwise) and fit the loop settings to it.

    An L-BFGS fit is one pass: the run has one epoch, and loop settings the user gave are named in a
    warning as not applying (they are kept for ``--head-solver adamw``).
    """
    if config.head_solver is not None and config.head_solver not in HEAD_SOLVERS:
        raise UserInputError(f"--head-solver {config.head_solver!r} is unknown; choose one of: {', '.join(HEAD_SOLVERS)}.")
    if config.head_solver is None:
        config.head_solver = "lbfgs" if single_label(config) else "adamw"
    if config.head_solver != "lbfgs":
        return
    if not single_label(config):
        raise UserInputError(
            "--head-solver lbfgs fits a single-label logistic regression; multi-label and regression heads train with "
            "--head-solver adamw (drop --head-solver lbfgs)."
        )
    filled = config.__dict__.get("strategy_defaults_filled", set())
    given = [name for name in _LOOP_SETTINGS if name not in filled and getattr(config, name) is not None
             and not (name == "epochs" and config.epochs == 1)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        logger.warning("--head-solver lbfgs fits the head to convergence in one pass, so %s do(es) not apply; pass "
                       "--head-solver adamw to train the head with gradient steps instead", flags)
    config.epochs = 1


def head_fit_card_line(summary: dict[str, Any], metric: str) -> str:
    """The card's sentence on a feature-extraction head fit by L-BFGS ('' for other runs)."""
    fits = [e["strategy"]["head_fit"] for e in summary.get("history", [])
            if (e.get("strategy") or {}).get("head_fit", {}).get("solver") == "lbfgs"]
    if not fits:
        return ""
    fit = fits[-1]
    state = f"converged after {fit['iterations']} iterations" if fit["converged"] else \
        f"stopped unconverged after {fit['iterations']} iterations"
    tried = [t["c"] for t in fit["grid"]]
    sources = " and ".join(([f"{fit['cv_folds']}-fold cross-validation on the training rows"] if fit.get("cv_folds") else [])
                           + (["the validation rows"] if any(t["validation_score"] is not None for t in fit["grid"]) else []))
    chosen = f"inverse L2 strength C={fit['c']:g}, picked by `{metric}` in {sources} among {len(tried)} values from " \
        f"{min(tried):g} to {max(tried):g}" if len(tried) > 1 else f"inverse L2 strength C={fit['c']:g} (too few rows to pick it)"
    return (f"the classification layer is a logistic regression on the frozen encoder's vectors of the {fit['rows']} "
            f"training rows, fit by full-batch L-BFGS ({state}; {chosen})")
