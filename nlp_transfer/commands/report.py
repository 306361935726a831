"""``nlp-transfer report MODEL_DIR``: redraw a finished run's plots and print its summary.

Thin: parse → :func:`nlp_transfer.plots.draw_plots` (and the card re-rendered so it links them) →
:func:`nlp_transfer.run_report.render_run`.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``report`` subcommand."""
    report = sub.add_parser(
        "report", parents=[common], usage="%(prog)s MODEL_DIR [OPTIONS]",
        help="Redraw a finished run's plots and print its summary.",
        description="Redraw training_curves.png and confusion_matrix.png in a model folder from its metrics.json and "
        "training_summary.json, re-render its model card (README.md) so it shows them, and print a summary of the "
        "run: data, epochs with the best one marked, scores, weakest classes, most frequent confusions, warnings. "
        "The plots need matplotlib: pip install 'nlp-transfer[plots]'.",
    )
    report.add_argument("model_dir", metavar="MODEL_DIR", help="Folder written by nlp-transfer train.")
    report.add_argument("--no-plots", action="store_true",
                        help="Only print the summary: draw no plots and leave the card as it is.")
    report.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from ..run_report import read_records, render_run

    read_records(args.model_dir)  # a folder that is not a finished run stops here, before anything is written
    written = []
    if not args.no_plots:
        from ..model_card import write_card
        from ..plots import draw_plots

        written = [str(path) for path in draw_plots(args.model_dir)]
        written.append(f"{write_card(args.model_dir)} (card re-rendered with the plots)")
    print(render_run(args.model_dir))
    for path in written:
        print(f"wrote {path}")
    return 0
