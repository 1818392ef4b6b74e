"""One-page report of a results directory: ``REPORT.md`` and ``report.html``, with the PNGs of
:mod:`harness.plots` in ``plots/`` beside them (linked by relative path, so the folder can be moved).

Sections: run counts by status; the leaderboard (test split, mean ± std over seeds, one row per
configuration; in bold the best and every config not significantly different from it, † where
a config does not beat the constant floor, ! where it has failed runs) per task family; the mean
rank of each config across tasks on their primary metrics (over the cells they all share), the
Friedman test and the critical-difference diagram; the compute per method (the worker-seconds of
its tuning trials and runs, :func:`compute_table`); the figures; the failed runs with their
messages (failures are shown, never hidden).
The HTML is built from the same pieces with pandas' ``to_html`` and a minimal inline style
(no template engine needed).
"""

from __future__ import annotations

import html
import os
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

MAX_FAILURES_LISTED = 50
#: what the compute table counts (REPORT.md and report.html)
COMPUTE_NOTE = ("Seconds a worker held for each method: its tuning trials (each trains alone) and its runs (a "
                "stacked member counts 1/size of its start → finish interval, so a group's time counts about "
                "once; failed and pruned runs count too), with the runs' evaluation seconds among them.")
_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
          "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
          "font-size:90%}th{background:#f3f3f3}img{max-width:100%;margin:1em 0}")


def _failures(runs: pd.DataFrame) -> pd.DataFrame:
    from harness.records import Status

    failed = runs[runs["status"].isin(Status.failures())]
    columns = [c for c in ("task", "model", "config", "seed", "status", "error") if c in failed.columns]
    failed = failed[columns].copy()
    if "error" in failed:
        failed["error"] = failed["error"].fillna("").astype(str).str.slice(0, 200)
    return failed.sort_values(columns[:4]).reset_index(drop=True)


