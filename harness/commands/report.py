"""``ebm-bench report``: one Markdown page (and HTML) with the leaderboards and figures."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="write REPORT.md and report.html with leaderboards and plots")
    parser.add_argument("--results-dir", default="results", help="results directory (default: ./results)")
    parser.add_argument("--out", default=None, help="output folder (default: the results dir)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness import report

    if not Path(args.results_dir).is_dir():
        print(f"error: results dir {args.results_dir} does not exist", file=sys.stderr)
        return 2
    path = report.write_report(args.results_dir, args.out)
    print(path)
    print(path.with_name("report.html"))
    return 0
