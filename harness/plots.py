"""PNG figures of a results directory (matplotlib, Agg backend: no display needed).

* ``convergence-<task>-<model>.png`` — a 2 × 2 grid: the training objective (curves rows with
  ``split = "train", metric = "objective"``) and the validation primary metric
  (``split = "val"``) against optimiser steps and against wall seconds; one line per method,
  the mean over its ok runs (seeds, folds) at each evaluation step (seconds are averaged too).
* ``tau-<task>-<model>.png`` — the learned τ(x) against the exact log Z(x) on unseen (test)
  inputs, one colour per method, with the identity line. Source: curves rows with
  ``split = "tau"``: for test example ``i`` of a run, ``step = i`` and two rows,
  ``metric = "tau"`` (the method's τ(x_i)) and ``metric = "logz"`` (exact log Z(x_i)); ``seconds``
  and ``energy_evals`` are null. Methods without a τ write no such rows and are not drawn.
* ``leaderboard-<task>.png`` — bars of each method's test mean ± std on the task's primary
  metric, one group per model; configs with failed runs are annotated ``n failed``.
* ``critical-difference.png`` — the configs' mean ranks across tasks on each task's primary
  metric, over the task × model cells they all share, with bars joining configs that the
  Nemenyi post-hoc test does not separate, and the Friedman test in the title
  (:mod:`harness.stats`; drawn when there are ≥ 3 configs and ≥ 2 shared cells).

Lines, bars and points are per configuration label (``config``: method plus non-default
hyperparameters, see :func:`harness.plan.config_label`), not per method.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from harness.records import Status

TAU_SPLIT = "tau"


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


def _ok_curves(curves: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Curve rows of ok runs, joined with the run's task, model, config and primary metric."""
    from harness.leaderboard import with_config

    keep = ["run_id", "task", "model", "config"] + (["primary_metric"] if "primary_metric" in runs else [])
    ok = with_config(runs).loc[runs["status"] == Status.OK, keep]
    return curves.merge(ok, on="run_id", how="inner")


def mean_curve(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean over runs of ``value`` and ``seconds`` at each step, for each config."""
    return rows.groupby(["config", "step"], as_index=False)[["value", "seconds"]].mean().sort_values(["config", "step"])


def plot_convergence(curves: pd.DataFrame, runs: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """One convergence figure per task × model (see the module doc)."""
    plt = _pyplot()
    joined = _ok_curves(curves[curves["split"].isin(["train", "val"])], runs)
    paths = []
    for (task, model), rows in joined.groupby(["task", "model"]):
        primary = rows["primary_metric"].dropna().iloc[0] if "primary_metric" in rows and rows[
            "primary_metric"].notna().any() else None
        val = rows[rows["split"] == "val"]
        if primary is not None and (val["metric"] == primary).any():
            val = val[val["metric"] == primary]
        else:  # no primary reported: the first validation metric present
            val = val[val["metric"] == val["metric"].iloc[0]] if len(val) else val
        panels = [("train objective", rows[(rows["split"] == "train") & (rows["metric"] == "objective")]),
                  (f"validation {val['metric'].iloc[0] if len(val) else ''}", val)]
        fig, axes = plt.subplots(2, 2, figsize=(11, 7), squeeze=False)
        for row_index, (label, panel) in enumerate(panels):
            for col_index, x in enumerate(("step", "seconds")):
                ax = axes[row_index][col_index]
                for config, line in mean_curve(panel).groupby("config"):
                    ax.plot(line[x], line["value"], marker=".", label=config)
                ax.set_xlabel("optimiser steps" if x == "step" else "wall seconds")
                ax.set_ylabel(label)
                ax.grid(alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        if not handles:  # no train curve: take the legend from the validation panel
            handles, labels = axes[1][0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                       ncol=min(len(labels), 6), frameon=False)
        fig.suptitle(f"{task} / {model}: convergence (mean over seeds)")
        fig.tight_layout()
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


def plot_tau_vs_logz(curves: pd.DataFrame, runs: pd.DataFrame, out_dir: str | os.PathLike) -> list[Path]:
    """One scatter of τ(x) vs exact log Z(x) on test inputs per task × model that has such points."""
    plt = _pyplot()
    from harness.leaderboard import with_config

    ok = with_config(runs).loc[runs["status"] == Status.OK, ["run_id", "task", "model", "config"]]
    points = tau_points(curves).merge(ok, on="run_id")
    paths = []
    for (task, model), rows in points.groupby(["task", "model"]):
        fig, ax = plt.subplots(figsize=(5.5, 5))
        for config, group in rows.groupby("config"):
            mae = float(np.mean(np.abs(group["tau"] - group["logz"])))
            ax.scatter(group["logz"], group["tau"], s=8, alpha=0.6, label=f"{config} (MAE {mae:.3g})")
        low = float(min(rows["logz"].min(), rows["tau"].min()))
        high = float(max(rows["logz"].max(), rows["tau"].max()))
        ax.plot([low, high], [low, high], color="black", linewidth=1, label="τ = log Z")
        ax.set_xlabel("exact log Z(x)  (test inputs)")
        ax.set_ylabel("learned τ(x)")
        ax.set_title(f"{task} / {model}")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        paths.append(_save(fig, Path(out_dir) / f"tau-{_slug(task)}-{_slug(model)}.png"))
    return paths


def plot_leaderboard_bars(board: pd.DataFrame, primary: dict[str, str], out_dir: str | os.PathLike) -> list[Path]:
    """One bar chart per task of the primary metric's mean ± std, grouped by model."""
    plt = _pyplot()
    paths = []
    for task, rows in board[board["task"].isin(primary)].groupby("task"):
        rows = rows[rows["metric"] == primary[task]]
        if rows.empty:
            continue
        models, methods = sorted(rows["model"].unique()), sorted(rows["config"].unique())
        width = 0.8 / len(methods)
        fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(models) * len(methods) ** 0.5 + 3), 4))
        for index, method in enumerate(methods):
            cells = rows[rows["config"] == method].set_index("model").reindex(models)
            x = np.arange(len(models)) + (index - (len(methods) - 1) / 2) * width
            drawn = cells["mean"].notna().to_numpy()  # an all-failed cell has no bar, only its label
            ax.bar(x[drawn], cells["mean"][drawn], width, yerr=cells["std"].fillna(0.0)[drawn], capsize=3,
                   color=f"C{index}")
            for xi, failed in zip(x, cells["n_failed"].fillna(0).astype(int)):
                if failed:
                    ax.annotate(f"{failed} failed", (xi, 0), rotation=90, fontsize=7, ha="center", va="bottom")
        ax.set_xticks(np.arange(len(models)), models)
        ax.set_ylabel(f"test {primary[task]}")
        ax.set_title(f"{task}: test {primary[task]} (mean ± std over seeds)")
        from matplotlib.patches import (
            Patch,  # explicit handles: a method with no bar still gets its colour
        )

        ax.legend(handles=[Patch(color=f"C{i}", label=m) for i, m in enumerate(methods)], fontsize=8,
                  loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        ax.grid(axis="y", alpha=0.3)
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