def _markdown_table(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _across_tasks(board: pd.DataFrame, runs: pd.DataFrame) -> str:
    """One paragraph: the Friedman test over the shared cells (see ``critical-difference.png``)."""
    from harness import leaderboard, stats

    primary = leaderboard.primary_metrics(runs, sorted(board["task"].unique()))
    matrix, directions, left_out = leaderboard.rank_matrix(board, primary=primary)
    result = stats.friedman(matrix, directions)
    if result is None:
        return (f"Friedman test: not applicable ({matrix.shape[1]} config(s) over {matrix.shape[0]} shared "
                f"task × model cell(s); it needs ≥ 3 configs and ≥ 2 cells).")
    text = (f"Friedman test over the {result.n_blocks} task × model cells every config shares: "
            f"χ² = {result.statistic:.2f}, p = {result.p_value:.3g} ({len(matrix.columns)} configs). "
            f"The critical-difference diagram joins configs the Nemenyi post-hoc test does not separate "
            f"(α = {stats.ALPHA}).")
    if left_out:
        text += f" Left out for sharing too few cells: {', '.join(left_out)}."
    return text


def group_share(runs: pd.DataFrame) -> pd.Series:
    """The share of its job's clock each run row stands for: 1/size for a member of a stacked group
    of ``size`` (its seconds are the group's), 1 for a run trained alone. Summing a time column
    times this share counts a group's time once, not once per member."""
    if "stacked" not in runs:
        return pd.Series(1.0, index=runs.index)
    return 1.0 / pd.to_numeric(runs["stacked"], errors="coerce").fillna(1.0).clip(lower=1.0)


def compute_table(runs: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Per method, where the workers' time went: its tuning trials' seconds (start → finish, each
    trial trains alone) and its runs' (start → finish, any status; a stacked member counts 1/size
    of its interval, :func:`group_share`, so a group's time is counted about once), the
    evaluation seconds among the runs' (a group evaluates its members one after the other), and
    the method's share of all those worker-seconds; the costliest method first."""
    def seconds(frame: pd.DataFrame) -> pd.Series:
        span = (pd.to_datetime(frame["finished_at"], utc=True) - pd.to_datetime(frame["started_at"], utc=True))
        return span.dt.total_seconds().fillna(0.0)

    run_part = pd.DataFrame({"method": runs["method"], "runs (worker-s)": seconds(runs) * group_share(runs),
                             "evaluation (s)": pd.to_numeric(runs["eval_seconds"], errors="coerce").fillna(0.0)})
    trial_part = pd.DataFrame({"method": trials["method"], "tuning (worker-s)": seconds(trials)})
    table = pd.concat([
        trial_part.groupby("method").agg(**{"tuning trials": ("tuning (worker-s)", "size"),
                                            "tuning (worker-s)": ("tuning (worker-s)", "sum")}),
        run_part.groupby("method").agg(runs=("runs (worker-s)", "size"), **{
            "runs (worker-s)": ("runs (worker-s)", "sum"), "of which evaluation (s)": ("evaluation (s)", "sum")}),
    ], axis=1).fillna(0.0)
    total = table["tuning (worker-s)"] + table["runs (worker-s)"]
    table["share (%)"] = 100 * total / total.sum() if total.sum() > 0 else float("nan")
    table = table.loc[total.sort_values(ascending=False).index].reset_index(names="method")
    counts, amounts = ["tuning trials", "runs"], ["tuning (worker-s)", "runs (worker-s)", "of which evaluation (s)"]
    return table.astype({c: int for c in counts}).round({c: 1 for c in amounts} | {"share (%)": 1})


def write_report(results_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                 on_corrupt: str = "warn") -> Path:
    """Write ``out_dir/REPORT.md`` (default ``out_dir = results_dir``), ``report.html`` and the
    figures (``out_dir/plots/``); returns the Markdown path."""
    from harness import leaderboard, plots, store

    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = leaderboard.with_config(store.read_table(results_dir, "runs", on_corrupt=on_corrupt))
    board = leaderboard.leaderboard_for(results_dir, on_corrupt=on_corrupt)
    ranks = board[board["task"] == leaderboard.ALL][["config", "mean", "n_ok", "rank"]].rename(
        columns={"mean": "mean_rank", "n_ok": "cells"}).round({"mean_rank": 2}).astype({"rank": "Int64"})
    across = _across_tasks(board[board["task"] != leaderboard.ALL], runs)
    board = board[board["task"] != leaderboard.ALL]  # the mean ranks get their own section
    figures = plots.plot_all(results_dir, out_dir / "plots", on_corrupt=on_corrupt)  # where `ebm-bench plot` puts them
    statuses = runs["status"].value_counts().rename_axis("status").reset_index(name="runs") if len(runs) else \
        pd.DataFrame(columns=["status", "runs"])
    failures = _failures(runs)
    compute = compute_table(runs, store.read_table(results_dir, "trials", on_corrupt=on_corrupt))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    relative = [os.path.relpath(p, out_dir) for p in figures]

    md = [f"# ebm-bench report\n\nResults: `{results_dir}` — {len(runs)} runs — generated {stamp}.\n",
          "## Runs by status\n", _markdown_table(statuses),
          "## Leaderboard (test split, mean ± std over seeds; best in bold)\n",
          leaderboard.format_leaderboard(board, "markdown") if len(board) else "(no results yet)\n",
          "## Mean rank across tasks (primary metric; lower is better)\n",
          _markdown_table(ranks) if len(ranks) else "(no ranked results)\n", across + "\n",
          "## Compute per method (worker-seconds)\n", COMPUTE_NOTE + "\n",
          _markdown_table(compute) if len(compute) else "(no timed runs)\n",
          "## Figures\n", *[f"![{Path(r).stem}]({r})\n" for r in relative],
          f"## Failed runs ({len(failures)})\n",
          _markdown_table(failures.head(MAX_FAILURES_LISTED)) if len(failures) else "None.\n"]
    md_path = out_dir / "REPORT.md"
    md_path.write_text("\n".join(md), encoding="utf-8")

    wide, best = leaderboard.pivot(board)  # ! and † are in the cells; * marks the tied-best ones
    for column in best.columns:
        wide[column] = [f"{v} {leaderboard.MARK_TIED}" if b else v for v, b in zip(wide[column], best[column])]
    body = [f"<h1>ebm-bench report</h1><p>Results: <code>{html.escape(str(results_dir))}</code> — "
            f"{len(runs)} runs — generated {stamp}.</p>",
            "<h2>Runs by status</h2>", statuses.to_html(index=False),
            "<h2>Leaderboard (test split, mean ± std over seeds)</h2>",
            wide.to_html(index=False, na_rep="") if len(wide) else "<p>(no results yet)</p>",
            f"<p>{html.escape(leaderboard.LEGEND)}</p>",
            "<h2>Mean rank across tasks (primary metric)</h2>", ranks.to_html(index=False, na_rep=""),
            f"<p>{html.escape(across)}</p>",
            "<h2>Compute per method (worker-seconds)</h2>", f"<p>{html.escape(COMPUTE_NOTE)}</p>",
            compute.to_html(index=False) if len(compute) else "<p>(no timed runs)</p>",
            "<h2>Figures</h2>", *[f'<img src="{html.escape(r)}" alt="{html.escape(Path(r).stem)}">' for r in relative],
            f"<h2>Failed runs ({len(failures)})</h2>",
            failures.head(MAX_FAILURES_LISTED).to_html(index=False) if len(failures) else "<p>None.</p>"]
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ebm-bench report</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>\n")
    (out_dir / "report.html").write_text(page, encoding="utf-8")
    return md_path
