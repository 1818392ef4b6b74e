"""Benchmark ``protocol``: the wall time of the ``paper`` suite's whole tuned protocol on this
machine, estimated from every configuration's cost measured now.

The protocol (20 Optuna trials per task × model × method, then 5 seeds × every CV fold) is
about ten thousand fits, hours on a workstation: too long to time in one invocation, and a
figure from last month's code says nothing about today's. So every configuration of the suite
is timed once, now: seed 0, the first split, the hyperparameters the stored protocol tuned for
it (tuning picks network sizes, so a default-sized fit would underprice it), ``STEPS`` steps
with the suite's evaluation interval, alone and serially, for its training seconds per step
(its validation evaluations included) and its final evaluation's seconds. The stored protocol
(``results/paper``, committed) also says how much work each configuration did: its runs'
count and mean steps, its studies' trials and their mean steps (early stopping and pruning
included; a trial is priced at the tuned configuration's step). Per configuration, serial seconds

    s_step × (trials × mean trial steps + runs × mean run steps) + runs × evaluation seconds,

and the wall time is their sum over ``WORKERS`` (a fit holds one core). Left out: stacking
(a stacked member's step costs 1/1.3 to 1/2 of a lone one, so runs cost less than this), the
overheads of Ray, Optuna and the store, and a task's idle worker at its end (which cost more);
tuned hyperparameters change a step's cost where they set its work (n′, sweeps). Configurations
the stored protocol does not hold, or that fail here, are named in a note and not estimated.

Rows: ``protocol_seconds`` (method ``estimate``) per task and for the whole suite (task
``all``; goal: ≤ 3 h), beside method ``stored``: the stored protocol's own per-fit seconds
summed the same way (its code, its machine load), the reference of the rows' ratio.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from harness.perf.common import PerfConfig, perf_rows

#: the steps each configuration trains for its timing (--quick: fewer, and only the smallest tasks)
STEPS, QUICK_STEPS = 300, 60
QUICK_TASKS = ("emotions", "lr-iris")
#: fits at once in the protocol this estimates (``ebm-bench run``'s local Ray instance here: 2 cores)
WORKERS = 2
#: the stored protocol whose work is counted (its runs and trials tables)
REFERENCE = Path(__file__).resolve().parents[2] / "results" / "paper"
#: what identifies a configuration in both tables
CONFIG = ["task", "model", "method", "prior"]


def cost_suite(steps: int, stored_runs, tasks: tuple[str, ...] | None = None):
    """The ``paper`` suite reduced to one fit per configuration of the stored protocol: its
    hyperparameters as stored (those of seed 0 on the first split), seed 0, the first split,
    ``steps`` steps at the suite's evaluation interval, no early stop."""
    import json

    from harness.suites import GridBlock, load_suite

    suite = load_suite("paper")
    budget = {key: value for key, value in suite.budget.items() if key != "patience"}
    first = stored_runs[(stored_runs["status"] == "ok") & (stored_runs["seed"] == 0) & (stored_runs["fold"] == 0)]
    if tasks:
        first = first[first["task"].isin(tasks)]
    first = first.sort_values([*CONFIG[:3], "run_id"]).drop_duplicates(CONFIG)  # one row per configuration
    grid = tuple(GridBlock(tasks=(row.task,), models=(row.model,), methods=(row.method,),
                           params={row.method: json.loads(row.params_json or "{}")})
                 for row in first.itertuples(index=False))
    return dataclasses.replace(suite, name="perf-protocol", grid=grid, seeds=1, folds=1, tune_trials=0, stack=1,
                               budget={**budget, "max_steps": steps})


def measured_costs(config: PerfConfig, stored_runs, tasks: tuple[str, ...] | None, steps: int):
    """Every stored configuration (of ``tasks``) timed once at ``steps`` steps (:func:`cost_suite`): its runs table."""
    from harness import store
    from harness.commands.run import RunOptions, run_suite

    with tempfile.TemporaryDirectory(prefix="ebm-perf-protocol-") as results_dir:
        options = RunOptions(results_dir=Path(results_dir), data_dir=config.data_dir, progress=False,
                             executor="serial", stack=1)
        run_suite(cost_suite(steps, stored_runs, tasks), None, options)
        return store.read_table(results_dir, "runs")


