"""``ebm-bench report``: one Markdown page (and HTML) with the leaderboards and figures."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Write one page about a results directory: REPORT.md and report.html (in --out, default the
results dir) with the run counts by status, the leaderboard of every task (test split,
mean ± std over seeds, best in bold), the mean rank of each method across tasks, the
worker-seconds each method's tuning trials and runs held, the figures of `ebm-bench plot`
(written to OUT/plots/) and the failed runs with their messages.

--paper writes the paper-reproduction report instead (from the `paper` and `paper-convergence`
suites' runs, partial runs included): coverage of the protocol (planned vs stored runs), the
issue-16 targets per dataset, the paper's claims with paired evidence and computed verdicts, one
table per dataset (every config, the paper's figure, scikit-learn references fitted on the same
splits, cached in OUT/references.parquet), critical-difference diagrams, the τ and convergence
figures, every failure with its message, the wall time (per task, and the worker-seconds per
method), and provenance (machine, commands).

  ebm-bench report --paper --results-dir results/paper --notes results/paper/NOTES.md
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="write REPORT.md and report.html with leaderboards and plots",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default="results", help="results directory (default: ./results)")
    parser.add_argument("--out", default=None, help="output folder (default: the results dir)")
    parser.add_argument("--paper", action="store_true",
                        help="the paper-reproduction report: our numbers beside the paper's and beside "
                             "scikit-learn references on the same splits (needs the paper suite's runs)")
    parser.add_argument("--data-dir", default=None, help="with --paper: dataset directory (default: $EBM_BENCH_DATA)")
    parser.add_argument("--notes", default=None,
                        help="with --paper: a Markdown file inserted after the summary (e.g. the command "
                             "sequence and what was cut)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness import report

    if not Path(args.results_dir).is_dir():
        print(f"error: results dir {args.results_dir} does not exist", file=sys.stderr)
        return 2
    if args.paper:
        from harness.paper import write_paper_report
        from tasks.registry import resolve_data_dir

        notes = Path(args.notes).read_text(encoding="utf-8") if args.notes else ""
        path = write_paper_report(args.results_dir, args.out or args.results_dir,
                                  data_dir=resolve_data_dir(args.data_dir), notes=notes)
        print(path)
        return 0
    path = report.write_report(args.results_dir, args.out)
    print(path)
    print(path.with_name("report.html"))
    return 0
