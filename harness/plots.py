"""PNG figures of a results directory (matplotlib, Agg backend: no display needed).

* ``convergence-<task>-<model>.png`` — top: the validation primary metric (curves rows with
  ``split = "val"``) against optimiser steps and against wall seconds, one line per method
  (the mean over its ok runs — seeds, folds — at each evaluation step; seconds are averaged
  too), on a *robust* y range: the limits cover every method's curve from its first tenth on
  (Tukey fences, 3 × IQR), so one method's divergence or a first evaluation far off does not
  flatten the others; points outside are drawn as triangles on the edge and counted in the
  title. Bottom: the training objective (``split = "train", metric = "objective"``), one
  small panel per method — methods minimise different losses, so they get their own y axes
  (robust range again: a single 1.8e6 spike is an off-scale triangle, not the scale).
* ``tau-<task>-<model>.png`` — the learned τ(x) against the exact log Z(x) on unseen (test)
  inputs, one colour per method, with the identity line. Source: curves rows with
  ``split = "tau"``: for test example ``i`` of a run, ``step = i`` and two rows,
  ``metric = "tau"`` (the method's τ(x_i)) and ``metric = "logz"`` (exact log Z(x_i)); ``seconds``
  and ``energy_evals`` are null. Methods without a τ write no such rows and are not drawn.
* ``leaderboard-<task>.png`` — a dot plot of each configuration's test mean ± std on the task's
  primary metric, one row per model × configuration that has a result (no empty slots), on an axis
  zoomed to the values (3.40 vs 3.48 is visible); the best of each model is a star; a configuration
  with failed runs says ``n failed`` beside its dot (or instead of it when none was ok).

* ``critical-difference.png`` — the configs' mean ranks across tasks on each task's primary
  metric, over the task × model cells they all share, with bars joining configs that the
  Nemenyi post-hoc test does not separate, and the Friedman test in the title
  (:mod:`harness.stats`; drawn when there are ≥ 3 configs and ≥ 2 shared cells).

The paper-reproduction report (:mod:`harness.paper`) adds two figures of its own:
:func:`plot_paper_convergence` (a 2 × 2 grid: training objective on a symlog axis and validation
metric, against steps and wall seconds; mean over seeds with a min–max band) and
:func:`plot_tau_panels` (``tau-vs-logz.png``: one panel per task × model, 100 unseen x per
configuration).

Lines, bars and points are per configuration label (``config``: method plus non-default
hyperparameters, see :func:`harness.plan.config_label`), not per method.
A configuration keeps its colour in every figure of a results directory (colours follow the
sorted labels).

"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.records import Status

TAU_SPLIT = "tau"
FLOOR = "constant"  # harness.leaderboard.FLOOR: the constant predictor every task is compared with
#: Tukey fences for the robust y range: quartiles ± FENCE × IQR
FENCE = 3.0
#: the objective panels clip only what is far out (a spike), not a curve's steep start
OBJECTIVE_FENCE = 10.0


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text))


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def method_colours(methods) -> dict[str, Any]:
    """A fixed colour per method (sorted names over matplotlib's 10-colour cycle, then tab20)."""
    import matplotlib

    names = sorted(set(methods))
    palette = [matplotlib.colormaps["tab10"](i) for i in range(10)] + \
        [matplotlib.colormaps["tab20"](i) for i in range(1, 20, 2)]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def robust_range(values, *, fence: float = FENCE) -> tuple[float, float] | None:
    """(low, high) covering the values within the Tukey fences (quartiles ± ``fence`` × IQR),
    with 5% padding; None without a finite value. A flat series gets a small symmetric range."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return None
    q1, q3 = np.percentile(v, [25, 75])
    iqr = q3 - q1
    inside = v[(v >= q1 - fence * iqr) & (v <= q3 + fence * iqr)]
    low, high = float(inside.min()), float(inside.max())
    pad = 0.05 * (high - low) if high > low else max(abs(high) * 0.05, 1e-3)
    return low - pad, high + pad


def _clip_marks(ax, x, y, limits, colour) -> int:
    """Draw points outside ``limits`` as triangles on the panel's edge; return how many."""
    low, high = limits
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    above, below = y > high, y < low
    if above.any():
        ax.scatter(x[above], np.full(above.sum(), high), marker="^", color=colour, s=28, clip_on=False, zorder=3)
    if below.any():
        ax.scatter(x[below], np.full(below.sum(), low), marker="v", color=colour, s=28, clip_on=False, zorder=3)
    return int(above.sum() + below.sum())


def _ok_curves(curves: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Curve rows of ok runs, joined with the run's task, model, config and primary metric."""
    from harness.leaderboard import with_config

    keep = ["run_id", "task", "model", "config"] + (["primary_metric"] if "primary_metric" in runs else [])
    ok = with_config(runs).loc[runs["status"] == Status.OK, keep]
    return curves.merge(ok, on="run_id", how="inner")


def mean_curve(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean over runs of ``value`` and ``seconds`` at each step, for each config."""
    return rows.groupby(["config", "step"], as_index=False)[["value", "seconds"]].mean().sort_values(["config", "step"])


def _robust_curve_range(lines: pd.DataFrame) -> tuple[float, float] | None:
    """The y range of the validation panels: robust (Tukey fences) over every method's curve
    after its first tenth of steps (where every method is still far from anything): a method
    whose values run away is drawn off-scale rather than flattening the others."""
    kept = []
    for _, line in lines.groupby("config"):
        line = line.sort_values("step")
        start = line["step"].min() + 0.1 * (line["step"].max() - line["step"].min())
        kept += list(line.loc[line["step"] >= start, "value"])
    return robust_range(kept)


def _draw_curves(ax, lines: pd.DataFrame, x: str, colours: dict, limits) -> int:
    off = 0
    for method, line in lines.groupby("config"):
        ax.plot(line[x], line["value"], marker=".", markersize=4, color=colours[method], label=method)
        if limits is not None:
            off += _clip_marks(ax, line[x], line["value"], limits, colours[method])
    if limits is not None:
        ax.set_ylim(*limits)
    ax.grid(alpha=0.3)
    return off


def plot_convergence(curves: pd.DataFrame, runs: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """One convergence figure per task × model (see the module doc)."""
    plt = _pyplot()
    joined = _ok_curves(curves[curves["split"].isin(["train", "val"])], runs)
    from harness.leaderboard import with_config

    colours = method_colours(with_config(runs)["config"].dropna()) if len(runs) else {}
    paths = []
    for (task, model), rows in joined.groupby(["task", "model"]):
        primary = rows["primary_metric"].dropna().iloc[0] if "primary_metric" in rows and rows[
            "primary_metric"].notna().any() else None
        val = rows[rows["split"] == "val"]
        if primary is not None and (val["metric"] == primary).any():
            val = val[val["metric"] == primary]
        else:  # no primary reported: the first validation metric present
            val = val[val["metric"] == val["metric"].iloc[0]] if len(val) else val
        metric = val["metric"].iloc[0] if len(val) else "metric"
        objective = mean_curve(rows[(rows["split"] == "train") & (rows["metric"] == "objective")])
        methods = sorted(objective["config"].unique())
        columns = min(4, max(1, len(methods)))
        panel_rows = -(-len(methods) // columns) if methods else 0
        fig = plt.figure(figsize=(12, 4.2 + 2.4 * panel_rows))
        grid = fig.add_gridspec(1 + panel_rows, 2 * columns, height_ratios=[1.7] + [1.0] * panel_rows,
                                hspace=0.55, wspace=0.9)
        lines = mean_curve(val)
        limits = _robust_curve_range(lines)
        off = 0
        for index, x in enumerate(("step", "seconds")):
            ax = fig.add_subplot(grid[0, index * columns:(index + 1) * columns])
            off += _draw_curves(ax, lines, x, colours, limits)
            ax.set_xlabel("optimiser steps" if x == "step" else "wall seconds (training + evaluation)")
            if index == 0:  # the right panel shares the quantity (and the range)
                ax.set_ylabel(f"validation {metric} (mean over seeds)")
        if off:
            away = sorted(m for m, line in lines.groupby("config") if limits is not None and (
                (line["value"] > limits[1]) | (line["value"] < limits[0])).any())
            fig.axes[0].set_title(f"▲▼ off-scale (robust range): {', '.join(away)}", fontsize=9)
        for i, method in enumerate(methods):
            ax = fig.add_subplot(grid[1 + i // columns, 2 * (i % columns):2 * (i % columns) + 2])
            line = objective[objective["config"] == method]
            limits_m = robust_range(line["value"], fence=OBJECTIVE_FENCE)
            n_off = _draw_curves(ax, line, "step", colours, limits_m)
            ax.set_title(method + (f" ({n_off} off-scale)" if n_off else ""), fontsize=9, color=colours[method])
            ax.tick_params(labelsize=7)
            ax.yaxis.get_offset_text().set_fontsize(7)
            if i // columns == panel_rows - 1:
                ax.set_xlabel("steps", fontsize=8)
            if i % columns == 0:
                ax.set_ylabel("train objective", fontsize=8)
        handles = [plt.Line2D([], [], color=colours[m], marker=".", label=m) for m in sorted(lines["config"].unique())]
        if handles:
            fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 4),
                       frameon=False)
        fig.suptitle(f"{task} / {model}: validation {metric} (top) and each method's own training objective "
                     "(bottom; methods minimise different losses)", fontsize=11)
        paths.append(_save(fig, Path(out_dir) / f"convergence-{_slug(task)}-{_slug(model)}.png"))
    return paths


def tau_points(curves: pd.DataFrame) -> pd.DataFrame:
    """The τ(x_i) / exact log Z(x_i) pairs of each run, one row per (run_id, i): columns
    ``run_id, step, tau, logz``."""
    rows = curves[(curves["split"] == TAU_SPLIT) & curves["metric"].isin(["tau", "logz"])]
    if rows.empty:
        return pd.DataFrame(columns=["run_id", "step", "tau", "logz"])
    wide = rows.pivot_table(index=["run_id", "step"], columns="metric", values="value", aggfunc="last")
    wide = wide.reindex(columns=["tau", "logz"]).dropna().reset_index()
    wide.columns.name = None
    return wide


def _tau_panel(ax, rows: pd.DataFrame, colours: dict, *, size: float) -> None:
    """τ(x) against log Z(x), one colour per config with its mean |τ − log Z| in the label, and
    the identity line (the caller sets titles, the x label and the legend)."""
    for config, group in rows.groupby("config"):
        mae = float(np.mean(np.abs(group["tau"] - group["logz"])))
        ax.scatter(group["logz"], group["tau"], s=size, alpha=0.6, color=colours.get(config),
                   label=f"{config} (MAE {mae:.3g})")
    low = float(min(rows["logz"].min(), rows["tau"].min()))
    high = float(max(rows["logz"].max(), rows["tau"].max()))
    ax.plot([low, high], [low, high], color="black", linewidth=1, label="τ = log Z")
    ax.set_ylabel("learned τ(x)")
    ax.grid(alpha=0.3)


def plot_tau_vs_logz(curves: pd.DataFrame, runs: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """One scatter of τ(x) vs exact log Z(x) on test inputs per task × model that has such points."""
    plt = _pyplot()
    from harness.leaderboard import with_config

    ok = with_config(runs).loc[runs["status"] == Status.OK, ["run_id", "task", "model", "config"]]
    points = tau_points(curves).merge(ok, on="run_id")
    colours = method_colours(ok["config"].dropna()) if len(ok) else {}
    paths = []
    for (task, model), rows in points.groupby(["task", "model"]):
        fig, ax = plt.subplots(figsize=(5.5, 5))
        _tau_panel(ax, rows, colours, size=8)
        ax.set_xlabel("exact log Z(x)  (test inputs)")
        ax.set_title(f"{task} / {model}")
        ax.legend(fontsize=8)
        paths.append(_save(fig, Path(out_dir) / f"tau-{_slug(task)}-{_slug(model)}.png"))
    return paths


def plot_leaderboard_bars(board: pd.DataFrame, primary: dict[str, str], out_dir: str | os.PathLike) -> list[Path]:
    """One dot plot per task of the primary metric's mean ± std (see the module doc)."""
    plt = _pyplot()
    from tasks.metrics import METRICS

    colours = method_colours(board["config"]) if len(board) else {}
    paths = []
    for task, rows in board[board["task"].isin(primary)].groupby("task"):
        metric = primary[task]
        rows = rows[(rows["metric"] == metric) & ((rows["n_ok"] > 0) | (rows["n_failed"] > 0))]
        # ok runs that do not report the metric (e.g. no NLL for sparsemax models): a note, not an empty row
        silent = sorted(set(rows.loc[rows["mean"].isna() & (rows["n_failed"] == 0), "config"]))
        rows = rows[rows["mean"].notna() | (rows["n_failed"] > 0)]
        # the constant floor is a reference, not a contender: named in the title, kept off the axis
        # (its distance would squeeze the contenders' differences into a few pixels)
        floor = rows[rows["config"] == FLOOR].set_index("model")["mean"].dropna()
        rows = rows[rows["config"] != FLOOR]
        if rows.empty:
            continue
        maximize = METRICS.get(metric, "max") == "max"
        rows = rows.sort_values(["model", "mean"], ascending=[True, not maximize], na_position="last")
        fig, ax = plt.subplots(figsize=(8, 1.2 + 0.32 * len(rows) + 0.25 * rows["model"].nunique()))
        y, labels, ticks, gap = 0.0, [], [], 0.8
        values = np.concatenate([(rows["mean"] - rows["std"].fillna(0)).to_numpy(),
                                 (rows["mean"] + rows["std"].fillna(0)).to_numpy()])
        values = values[np.isfinite(values)]
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        span = (high - low) or max(abs(high), 1.0) * 0.1
        failed_x = low - 0.02 * span
        for model, group in rows.groupby("model", sort=True):
            ax.text(0.01, y - 0.35, f"model: {model}", transform=ax.get_yaxis_transform(), ha="left",
                    va="center", fontsize=9, fontstyle="italic", color="dimgray")
            ax.axhline(y - 0.1, color="lightgray", linewidth=0.8)
            y -= 0.3
            best = group["rank"].min()
            for _, row in group.iterrows():
                y -= 1
                colour = colours[row["config"]]
                if np.isfinite(row["mean"]):
                    ax.errorbar(row["mean"], y, xerr=0.0 if pd.isna(row["std"]) else row["std"], fmt="o",
                                color=colour, capsize=3, markersize=6)
                    if row["rank"] == best:
                        ax.plot(row["mean"], y, marker="*", color="black", markersize=11, linestyle="none")
                    ax.annotate(f"{row['mean']:.3f}", (row["mean"], y), xytext=(0, 6), textcoords="offset points",
                                ha="center", fontsize=7)
                if row["n_failed"]:
                    where = row["mean"] if np.isfinite(row["mean"]) else failed_x
                    ax.annotate(f"{int(row['n_failed'])} failed", (where, y), xytext=(8, -3),
                                textcoords="offset points", fontsize=7, color="firebrick")
                ticks.append(y)
                labels.append(f"{row['config']} (n={int(row['n_ok'])})")
            y -= gap
        ax.set_yticks(ticks, labels, fontsize=8)
        ax.set_ylim(y + gap - 0.6, 0.4)
        ax.set_xlim(low - 0.08 * span, high + 0.12 * span)
        ax.set_xlabel(f"test {metric} ({'higher' if maximize else 'lower'} is better); dot = mean, bar = ± std "
                      f"over seeds; ★ best of its model")
        notes = [f"no test {metric} reported by: {', '.join(silent)}"] if silent else []
        if len(floor):
            notes.append(f"{FLOOR} floor (not drawn): " + ", ".join(f"{m} {v:.3f}" for m, v in floor.items()))
        ax.set_title(f"{task}: test {metric} (axis zoomed to the values)" + "".join("\n" + n for n in notes),
                     fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        paths.append(_save(fig, Path(out_dir) / f"leaderboard-{_slug(task)}.png"))
    return paths


def plot_critical_difference(board: pd.DataFrame, primary: dict[str, str], out_dir: str | os.PathLike) -> list[Path]:
    """``critical-difference.png`` (see the module doc); no figure when the test cannot be run."""
    from harness import leaderboard, stats

    matrix, directions, left_out = leaderboard.rank_matrix(board, primary=primary)
    result = stats.friedman(matrix, directions)
    if result is None:
        return []
    title = "Mean rank across tasks (primary metric; 1 = best)"
    if left_out:
        title += f"; left out (too few shared cells): {', '.join(left_out)}"
    return [_save(stats.critical_difference_figure(result, title), Path(out_dir) / "critical-difference.png")]


def plot_all(results_dir: str | os.PathLike, out_dir: str | os.PathLike, *, on_corrupt: str = "warn") -> list[Path]:
    """Every figure of the module doc for ``results_dir``, written under ``out_dir``."""
    from harness import leaderboard, store

    runs = store.read_table(results_dir, "runs", on_corrupt=on_corrupt)
    curves = store.read_table(results_dir, "curves", on_corrupt=on_corrupt)
    board = leaderboard.build_leaderboard(runs)
    primary = leaderboard.primary_metrics(runs, sorted(board["task"].unique()))
    return (plot_convergence(curves, runs, out_dir) + plot_tau_vs_logz(curves, runs, out_dir)
            + plot_leaderboard_bars(board, primary, out_dir) + plot_critical_difference(board, primary, out_dir))


# ----------------------------------------------------------------------------- the paper's figures

def _band(ax, line: pd.DataFrame, x: str, colour, label: str) -> None:
    ax.plot(line[x], line["mean"], color=colour, label=label, linewidth=1.4)
    ax.fill_between(line[x], line["low"], line["high"], color=colour, alpha=0.18, linewidth=0)


def mean_band(rows: pd.DataFrame) -> pd.DataFrame:
    """Per config and step: mean, ``low`` / ``high`` (the smallest and largest value over runs,
    i.e. seeds) of ``value``, mean ``seconds``, and ``n`` runs. Steps that not every run of the
    config reached are dropped (a band over fewer seeds than the rest would jump)."""
    stats = rows.groupby(["config", "step"]).agg(mean=("value", "mean"), low=("value", "min"), high=("value", "max"),
                                                 seconds=("seconds", "mean"), n=("run_id", "nunique")).reset_index()
    runs = rows.groupby("config")["run_id"].nunique()
    return stats[stats["n"] == stats["config"].map(runs)].sort_values(["config", "step"])


def plot_paper_convergence(curves: pd.DataFrame, runs: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """The paper's convergence figure, one per task × model of ``runs`` (the ``paper-convergence``
    suite): a 2 × 2 grid, rows = each config's own training objective (symlog y axis, readable
    across the orders of magnitude the objectives span and through their spikes) and the
    validation primary metric; columns = optimiser steps and wall seconds (log axis: n′ = 1000
    costs far more per step than n′ = 1). One line per config (n′ shows in the label,
    ``minmin-logistic[n_samples=10]``), the mean over its ok runs (seeds), and a band from the
    smallest to the largest run (a ± std band of a heavy-tailed objective would reach far below
    every run). The constant floor is a dashed horizontal line on the validation panels (it does
    not train)."""
    plt = _pyplot()
    joined = _ok_curves(curves[curves["split"].isin(["train", "val"])], runs)
    colours = method_colours(joined["config"].dropna()) if len(joined) else {}
    paths = []
    for (task, model), rows in joined.groupby(["task", "model"]):
        primary = rows["primary_metric"].dropna().iloc[0] if "primary_metric" in rows and rows[
            "primary_metric"].notna().any() else None
        val = rows[(rows["split"] == "val") & ((rows["metric"] == primary) if primary else True)]
        objective = rows[(rows["split"] == "train") & (rows["metric"] == "objective")]
        floor = val[val["config"] == FLOOR]
        val, objective = val[val["config"] != FLOOR], objective[objective["config"] != FLOOR]
        fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
        for col, x in enumerate(("step", "seconds")):
            for row, (data, name) in enumerate(((objective, "training objective (own loss; symlog)"),
                                                (val, f"validation {primary or 'metric'}"))):
                ax = axes[row, col]
                for config, line in mean_band(data).groupby("config"):
                    _band(ax, line, x, colours[config], config)
                if x == "seconds":
                    ax.set_xscale("log")
                if row == 0:
                    ax.set_yscale("symlog", linthresh=1.0)
                elif len(floor):
                    ax.axhline(float(floor["value"].mean()), color="grey", linestyle="--", linewidth=1,
                               label=f"{FLOOR} floor")
                ax.set_xlabel("optimiser steps" if x == "step" else "wall seconds (mean over seeds)")
                ax.set_ylabel(name)
                ax.grid(alpha=0.3)
        handles, labels = axes[1, 0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="lower center", ncol=min(len(handles), 3), frameon=False,
                       bbox_to_anchor=(0.5, 0.0))
        seeds = runs[(runs["task"] == task) & (runs["model"] == model)]["seed"].nunique()
        fig.suptitle(f"{task} / {model}: convergence; line = mean over {seeds} seed(s), band = min–max over seeds",
                     fontsize=12)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        paths.append(_save(fig, Path(out_dir) / f"convergence-{_slug(task)}-{_slug(model)}.png"))
    return paths


def plot_tau_panels(curves: pd.DataFrame, runs: pd.DataFrame, out_dir: str | os.PathLike, *,
                    n_points: int = 100, name: str = "tau-vs-logz.png") -> list[Path]:
    """The τ(x)-vs-log Z(x) figure: one panel per task × model with τ points, ``n_points`` unseen
    (test) inputs per config (those of its run with the lowest seed, then fold), the identity line,
    and each config's mean |τ − log Z| over those points in the legend."""
    plt = _pyplot()
    from harness.leaderboard import with_config

    ok = with_config(runs).loc[runs["status"] == Status.OK, ["run_id", "task", "model", "config", "seed", "fold"]]
    points = tau_points(curves).merge(ok, on="run_id")
    if points.empty:
        return []
    first = points.sort_values(["seed", "fold", "run_id"]).groupby(["task", "model", "config"])["run_id"].first()
    points = points[points["run_id"].isin(set(first))]
    points = points[points.groupby("run_id")["step"].rank(method="first") <= n_points]
    colours = method_colours(ok["config"].dropna())
    panels = sorted(points.groupby(["task", "model"]).groups)
    columns = min(3, len(panels))
    rows_n = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows_n, columns, figsize=(4.6 * columns, 4.3 * rows_n), squeeze=False)
    for ax, (task, model) in zip(axes.flat, panels):
        rows = points[(points["task"] == task) & (points["model"] == model)]
        _tau_panel(ax, rows, colours, size=9)
        ax.set_title(f"{task} / {model} ({rows.groupby('config').size().max()} unseen x)", fontsize=10)
        ax.set_xlabel("log Z(x)")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    return [_save(fig, Path(out_dir) / name)]
