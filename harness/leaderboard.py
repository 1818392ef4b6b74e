"""Leaderboards: test metrics aggregated over seeds and folds, ranked among configurations.

One row per (task, model, config, metric); ``config`` is the run's configuration label
(:func:`harness.plan.config_label`: the method plus its non-default hyperparameters, or
``[tuned]``), so two grid blocks of one method with different ``params`` are two rows. Columns:

* ``mean``/``std`` over the runs with status ``ok`` that report the metric (std is the sample
  standard deviation, ddof = 1, so it is NaN for a single run);
* ``n_ok`` counts the ok runs of the group, ``n_failed`` its runs that ended ``failed``,
  ``timeout`` or ``diverged``. Every planned (task, model, config) is listed — one that has
  rows of any status but ``unsupported`` — even when nothing succeeded (``n_ok = 0``, NaN mean
  and rank; a task whose runs all failed is listed under its primary metric): failures are
  counted and shown, never averaged away. A config that does not apply to a model
  (``unsupported`` only) is not a cell;
* ``rank`` is 1 for the best mean among the configs *with results* of the same task × model ×
  metric, in the metric's direction (:data:`tasks.metrics.METRICS`); ties (means equal to 10
  decimals) share the best rank ("min" ranking);
* ``n_pairs``, ``p_holm``, ``tied_best``: each config against the cell's best config, paired
  over (seed, fold) (:func:`harness.stats.versus_best`: paired t-test, Holm-corrected within the
  cell). ``tied_best`` is True for the best and for every config not significantly different
  from it (α = 0.05), the configs a reader cannot separate from the winner;
* ``beats_floor``: whether the mean is strictly better than the ``constant`` floor's in the same
  cell (NA where there is no floor or no mean, and for the floor itself);
* ``n_impossible``: the config's ok runs whose value cannot be right (below the metric's bound by
  more than its Monte-Carlo error, :meth:`tasks.metrics.Metric.impossible`: a negative NLL is a
  log Z estimate that failed). Such a config keeps its mean on the board, marked, but gets no
  rank and is left out of the paired tests: an impossible value is never "best".

Metric ``m`` of the leaderboard is the runs column ``test_<m>`` (``tau_mae`` and
``kl_to_truth`` are their own columns). ``DIR/leaderboard.parquet`` also holds the mean rank
of each config across tasks, as rows with ``task = model = "ALL"`` and
``metric = "mean_rank"`` (``mean`` = the mean rank, ``n_ok`` = the number of task × model
cells it is averaged over, ``rank`` = its place by mean rank). Mean ranks are taken only over
the cells that every ranked config shares, with ranks recomputed among those configs, so
every config is averaged over the same competitions; configs covering too few cells are left
out of it, and named (see :func:`rank_matrix`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from harness.records import Status

COLUMNS = ["task", "model", "config", "method", "metric", "mean", "std", "n_ok", "n_failed", "rank",
           "n_pairs", "p_holm", "tied_best", "beats_floor", "n_impossible"]
KEYS = ["task", "model", "config"]
#: statuses counted in ``n_failed`` (:attr:`harness.records.Status.is_failure`)
FAILED_STATUSES = Status.failures()
NOT_A_CELL = (Status.UNSUPPORTED.value,)
FLOOR = "constant"
ALL = "ALL"
MEAN_RANK = "mean_rank"
FORMATS = ("table", "markdown", "csv", "latex")
RANK_DECIMALS = 10
#: markers used by every rendering
MARK_TIED = "*"
MARK_FAILED = "!"
MARK_FLOOR = "†"
MARK_IMPOSSIBLE = "✗"
LEGEND = (f"{MARK_TIED} best, or not significantly different from the best (paired t-test over seeds/folds, "
          f"Holm-corrected, α = 0.05); {MARK_FLOOR} does not beat the constant floor; "
          f"{MARK_FAILED} has failed runs (see n_failed); {MARK_IMPOSSIBLE} has runs with impossible values "
          f"(a negative NLL: its log Z estimate failed; see n_impossible), not ranked on that metric")
#: the legend under the terminal table that fits the terminal
SHORT_LEGEND = (f"{MARK_TIED} best or not significantly different (Holm, α = 0.05) · {MARK_FLOOR} not above the "
                f"constant floor · {MARK_FAILED} failed runs · {MARK_IMPOSSIBLE} impossible values, not ranked · "
                f"all metrics: leaderboard --metrics all")


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
    dtypes = {"mean": "float64", "std": "float64", "rank": "float64", "p_holm": "float64",
              "n_ok": "int64", "n_failed": "int64", "n_pairs": "int64", "tied_best": "boolean",
              "beats_floor": "boolean"}
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "object")) for c in COLUMNS})


def _method_defaults(method: str) -> dict | None:
    try:
        from harness.plan import resolve_method

        return dict(resolve_method(method).defaults)
    except Exception:  # noqa: BLE001 - a method no longer registered: its name is the label
        return None


def with_config(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with a ``config`` label on every row: the stored one, else (rows written before
    the column existed) derived from ``method``, ``params_json`` and ``tuned`` as the planner
    would (a tuned old row is ``method[tuned]``: its fixed overrides are not recorded)."""
    from harness.plan import config_label

    runs = runs.copy()
    if "config" not in runs.columns:
        runs["config"] = None
    missing = runs["config"].isna()
    if not missing.any():
        return runs
    defaults: dict[str, dict | None] = {}
    labels = []
    for _, row in runs.loc[missing].iterrows():
        method = str(row["method"])
        if method not in defaults:
            defaults[method] = _method_defaults(method)
        tuned = bool(row.get("tuned")) if pd.notna(row.get("tuned")) else False
        text = row.get("params_json")
        params = json.loads(text) if isinstance(text, str) and text else {}
        known = defaults[method]
        # an unregistered method's defaults are unknown: its name (and [tuned]) is the label
        labels.append(config_label(method, params if known is not None else {}, known or {}, tuned=tuned))
    runs.loc[missing, "config"] = labels
    return runs


