"""``training_summary.json``: what a finished run did, in numbers a reader can check.

Labels and rows per split, the epoch history, timings and throughput, what the strategy trained,
what each speed option did (or why it did not run), warnings about the result, the software and
hardware, and the command that reproduces the run from scratch.
"""

from __future__ import annotations

import platform
from typing import Any, Optional

from .version import __version__


def hardware() -> str:
    """The device the run trained on, in words."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} × {torch.cuda.get_device_name(0)}"
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def versions() -> dict[str, str]:
    """Versions of the libraries that decide what a run computes."""
    import accelerate
    import datasets
    import torch
    import transformers

    return {
        "nlp-transfer": __version__, "transformers": transformers.__version__, "torch": torch.__version__,
        "accelerate": accelerate.__version__, "datasets": datasets.__version__, "python": platform.python_version(),
    }


def build_summary(data: Any, state: Any, command: str, extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The summary of a finished run.

    Args:
        data: the :class:`~nlp_transfer.data.PreparedData` it trained on.
        state: the loop's final :class:`~nlp_transfer.checkpoint.TrainState`.
        command: the command that reproduces the run from scratch.
        extra: more entries (strategy, parameter counts, speed options, feature cache, warnings).
    """
    loop = state.loop_seconds
    real, padded = state.tokens, state.padded
    rows = data.train.num_rows * len(state.history)
    summary = {
        "labels": data.labels,
        "label_counts": data.label_counts,
        "text_counts": data.text_counts,
        "validation_source": data.validation_source,
        "truncated_fraction": data.truncated_fraction,
        "epochs_run": len(state.history),
        "optimizer_steps": state.global_step,
        "best_epoch": state.best.epoch,
        "history": state.history,
        "train_runtime_s": state.elapsed_seconds,
        "train_loop_s": loop,
        "train_samples_per_s": rows / loop if loop else 0.0,
        "train_tokens_per_s": real / loop if loop else 0.0,
        "padding_fraction": 1 - real / padded if padded else 0.0,
        "hardware": hardware(),
        "versions": versions(),
        "command": command,
    }
    summary.update(extra or {})
    return summary
