"""``ebm-bench data check|fetch``: verify the benchmark data files, or download them."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="check or fetch the public benchmark data files")
    actions = parser.add_subparsers(dest="data_action", required=True, metavar="{check,fetch}")
    check = actions.add_parser("check", help="which manifest files are present, sha256 verified")
    check.add_argument("--data-dir", default=None, help="data directory (default: $EBM_BENCH_DATA)")
    check.add_argument("--manifest", default=None, help="manifest JSON (default: the packaged one)")
    check.add_argument("--format", default="table", choices=("table", "csv", "json"))
    check.set_defaults(func=run_check)
    fetch = actions.add_parser("fetch", help="download missing files, verifying sha256")
    fetch.add_argument("--to", required=True, help="destination data directory")
    fetch.add_argument("--mirror", default=None,
                       help="base URL (or folder) to fetch PATH from as MIRROR/PATH instead of GitHub")
    fetch.add_argument("--manifest", default=None, help="manifest JSON (default: the packaged one)")
    fetch.add_argument("--allow-http", action="store_true",
                       help="accept plain http URLs in the manifest (default: https only; sha256 is always checked)")
    fetch.set_defaults(func=run_fetch)


def run_check(args: argparse.Namespace) -> int:
    """Exit 0 when every file is present and verified, 1 otherwise, 2 on bad input."""
    import pandas as pd

    from harness import data, query

    try:
        statuses = data.check(args.data_dir, args.manifest)
    except data.DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(query.render_frame(pd.DataFrame(data.status_rows(statuses)), args.format))
    bad = [s for s in statuses if s.status != "ok"]
    print(f"{len(statuses) - len(bad)} of {len(statuses)} files ok", file=sys.stderr)
    return 1 if bad else 0


def run_fetch(args: argparse.Namespace) -> int:
    from harness import data

    try:
        statuses = data.fetch(args.manifest, args.to, mirror=args.mirror,
                              allow_http=getattr(args, "allow_http", False))
    except data.DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    fetched = sum(s.status == "fetched" for s in statuses)
    print(f"{fetched} fetched, {len(statuses) - fetched} already present and verified, in {args.to}")
    return 0
