"""``ebm-bench compact``: merge a results directory's small part files (one per finished run)
into one file per table. Safe while drivers run: the merged file is written first, then the
merged parts are removed (a crash in between leaves duplicates readers drop)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("compact", help="merge the small result part files into one per table",
                                   description=__doc__)
    parser.add_argument("--results-dir", default="results", help="results directory (default: ./results)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from harness import store

    if not Path(args.results_dir).is_dir():
        print(f"error: results dir {args.results_dir} does not exist", file=sys.stderr)
        return 2
    store.clean_stale_temp(args.results_dir)
    before = store.part_counts(args.results_dir)
    merged = store.compact(args.results_dir)
    after = store.part_counts(args.results_dir)
    print(", ".join(f"{table}: {before[table]} → {after[table]} files" for table in merged))
    return 0