def _units(frame: pd.DataFrame) -> pd.Series:
    """The pairing unit of each run: its (seed, fold)."""
    seed = frame["seed"] if "seed" in frame else pd.Series(0, index=frame.index)
    fold = frame["fold"] if "fold" in frame else pd.Series(0, index=frame.index)
    return seed.astype("Int64").astype(str) + "/" + fold.fillna(0).astype("Int64").astype(str)


def _task_metrics(runs: pd.DataFrame, directions: dict[str, str]) -> dict[str, list[str]]:
    """Task → the metrics at least one of its runs reports; a task none of whose runs reports
    anything (all failed) gets its primary metric, so it still has rows."""
    out: dict[str, list[str]] = {}
    for metric in directions:
        column = metric_column(metric)
        if column in runs.columns:
            for task in runs.loc[pd.to_numeric(runs[column], errors="coerce").notna(), "task"].unique():
                out.setdefault(task, []).append(metric)
    primary = primary_metrics(runs, sorted(set(runs["task"])))
    for task in runs["task"].unique():
        if task not in out and primary.get(task) in directions:
            out[task] = [primary[task]]
    return out


def build_leaderboard(runs: pd.DataFrame, *, test: str = "t") -> pd.DataFrame:
    """Aggregate a (deduped) runs table into the long leaderboard described in the module doc."""
    from harness.stats import versus_best

    directions = metric_directions()
    if runs.empty:
        return _empty()
    runs = with_config(runs)
    runs = runs.assign(_ok=runs["status"].eq(Status.OK.value), _failed=runs["status"].isin(FAILED_STATUSES),
                       _cell=~runs["status"].isin(NOT_A_CELL), _unit=_units(runs))
    grouped = runs.groupby(KEYS, dropna=False)
    counts = grouped.agg(n_ok=("_ok", "sum"), n_failed=("_failed", "sum"), _cell=("_cell", "any"),
                         method=("method", "first"))
    counts = counts[counts["_cell"]].drop(columns="_cell").reset_index()
    task_metrics = _task_metrics(runs, directions)
    # each metric's column, and its Monte-Carlo error's where it has one (test_nll_stderr)
    columns = sorted({column for ms in task_metrics.values() for m in ms
                      for column in (metric_column(m), metric_column(f"{m}_stderr"))} & set(runs.columns))
    ok = runs.loc[runs["_ok"], [*KEYS, "_unit", *columns]]  # only what is aggregated: far cheaper to slice
    parts = []
    for task, metrics in task_metrics.items():
        task_counts = counts[counts["task"] == task]
        for metric in metrics:
            direction, column = directions[metric], metric_column(metric)
            values = ok.loc[ok["task"] == task].assign(
                value=pd.to_numeric(ok[column], errors="coerce") if column in ok else np.nan)
            values = values[values["value"].notna()]
            values = values.assign(_impossible=impossible_values(values, metric))
            stats = values.groupby(KEYS).agg(mean=("value", "mean"), std=("value", "std"),
                                             n_impossible=("_impossible", "sum")).reset_index()
            part = task_counts.merge(stats, on=KEYS, how="left")
            part["metric"] = metric
            # a config with impossible values is shown (its mean, marked) but neither ranked nor tested
            rankable = part["n_impossible"].fillna(0).eq(0)
            # means equal up to float rounding (0.22 + 0.20 vs 0.21 + 0.21) are ties
            part["rank"] = part["mean"].where(rankable).round(RANK_DECIMALS).groupby(part["model"], dropna=False).rank(
                method="min", ascending=(direction == "min"))
            tested = values[~values.groupby(KEYS)["_impossible"].transform("any").astype(bool)]
            tests = [versus_best(rows.rename(columns={"_unit": "unit"})[["config", "unit", "value"]], direction,
                                 test=test).assign(model=model)
                     for model, rows in tested.groupby("model")]
            if tests:
                part = part.merge(pd.concat(tests)[["model", "config", "n_pairs", "p_holm", "tied_best"]],
                                  on=["model", "config"], how="left")
            part["beats_floor"] = _beats_floor(part, direction)
            part.loc[~rankable, "beats_floor"] = pd.NA
            parts.append(part)
    if not parts:
        return _empty()
    board = pd.concat(parts, ignore_index=True).reindex(columns=COLUMNS)
    board[["n_ok", "n_failed"]] = board[["n_ok", "n_failed"]].astype("int64")
    board["n_pairs"] = board["n_pairs"].fillna(0).astype("int64")
    board["p_holm"] = board["p_holm"].astype("float64")
    board["tied_best"] = board["tied_best"].astype("boolean")
    board.loc[board["mean"].isna(), "tied_best"] = pd.NA
    board["beats_floor"] = board["beats_floor"].astype("boolean")
    board["n_impossible"] = board["n_impossible"].fillna(0).astype("int64")
    return board.sort_values(["task", "model", "metric", "rank", "config"], na_position="last").reset_index(drop=True)


