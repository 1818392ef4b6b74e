"""Leaderboards: test metrics aggregated over seeds and folds, ranked among methods.

One row per (task, model, method, metric) with ``mean, std, n_ok, n_failed, rank``:

* ``mean``/``std`` are over the runs with status ``ok`` that report the metric (std is the
  sample standard deviation, ddof = 1, so it is NaN for a single run);
* ``n_ok`` counts the ok runs of the group, ``n_failed`` its runs that ended ``failed``,
  ``timeout`` or ``diverged``. A group whose runs all failed keeps its row, with NaN mean and
  rank: failures are counted and shown, never averaged away. ``skipped``/``unsupported`` runs
  are neither (a method that does not apply to a model is not a failure of it);
* ``rank`` is 1 for the best mean among the methods of the same task × model × metric, in the
  metric's direction (:data:`tasks.metrics.METRICS`); ties (means equal to 10 decimals) share the
  best rank ("min" ranking).

Metric ``m`` of the leaderboard is the runs column ``test_<m>`` (``tau_mae`` and
``kl_to_truth`` are their own columns). ``DIR/leaderboard.parquet`` also holds the mean rank
of each method across tasks, as rows with ``task = model = "ALL"`` and
``metric = "mean_rank"`` (``mean`` = the mean rank, ``n_ok`` = how many task × model cells it
was ranked in, ``rank`` = its place by mean rank).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from harness.records import Status

COLUMNS = ["task", "model", "method", "metric", "mean", "std", "n_ok", "n_failed", "rank"]
#: statuses counted in ``n_failed`` (:attr:`harness.records.Status.is_failure`)
FAILED_STATUSES = Status.failures()
ALL = "ALL"
MEAN_RANK = "mean_rank"
FORMATS = ("table", "markdown", "csv", "latex")
RANK_DECIMALS = 10


def metric_directions() -> dict[str, str]:
    """Ranked metric name → "max" | "min" (from :mod:`tasks.metrics`)."""
    from tasks.metrics import METRICS

    return dict(METRICS)


def metric_column(metric: str) -> str:
    """The runs column that holds a leaderboard metric on the test split (``Metric.column``;
    ``test_<name>`` for a metric :mod:`tasks.metrics` does not know)."""
    from tasks.metrics import METRIC_BY_NAME

    known = METRIC_BY_NAME.get(metric)
    return known.column if known else f"test_{metric}"


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64" if c in ("mean", "std", "rank") else
                                      "int64" if c.startswith("n_") else "object") for c in COLUMNS})


def build_leaderboard(runs: pd.DataFrame) -> pd.DataFrame:
    """Aggregate a (deduped) runs table into the long leaderboard described in the module doc.

    A metric is listed for a task when at least one run of that task reports it.
    """
    directions = metric_directions()
    if runs.empty:
        return _empty()
    keys = ["task", "model", "method"]
    runs = runs.assign(_ok=runs["status"].eq(Status.OK.value), _failed=runs["status"].isin(FAILED_STATUSES))
    counts = runs.groupby(keys, dropna=False)[["_ok", "_failed"]].sum().rename(
        columns={"_ok": "n_ok", "_failed": "n_failed"})
    counts = counts[(counts["n_ok"] > 0) | (counts["n_failed"] > 0)].reset_index()
    ok = runs[runs["_ok"]]
    parts = []
    for metric, direction in directions.items():
        column = metric_column(metric)
        if column not in runs.columns:
            continue
        values = pd.to_numeric(ok[column], errors="coerce")
        reported_tasks = set(runs.loc[pd.to_numeric(runs[column], errors="coerce").notna(), "task"])
        if not reported_tasks:
            continue
        stats = values.groupby([ok[k] for k in keys], dropna=False).agg(["mean", "std"]).reset_index()
        part = counts[counts["task"].isin(reported_tasks)].merge(stats, on=keys, how="left")
        part["metric"] = metric
        # means equal up to float rounding (0.22 + 0.20 vs 0.21 + 0.21) are ties
        part["rank"] = part["mean"].round(RANK_DECIMALS).groupby([part["task"], part["model"]], dropna=False).rank(
            method="min", ascending=(direction == "min"))
        parts.append(part)
    if not parts:
        return _empty()
    board = pd.concat(parts, ignore_index=True)[COLUMNS]
    board[["n_ok", "n_failed"]] = board[["n_ok", "n_failed"]].astype("int64")
    return board.sort_values(["task", "model", "metric", "rank", "method"], na_position="last").reset_index(drop=True)


def primary_metrics(runs: pd.DataFrame | None, tasks: list[str]) -> dict[str, str]:
    """Task → its primary metric: the runs' ``primary_metric`` column, else the task registry."""
    found: dict[str, str] = {}
    if runs is not None and "primary_metric" in runs.columns:
        known = runs.dropna(subset=["primary_metric"]).drop_duplicates("task")
        found.update(zip(known["task"], known["primary_metric"]))
    for task in tasks:
        if task not in found:
            try:
                from tasks.registry import get_task

                found[task] = get_task(task).primary_metric
            except (KeyError, ValueError, ImportError):
                pass  # a user task no longer registered: no primary metric, left out of the mean rank
    return found


