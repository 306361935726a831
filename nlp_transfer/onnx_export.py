"""``nlp-transfer export --format onnx``: a trained folder converted for ONNX Runtime, and checked.

The model is traced with ``torch.onnx.export`` (the ``torch.export``-based exporter), optionally
graph-optimised (``O1``: ONNX Runtime's basic, hardware-independent rewrites; ``O2``: plus ONNX
Runtime's transformer fusions, as optimum's O2) and dynamically quantized to int8 (ONNX Runtime's
``quantize_dynamic``). The folder is the layout ``optimum.onnxruntime`` loads: ``model.onnx``, the
model's ``config.json``, the tokenizer, and every other settings file of the model folder
(``training_config.json``, metrics, thresholds or long-text settings of later features), so the
same preprocessing travels with it; weights, checkpoints and hidden files stay behind.

Before the folder appears (it is written in a hidden sibling and renamed, as training does), the
export scores the same texts with PyTorch and with the exported file (:mod:`.onnx_check`): an fp32
export that disagrees beyond the tolerance is refused; for int8 the agreement and accuracy change
are reported (and refused under ``min_agreement``). ``onnx_export.json`` records what was done.
"""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from .artifacts import CARD_FILE, OutputDir, write_json, write_text
from .errors import UserInputError
from .extras import require_extra
from .onnx_model import ONNX_FILE, is_onnx_folder

FORMATS = ("onnx",)
OPTIMIZE_LEVELS = ("O1", "O2")
QUANTIZE_CHOICES = ("int8",)
EXPORT_FILE = "onnx_export.json"
DEFAULT_TOLERANCE = 1e-4
OPSET = 18
# Files of a model folder that an ONNX folder does not carry (the weights are in model.onnx).
_NOT_CARRIED = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".onnx_data", ".lock", ".index.json")


@dataclass
class ExportOptions:
    """What ``export_onnx`` writes and how strictly it checks it.

    Attributes:
        quantize: ``"int8"`` for dynamic int8 weights, None for fp32.
        optimize: ``"O1"`` or ``"O2"`` graph optimisation, None for none.
        check_file: a CSV whose texts (and labels, if it has the model's label column) the check scores.
        sample_size: texts scored by the check when no ``check_file`` is given (generated from the vocabulary).
        tolerance: the largest probability difference an fp32 export may show.
        min_agreement: refuse a quantized export whose labels agree less often with PyTorch (0 to 1).
        overwrite: replace an existing export folder.
    """

    quantize: Optional[str] = None
    optimize: Optional[str] = None
    check_file: Optional[str] = None
    sample_size: int = 256
    tolerance: float = DEFAULT_TOLERANCE
    min_agreement: Optional[float] = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.quantize not in (None, *QUANTIZE_CHOICES):
            raise UserInputError(f"--quantize {self.quantize!r} is unknown; choose {', '.join(QUANTIZE_CHOICES)}.")
        if self.optimize not in (None, *OPTIMIZE_LEVELS):
            raise UserInputError(f"--optimize {self.optimize!r} is unknown; choose {' or '.join(OPTIMIZE_LEVELS)}.")
        if not isinstance(self.sample_size, int) or isinstance(self.sample_size, bool) or self.sample_size < 2:
            raise UserInputError(f"--sample-size must be an integer of at least 2; got {self.sample_size!r}.")
        if not (isinstance(self.tolerance, (int, float)) and 0 < self.tolerance < 1):
            raise UserInputError(f"--tolerance must be a probability difference between 0 and 1; got {self.tolerance!r}.")
        if self.min_agreement is not None and not (0 <= self.min_agreement <= 1):
            raise UserInputError(f"--min-agreement must be between 0 and 1; got {self.min_agreement!r}.")


def export_onnx(model_dir: str, output_dir: str, options: Optional[ExportOptions] = None) -> dict[str, Any]:
    """Export a trained classifier folder to ONNX, check it against PyTorch, and write the folder.

    Args:
        model_dir: a local folder written by ``nlp-transfer train`` (or any sequence classifier folder).
        output_dir: the ONNX folder to write; it appears only when complete and checked.
        options: quantization, optimisation and check settings (default: fp32, no optimisation).

    Returns:
        The export record (also saved as ``onnx_export.json``): files, sizes, the check's figures.

    Raises:
        UserInputError: the ONNX extra is missing, bad options or folders, or a failed check.
    """
    from .inference import load_classifier
    from .modeling import training_settings
    from .onnx_check import check_export, check_texts

    options = options or ExportOptions()
    require_extra("onnx", "nlp-transfer export --format onnx")
    source, target = _check_folders(model_dir, output_dir)
    reference = load_classifier(source, device="cpu", backend="pytorch")
    label_column = training_settings(str(source)).get("label_column") or "label"
    texts = check_texts(reference, options.check_file, options.sample_size, label_column)
    out = OutputDir(target, overwrite=options.overwrite)
    out.check()
    out.lock()
    started = time.perf_counter()
    try:
        staging = out.create_staging()
        steps = write_onnx(reference, staging, options, texts.texts[:2], texts.pairs[:2] if texts.pairs else None)
        _copy_companions(source, staging)
        exported = load_classifier(staging, backend="onnx")
        check = check_export(reference, exported, texts, options)
        record = {"format": "onnx", "source": source.name, "file": ONNX_FILE, "quantize": options.quantize,
                  "optimize": options.optimize, "inputs": exported.model.input_names, "steps": steps, "opset": OPSET,
                  "size_mb": round((staging / ONNX_FILE).stat().st_size / 2**20, 2), "check": check,
                  "seconds": round(time.perf_counter() - started, 1), "versions": _versions()}
        write_json(staging / EXPORT_FILE, record)
        _write_card(source, staging, record)
        out.commit()
    except BaseException:
        out.discard()
        raise
    finally:
        out.unlock()
    return {"output_dir": str(target), **record}