def impossible_values(values: pd.DataFrame, metric: str, split: str = "test") -> pd.Series:
    """Per run: its ``value`` of ``metric`` on ``split`` cannot be right (:meth:`tasks.metrics.Metric.impossible`,
    with the run's Monte-Carlo error where a ``<metric>_stderr`` companion column holds it)."""
    from tasks.metrics import METRIC_BY_NAME

    definition, companion = METRIC_BY_NAME.get(metric), METRIC_BY_NAME.get(f"{metric}_stderr")
    if definition is None or definition.lower_bound is None:
        return pd.Series(False, index=values.index)
    column = companion.column_for(split) if companion is not None else None
    stderr = pd.to_numeric(values[column], errors="coerce").fillna(0.0) if column in values else 0.0
    return pd.Series(definition.impossible(pd.to_numeric(values["value"], errors="coerce").to_numpy(dtype=float),
                                           stderr), index=values.index)


def _beats_floor(part: pd.DataFrame, direction: str) -> pd.Series:
    """Per row: mean strictly better than the floor's mean of the same model (NA if either is missing)."""
    floor = part[part["config"] == FLOOR].set_index("model")["mean"]
    reference = part["model"].map(floor)
    better = part["mean"] > reference if direction == "max" else part["mean"] < reference
    out = better.astype("boolean")
    out[reference.isna() | part["mean"].isna() | (part["config"] == FLOOR)] = pd.NA
    return out


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
            except (KeyError, ValueError):
                pass  # a user task no longer registered: no primary metric, left out of the mean rank
    return found


def rank_matrix(board: pd.DataFrame, metric: str | None = None, *,
                primary: dict[str, str] | None = None) -> tuple[pd.DataFrame, pd.Series, list[str]]:
    """The blocks × configs matrix of means behind the mean ranks and the Friedman test.

    Rows are task × model cells (of ``metric``, default each task's primary metric), columns
    configs, and only cells that *every* kept config has a mean in are rows, so every config is
    ranked in the same competitions. When configs cover different cells (a method that does
    not apply to some models, a task only some configs ran), configs are left out one at a
    time, the one with the fewest cells first (ties: the last by name), while that leaves no
    shared cell or increases the number of compared results (configs × shared cells); the
    left-out configs are returned as the third value. Also returns each row's metric direction."""
    board = board[(board["task"] != ALL) & board["mean"].notna()]
    if metric is None:
        primary = primary if primary is not None else primary_metrics(None, sorted(board["task"].unique()))
        board = board[board["metric"].eq(board["task"].map(primary))]
    else:
        board = board[board["metric"] == metric]
    matrix = board.pivot_table(index=["task", "model"], columns="config", values="mean", aggfunc="first")
    metrics = board.drop_duplicates(["task", "model"]).set_index(["task", "model"])["metric"]
    left_out: list[str] = []
    while matrix.shape[1] > 1:
        fewest = matrix.notna().sum().sort_index(ascending=False).sort_values(kind="stable").index[0]
        smaller = matrix.drop(columns=fewest)
        shared, shared_after = len(matrix.dropna()), len(smaller.dropna())
        if shared and smaller.shape[1] * shared_after <= matrix.shape[1] * shared:
            break
        left_out.append(fewest)
        matrix = smaller
    matrix = matrix.dropna()
    directions = metrics.reindex(matrix.index).map(metric_directions())
    return matrix, directions, left_out


