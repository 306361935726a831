"""nlp-transfer: transfer learning on text with BERT-family encoders.

Fine-tune on a CSV, evaluate, write a standard Hugging Face model folder with a model card::

    from nlp_transfer import TrainConfig, train
    result = train(TrainConfig(train_file="train.csv", test_file="test.csv", output_dir="runs/my-model"))

The public names are imported on first use (PEP 562), so ``import nlp_transfer`` and the
command's ``--help`` do not pay for torch, transformers and evaluate.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

# Public name → the module that defines it.
_PUBLIC = {
    "DEFAULT_MODEL": "config",
    "TrainConfig": "config",
    "UserInputError": "errors",
    "evaluate_model": "evaluation",
    "PushError": "hub",
    "PushResult": "hub",
    "push_to_hub": "hub",
    "Classifier": "inference",
    "load_classifier": "inference",
    "ExportOptions": "onnx_export",
    "export_onnx": "onnx_export",
    "TrainResult": "trainer",
    "train": "trainer",
}

__all__ = [
    "Classifier", "DEFAULT_MODEL", "ExportOptions", "PushError", "PushResult", "TrainConfig", "TrainResult",
    "UserInputError", "evaluate_model", "export_onnx", "load_classifier", "push_to_hub", "train", "__version__",
]

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ imports on demand
    from .config import DEFAULT_MODEL, TrainConfig
    from .errors import UserInputError
    from .evaluation import evaluate_model
    from .hub import PushError, PushResult, push_to_hub
    from .inference import Classifier, load_classifier
    from .onnx_export import ExportOptions, export_onnx
    from .trainer import TrainResult, train


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is asked for, then keep it here."""
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
