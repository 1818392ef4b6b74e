"""``ebm-bench plot``: PNG figures (convergence, τ vs log Z, leaderboard bars)."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Write PNG figures of a results directory (default: RESULTS_DIR/plots/):

  convergence-TASK-MODEL.png  validation primary metric vs steps and vs seconds (robust y
                              range), and each method's training objective in its own panel
  tau-TASK-MODEL.png          learned tau(x) against the exact log Z(x) on test inputs
  leaderboard-TASK.png        test primary metric, mean +- std over seeds per model x method,
                              on an axis zoomed to the values

Only runs with status ok are drawn; a method keeps its colour in every figure.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plot", help="write PNG figures of a results directory",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default="results", help="results directory (default: ./results)")
    parser.add_argument("--out", default=None, help="output folder (default: RESULTS_DIR/plots)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness import plots

    if not Path(args.results_dir).is_dir():
        print(f"error: results dir {args.results_dir} does not exist", file=sys.stderr)
        return 2
    paths = plots.plot_all(args.results_dir, args.out or Path(args.results_dir) / "plots")
    for path in paths:
        print(path)
    if not paths:
        print("no figures: the results dir holds no ok runs with curves or metrics yet", file=sys.stderr)
    return 0
