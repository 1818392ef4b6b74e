"""``ebm-bench tune``: the Optuna stage alone. Runs each (task, model, method) study of the
suite to ``--tune-trials`` finished trials (resuming interrupted studies), writes the trials
to ``DIR/trials`` and prints the best hyperparameters; ``ebm-bench run`` with the same
arguments then evaluates them on every seed (the finished studies are reused)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    from harness.commands.run import add_common_arguments

    parser = subparsers.add_parser("tune", help="run the Optuna studies of a suite (no test evaluation)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.set_defaults(func=main)


def best_trials(trials):
    """The best COMPLETE trial of each study (direction from the task's primary metric)."""
    from tasks.metrics import get_metric
    from tasks.registry import get_task

    complete = trials[trials["state"] == "COMPLETE"]
    best = []
    for _, rows in complete.groupby("study"):
        maximize = get_metric(get_task(rows["task"].iloc[0]).primary_metric).maximize
        best.append(rows.loc[rows["value"].idxmax() if maximize else rows["value"].idxmin()])
    return best


def main(args) -> int:
    from harness import store
    from harness.commands.run import STOPPED_AT_LIMIT, options_from_args, run_suite
    from harness.plan import resolve_suite

    filters, options = options_from_args(args, tune_only=True)
    suite, filters = resolve_suite(args.suite, filters)
    if (options.tune_trials if options.tune_trials is not None else suite.tune_trials) <= 0:
        raise ValueError(f"suite {suite.name!r} has tune_trials = 0; pass --tune-trials N")
    summary = run_suite(suite, filters, options)
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    trials = store.read_table(options.results_dir, "trials")
    counts = trials.groupby("study").size() if len(trials) else {}
    for row in best_trials(trials):
        print(f"{row['study']}: {counts[row['study']]} trials; best validation value {row['value']:.4g} "
              f"with {row['params_json']}")
    return 130 if summary.interrupted else STOPPED_AT_LIMIT if summary.stopped_at_limit else 0