def _check_folders(model_dir: str, output_dir: str) -> tuple[Path, Path]:
    source, target = Path(model_dir), Path(output_dir)
    if not source.is_dir():
        raise UserInputError(f"MODEL_DIR {model_dir!r} is not a folder; export needs a local model folder "
                             "(download a Hub model first, e.g. with hf download REPO --local-dir DIR).")
    if is_onnx_folder(source) and not any(source.glob("*.safetensors")):
        raise UserInputError(f"{model_dir!r} is already an ONNX export; export the PyTorch folder it came from.")
    resolved_source, resolved_target = source.resolve(), target.resolve()
    if resolved_target == resolved_source or resolved_source in resolved_target.parents:
        raise UserInputError(f"--output-dir {output_dir!r} is the model folder or inside it; choose a folder elsewhere, "
                             "so the model is never replaced.")
    return source, target


def write_onnx(clf: Any, folder: Path, options: ExportOptions, texts: list[str],
               pairs: Optional[list[str]]) -> list[str]:
    """Write ``folder/model.onnx`` for ``clf``'s model: export, then optimise and quantize as asked.

    Args:
        clf: the PyTorch :class:`~nlp_transfer.inference.Classifier`.
        folder: where ``model.onnx`` goes (intermediate files are removed).
        options: ``optimize`` and ``quantize`` say which steps run.
        texts, pairs: two example inputs to trace with (their shapes are made dynamic).

    Returns:
        The steps done, in order, e.g. ``["export", "optimize O2 (fused: Attention 6, ...)", "quantize int8"]``.
    """
    final = folder / ONNX_FILE
    current = folder / "model.export.onnx"
    _torch_export(clf, current, texts, pairs)
    steps = ["export"]
    if options.optimize:
        optimized = folder / "model.optimized.onnx"
        steps.append(_optimize(current, optimized, options.optimize, clf.model.config))
        current.unlink()
        current = optimized
    if options.quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantized = folder / "model.quantized.onnx"
        quantize_dynamic(current, quantized, weight_type=QuantType.QInt8)
        steps.append("quantize int8 (dynamic, QInt8 weights)")
        current.unlink()
        current = quantized
    current.replace(final)
    return steps


class _LogitsOnly(torch.nn.Module):
    """The model called with token inputs in a fixed order, returning only the logits tensor."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        given = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **given).logits


def _torch_export(clf: Any, path: Path, texts: list[str], pairs: Optional[list[str]]) -> None:
    """Trace the classifier's model into ``path`` with dynamic batch and sequence sizes."""
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if "token_type_ids" in clf.tokenizer.model_input_names else [])
    example = clf.tokenizer(texts, pairs, truncation=True, max_length=clf.max_length, padding=True, return_tensors="pt")
    batch, sequence = torch.export.Dim("batch_size"), torch.export.Dim("sequence_length", max=max(clf.max_length, 2))
    shapes = {name: {0: batch, 1: sequence} for name in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on internals say nothing a user can act on
        torch.onnx.export(_LogitsOnly(clf.model).eval(), tuple(example[n] for n in names), str(path),
                          input_names=names, output_names=["logits"], dynamic_shapes=shapes, opset_version=OPSET,
                          dynamo=True, external_data=False, verbose=False, optimize=True)


def _optimize(source: Path, target: Path, level: str, model_config: Any) -> str:
    """Graph optimisation ``O1`` (ONNX Runtime basic rewrites) or ``O2`` (plus transformer fusions)."""
    import onnxruntime as ort

    if level == "O1":
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(target)
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        return "optimize O1 (ONNX Runtime basic graph rewrites)"
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = model_config.model_type if model_config.model_type in ("bert", "roberta", "distilbert") else "bert"
    optimized = optimize_model(str(source), model_type=model_type,
                               num_heads=getattr(model_config, "num_attention_heads", 0) or 0,
                               hidden_size=getattr(model_config, "hidden_size", 0) or 0, opt_level=2, use_gpu=False)
    fused = {name: count for name, count in optimized.get_fused_operator_statistics().items() if count}
    optimized.save_model_to_file(str(target))
    detail = ", ".join(f"{name} {count}" for name, count in fused.items()) or "no transformer fusion matched"
    return f"optimize O2 (ONNX Runtime extended rewrites and transformer fusions: {detail})"


def _copy_companions(source: Path, staging: Path) -> list[str]:
    """Copy every top-level file of the model folder except weights, the card and hidden files."""
    copied = []
    for path in sorted(source.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.name == CARD_FILE or path.name.endswith(_NOT_CARRIED):
            continue
        shutil.copy2(path, staging / path.name)
        copied.append(path.name)
    return copied


def _write_card(source: Path, staging: Path, record: dict[str, Any]) -> None:
    """The ONNX section (``model_cards/onnx_export.md``) placed first in the model's card, after its metadata.

    The rest of the original card follows unchanged: it describes the training and results of the
    model this file was exported from.
    """
    from importlib import resources

    import jinja2

    template = resources.files("nlp_transfer.model_cards").joinpath("onnx_export.md").read_text(encoding="utf-8")
    section = jinja2.Environment(autoescape=False, keep_trailing_newline=True).from_string(template).render(**record)
    card = source / CARD_FILE
    original = card.read_text(encoding="utf-8") if card.is_file() else ""
    metadata, body = "", original
    if original.startswith("---\n") and "\n---\n" in original[4:]:
        end = original.index("\n---\n", 4) + len("\n---\n")
        metadata, body = original[:end] + "\n", original[end:]
    write_text(staging / CARD_FILE, metadata + section + ("\n" + body.lstrip() if body.strip() else ""))


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}
