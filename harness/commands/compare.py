"""``ebm-bench compare A B``: one configuration against another, paired, task by task.

A and B are configuration labels (``minmin-logistic[n_samples=100]``, ``exact-mle[tuned]``) or
method names (accepted when the method has exactly one configuration in the results). For each
task × model that both have ok runs in, on ``--metric`` (default: the task's primary metric),
the runs are paired by (seed, fold) — same split, same budget — and the difference A − B is
reported with its mean, 95 % t-interval and paired t-test p-value (:func:`harness.stats.paired_difference`).
A cell is a *win* for A when p < 0.05 and the difference favours A in the metric's direction, a
*loss* when p < 0.05 and it favours B, otherwise a *tie* (including cells with fewer than two
pairs, where nothing can be told apart). A cell where either side has an impossible value (a
negative NLL, :meth:`tasks.metrics.Metric.impossible`) is *invalid*: shown, never judged.
Beside the metric, what each side cost: its paired runs' mean training seconds, a stacked run
counting its group's seconds over the group's size (:func:`run_seconds`).
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # commands import nothing heavy at import time (``ebm-bench --help`` stays fast)
    import pandas as pd

VERDICTS = ("win", "tie", "loss", "invalid")


@dataclass(frozen=True)
class Comparison:
    """Per-cell rows (task, model, metric, n, mean_a, mean_b, diff, low, high, p_value, verdict)
    and the win/tie/loss counts of A against B."""

    a: str
    b: str
    cells: pd.DataFrame
    counts: dict[str, int]


def resolve_config(name: str, runs: pd.DataFrame) -> str:
    """The config label ``name`` stands for: itself when it is a config, else the single config
    of method ``name``; ValueError (with the choices) otherwise."""
    from ebm import unknown_name_error

    configs = sorted(set(runs["config"]))
    if name in configs:
        return name
    of_method = sorted(set(runs.loc[runs["method"] == name, "config"]))
    if len(of_method) == 1:
        return of_method[0]
    if of_method:
        raise ValueError(f"method {name!r} has {len(of_method)} configurations here; name one: {', '.join(of_method)}")
    raise unknown_name_error("configuration or method", name, configs + sorted(set(runs["method"]) - set(configs)))


def run_seconds(runs: pd.DataFrame) -> pd.Series:
    """Each run's training seconds, a stacked member's as its share of the group's: its seconds
    (the group's clock) over the group's size. NaN where no seconds are stored."""
    import pandas as pd

    from harness.report import group_share

    seconds = pd.to_numeric(runs["train_seconds"], errors="coerce") if "train_seconds" in runs else \
        pd.Series(float("nan"), index=runs.index)
    return seconds * group_share(runs)


def compare(runs: pd.DataFrame, a: str, b: str, *, task: str | None = None, metric: str | None = None,
            alpha: float = 0.05) -> Comparison:
    """Compare configs (or methods) ``a`` and ``b`` over ``runs`` (see the module doc)."""
    import pandas as pd

    from harness import leaderboard, stats

    runs = leaderboard.with_config(runs)
    a, b = resolve_config(a, runs), resolve_config(b, runs)
    if a == b:
        raise ValueError(f"A and B are the same configuration ({a})")
    directions = leaderboard.metric_directions()
    if metric is not None and metric not in directions:
        from ebm import unknown_name_error

        raise unknown_name_error("metric", metric, list(directions))
    ok = runs[runs["status"].eq("ok") & runs["config"].isin([a, b])]
    if task is not None:
        ok = ok[[fnmatch.fnmatchcase(t, task) for t in ok["task"]]]
        if ok.empty:
            raise ValueError(f"no ok runs of {a} or {b} on tasks matching {task!r}")
    primary = leaderboard.primary_metrics(runs, sorted(set(ok["task"])))
    rows = []
    for (task_name, model), cell in ok.groupby(["task", "model"]):
        name = metric or primary.get(task_name)
        if name is None or name not in directions:
            continue
        column = leaderboard.metric_column(name)
        if column not in cell or set(cell["config"]) != {a, b}:
            continue
        values = cell.assign(unit=leaderboard._units(cell), value=pd.to_numeric(cell[column], errors="coerce"),
                             seconds=run_seconds(cell))
        wide = values.pivot_table(index="unit", columns="config", values="value", aggfunc="mean").dropna()
        if wide.empty:
            continue
        # the cost of the paired runs only (the units both sides have)
        paired = values[values["unit"].isin(wide.index)]
        seconds = paired.groupby("config")["seconds"].mean()
        result = stats.paired_difference(wide[a].to_numpy(), wide[b].to_numpy())
        better = result.mean > 0 if directions[name] == "max" else result.mean < 0
        significant = not math.isnan(result.p_value) and result.p_value < alpha
        verdict = ("win" if better else "loss") if significant and result.mean != 0 else "tie"
        if leaderboard.impossible_values(values, name).any():
            verdict = "invalid"
        rows.append({"task": task_name, "model": model, "metric": name, "n": result.n,
                     "mean_a": float(wide[a].mean()), "mean_b": float(wide[b].mean()), "diff": result.mean,
                     "low": result.low, "high": result.high, "p_value": result.p_value, "verdict": verdict,
                     "seconds_a": float(seconds.get(a, float("nan"))),
                     "seconds_b": float(seconds.get(b, float("nan")))})
    cells = pd.DataFrame(rows, columns=["task", "model", "metric", "n", "mean_a", "mean_b", "diff", "low", "high",
                                        "p_value", "verdict", "seconds_a", "seconds_b"])
    counts = {v: int((cells["verdict"] == v).sum()) for v in VERDICTS}
    return Comparison(a, b, cells, counts)


def format_comparison(result: Comparison, fmt: str = "table") -> str:
    if fmt == "csv":
        return result.cells.to_csv(index=False)
    from harness.tables import render_table

    def number(value: float) -> str:
        return "–" if math.isnan(value) else f"{value:.4g}"

    rows = [[r.task, r.model, r.metric, str(r.n), number(r.mean_a), number(r.mean_b), number(r.diff),
             f"[{number(r.low)}, {number(r.high)}]", number(r.p_value), r.verdict]
            for r in result.cells.itertuples(index=False)]
    columns = ["task", "model", "metric", "pairs", "A", "B", "A − B", "95% CI", "p", "A vs B"]
    counts = result.counts
    invalid = (f"; {counts['invalid']} cell(s) invalid: impossible values (a negative NLL is a failed log Z "
               f"estimate), not judged" if counts["invalid"] else "")
    caption = (f"A = {result.a}, B = {result.b}; paired by (seed, fold); t-interval and paired t-test. "
               f"A wins {counts['win']}, ties {counts['tie']}, loses {counts['loss']} "
               f"(win/loss: p < 0.05 in the metric's direction){invalid}")
    return render_table(columns, rows, title=f"{result.a} vs {result.b}", caption=caption,
                        right=["pairs", "A", "B", "A − B", "95% CI", "p"]) + \
        f"win/tie/loss of {result.a} against {result.b}: {counts['win']}/{counts['tie']}/{counts['loss']}\n" + \
        _cost_line(result)


def _cost_line(result: Comparison) -> str:
    """The two sides' mean training seconds per paired run over the cells (a cell weighs its pairs)."""
    cells = result.cells.dropna(subset=["seconds_a", "seconds_b"])
    if cells.empty:
        return ""
    weights = cells["n"].clip(lower=1)
    a = float((cells["seconds_a"] * weights).sum() / weights.sum())
    b = float((cells["seconds_b"] * weights).sum() / weights.sum())
    ratio = f" (A/B {a / b:.2f}×)" if b > 0 else ""
    return (f"training seconds per run, over the {len(cells)} cell(s) with times (a stacked run: its group's "
            f"over its size): {result.a} {a:.3g}, {result.b} {b:.3g}{ratio}\n")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("compare", help="paired comparison of two configurations, task by task",
                                   description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", metavar="A", help="a configuration label or a method name")
    parser.add_argument("b", metavar="B", help="a configuration label or a method name")
    parser.add_argument("--results-dir", default="results", help="results directory (default: ./results)")
    parser.add_argument("--task", help="only tasks matching this name or glob")
    parser.add_argument("--metric", help="compare on this metric (default: each task's primary metric)")
    parser.add_argument("--format", default="table", choices=("table", "csv"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness import store

    if not Path(args.results_dir, "runs").is_dir():
        print(f"error: no runs in {args.results_dir} (run `ebm-bench run` first, or pass --results-dir)",
              file=sys.stderr)
        return 2
    runs = store.read_table(args.results_dir, "runs")
    try:
        result = compare(runs, args.a, args.b, task=args.task, metric=args.metric)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.cells.empty:
        print(f"error: {result.a} and {result.b} share no task × model with ok runs"
              + (f" reporting {args.metric}" if args.metric else ""), file=sys.stderr)
        return 2
    sys.stdout.write(format_comparison(result, args.format))
    return 0
