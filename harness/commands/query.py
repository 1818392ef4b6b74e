"""``ebm-bench query "SQL"``: DuckDB over the views runs, curves, trials, perf, leaderboard."""

from __future__ import annotations

import argparse
import sys

EPILOG = """views: runs (one row per run_id, latest finished_at), curves, trials, perf, leaderboard.
examples:
  ebm-bench query "select method, avg(test_f1_example) from runs where task = 'yeast' group by 1"
  ebm-bench query "select status, count(*) from runs group by 1"
  ebm-bench query "select * from leaderboard where metric = 'kendall' and rank = 1" --format csv
read-only: only SELECT (and EXPLAIN) over these views; no file, network or extension access.
corrupt, truncated or schema-conflicting Parquet files are skipped with a warning naming them
(--strict: stop instead)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("query", help="run SQL (DuckDB) over the results tables",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sql", help="the SQL statement")
    parser.add_argument("--results-dir", default="results", help="results directory (default: ./results)")
    parser.add_argument("--format", default="table", choices=("table", "csv", "json"))
    parser.add_argument("--strict", action="store_true", help="stop at a corrupt file instead of skipping it")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import warnings

    from harness import query, store

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show_warning
    try:
        frame = query.run_query(args.results_dir, args.sql, on_corrupt="raise" if args.strict else "warn")
    except (query.QueryError, store.CorruptFileError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(query.render_frame(frame, args.format))
    return 0
