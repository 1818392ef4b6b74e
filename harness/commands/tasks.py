"""``ebm-bench tasks``: every task with its kind, |Y|, sizes, primary metric and whether its
data is available here (and if not, why and where to get it)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.base import Unavailable


def register(subparsers) -> None:
    parser = subparsers.add_parser("tasks", help="list the tasks and whether their data is available",
                                   description=__doc__)
    parser.add_argument("--data-dir", help="dataset directory (default: $EBM_BENCH_DATA)")
    parser.add_argument("--format", choices=("table", "csv"), default="table")
    parser.add_argument("--available", action="store_true", help="only tasks whose data is present")
    parser.set_defaults(func=main)


def task_rows(data_dir) -> tuple[list[dict], list[str]]:
    """One row per task, and the remedies of the unavailable ones, each once (many tasks share one:
    repeated on every row it would fill the table)."""
    from tasks.registry import list_tasks

    rows, remedies = [], []
    for task in list_tasks():
        info = task.info(data_dir)
        missing = info.unavailable
        if missing is not None and missing.remedy and missing.remedy not in remedies:
            remedies.append(missing.remedy)
        rows.append({"task": info.name, "kind": info.kind, "k": info.k, "log10|Y|": round(info.log10_size, 1),
                     "n_train": info.n_train, "n_test": info.n_test, "d": info.n_features,
                     "folds": getattr(task, "n_folds", 1), "metric": info.primary_metric,
                     "available": "yes" if missing is None else "no",
                     "missing": "" if missing is None else _why_not(missing)})
    return rows, remedies


def _why_not(missing: Unavailable) -> str:
    """The short cell of an unavailable task: the missing file's name (its folder and the remedy
    are said once under the table), else the whole problem."""
    from pathlib import PurePosixPath

    return PurePosixPath(missing.missing).name if missing.missing else missing.problem


def print_rows(rows: list[dict], fmt: str, title: str) -> None:
    """A table (one line per row) or CSV on stdout."""
    if fmt == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
        return
    import os

    from harness.tables import render_table, terminal_width

    columns = list(rows[0]) if rows else []
    numeric = [c for c in columns if rows and all(isinstance(r[c], (int, float)) or r[c] is None for r in rows)]
    sys.stdout.write(render_table(columns, [list(r.values()) for r in rows], title=title, right=numeric,
                                  wrap=("description", "defaults"),
                                  max_width=terminal_width() if sys.stdout.isatty() or "COLUMNS" in os.environ
                                  else None))  # piped: whole rows, as a log or `less` wants them


def main(args) -> int:
    from tasks.registry import resolve_data_dir

    rows, remedies = task_rows(resolve_data_dir(args.data_dir))
    if args.available:
        rows, remedies = [r for r in rows if r["available"] == "yes"], []
    print_rows(rows, args.format, "ebm-bench tasks")
    for remedy in remedies:  # on stderr: the CSV on stdout stays a table
        print(f"missing files: {remedy}", file=sys.stderr)
    return 0