def mean_rank_across_tasks(board: pd.DataFrame, metric: str | None = None, *,
                           primary: dict[str, str] | None = None) -> pd.DataFrame:
    """Mean over task × model cells of each config's rank on ``metric`` (default: each task's
    primary metric). Columns: ``config, method, mean_rank, n_cells, rank``; lower is better.

    Averaged only over the cells every ranked config shares (:func:`rank_matrix`), with ranks
    recomputed among those configs (ties share the best rank), so every config's mean is over
    the same competitions; ``n_cells`` is that number. Configs left out to find shared cells are
    listed in ``.attrs["left_out"]`` (and under the rendered table)."""
    from harness.stats import block_ranks

    matrix, directions, left_out = rank_matrix(board, metric, primary=primary)
    methods = board.drop_duplicates("config").set_index("config")["method"]
    if matrix.empty:
        table = pd.DataFrame({"config": pd.Series(dtype=object), "method": pd.Series(dtype=object),
                              "mean_rank": pd.Series(dtype=float), "n_cells": pd.Series(dtype="int64"),
                              "rank": pd.Series(dtype=float)})
    else:
        ranks = block_ranks(matrix.round(RANK_DECIMALS), directions)
        ranks = ranks.rank(axis=1, method="min")  # ties share the best place, as in the task rows
        table = pd.DataFrame({"config": ranks.columns, "mean_rank": ranks.mean().to_numpy(),
                              "n_cells": len(ranks)})
        table["method"] = table["config"].map(methods)
        table["rank"] = table["mean_rank"].rank(method="min")
        table = table.sort_values(["mean_rank", "config"]).reset_index(drop=True)[
            ["config", "method", "mean_rank", "n_cells", "rank"]]
    table.attrs["left_out"] = left_out
    return table


def with_mean_rank_rows(board: pd.DataFrame, mean_ranks: pd.DataFrame) -> pd.DataFrame:
    """Append the mean-rank rows (``task = model = ALL``, ``metric = mean_rank``)."""
    if mean_ranks.empty:
        return board
    extra = pd.DataFrame({
        "task": ALL, "model": ALL, "config": mean_ranks["config"], "method": mean_ranks["method"],
        "metric": MEAN_RANK, "mean": mean_ranks["mean_rank"], "std": np.nan,
        "n_ok": mean_ranks["n_cells"].astype("int64"), "n_failed": 0, "rank": mean_ranks["rank"],
        "n_pairs": 0, "p_holm": np.nan, "tied_best": pd.NA, "beats_floor": pd.NA,
    })
    out = pd.concat([board, extra.astype({"tied_best": "boolean", "beats_floor": "boolean"})], ignore_index=True)
    return out[COLUMNS]


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


def value_marks(beats_floor, n_impossible) -> str:
    """The marks after a value: `` †`` when it does not beat the floor (``beats_floor`` False),
    `` ✗`` when it comes from runs with impossible values (``n_impossible`` > 0); missing: none."""
    floor = f" {MARK_FLOOR}" if not pd.isna(beats_floor) and not beats_floor else ""
    impossible = f" {MARK_IMPOSSIBLE}" if not pd.isna(n_impossible) and n_impossible > 0 else ""
    return floor + impossible


def _flags(values):
    """True / False / missing (None, NaN, NA) as plain booleans, missing → False (through pandas'
    nullable boolean: ``fillna`` on an object column would downcast, which pandas deprecates)."""
    return values.astype("boolean").fillna(False).astype(bool)


