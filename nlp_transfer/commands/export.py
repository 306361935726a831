"""``nlp-transfer export MODEL_DIR --format onnx --output-dir DIR``: a checked ONNX copy of a trained model."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from ..options import PositiveInt, with_default
from . import quiet_libraries


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``export`` subcommand."""
    export = sub.add_parser(
        "export", parents=[common], usage="%(prog)s MODEL_DIR --format onnx --output-dir DIR [OPTIONS]",
        help="Export a trained model to ONNX (optionally optimised and int8-quantized), checked against PyTorch.",
        description="Convert a trained model folder to ONNX for ONNX Runtime, with its tokenizer, labels, settings "
        "files and a card section. Before the folder appears, the export scores the same texts with both backends: "
        "an fp32 export that differs beyond --tolerance is refused (exit 2); for --quantize int8 the label agreement "
        "and, with a labelled --check-file, the accuracy change are reported. Needs pip install 'nlp-transfer[onnx]'.",
    )
    data, output, check = (export.add_argument_group(title) for title in ("data", "output", "check"))
    data.add_argument("model_dir", metavar="MODEL_DIR", help="Local folder written by nlp-transfer train.")
    output.add_argument("--format", choices=["onnx"], required=True, help="Required: the export format (onnx).")
    output.add_argument("--output-dir", required=True, metavar="DIR",
                        help="Required: the folder to write; it appears only when the export passed its check.")
    output.add_argument("--quantize", choices=["int8"],
                        help="Dynamic int8 quantization of the weights: smaller and faster on CPUs, small accuracy cost.")
    output.add_argument("--optimize", choices=["O1", "O2"],
                        help="Graph optimisation: O1 basic rewrites; O2 also fuses transformer ops (CPU).")
    output.add_argument("--overwrite", action="store_true", help="Replace an existing export in --output-dir.")
    check.add_argument("--check-file", metavar="CSV",
                       help="Score this CSV's texts with both backends (and report the accuracy of each when it has "
                       "the label column); default: texts generated from the tokenizer's vocabulary.")
    check.add_argument("--sample-size", type=PositiveInt("--sample-size"), default=256, metavar="N",
                       help=with_default("Generated texts to compare when there is no --check-file.", 256))
    check.add_argument("--tolerance", type=_probability, default=1e-4, metavar="P",
                       help=with_default("Largest probability difference an fp32 export may show.", 1e-4))
    check.add_argument("--min-agreement", type=_probability, metavar="FRACTION",
                       help="Refuse an int8 export whose labels agree with PyTorch less often (e.g. 0.99).")
    export.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from ..extras import require_extra

    require_extra("onnx", "nlp-transfer export --format onnx")
    from ..onnx_export import ExportOptions, export_onnx

    options = ExportOptions(quantize=args.quantize, optimize=args.optimize, check_file=args.check_file,
                            sample_size=args.sample_size, tolerance=args.tolerance, min_agreement=args.min_agreement,
                            overwrite=args.overwrite)
    quiet_libraries(args.quiet)
    # The exporter logs every optional torchvision op it skips; nothing a user can act on.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    # onnxscript, onnx_ir and ONNX Runtime's optimizer and quantizer log every graph rewrite at INFO, some
    # on the root logger; the export's own report is the JSON printed at the end.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    # ONNX Runtime's quantizer suggests a shape pre-pass that cannot handle dynamic-shape exports.
    hint = _DropMessage("pre-processing before quantization")
    root.addFilter(hint)
    try:
        record = export_onnx(args.model_dir, args.output_dir, options)
    finally:
        root.setLevel(level)
        root.removeFilter(hint)
    print(json.dumps(record, indent=2))
    return 0


class _DropMessage(logging.Filter):
    """Drops log records whose message contains ``text``."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()
