"""Running an exported ONNX classifier folder with ONNX Runtime, behind the PyTorch model's interface.

An ONNX folder (written by ``nlp-transfer export --format onnx``) holds ``model.onnx``, the
model's ``config.json`` (label names, problem type) and its tokenizer: the layout
``optimum.onnxruntime.ORTModelForSequenceClassification`` loads. :class:`OnnxSequenceClassifier`
wraps an ``onnxruntime.InferenceSession`` as a ``torch.nn.Module`` whose ``forward(**batch)``
returns ``.logits``, so :class:`~nlp_transfer.inference.Classifier` and the evaluation loop run it
unchanged: same tokenization, truncation, batching and outputs as the PyTorch folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from transformers.modeling_outputs import SequenceClassifierOutput

from .errors import UserInputError
from .extras import require_extra

ONNX_FILE = "model.onnx"
BACKENDS = ("pytorch", "onnx")
_TORCH_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def is_onnx_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a local folder holding an exported ``model.onnx``."""
    return (Path(path) / ONNX_FILE).is_file()


def resolve_backend(path: str | os.PathLike, backend: Optional[str] = None) -> str:
    """The backend that runs ``path``: the one asked for, else ``"onnx"`` for a folder with only ONNX weights.

    Args:
        path: a model folder or Hub id.
        backend: ``"pytorch"``, ``"onnx"`` or None (detect from the folder's files).

    Raises:
        UserInputError: an unknown backend, or ``"onnx"`` for a folder without ``model.onnx``.
    """
    if backend is not None and backend not in BACKENDS:
        raise UserInputError(f"backend {backend!r} is unknown; choose {' or '.join(BACKENDS)} (or leave it out to detect).")
    folder = Path(path)
    if backend == "onnx" and not is_onnx_folder(folder):
        raise UserInputError(f"--backend onnx needs a folder with {ONNX_FILE}, but {str(path)!r} has none; "
                             f"write one with: nlp-transfer export {path} --format onnx --output-dir DIR")
    if backend is None:
        has_torch = folder.is_dir() and any((folder / name).is_file() for name in _TORCH_WEIGHTS)
        backend = "onnx" if is_onnx_folder(folder) and not has_torch else "pytorch"
    return backend


class OnnxSequenceClassifier(torch.nn.Module):
    """An ONNX Runtime session that answers like a ``*ForSequenceClassification`` model.

    Args:
        session: an ``onnxruntime.InferenceSession`` with token inputs and a ``logits`` output.
        config: the model's ``PretrainedConfig`` (labels, problem type).
    """

    def __init__(self, session: Any, config: Any):
        super().__init__()
        self.session = session
        self.config = config
        self.input_names = [i.name for i in session.get_inputs()]

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None, **unused: Any) -> SequenceClassifierOutput:
        """Logits for a padded batch of token ids (tensors on any device; the session runs on the CPU)."""
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        feed = {}
        for name in self.input_names:
            value = given.get(name)
            if value is None:  # e.g. a tokenizer without token types: BERT's default is all zeros
                value = torch.ones_like(input_ids) if name == "attention_mask" else torch.zeros_like(input_ids)
            feed[name] = value.detach().cpu().numpy().astype(np.int64, copy=False)
        logits = self.session.run(["logits"], feed)[0]
        return SequenceClassifierOutput(logits=torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32)))


def new_session(model_file: str | os.PathLike, threads: Optional[int] = None) -> Any:
    """An ONNX Runtime CPU session for ``model_file`` (``threads``: intra-op threads; None: one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's warnings are about graph internals
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(model_file), sess_options=options, providers=["CPUExecutionProvider"])


def load_onnx_trained(directory: str | os.PathLike) -> tuple[OnnxSequenceClassifier, Any]:
    """Load an exported ONNX classifier folder and its tokenizer (the ONNX twin of ``load_trained``).

    Raises:
        UserInputError: the ONNX extra is missing, the folder has no ``model.onnx`` or is not a text
            classifier, or the ONNX file is damaged.
    """
    from transformers import AutoConfig

    from .modeling import load_tokenizer, quiet_loading

    require_extra("onnx", "running an ONNX model")
    name = str(directory)
    if not is_onnx_folder(name):
        raise UserInputError(f"{name!r} has no {ONNX_FILE}; pass a folder written by nlp-transfer export --format onnx.")
    try:
        with quiet_loading():
            model_config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise UserInputError(f"the config.json of {name!r} cannot be read ({err}); export the model again.") from None
    architectures = getattr(model_config, "architectures", None) or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise UserInputError(f"{name!r} is not a text classifier (its architectures are "
                             f"{', '.join(architectures) or 'unknown'}); export a *ForSequenceClassification model.")
    tokenizer = load_tokenizer(name)
    try:
        session = new_session(Path(name) / ONNX_FILE)
    except Exception as err:  # onnxruntime raises its own exception types for damaged files
        raise UserInputError(f"{str(Path(name) / ONNX_FILE)!r} cannot be loaded by ONNX Runtime ({err}); "
                             "export the model again.") from None
    missing = {"input_ids", "logits"} - {i.name for i in session.get_inputs()} - {o.name for o in session.get_outputs()}
    if missing:
        raise UserInputError(f"{str(Path(name) / ONNX_FILE)!r} lacks {', '.join(sorted(missing))}; it is not a sequence "
                             "classifier export; export the model again with nlp-transfer export.")
    return OnnxSequenceClassifier(session, model_config).eval(), tokenizer