def mean_rank_across_tasks(board: pd.DataFrame, metric: str | None = None, *,
                           primary: dict[str, str] | None = None) -> pd.DataFrame:
    """Mean over task × model cells of each method's rank on ``metric`` (default: each task's
    primary metric). Columns: ``method, mean_rank, n_cells, rank``; lower is better.

    A method ranked in fewer cells is averaged over those it has (``n_cells`` says how many).
    """
    board = board[(board["task"] != ALL) & board["rank"].notna()]
    if metric is None:
        primary = primary if primary is not None else primary_metrics(None, sorted(board["task"].unique()))
        board = board[board["metric"].eq(board["task"].map(primary))]
    else:
        board = board[board["metric"] == metric]
    if board.empty:
        return pd.DataFrame({"method": pd.Series(dtype=object), "mean_rank": pd.Series(dtype=float),
                             "n_cells": pd.Series(dtype="int64"), "rank": pd.Series(dtype=float)})
    table = board.groupby("method")["rank"].agg(mean_rank="mean", n_cells="count").reset_index()
    table["rank"] = table["mean_rank"].rank(method="min")
    return table.sort_values(["mean_rank", "method"]).reset_index(drop=True)


def with_mean_rank_rows(board: pd.DataFrame, mean_ranks: pd.DataFrame) -> pd.DataFrame:
    """Append the mean-rank rows (``task = model = ALL``, ``metric = mean_rank``)."""
    if mean_ranks.empty:
        return board
    extra = pd.DataFrame({
        "task": ALL, "model": ALL, "method": mean_ranks["method"], "metric": MEAN_RANK,
        "mean": mean_ranks["mean_rank"], "std": np.nan, "n_ok": mean_ranks["n_cells"].astype("int64"),
        "n_failed": 0, "rank": mean_ranks["rank"],
    })
    return pd.concat([board, extra], ignore_index=True)[COLUMNS]


def leaderboard_for(results_dir: str | os.PathLike, *, on_corrupt: str = "warn") -> pd.DataFrame:
    """The full leaderboard of a results directory (task rows plus mean-rank rows)."""
    from harness import store

    runs = store.read_table(results_dir, "runs", on_corrupt=on_corrupt)
    board = build_leaderboard(runs)
    primary = primary_metrics(runs, sorted(board["task"].unique()))
    return with_mean_rank_rows(board, mean_rank_across_tasks(board, primary=primary))


def write_leaderboard(results_dir: str | os.PathLike, *, on_corrupt: str = "warn") -> Path:
    """Recompute ``DIR/leaderboard.parquet`` from the runs and write it atomically."""
    import pyarrow as pa

    from harness import store

    board = leaderboard_for(results_dir, on_corrupt=on_corrupt)
    return store.write_parquet_atomic(Path(results_dir) / "leaderboard.parquet",
                                      pa.Table.from_pandas(board, preserve_index=False))


# ----------------------------------------------------------------------------- formatting

