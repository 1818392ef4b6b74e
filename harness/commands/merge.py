"""``ebm-bench merge A B … --into C``: combine results directories (dedupe runs by run_id)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("merge", help="combine results dirs from several machines")
    parser.add_argument("sources", nargs="+", help="results directories to merge")
    parser.add_argument("--into", required=True, help="destination results directory (its content is kept)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at a damaged results file instead of skipping it with a warning")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from harness import merge, store

    try:
        summary = merge.merge_results(args.sources, args.into,
                                      on_corrupt="raise" if getattr(args, "strict", False) else "warn")
    except (FileNotFoundError, store.StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"merged {len(summary.sources)} dir(s) into {summary.into}: {summary.runs} runs "
          f"({summary.runs_superseded} superseded rows dropped), {summary.curves} curve points, "
          f"{summary.trials} trials, {summary.perf} perf rows")
    return 0
