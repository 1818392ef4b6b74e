"""The paper-reproduction report (``ebm-bench report --paper``): our numbers beside Sander,
Roulet, Liu & Blondel (ICML 2025) and beside scikit-learn references on the same splits.

Input: a results directory holding (part of) the ``paper`` suite and optionally the
``paper-convergence`` suite; partial runs are reported for what they are (the coverage section
counts planned against stored runs). Output in ``out_dir``: ``REPORT.md``, its figures
(``critical-difference-multilabel.png``, ``critical-difference-ranking.png``,
``convergence-cal500-unary.png``, ``tau-vs-logz.png``),
``runs.parquet`` (the deduplicated runs, no curves), ``leaderboard.parquet`` and
``references.parquet`` (the scikit-learn references, a cache: rows for (task, seed, fold)
already there are not refitted).

Sections of REPORT.md, in order: summary and conventions (both F1 variants and the empty-row
convention); coverage of the protocol; the targets of issue 16 per dataset; the paper's claims
with their evidence and verdicts (:mod:`harness.paper_evidence`: the rule is documented there
and printed in the report); one table per dataset (every configuration of every model, mean ±
std over seeds and folds, best and not-significantly-different in bold from the leaderboard's
paired Holm tests, the paper's figure, the scikit-learn references); the Friedman test and the
critical-difference diagram across datasets; the learned log-partition; the convergence figure;
failures (every failed / timeout / diverged row, grouped with its message, and every run
skipped or unsupported at plan time with its reason); the wall time (the suite's invocations'
seconds, per task the busy seconds of its tuning and its runs, and per method the worker-seconds
they held); provenance (machine, commands).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from harness.paper_evidence import (  # noqa: F401 - re-exported: the paper's figures live with the evidence
    MINMIN,
    PAPER_FIGURES,
    PAPER_MULTILABEL,
    PAPER_RANKING,
    RULE,
    paper_claims,
    primary_metric,
    scale,
    select_config,
    targets,
)
from harness.records import Status

SUITE = "paper"
CONVERGENCE_SUITE = "paper-convergence"
MAX_ERROR_CHARS = 240
#: how the planner words a skip for missing data (:func:`harness.plan.plan_runs`)
DATA_MISSING = "data not available"
#: columns of the per-dataset tables: (metric, header)
MULTILABEL_COLUMNS = (("f1_example", "example-F1"), ("f1_micro", "micro-F1"), ("nll", "test NLL (nats)"))
RANKING_COLUMNS = (("kendall", "Kendall τ"), ("nll", "test NLL (nats)"))
EMPTY_ROWS = (
    "**F1 conventions.** The paper does not say which F1 it reports, so both are given: *example-F1* "
    "(F1 of each test row, then the mean over rows; scikit-learn `average=\"samples\"`) and *micro-F1* "
    "(one F1 of the pooled true/false positives and negatives of all rows and labels). **Empty rows:** "
    "F1 = 2TP / (2TP + FP + FN) is 0/0 only when a row (example-F1) or the whole matrix (micro-F1) has no "
    "true and no predicted label; that case scores **1** (predicting the empty set for an empty truth is "
    "right; scikit-learn `zero_division=1.0`, `tasks/metrics.py`). On datasets with many empty rows "
    "(birds) this convention lifts example-F1 far above micro-F1.")


def empty_row_shares(data_dir, tasks=tuple(PAPER_MULTILABEL)) -> dict[str, float]:
    """Task → the share of its test rows (seed 0's split) with no label at all: the rows the
    empty-row convention decides. Tasks whose data is missing are left out."""
    from tasks.registry import get_task

    shares = {}
    for task in tasks:
        try:
            data = get_task(task).load(data_dir, seed=0)
        except (FileNotFoundError, ValueError):
            continue
        shares[task] = float((np.asarray(data.y_test).sum(axis=1) == 0).mean())
    return shares


def _fmt(mean: float, std: float, digits: int = 2) -> str:
    if mean is None or not np.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f}" if std is None or not np.isfinite(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_(no rows)_\n"

    def cell(value) -> str:
        text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(map(str, frame.columns)) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return header + "".join("| " + " | ".join(cell(v) for v in row) + " |\n" for row in frame.itertuples(index=False))


# ----------------------------------------------------------------------------- references

def reference_table(runs: pd.DataFrame, data_dir, cache: Path | None = None) -> pd.DataFrame:
    """scikit-learn references on every (task, seed, fold) split the paper runs used (the same
    splits: :meth:`tasks.base.Task.load` with the run's seed and fold). Rows already in ``cache``
    are reused; new ones are added to it."""
    from joblib import Parallel, delayed  # type: ignore[import-untyped]  # scikit-learn's own dependency

    from harness.references import reference_rows
    from harness.store import write_parquet_atomic
    from tasks.registry import get_task

    columns = ["task", "method", "seed", "fold"]
    cached = pd.read_parquet(cache) if cache is not None and cache.is_file() else pd.DataFrame(columns=columns)
    wanted = runs[runs["task"].isin(list(PAPER_FIGURES))][["task", "seed", "fold"]].dropna(subset=["seed"])
    wanted = wanted.assign(fold=wanted["fold"].fillna(0)).astype({"seed": "int64", "fold": "int64"}).drop_duplicates()
    have = set(zip(cached["task"], cached["seed"].astype("int64"), cached["fold"].astype("int64"))) \
        if len(cached) else set()
    todo = sorted(u for u in wanted.itertuples(index=False, name=None) if u not in have)
    missing = {t: get_task(t).available(data_dir) for t in sorted({u[0] for u in todo})}
    for task, why in missing.items():
        if why is not None:  # data missing: the report says there is no reference
            print(f"warning: no scikit-learn reference for {task}: {why}", file=sys.stderr)
    todo = [u for u in todo if missing[u[0]] is None]
    frames = [cached]
    if todo:  # a one-time cost (cached), spread over the CPUs: say so, the report is otherwise quiet
        print(f"fitting the scikit-learn references on {len(todo)} (task, seed, fold) split(s) "
              f"(cached in {cache})", file=sys.stderr)
        rows = Parallel(n_jobs=min(len(todo), os.cpu_count() or 1))(
            delayed(reference_rows)(task, data_dir, [seed], fold=fold) for task, seed, fold in todo)
        frames += [pd.DataFrame(r) for r in rows]
    table = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) \
        else pd.DataFrame(columns=columns)
    if cache is not None and len(frames) > 1 and len(table):
        import pyarrow as pa

        write_parquet_atomic(cache, pa.Table.from_pandas(table, preserve_index=False))
    return table


def _empty_rows_line(data_dir, tasks: set[str]) -> str:
    shares = empty_row_shares(data_dir, [t for t in PAPER_MULTILABEL if t in tasks])
    if not shares:
        return ""
    return " Share of test rows with no label: " + ", ".join(f"{t} {v:.0%}" for t, v in shares.items()) + "."


def _reference_summary(references: pd.DataFrame) -> pd.DataFrame:
    if references.empty:
        return pd.DataFrame()
    metrics = [c for c in ("test_f1_example", "test_f1_micro", "test_kendall") if c in references]
    rows = []
    for (task, method), group in references.groupby(["task", "method"]):
        row = {"task": task, "reference": method, "splits": len(group)}
        for column in metrics:
            values = pd.to_numeric(group[column], errors="coerce").dropna() * 100
            row[column.removeprefix("test_")] = _fmt(values.mean(), values.std(ddof=1)) if len(values) else "–"
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- coverage

def planned_units(suite_name: str, data_dir=None) -> pd.DataFrame:
    """The runs a suite plans (its full protocol: no filters), one row per (task, model, config,
    seed, fold) with ``status`` (None = to run; skipped / unsupported decided at plan time) and
    ``reason``. A run skipped because the data is missing where the report is made is asked
    whether its method could do it at all (``Method.check``), so the count does not depend on
    the machine the report runs on."""
    from ebm.spaces import make_space
    from harness.plan import Filters, plan_runs, resolve_suite

    suite, filters = resolve_suite(suite_name, Filters())
    rows = []
    for p in plan_runs(suite, filters, data_dir=data_dir):
        status, reason = (p.status.value if p.status else None), p.reason
        if status == Status.SKIPPED.value and (reason or "").startswith(DATA_MISSING) and p.method is not None:
            verdict = p.method.check(make_space(p.kind, p.k, p.spec.model), p.spec.model, p.spec.params)
            if verdict:
                status, reason = Status(verdict[0]).value, verdict[1]
        rows.append({"task": p.spec.task, "model": p.spec.model, "config": p.config, "seed": p.spec.seed,
                     "fold": p.spec.fold, "status": status, "reason": reason,
                     "budget": json.dumps(p.spec.budget, sort_keys=True)})
    return pd.DataFrame(rows)


def base_config(label: str) -> str:
    """A config label without its ``tuned`` mark: the configuration the suite planned
    (``exact-mle[prior=frequency,tuned]`` → ``exact-mle[prior=frequency]``, ``bce[tuned]`` → ``bce``)."""
    if not label.endswith("]") or "[" not in label:
        return label
    name, inside = label[:-1].split("[", 1)
    parts = [p for p in inside.split(",") if p != "tuned"]
    return f"{name}[{','.join(parts)}]" if parts else name


def coverage(planned: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Planned against stored runs per task: one row per task (and a total) with ``planned`` (the
    protocol's runs: every planned run but those the method cannot do — unsupported, or skipped
    for a reason other than missing data, e.g. exact MLE past its enumeration limit; runs skipped
    because the data is missing where the plan is made still count), ``stored`` (of
    those, the runs with a stored ok / failed / timeout / diverged row of the planned
    configuration — tuned or not, whatever its budget), ``ok``, ``failed`` (no ok row),
    ``missing`` and ``not applicable`` (the runs the method cannot do)."""
    from harness.leaderboard import with_config

    keys = ["task", "model", "config", "seed", "fold"]
    reason = planned["reason"] if "reason" in planned else pd.Series(None, index=planned.index, dtype=object)
    unsupported = planned["status"].eq(Status.UNSUPPORTED.value) | (
        planned["status"].eq(Status.SKIPPED.value) & ~reason.fillna("").str.startswith(DATA_MISSING))
    todo = planned[~unsupported].copy()
    at_plan = planned[unsupported].groupby("task").size()
    ran = runs[runs["status"].isin([Status.OK.value, *Status.failures()])] if len(runs) else runs
    if len(ran):
        stored = with_config(ran)
        stored = stored.assign(config=stored["config"].map(base_config), fold=stored["fold"].fillna(0))
        stored = stored.astype({"seed": "int64", "fold": "int64"})
        status = stored.groupby(keys)["status"].agg(
            lambda s: "ok" if (s == Status.OK.value).any() else "failed").rename("stored_status")
        todo = todo.merge(status.reset_index(), on=keys, how="left")
    else:
        todo["stored_status"] = None
    table = todo.groupby("task").agg(planned=("config", "size"), stored=("stored_status", "count"),
                                     ok=("stored_status", lambda s: int((s == "ok").sum())),
                                     failed=("stored_status", lambda s: int((s == "failed").sum())))
    table["missing"] = table["planned"] - table["stored"]
    table["not applicable"] = at_plan.reindex(table.index).fillna(0).astype(int)
    table = table.reset_index()
    total = table.drop(columns="task").sum().to_dict()
    table = pd.concat([table, pd.DataFrame([{"task": "**all**", **total}])], ignore_index=True)
    return table.astype({c: "int64" for c in ("planned", "stored", "ok", "failed", "missing", "not applicable")})


def _coverage_section(runs: pd.DataFrame, data_dir) -> str:
    parts = []
    for suite in (SUITE, CONVERGENCE_SUITE):
        suite_runs = runs[runs["suite"] == suite]
        try:
            planned = planned_units(suite, data_dir)
        except Exception as exc:  # noqa: BLE001 - the report still says what it could not plan
            parts.append(f"### `{suite}`\n\nThe suite could not be planned here ({exc}); "
                         f"{len(suite_runs)} runs stored.\n")
            continue
        table = coverage(planned, suite_runs)
        total = table.iloc[-1]
        budgets = planned["budget"].iloc[0] if len(planned) else "{}"
        stored_budgets = suite_runs["budget_json"].dropna().value_counts() if len(suite_runs) else pd.Series()
        tuned = int(suite_runs["tuned"].fillna(False).astype(bool).sum()) if "tuned" in suite_runs else 0
        share = total["stored"] / total["planned"] if total["planned"] else 0.0
        parts.append(
            f"### `{suite}`\n\n{int(total['stored'])} of {int(total['planned'])} planned runs are stored "
            f"({share:.0%}; {int(total['ok'])} ok, {int(total['failed'])} failed/timeout/diverged, "
            f"{int(total['missing'])} missing; {int(total['not applicable'])} more are not applicable: the method "
            f"cannot do them, e.g. exact MLE past its enumeration limit). "
            f"The protocol's budget is `{budgets}`; stored budgets: "
            + (", ".join(f"`{b}` ({n} runs)" for b, n in stored_budgets.items()) or "none")
            + f". Tuned runs (Optuna, validation split): {tuned} of {len(suite_runs)}.\n\n" + _markdown(table))
    return "\n".join(parts)


# ----------------------------------------------------------------------------- tables per dataset

def dataset_table(task: str, board: pd.DataFrame, ok: pd.DataFrame, references: pd.DataFrame,
                  runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every configuration of every model on ``task`` (the leaderboard's mean ± std over seeds
    and folds, × 100 for F1 / Kendall), then the paper's figure and the scikit-learn references.
    A configuration with neither an ok nor a failed run (skipped at plan time) says why, from
    ``runs``' messages."""
    from harness.leaderboard import MARK_FAILED, value_marks

    columns = RANKING_COLUMNS if task in PAPER_RANKING else MULTILABEL_COLUMNS
    primary = columns[0][0]
    rows = []
    cells = board[board["task"] == task]
    for model in sorted(cells["model"].unique()):
        in_model = cells[cells["model"] == model]
        chosen = select_config(ok, task, model, MINMIN, primary)
        order = in_model[in_model["metric"] == primary].set_index("config")["mean"]
        configs = sorted(set(in_model["config"]), key=lambda c: (-(order.get(c, np.nan)) if np.isfinite(
            order.get(c, np.nan)) else np.inf, c))
        for config in configs:
            entries = in_model[in_model["config"] == config].set_index("metric")
            row: dict[str, object] = {"model": model, "config": config}
            for metric, header in columns:
                if metric not in entries.index:
                    row[header] = "–"
                    continue
                e = entries.loc[metric]
                text = _fmt(e["mean"] * scale(metric), e["std"] * scale(metric))
                text += value_marks(e.get("beats_floor"), e.get("n_impossible"))
                row[header] = f"**{text}**" if pd.notna(e["tied_best"]) and bool(e["tied_best"]) else text
            first = entries.iloc[0]
            row["ok"], row["failed"] = int(first["n_ok"]), int(first["n_failed"])
            if row["failed"]:
                row["config"] = f"{config} {MARK_FAILED}"
            row["note"] = ("best min-min (validation)" if chosen is not None and chosen[1] == config
                           else "floor" if config == "constant" else "")
            if not row["ok"] and not row["failed"]:
                row["note"] = "not run: " + _skip_reason(runs, task, model, config)
            rows.append(row)
    figure, best = PAPER_FIGURES[task]
    paper_row: dict[str, object] = {"model": "unary" if task in PAPER_MULTILABEL else "permutahedron",
                 "config": f"paper: {best}", "ok": "", "failed": "", "note": "published figure"}
    for metric, header in columns:
        paper_row[header] = f"{figure:.2f}" if metric == primary else ("(variant not stated)"
                                                                       if metric == "f1_micro" else "")
    rows.append(paper_row)
    refs = references[references["task"] == task] if len(references) else references
    if len(refs):
        means = refs.groupby("method")[f"test_{primary}"].mean()
        for method, group in refs.groupby("method"):
            row = {"model": "–", "config": f"sklearn: {method}", "ok": len(group), "failed": "",
                   "note": "best reference" if method == means.idxmax() else "reference"}
            for metric, header in columns:
                column = f"test_{metric}"
                values = pd.to_numeric(group[column], errors="coerce").dropna() * scale(metric) \
                    if column in group else pd.Series(dtype=float)
                row[header] = _fmt(values.mean(), values.std(ddof=1)) if len(values) else "–"
            rows.append(row)
    return pd.DataFrame(rows)


def _skip_reason(runs: pd.DataFrame | None, task: str, model: str, config: str) -> str:
    if runs is None or runs.empty:
        return "no run stored"
    rows = runs[(runs["task"] == task) & (runs["model"] == model) & (runs["config"] == config)]
    reasons = rows["error"].dropna().astype(str) if "error" in rows else pd.Series(dtype=str)
    if reasons.empty:
        return "no run stored"
    return f"{rows['status'].iloc[0]}, {reasons.iloc[0][:MAX_ERROR_CHARS]}"


# ----------------------------------------------------------------------------- claims and targets

def _claims_section(runs: pd.DataFrame, curves: pd.DataFrame, shortfalls: list[str]) -> str:
    """The paper's claims, then (``shortfalls``) the datasets where our own min-min misses the
    issue's targets: said among the claims rather than left in a table's marks."""
    claims = paper_claims(runs, curves)
    summary = pd.DataFrame([{"claim": c.statement, "verdict": f"**{c.verdict}**",
                             "cells for / against / unclear / n too small":
                                 " / ".join(str(c.counts[k]) for k in ("for", "against", "unclear", "n too small"))}
                            for c in claims])
    parts = [f"Rule (computed, not written by hand): {RULE}.\n\n", _markdown(summary)]
    for c in claims:
        parts.append(f"\n### {c.statement}: {c.verdict}\n\n{c.how}.\n\n")
        parts.append(_markdown(pd.DataFrame([x.row() for x in c.comparisons])) if c.comparisons
                     else "_No cell has the runs this claim needs._\n")
    if shortfalls:
        parts.append("\n### Where our min-min falls short of the targets\n\n"
                     "Datasets on which our best min-min (validation-selected) misses a target of the table "
                     "in *Targets*, and by how much:\n\n" + "\n".join(shortfalls) + "\n")
    return "".join(parts)


def _prior_section(runs: pd.DataFrame) -> str:
    from harness.paper_evidence import AGAINST, FOR, prior_comparisons

    found = prior_comparisons(runs)
    if not found:
        return "_No configuration ran under both priors._\n"
    better = sum(c.verdict == FOR for c in found)
    worse = sum(c.verdict == AGAINST for c in found)
    return (f"The multilabel methods ran under the paper's uniform q and under the frequency prior (factorised "
            f"Bernoulli at the training label frequencies; config label `[prior=frequency]`). A = frequency, "
            f"B = uniform, primary metric, paired over (seed, fold): frequency significantly better in {better} "
            f"of {len(found)} comparisons, uniform significantly better in {worse}, the rest undecided or too "
            f"few pairs.\n\n" + _markdown(pd.DataFrame([c.row() for c in found]).drop(columns=["margin"])))


def _targets_section(runs: pd.DataFrame, references: pd.DataFrame) -> tuple[str, list[str]]:
    """The targets table, and one line per dataset that misses a target (for the claims section)."""
    found = targets(runs, references)
    missed = [t for t in found if t.met is not True]
    rows = []

    def mark(flag) -> str:
        return "–" if flag is None else "yes" if flag else "**no**"

    for t in found:
        values = ", ".join(f"{m} {v:.2f}" for m, v in t.values.items()) if t.values else "–"
        ref = t.versus_reference
        floor = t.versus_floor
        rows.append({
            "dataset": t.task, "our best min-min (validation-selected)": f"{t.config} ({t.model})" if t.config else "–",
            "ours (test × 100)": values, "paper": f"{t.paper:.2f}", "≥ paper": mark(t.beats_paper),
            "best sklearn ref": t.reference or "–",
            "ours − ref [95 % CI]": "–" if ref is None or not np.isfinite(ref.mean) else
            f"{ref.mean:+.2f} [{ref.low:.2f}, {ref.high:.2f}]",
            "≥ ref": mark(t.beats_reference),
            "ours − floor [95 % CI]": "–" if floor is None or not np.isfinite(floor.mean) else
            f"{floor.mean:+.2f} [{floor.low:.2f}, {floor.high:.2f}]",
            "> floor (sig.)": mark(t.above_floor), "all met": mark(t.met)})
    misses = [f"* **{t.task}**: " + "; ".join(t.misses() or ["not checkable"]) + "." for t in missed]
    met = len(found) - len(missed)
    text = (f"Per dataset, our best min-min (the min-min configuration of either model with the best validation "
            f"mean of example-F1 / Kendall τ) against (1) the paper's figure, in at least one F1 variant, "
            f"(2) the best scikit-learn reference on the same splits (example-F1 / Kendall τ, paired over "
            f"(seed, fold)), (3) the `constant` floor of the same model (paired; met when the 95 % interval "
            f"of the difference is above 0). **{met} of {len(found)} datasets meet all three.**\n\n")
    text += _markdown(pd.DataFrame(rows))
    if missed:
        text += ("\nNot met on: " + ", ".join(t.task for t in missed)
                 + " (how far, in the last part of the claims section).\n")
    text += ("\nThe fourth target (exact MLE, tuned and validation-selected, within one std of min-min logistic on "
             "test NLL wherever it runs) is the first claim below, cell by cell.\n")
    return text, misses


# ----------------------------------------------------------------------------- failures and provenance

def failures_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every failed / timeout / diverged run, grouped by (suite, task, model, config, status,
    message pattern — the message with its numbers replaced, so "after 27 of 60 steps" and "after
    30 of 60 steps" are one row): the count, the (seed/fold) units and the message (the first one,
    "e.g. …" when the group holds several). Nothing is dropped: each run is counted in one row."""
    import re

    from harness.leaderboard import with_config

    columns = ["suite", "task", "model", "config", "status", "runs", "seed/fold", "message"]
    failed = runs[runs["status"].isin(Status.failures())]
    if failed.empty:
        return pd.DataFrame(columns=columns)
    failed = with_config(failed)
    message = failed["error"].fillna("(no message recorded)").astype(str).map(
        lambda e: " ".join(e.split())[:MAX_ERROR_CHARS])
    units = failed["seed"].astype("Int64").astype(str) + "/" + failed["fold"].fillna(0).astype("Int64").astype(str)
    frame = failed.assign(message=message, unit=units,
                          pattern=message.map(lambda m: re.sub(r"\d+(\.\d+)?", "#", m)))
    out = frame.groupby(["suite", "task", "model", "config", "status", "pattern"], dropna=False).agg(
        runs=("run_id", "size"), units=("unit", lambda u: ", ".join(sorted(set(u)))),
        message=("message", lambda m: m.iloc[0] if m.nunique() == 1 else f"e.g. {m.iloc[0]}")).reset_index()
    return out.rename(columns={"units": "seed/fold"})[columns]


def at_plan_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs recorded skipped / unsupported (decided at plan time), grouped with their reason."""
    from harness.leaderboard import with_config

    rows = runs[runs["status"].isin([Status.SKIPPED.value, Status.UNSUPPORTED.value])]
    if rows.empty:
        return pd.DataFrame(columns=["suite", "task", "model", "config", "status", "runs", "reason"])
    rows = with_config(rows).assign(reason=rows["error"].fillna("").astype(str).str.slice(0, MAX_ERROR_CHARS))
    return rows.groupby(["suite", "task", "model", "config", "status", "reason"], dropna=False).size().rename(
        "runs").reset_index()[["suite", "task", "model", "config", "status", "runs", "reason"]]


def _seconds(text: float) -> str:
    hours, rest = divmod(float(text), 3600)
    return f"{int(hours)} h {rest / 60:.0f} min" if hours else f"{rest / 60:.1f} min"


def busy_seconds(started: pd.Series, finished: pd.Series) -> float:
    """Clock seconds during which at least one interval [started_i, finished_i] is open: the length
    of their union, so work side by side on several workers counts once."""
    spans = pd.DataFrame({"start": pd.to_datetime(started, utc=True),
                          "end": pd.to_datetime(finished, utc=True)}).dropna().sort_values("start")
    if spans.empty:
        return 0.0
    # an interval opens a new block where it starts after every earlier one has ended
    reach = spans["end"].cummax()
    block = (spans["start"] > reach.shift()).cumsum()
    merged = spans.assign(reach=reach).groupby(block).agg(start=("start", "min"), end=("reach", "max"))
    return float((merged["end"] - merged["start"]).dt.total_seconds().sum())


def suite_wall_seconds(results_dir: Path, suite: str) -> tuple[float, int]:
    """The seconds the suite's invocations ran (the manifest's ``seconds``: each command from its
    start to its exit, Ray's start, planning and compaction included) and how many there were."""
    from harness.manifest import read_manifest

    manifest = read_manifest(results_dir) if (results_dir / "manifest.json").is_file() else {}
    seconds = [float(inv["seconds"]) for inv in manifest.get("invocations", [])
               if inv.get("suite") == suite and isinstance(inv.get("seconds"), (int, float))]
    return sum(seconds), len(seconds)


def wall_time_table(runs: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Per task: its tuning trials and finished runs, the busy seconds of each (``busy_seconds``),
    and finished runs per busy hour of its runs."""
    rows = []
    for task in sorted(set(runs["task"]) | set(trials["task"])):
        task_trials, task_runs = trials[trials["task"] == task], runs[runs["task"] == task]
        task_runs = task_runs[task_runs["status"] == Status.OK.value]
        tuning = busy_seconds(task_trials["started_at"], task_trials["finished_at"])
        running = busy_seconds(task_runs["started_at"], task_runs["finished_at"])
        rows.append({"task": task, "tuning trials": len(task_trials), "tuning busy (s)": round(tuning),
                     "runs ok": len(task_runs), "runs busy (s)": round(running),
                     "runs per busy hour": round(3600 * len(task_runs) / running) if running else np.nan})
    return pd.DataFrame(rows)


def _wall_time_section(runs: pd.DataFrame, trials: pd.DataFrame, results_dir: Path) -> str:
    ok = runs[runs["status"] == Status.OK.value]
    wall, n_invocations = suite_wall_seconds(results_dir, SUITE)
    tuning = busy_seconds(trials["started_at"], trials["finished_at"])
    running = busy_seconds(ok["started_at"], ok["finished_at"])
    if not wall:
        head = "The manifest records no finished or stopped invocation of the suite, so no wall time. "
    else:
        head = (f"The `{SUITE}` suite's {n_invocations} invocation(s) ran **{wall:,.0f} s ({_seconds(wall)})** in all "
                f"(the manifest's seconds: each command from its start to its exit; the time between a stop and "
                f"its resumption is not counted): **{3600 * len(ok) / wall:,.0f} finished runs an hour** with their "
                f"tuning. ")
    per_hour = f"{3600 * len(ok) / running:,.0f}" if running else "–"
    return (head + f"Tuning trials were in flight for {tuning:,.0f} s and runs for {running:,.0f} s ({per_hour} "
            "finished runs per busy hour); busy seconds are the union of the start → finish intervals, so two "
            "workers side by side count once, and a task's busy time overlaps another's where their work "
            "interleaved (tuning does).\n\n" + _markdown(wall_time_table(ok, trials))
            + _compute_paragraph(runs, trials, wall))


def _compute_paragraph(runs: pd.DataFrame, trials: pd.DataFrame, wall: float) -> str:
    """:func:`harness.report.compute_table` with the workers' mean occupancy over the invocations' wall time."""
    from harness.report import COMPUTE_NOTE, compute_table

    table = compute_table(runs, trials)
    if table.empty:
        return ""
    worker = float(table["tuning (worker-s)"].sum() + table["runs (worker-s)"].sum())
    busy = (f"; over the invocations' {wall:,.0f} s that is {worker / wall:.2f} workers busy on average"
            if wall else "")
    return (f"\nWhere the workers' time went, per method: {worker:,.0f} worker-seconds in all{busy}. "
            f"{COMPUTE_NOTE}\n\n" + _markdown(table))


def provenance(runs: pd.DataFrame, results_dir: Path) -> str:
    """Wall time (sum of run durations, a stacked group's once, and the span first start → last
    finish, per suite), the machines (hosts, devices, threads, package versions of the runs; the
    manifest's hardware) and the command sequence (the manifest's invocations, with their seconds)."""
    from harness.manifest import read_manifest
    from harness.report import group_share

    lines = []
    for suite, group in runs.groupby("suite"):
        started = pd.to_datetime(group["started_at"], utc=True)
        finished = pd.to_datetime(group["finished_at"], utc=True)
        # a stacked member's clock is its group's: each member counts 1/size of it, so the sum is the
        # workers' time once, not once per member
        share = group_share(group)
        durations = ((finished - started).dt.total_seconds() * share).dropna()
        span = (finished.max() - started.min()).total_seconds() if durations.size else float("nan")
        train = (pd.to_numeric(group["train_seconds"], errors="coerce") * share).sum()
        hosts = ", ".join(f"{h} ({n})" for h, n in group["host"].fillna("?").value_counts().items())
        devices = ", ".join(sorted(set(group["device"].dropna().astype(str)))) or "?"
        threads = ", ".join(str(int(t)) for t in sorted(set(group["threads"].dropna()))) or "?"
        when = (f"{started.min():%Y-%m-%d %H:%M} → {finished.max():%Y-%m-%d %H:%M} UTC ({_seconds(span)})"
                if durations.size and np.isfinite(span) else "? (no timestamps)")
        lines.append(
            f"* `{suite}`: {len(group)} runs; summed run wall time {_seconds(durations.sum())} "
            f"(training {_seconds(train)}; a stacked group's time counted once); span {when}; "
            f"hosts (runs): {hosts}; devices: {devices}; "
            f"torch threads per run: {threads}.")
    versions = sorted(set(runs["versions_json"].dropna())) if "versions_json" in runs else []
    lines += [f"* package versions of the runs: `{v}`" for v in versions]
    manifest = read_manifest(results_dir) if (results_dir / "manifest.json").is_file() else {}
    if manifest.get("hardware"):
        lines.append(f"* machine (manifest): `{json.dumps(manifest['hardware'], sort_keys=True)}`; "
                     f"checkout {manifest.get('git_sha', '?')}")
    invocations = manifest.get("invocations", [])
    if invocations:
        lines.append("\nCommands that wrote this results directory (the manifest's invocations, oldest first):\n")
        for inv in invocations:
            argv = inv.get("command_line") or []
            shown = "ebm-bench " + " ".join(argv[1:]) if argv else "?"
            seconds = inv.get("seconds")
            ran = f", {seconds:,.0f} s" if isinstance(seconds, (int, float)) else ""
            lines.append(f"1. `{shown}` — {inv.get('started_at', '?')[:16]}, {inv.get('status', '?')}{ran}, "
                         f"planned {inv.get('planned', '?')}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- figures

def method_board(board: pd.DataFrame, ok: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard reduced to one configuration per (task, model, method) — the one with the
    best validation mean of the primary metric (:func:`select_config`) — labelled by the method
    name: the methods' comparison across datasets, each at its validation-selected prior /
    hyperparameters / tuning, so that a method is one competitor, not one per config."""
    chosen = []
    for (task, model), cell in board.groupby(["task", "model"]):
        for method in sorted(cell["method"].dropna().unique()):
            pick = select_config(ok, task, model, [method], primary_metric(task))
            if pick is not None:
                chosen.append((task, model, pick[1], method))
    if not chosen:
        return board.iloc[0:0]
    keep = pd.DataFrame(chosen, columns=["task", "model", "config", "_method"])
    out = board.merge(keep, on=["task", "model", "config"])
    return out.assign(config=out["_method"]).drop(columns="_method")


FAMILIES = (("multilabel", PAPER_MULTILABEL), ("ranking", PAPER_RANKING))


def across_datasets(methods: pd.DataFrame, out: Path) -> tuple[str, list[Path]]:
    """Per task family (multilabel, label ranking): the Friedman test over the task × model cells
    of the validation-selected methods (:func:`method_board`) and its critical-difference diagram
    ``critical-difference-<family>.png`` (:mod:`harness.stats`; the cells and methods are those
    :func:`harness.leaderboard.rank_matrix` keeps: methods missing from too many cells are left
    out, and named)."""
    from harness import stats
    from harness.leaderboard import rank_matrix
    from harness.plots import _save

    texts, paths = [], []
    for family, tasks in FAMILIES:
        board = methods[methods["task"].isin(list(tasks))]
        primary = {t: primary_metric(t) for t in tasks}
        matrix, directions, left_out = rank_matrix(board, primary=primary)
        result = stats.friedman(matrix, directions)
        if result is None:
            texts.append(f"* {family}: Friedman test not applicable ({matrix.shape[1]} method(s) over "
                         f"{matrix.shape[0]} shared task × model cell(s); it needs ≥ 3 methods and ≥ 2 cells).")
            continue
        ranks = ", ".join(f"{c} {r:.2f}" for c, r in result.mean_ranks.items())
        texts.append(f"* {family}: Friedman χ² = {result.statistic:.2f}, p = {result.p_value:.3g} over "
                     f"{result.n_blocks} task × model cells and {matrix.shape[1]} methods; mean ranks {ranks}"
                     + (f"; left out for sharing too few cells: {', '.join(left_out)}" if left_out else "") + ".")
        title = f"{family}: mean rank of each method (validation-selected config; primary metric; 1 = best)"
        paths.append(_save(stats.critical_difference_figure(result, title),
                           out / f"critical-difference-{family}.png"))
    return "\n".join(texts) + "\n", paths


def _figures(runs: pd.DataFrame, curves: pd.DataFrame, out: Path) -> dict[str, list[Path]]:
    from harness import plots

    paper_runs = runs[runs["suite"] == SUITE]
    conv = runs[runs["suite"] == CONVERGENCE_SUITE]
    return {"convergence": plots.plot_paper_convergence(curves[curves["run_id"].isin(conv["run_id"])], conv, out)
            if len(conv) else [],
            "tau": plots.plot_tau_panels(curves[curves["run_id"].isin(paper_runs["run_id"])], paper_runs, out)}


def tau_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean |τ(x) − log Z(x)| on unseen x per multilabel dataset, model and config, for the
    methods that learn τ with the KL divergence. log Z is exact for the unary model (closed form)
    and for |Y| ≤ 2^16; otherwise an importance-sampling estimate (see ``ebm.inference``)."""
    from harness.leaderboard import with_config

    kl = runs["params_json"].fillna("{}").map(lambda p: json.loads(p).get("divergence", "kl") in ("kl", "logistic"))
    learned = runs[runs["tau_mae"].notna() & (runs["status"] == Status.OK)
                   & runs["task"].isin(list(PAPER_MULTILABEL)) & kl]
    rows = []
    for (task, model, config), group in with_config(learned).groupby(["task", "model", "config"]):
        k = int(group["k"].iloc[0])
        exact = model == "unary" or 2 ** k <= 2 ** 16
        values = group["tau_mae"].astype(float)
        rows.append({"dataset": task, "model": model, "config": config, "k": k,
                     "log Z": "exact" if exact else "importance sampling",
                     "mean |τ(x) − log Z(x)| (nats)": _fmt(values.mean(), values.std(ddof=1) if len(values) > 1
                                                           else float("nan")), "runs": len(group)})
    return pd.DataFrame(rows)


def impossible_table(board: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard cells with impossible values (``n_impossible`` > 0): task, model, config,
    metric, how many of the config's ok runs, and the (impossible) mean."""
    columns = ["task", "model", "config", "metric", "runs", "of ok runs", "mean"]
    if "n_impossible" not in board:
        return pd.DataFrame(columns=columns)
    rows = board[(board["task"] != "ALL") & (board["n_impossible"] > 0)]
    return pd.DataFrame({"task": rows["task"], "model": rows["model"], "config": rows["config"],
                         "metric": rows["metric"], "runs": rows["n_impossible"].astype(int),
                         "of ok runs": rows["n_ok"].astype(int), "mean": rows["mean"].map(lambda v: f"{v:.2f}")},
                        columns=columns).reset_index(drop=True)


# ----------------------------------------------------------------------------- the report

def write_paper_report(results_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                       data_dir: str | os.PathLike | None = None, notes: str = "") -> Path:
    """Write ``REPORT.md`` (+ figures, ``runs.parquet``, ``leaderboard.parquet``,
    ``references.parquet``) into ``out_dir``; returns the REPORT.md path."""
    import pyarrow as pa

    from harness.leaderboard import LEGEND, MARK_IMPOSSIBLE, build_leaderboard, with_config
    from harness.paper_evidence import prepare
    from harness.store import read_table, write_parquet_atomic

    results_dir, out = Path(results_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs, curves = read_table(results_dir, "runs"), read_table(results_dir, "curves")
    runs = with_config(runs)
    paper_runs = runs[runs["suite"] == SUITE]
    board = build_leaderboard(paper_runs)
    write_parquet_atomic(out / "leaderboard.parquet", pa.Table.from_pandas(board, preserve_index=False))
    write_parquet_atomic(out / "runs.parquet", pa.Table.from_pandas(runs, preserve_index=False))
    references = reference_table(paper_runs, data_dir, out / "references.parquet")
    ok = prepare(paper_runs)
    methods = method_board(board, ok)
    figures = _figures(runs, curves, out)
    across_text, figures["cd"] = across_datasets(methods, out)

    status = paper_runs["status"].value_counts().to_dict()
    units = paper_runs[["seed", "fold"]].drop_duplicates() if len(paper_runs) else pd.DataFrame()
    tuned = int(paper_runs["tuned"].fillna(False).astype(bool).sum()) if len(paper_runs) else 0

    def images(key: str) -> str:
        return "".join(f"![{p.stem}]({os.path.relpath(p, out)})\n\n" for p in figures[key]) \
            or "_(no figure: no runs)_\n\n"

    targets_text, shortfalls = _targets_section(paper_runs, references)
    parts = [
        "# ebm-bench: reproducing Sander, Roulet, Liu & Blondel (ICML 2025)\n\n",
        f"Runs of the `{SUITE}` suite: {len(paper_runs)} "
        f"({', '.join(f'{v} {k}' for k, v in sorted(status.items())) or 'none'}); "
        f"{paper_runs['seed'].nunique() if len(paper_runs) else 0} seed(s), "
        f"{paper_runs['fold'].fillna(0).nunique() if len(paper_runs) else 0} fold(s) "
        f"({len(units)} seed × fold splits); {tuned} tuned runs. Numbers are test-split means ± standard "
        "deviations over seeds and folds; F1 and Kendall τ × 100, NLL in nats. This report is generated by "
        "`ebm-bench report --paper`: every number, verdict and mark below is computed from the stored runs.\n\n",
        notes + ("\n\n" if notes else ""),
        EMPTY_ROWS, _empty_rows_line(data_dir, set(paper_runs["task"])), "\n\n",
        "## Coverage of the protocol\n\n", _coverage_section(runs, data_dir),
        "\n## Targets (issue 16)\n\n", targets_text,
        "\n## The paper's claims\n\n", _claims_section(paper_runs, curves, shortfalls),
        "\n## The prior q: uniform against frequency\n\n", _prior_section(paper_runs),
        "\n## Every dataset\n\n",
        f"Every configuration of every model (config label: method, fixed hyperparameters, `prior=frequency` "
        f"for the frequency prior q where the uniform one is the default, `tuned` for Optuna-tuned). In bold: "
        f"{LEGEND}. *best min-min (validation)*: the min-min configuration of that model with the best "
        f"validation mean of the primary metric. The scikit-learn references are fitted on the same splits.\n\n",
    ]
    for task in PAPER_FIGURES:
        if task not in set(board["task"]) and (references.empty or task not in set(references["task"])):
            parts.append(f"### {task}\n\n_No runs of this dataset are stored._\n\n")
            continue
        parts += [f"### {task}\n\n", _markdown(dataset_table(task, board, ok, references, paper_runs)), "\n"]
    failures, at_plan, impossible = failures_table(runs), at_plan_table(runs), impossible_table(board)
    n_failed = int(failures["runs"].sum()) if len(failures) else 0
    parts += [
        "## Across datasets\n\n",
        "Each method at its validation-selected configuration per task × model cell (prior, hyperparameters, "
        "tuning), ranked on the primary metric (example-F1 / Kendall τ) within each cell. ",
        "The critical-difference diagrams join methods the Nemenyi post-hoc test does not separate "
        "(α = 0.05).\n\n", across_text, "\n", images("cd"),
        "## The learned log-partition on unseen x\n\n",
        "Mean over test inputs of |τ(x) − log Z(x)|, then mean ± std over runs; the figure shows 100 unseen x "
        "per dataset (the first seed's run of each configuration).\n\n",
        _markdown(tau_table(paper_runs)), "\n", images("tau"),
        "## Convergence (cal500, unary; `paper-convergence`)\n\n",
        "Min-min logistic with n′ prior samples per example and the importance-weighted variant against exact MLE, "
        "with the paper's uniform q: each method's own training objective (symlog axis) and the validation "
        "example-F1, against optimiser steps and wall seconds; lines are means over seeds, bands the range "
        "(min–max) over seeds.\n\n",
        images("convergence"),
        "## scikit-learn references (test, mean ± std over the same splits, × 100)\n\n",
        _markdown(_reference_summary(references)),
        f"\n## Failures ({n_failed} runs)\n\n",
        "Every run that ended `failed`, `timeout` or `diverged`, grouped by its message (a timeout's metrics are "
        "those of the model when training stopped; they are counted in `failed`, never averaged).\n\n",
        _markdown(failures) if len(failures) else "None.\n",
        f"\nSkipped or unsupported at plan time ({int(at_plan['runs'].sum()) if len(at_plan) else 0} runs; "
        "not failures: the method does not apply or its data is missing):\n\n",
        _markdown(at_plan) if len(at_plan) else "None.\n",
        f"\nImpossible values ({int(impossible['runs'].sum()) if len(impossible) else 0} runs): values no "
        "model can have, such as a mean test NLL below 0 by more than its Monte-Carlo error (the importance-"
        "sampling estimate of log Z missed the model's mass). They are shown in the tables above, marked "
        f"{MARK_IMPOSSIBLE}, but never ranked, tested or selected:\n\n",
        _markdown(impossible) if len(impossible) else "None.\n",
        "\n## Wall time\n\n", _wall_time_section(paper_runs, read_table(results_dir, "trials"), results_dir),
        "\n## Provenance\n\n", provenance(runs, results_dir),
    ]
    path = out / "REPORT.md"
    path.write_text("".join(parts), encoding="utf-8")
    return path