def _cell(mean: float, std: float) -> str:
    if mean is None or math.isnan(mean):
        return "–"
    return f"{mean:.3f}" if std is None or math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def pivot(board: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Wide view: one row per task/model/method, one ``mean ± std`` column per metric, then
    n_ok / n_failed. Also returns a same-shaped boolean frame marking the best (rank 1) cells."""
    board = board[board["task"] != ALL]
    keys = ["task", "model", "method"]
    if board.empty:
        return pd.DataFrame(columns=keys + ["n_ok", "n_failed"]), pd.DataFrame()
    cells = board.assign(cell=[_cell(m, s) for m, s in zip(board["mean"], board["std"])],
                         best=board["rank"].eq(1))
    metrics = list(dict.fromkeys(cells["metric"]))
    wide = cells.pivot_table(index=keys, columns="metric", values="cell", aggfunc="first", sort=True).reindex(
        columns=metrics).fillna("")
    best = cells.pivot_table(index=keys, columns="metric", values="best", aggfunc="any", sort=True).reindex(
        columns=metrics).fillna(False).astype(bool)
    counts = cells.groupby(keys)[["n_ok", "n_failed"]].max()
    wide = wide.join(counts).reset_index()
    wide.columns.name = None
    return wide, best.reset_index(drop=True)


def _markdown(wide: pd.DataFrame, best: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(wide.columns) + " |", "|" + "---|" * len(wide.columns)]
    for i, row in wide.iterrows():
        cells = [f"**{v}**" if c in best.columns and best.at[i, c] else str(v) for c, v in row.items()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text.replace("±", r"$\pm$").replace("–", "--")


def _latex(wide: pd.DataFrame, best: pd.DataFrame) -> str:
    header = " & ".join(_latex_escape(str(c)) for c in wide.columns) + r" \\"
    body = []
    for i, row in wide.iterrows():
        cells = [rf"\textbf{{{_latex_escape(str(v))}}}" if c in best.columns and best.at[i, c]
                 else _latex_escape(str(v)) for c, v in row.items()]
        body.append(" & ".join(cells) + r" \\")
    spec = "lll" + "r" * (len(wide.columns) - 3)
    return "\n".join([rf"\begin{{tabular}}{{{spec}}}", r"\toprule", header, r"\midrule", *body,
                      r"\bottomrule", r"\end{tabular}"]) + "\n"


def _rich_table(wide: pd.DataFrame, best: pd.DataFrame, title: str | None, width: int | None = None,
                caption: str = "* best mean in its task × model (ties share it)") -> str:
    """The rich table; with ``width``, it fits: mean±std cells lose their spaces first, then
    :func:`harness.tables.render_table` drops the vertical rules and, last, cuts long names."""
    from harness.tables import render_table

    numeric = [c for c in wide.columns if c not in ("task", "model", "method")]

    def render(compact: bool) -> str:
        rows = [[(f"{v}*" if compact else f"{v} *") if c in best.columns and best.at[i, c] else v
                 for c, v in row.items()] for i, row in wide.iterrows()]
        if compact:
            rows = [[v.replace(" ± ", "±") if isinstance(v, str) else v for v in row] for row in rows]
        return render_table([str(c) for c in wide.columns], rows, title=title, caption=caption, right=numeric,
                            max_width=width)

    if width is None:
        return render(False)
    from harness.tables import natural_width

    cells = [[str(v) for v in row] for row in wide.itertuples(index=False)]
    star = 2 if best.to_numpy().any() else 0  # the " *" of the best cells
    fits = natural_width([str(c) for c in wide.columns], cells, compact=True) + star <= width
    return render(not fits)


def terminal_width() -> int:
    """Columns of the terminal stdout writes to (``COLUMNS`` when set; 80 when unknown): rich's rule."""
    from rich.console import Console

    return Console().width


def parse_metrics(value: str | None) -> tuple[str, ...] | None:
    """``--metrics``: None (each task's primary metric), ``all``, or a comma list."""
    if value is None or not value.strip():
        return None
    if value.strip() == "all":
        return ("all",)
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _primary_only(board: pd.DataFrame) -> pd.DataFrame:
    """Each task's rows on its primary metric only (a task without one keeps its first metric)."""
    tasks = sorted(set(board["task"]) - {ALL})
    primary = primary_metrics(None, tasks)
    keep = board["task"].map(primary)
    first = board.groupby("task")["metric"].transform("first")
    return board[board["metric"].eq(keep.fillna(first))]


def format_leaderboard(board: pd.DataFrame, fmt: str = "table", task: str | None = None,
                       metric: str | None = None, *, metrics: tuple[str, ...] | None = None,
                       width: int | None = None) -> str:
    """Render a leaderboard. ``table`` (rich), ``markdown`` and ``latex`` show the compact pivot
    (best mean per task × model × metric in bold); ``csv`` gives the long rows, for machines.
    ``task``/``metric`` filter; the mean-rank rows are shown under the table when present.

    ``metrics``: None shows, in the ``table`` format, each task's primary metric with n_ok and
    n_failed, fitted to ``width`` columns (default: the terminal's); the other formats stay
    complete. ``("all",)`` shows every metric; a tuple of names shows those."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown leaderboard format {fmt!r}; choose one of {', '.join(FORMATS)}")
    selected = board
    if metrics is not None and metrics != ("all",):
        known = sorted(set(board["metric"]) - {MEAN_RANK})
        unknown = [m for m in metrics if m not in known]
        if unknown:
            raise ValueError(f"no leaderboard rows for metric {unknown[0]!r}; metrics with results: "
                             f"{', '.join(known) or 'none'}")
        selected = selected[selected["metric"].isin(metrics) | (selected["task"] == ALL)]
    primary_only = fmt == "table" and metrics is None and metric is None
    if task is not None:
        known = sorted(set(board["task"]) - {ALL})
        if task not in known:
            raise ValueError(f"no leaderboard rows for task {task!r}; tasks with results: {', '.join(known) or 'none'}")
        selected = selected[selected["task"] == task]
    if metric is not None:
        known = sorted(set(board["metric"]) - {MEAN_RANK})
        if metric not in known:
            raise ValueError(f"no leaderboard rows for metric {metric!r}; metrics with results: {', '.join(known) or 'none'}")
        selected = selected[selected["metric"] == metric]
    if fmt == "csv":
        return board.loc[selected.index].to_csv(index=False) if len(selected) else ",".join(COLUMNS) + "\n"
    ranks = board[(board["task"] == ALL) & (board["metric"] == MEAN_RANK)]
    rank_lines = ", ".join(f"{m} {r:.2f}" for m, r in zip(ranks["method"], ranks["mean"])) \
        if task is None and metric is None else ""
    if primary_only:  # the default terminal view fits the terminal; asked-for metrics get their natural width
        selected = _primary_only(selected)
        width = width or terminal_width()
    else:
        width = None
    blocks = [_render_block(*pivot(block), fmt, width=width, primary_only=primary_only)
              for block in _blocks_by_metric_set(selected)]
    if not blocks:
        return "(no results yet)\n"
    footer = f"mean rank across tasks (primary metric): {rank_lines}\n" if rank_lines and fmt != "latex" else ""
    if footer and width is not None:
        import textwrap

        footer = textwrap.fill(footer.strip(), width, subsequent_indent="  ") + "\n"
    return "\n".join(blocks) + ("\n" + footer if footer else "")


def _blocks_by_metric_set(board: pd.DataFrame) -> list[pd.DataFrame]:
    """Split task rows into blocks of tasks that report the same metrics (multilabel vs ranking),
    so one table never pads a task with columns it cannot have."""
    board = board[board["task"] != ALL]
    metric_sets = board.groupby("task")["metric"].agg(lambda m: tuple(sorted(set(m))))
    return [board[board["task"].isin(tasks.index)] for _, tasks in metric_sets.groupby(metric_sets, sort=False)]


def _render_block(wide: pd.DataFrame, best: pd.DataFrame, fmt: str, *, width: int | None = None,
                  primary_only: bool = False) -> str:
    if fmt == "markdown":
        return _markdown(wide, best)
    if fmt == "latex":
        return _latex(wide, best)
    if primary_only:
        return _rich_table(wide, best, title="leaderboard: test, mean ± std over seeds", width=width,
                           caption="* best in its task × model · every metric: leaderboard --metrics all")
    return _rich_table(wide, best, title="ebm-bench leaderboard (test split; mean ± std over seeds)", width=width)
