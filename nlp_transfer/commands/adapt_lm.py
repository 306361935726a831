"""``nlp-transfer adapt-lm``: continue masked-LM pretraining of an encoder on target-domain texts.

Parse → :class:`~nlp_transfer.adapt_lm_config.AdaptLmConfig` → :func:`nlp_transfer.adapt_lm.adapt_lm` →
print the summary. The options are generated from the config's fields, as ``train``'s are.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from . import quiet_libraries, report_interruption


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``adapt-lm`` subcommand."""
    from ..adapt_lm_config import AdaptLmConfig
    from ..options import add_config_arguments

    parser = sub.add_parser(
        "adapt-lm", parents=[common], help="Domain-adaptive masked-LM pretraining on unlabelled texts.",
        description="Continue the masked-LM training of an encoder on texts of the target domain (\"don't stop "
        "pretraining\"), report the held-out perplexity before, after each epoch and at the end, and save an "
        "encoder folder that `nlp-transfer train --model DIR` fine-tunes from. Checkpoints, signals and --resume "
        "work as for train.",
    )
    add_config_arguments(parser, AdaptLmConfig)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from ..adapt_lm import adapt_lm
    from ..adapt_lm_config import AdaptLmConfig
    from ..checkpoint import TrainingInterrupted
    from ..options import config_from_args

    quiet_libraries(args.quiet)
    try:
        result = adapt_lm(config_from_args(AdaptLmConfig, args))
    except TrainingInterrupted as stop:
        report_interruption(stop, args)
        return stop.exit_code
    if PartialState().is_main_process:  # under accelerate launch every process returns the summary
        print(json.dumps({"output_dir": result.output_dir, **result.summary}, indent=2))
    return 0