def pivot(board: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Wide view: one row per task/model/config, one ``mean ± std`` column per metric, then
    n_ok / n_failed. Also returns a same-shaped boolean frame marking the cells that are best or
    not significantly different from the best (``tied_best``). Markers: a config with failed
    runs ends in ``!``; a value that does not beat the constant floor ends in ``†``; one from runs with
    impossible values (``n_impossible``) ends in ``✗``."""
    board = board[board["task"] != ALL]
    keys = KEYS
    if board.empty:
        return pd.DataFrame(columns=keys + ["n_ok", "n_failed"]), pd.DataFrame()
    beats = board["beats_floor"] if "beats_floor" in board else pd.Series(pd.NA, index=board.index)
    tied = board["tied_best"] if "tied_best" in board else board["rank"].eq(1)
    impossible = board["n_impossible"] if "n_impossible" in board else pd.Series(0, index=board.index)
    cells = board.assign(cell=[_cell(m, s) + value_marks(b, i)
                               for m, s, b, i in zip(board["mean"], board["std"], beats.astype(object), impossible)],
                         best=_flags(tied))
    metrics = list(dict.fromkeys(cells["metric"]))
    wide = cells.pivot_table(index=keys, columns="metric", values="cell", aggfunc="first", sort=True).reindex(
        columns=metrics).fillna("")
    best = _flags(cells.pivot_table(index=keys, columns="metric", values="best", aggfunc="any", sort=True).reindex(
        columns=metrics))
    counts = cells.groupby(keys)[["n_ok", "n_failed"]].max()
    wide = wide.join(counts).reset_index()
    wide.columns.name = None
    wide["config"] = [f"{c} {MARK_FAILED}" if n else c for c, n in zip(wide["config"], wide["n_failed"])]
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
    return (text.replace("±", r"$\pm$").replace("–", "--").replace("†", r"$\dagger$")
            .replace(MARK_IMPOSSIBLE, r"$\times$"))


def _latex(wide: pd.DataFrame, best: pd.DataFrame) -> str:
    header = " & ".join(_latex_escape(str(c)) for c in wide.columns) + r" \\"
    body = []
    for i, row in wide.iterrows():
        cells = [rf"\textbf{{{_latex_escape(str(v))}}}" if c in best.columns and best.at[i, c]
                 else _latex_escape(str(v)) for c, v in row.items()]
        body.append(" & ".join(cells) + r" \\")
    spec = "lll" + "r" * (len(wide.columns) - 3)
    return "\n".join([rf"\begin{{tabular}}{{{spec}}}", r"\toprule", header, r"\midrule", *body,
                      r"\bottomrule", r"\end{tabular}", "% " + LEGEND.replace("%", r"\%")]) + "\n"


def _rich_table(wide: pd.DataFrame, best: pd.DataFrame, title: str | None, width: int | None = None,
                caption: str = LEGEND) -> str:
    """The rich table; with ``width``, it fits: mean±std cells lose their spaces first, then
    :func:`harness.tables.render_table` drops the vertical rules and, last, cuts long names."""
    from harness.tables import render_table

    numeric = [c for c in wide.columns if c not in ("task", "model", "config")]

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
            raise ValueError(f"no leaderboard rows for metric {metric!r}; "
                             f"metrics with results: {', '.join(known) or 'none'}")
        selected = selected[selected["metric"] == metric]
    if fmt == "csv":
        return board.loc[selected.index].to_csv(index=False) if len(selected) else ",".join(COLUMNS) + "\n"
    ranks = board[(board["task"] == ALL) & (board["metric"] == MEAN_RANK)]
    rank_lines = ", ".join(f"{c} {r:.2f}" for c, r in zip(ranks["config"], ranks["mean"])) \
        if task is None and metric is None else ""
    if primary_only:  # the default terminal view fits the terminal; asked-for metrics get their natural width
        selected = _primary_only(selected)
        from harness.tables import terminal_width

        width = width or terminal_width()
    else:
        width = None
    blocks = [_render_block(*pivot(block), fmt, width=width, primary_only=primary_only)
              for block in _blocks_by_metric_set(selected)]
    if not blocks:
        return "(no results yet)\n"
    footer = ""
    if fmt == "markdown":
        footer += LEGEND + "\n"
    if rank_lines and fmt != "latex":
        cells = int(ranks["n_ok"].iloc[0])
        footer += (f"mean rank across tasks (primary metric, over the {cells} task × model cell(s) "
                   f"these configs share): {rank_lines}\n")
        tasks = board[(board["task"] != ALL) & board["mean"].notna()]
        unranked = sorted(set(tasks["config"]) - set(ranks["config"]))
        if unranked:
            footer += ("not in the mean rank (too few shared cells, or no primary-metric result): "
                       f"{', '.join(unranked)}\n")
    if footer and width is not None:
        import textwrap

        footer = "".join(textwrap.fill(line, width, subsequent_indent="  ", break_on_hyphens=False) + "\n"
                         for line in footer.splitlines())
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
                           caption=SHORT_LEGEND)
    return _rich_table(wide, best, title="ebm-bench leaderboard (test split; mean ± std over seeds)", width=width)