def estimate(costs, stored_runs, stored_trials):
    """Per configuration of ``costs`` (one measured run each: train_seconds, n_steps,
    eval_seconds) the serial seconds of the stored protocol's work (see the module doc):
    a DataFrame with the configuration, ``seconds`` and ``stored_seconds``; configurations
    missing from the stored runs are left out."""
    ok = costs[costs["status"] == "ok"].copy()
    ok["prior"] = ok["prior"].fillna("")
    ok["step_seconds"] = (ok["train_seconds"] / ok["n_steps"].where(ok["n_steps"] > 0)).fillna(0.0)
    runs = stored_runs[stored_runs["status"] == "ok"].assign(prior=lambda f: f["prior"].fillna(""))
    runs = runs.assign(stacked=runs["stacked"].fillna(1).clip(lower=1))
    # a stacked member's train_seconds is its group's clock: its share of it is 1/stacked
    runs = runs.assign(own_seconds=runs["train_seconds"] / runs["stacked"] + runs["eval_seconds"])
    per_run = runs.groupby(CONFIG, as_index=False).agg(runs=("run_id", "size"), run_steps=("n_steps", "mean"),
                                                       stored_run_seconds=("own_seconds", "sum"))
    trial_seconds = (stored_trials["finished_at"] - stored_trials["started_at"]).dt.total_seconds()
    trials = stored_trials.assign(seconds=trial_seconds)
    per_trial = trials.groupby(["task", "model", "method"], as_index=False).agg(
        trials=("trial_number", "size"), studies=("study", "nunique"), trial_steps=("n_steps", "mean"),
        stored_trial_seconds=("seconds", "sum"))
    # a (task, model, method) has one study per prior; each configuration gets its study's share
    per_trial["trials_per_study"] = per_trial["trials"] / per_trial["studies"]
    table = ok[[*CONFIG, "step_seconds", "eval_seconds"]].merge(per_run, on=CONFIG).merge(
        per_trial[["task", "model", "method", "trials_per_study", "trial_steps", "stored_trial_seconds", "studies"]],
        on=["task", "model", "method"], how="left")
    table = table.fillna({"trials_per_study": 0.0, "trial_steps": 0.0, "stored_trial_seconds": 0.0, "studies": 1})
    table["seconds"] = (table["step_seconds"] * (table["trials_per_study"] * table["trial_steps"]
                                                 + table["runs"] * table["run_steps"])
                        + table["runs"] * table["eval_seconds"])
    table["stored_seconds"] = table["stored_run_seconds"] + table["stored_trial_seconds"] / table["studies"]
    return table


def run(config: PerfConfig) -> tuple[list[dict[str, Any]], list[str]]:
    from harness import store

    if not (REFERENCE / "runs").exists() and not (REFERENCE / "runs.parquet").exists():
        return [], [f"protocol skipped: no stored protocol at {REFERENCE} (a source checkout has it)"]
    stored_runs = store.read_table(REFERENCE, "runs")
    stored_trials = store.read_table(REFERENCE, "trials")
    tasks, steps = (QUICK_TASKS, QUICK_STEPS) if config.quick else (None, STEPS)
    costs = measured_costs(config, stored_runs, tasks, steps)
    table = estimate(costs, stored_runs, stored_trials)
    notes = []
    measured = set(map(tuple, costs[CONFIG].fillna("").itertuples(index=False)))
    missing = sorted(measured - set(map(tuple, table[CONFIG].itertuples(index=False))))
    if missing:
        notes.append(f"protocol: {len(missing)} configurations not estimated (failed here or not in {REFERENCE.name}): "
                     + ", ".join("/".join(str(part) for part in key if part) for key in missing[:8]))
    rows: list[dict[str, Any]] = []
    by_task = table.groupby("task")[["seconds", "stored_seconds"]].sum()
    for task, sums in [*by_task.iterrows(), ("all", by_task.sum())]:
        values = {"estimate": sums["seconds"] / WORKERS, "stored": sums["stored_seconds"] / WORKERS}
        rows += perf_rows(config, "protocol", "protocol_seconds", "s", values, reference="stored", task=str(task))
    notes.append(f"protocol: {len(table)} configurations timed once ({steps} steps, "
                 f"seed 0, first split, alone), times the work of the stored protocol in {REFERENCE}, over {WORKERS} "
                 "workers; stacking and Ray/Optuna overheads not counted (module doc)")
    return rows, notes
