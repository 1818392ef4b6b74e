"""``ebm-bench leaderboard``: the leaderboard of a results directory (recomputed from its runs)."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Aggregate the runs of --results-dir into mean ± std per task × model × method × metric
(test split), with failure counts and ranks; refresh DIR/leaderboard.parquet and print it.

The terminal table shows each task's primary metric, n_ok and n_failed, fitted to the
terminal's width; --metrics all (or a comma list) shows more. markdown, csv and latex
are complete.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("leaderboard", help="show the leaderboard (test metrics, mean ± std over seeds)",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default="results", help="results directory (default: ./results)")
    parser.add_argument("--task", help="only this task")
    parser.add_argument("--metric", help="only this metric (e.g. f1_example, kendall, nll)")
    parser.add_argument("--metrics", help="'all' or a comma list (default: each task's primary metric in the "
                                          "terminal table, every metric in markdown/csv/latex)")
    parser.add_argument("--format", default="table", choices=("table", "markdown", "csv", "latex"))
    parser.add_argument("--no-write", action="store_true", help="do not refresh DIR/leaderboard.parquet")
    parser.add_argument("--strict", action="store_true",
                        help="stop at a damaged results file instead of skipping it with a warning")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Aggregate the runs of --results-dir into mean ± std per task × model × method × metric,
    with failure counts and ranks, refresh DIR/leaderboard.parquet, and print it."""
    from pathlib import Path

    from harness import leaderboard

    if not Path(args.results_dir, "runs").is_dir():
        print(f"error: no runs in {args.results_dir} (run `ebm-bench run` first, or pass --results-dir)",
              file=sys.stderr)
        return 2
    board = leaderboard.leaderboard_for(args.results_dir)
    if not args.no_write:
        leaderboard.write_leaderboard(args.results_dir)
    try:
        text = leaderboard.format_leaderboard(board, args.format, task=args.task, metric=args.metric,
                                              metrics=leaderboard.parse_metrics(getattr(args, "metrics", None)))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0
