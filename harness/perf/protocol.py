"""Benchmark ``protocol``: the wall time of the ``paper`` suite's whole tuned protocol on this
machine, estimated from every configuration's cost measured now.

The protocol (20 Optuna trials per task × model × method, then 5 seeds × every CV fold) is
about ten thousand fits, hours on a workstation: too long to time in one invocation, and a
figure from last month's code says nothing about today's. So every configuration of the suite
is timed now, with the hyperparameters the stored protocol tuned for it (tuning picks network
sizes, so a default-sized fit would underprice it), ``STEPS`` steps with the suite's evaluation
interval, serially: once alone (seed 0, the first split), for the seconds per step of its tuning
trials (trials train alone), and, where its runs train stacked (:func:`harness.dispatch.stack_key`),
once more as a stacked group of the size ``ebm-bench run`` would give them (its runs, 5 seeds
× the task's folds: 5 on a fixed split, 25 on cal500, 50 on a ranking task, in balanced groups of
at most the paper suite's stacking limit), for a member's seconds per step; its evaluation
seconds come from the same fits. The stored protocol (``results/paper``, committed) says how much
work each configuration did: its runs' count and mean steps, its studies' trials and their mean
steps (early stopping and pruning included; a trial is priced at the tuned configuration's step).
Per configuration, serial seconds

    s_trial step × trials × mean trial steps + runs × (s_run step × mean run steps + evaluation seconds),

with s_run step a stacked member's where its runs stack, and the wall time is their sum over
``WORKERS`` (a fit or a group holds one core). Left out: the overheads of Ray, Optuna and the
store, and a task's idle worker at its end (which cost more), and that a group's members stop at
different steps under patience, so its last steps run at a smaller group's cost per member (which
costs more too); tuned hyperparameters change a step's cost where they set its work (n′, sweeps).
Configurations the stored protocol does not hold, or that fail here, are named in a note and not
estimated.

Rows: ``protocol_seconds`` (method ``estimate``) per task and for the whole suite (task
``all``), beside method ``stored``: the stored protocol's own per-fit seconds summed the same way
(its code, its machine load), the reference of the rows' ratio; and, when the whole suite is
priced, method ``measured`` for ``all``: the stored protocol's wall time by its manifest, the one
figure the ≤ 3 h goal is judged on (the estimate has run at about two thirds of a measured
protocol: it compares code versions, it does not predict a wall time).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections import Counter
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


def config_keys(frame) -> list[tuple]:
    """The :data:`CONFIG` of every row (no prior: "")."""
    return list(map(tuple, frame[CONFIG].fillna("").itertuples(index=False)))


def config_key(run) -> tuple:
    """The :data:`CONFIG` of a planned run, as :func:`config_keys` gives a stored row's."""
    return (run.spec.task, run.spec.model, run.spec.method, run.spec.params.get("prior") or "")


def stored_protocol_runs():
    """The stored protocol's runs (``paper`` suite rows of :data:`REFERENCE`), or None where
    this checkout has no stored protocol (an installed package)."""
    from harness import store
    from harness.suites import load_suite

    if not (REFERENCE / "runs").exists() and not (REFERENCE / "runs.parquet").exists():
        return None
    runs = store.read_table(REFERENCE, "runs")
    # the stored folder also holds a few runs of other suites (the convergence study's): not the protocol's work
    return runs[runs["suite"] == load_suite("paper").name]


def missing_tasks(stored_runs, tasks: tuple[str, ...] | None) -> str | None:
    """A note naming the tasks of ``--tasks`` the stored protocol never ran (None: all ran)."""
    missing = [name for name in tasks or () if name not in set(stored_runs["task"])]
    return (f"no stored configuration of {', '.join(missing)} in {REFERENCE.name} (its tasks: "
            f"{', '.join(sorted(set(stored_runs['task'])))})") if missing else None


def _members(runs):
    """Each row's group size: its ``stacked`` (1 for a run alone, or without the column)."""
    return runs["stacked"].fillna(1).clip(lower=1) if "stacked" in runs else 1


def cost_suite(steps: int, stored_runs, tasks: tuple[str, ...] | None = None, *,
               configs: set[tuple] | None = None, members: int = 1):
    """The ``paper`` suite reduced to one fit per configuration of the stored protocol (of
    ``configs`` when given): its hyperparameters as stored (those of seed 0 on the first split),
    the first split, ``steps`` steps at the suite's evaluation interval, no early stop; seed 0
    alone, or seeds 0 … ``members`` − 1 trained as one stacked group."""
    import json

    from harness.suites import GridBlock, load_suite

    suite = load_suite("paper")
    budget = {key: value for key, value in suite.budget.items() if key != "patience"}
    first = stored_runs[(stored_runs["status"] == "ok") & (stored_runs["seed"] == 0) & (stored_runs["fold"] == 0)]
    if tasks:
        first = first[first["task"].isin(tasks)]
    if configs is not None:
        first = first[[key in configs for key in config_keys(first)]]
    first = first.sort_values([*CONFIG[:3], "run_id"]).drop_duplicates(CONFIG)  # one row per configuration
    grid = tuple(GridBlock(tasks=(row.task,), models=(row.model,), methods=(row.method,),
                           params={row.method: json.loads(row.params_json or "{}")})
                 for row in first.itertuples(index=False))
    return dataclasses.replace(suite, name="perf-protocol", grid=grid, seeds=members, folds=1, tune_trials=0,
                               stack=members, budget={**budget, "max_steps": steps})


def group_sizes(config: PerfConfig, stored_runs, suite) -> dict[tuple, int]:
    """Configuration → the size of its largest stacked group in the protocol, for the
    configurations of ``suite`` (:func:`cost_suite`) whose runs stack: the paper suite's
    stacking limit (``ebm-bench run``'s: ``RunOptions.stack_for``) over the
    stored protocol's ok runs of it, split into balanced groups as
    :func:`harness.dispatch.stack_groups` splits them."""
    from harness.commands.run import RunOptions
    from harness.dispatch import group_count, stack_key
    from harness.plan import plan_runs
    from harness.suites import load_suite

    paper_limit = RunOptions(results_dir=Path(".")).stack_for(load_suite("paper"))
    counts = Counter(config_keys(stored_runs[stored_runs["status"] == "ok"]))
    sizes = {}
    for run in plan_runs(suite, data_dir=config.data_dir).runnable():
        key = config_key(run)
        if paper_limit < 2 or stack_key(run) is None or counts[key] < 2:
            continue
        sizes[key] = -(-counts[key] // group_count(counts[key], paper_limit))  # the largest of balanced groups
    return sizes


def timed_runs(config: PerfConfig, suite):
    """``suite`` run serially into a scratch results directory: its runs table."""
    from harness import store
    from harness.commands.run import RunOptions, run_suite

    with tempfile.TemporaryDirectory(prefix="ebm-perf-protocol-") as results_dir:
        options = RunOptions(results_dir=Path(results_dir), data_dir=config.data_dir, progress=False,
                             executor="serial", stack=suite.stack)
        run_suite(suite, None, options)
        return store.read_table(results_dir, "runs")


def measured_costs(config: PerfConfig, stored_runs, tasks: tuple[str, ...] | None, steps: int):
    """Every stored configuration (of ``tasks``) timed at ``steps`` steps (:func:`cost_suite`):
    alone, and where its runs stack as a group of its size (:func:`group_sizes`): the runs
    table of both (a group's rows have ``stacked`` > 1)."""
    import pandas as pd

    alone = cost_suite(steps, stored_runs, tasks)
    tables = [timed_runs(config, alone)]
    sizes = group_sizes(config, stored_runs, alone)
    for members in sorted(set(sizes.values())):
        configs = {key for key, size in sizes.items() if size == members}
        tables.append(timed_runs(config, cost_suite(steps, stored_runs, tasks, configs=configs, members=members)))
    return pd.concat(tables, ignore_index=True)


def estimate(costs, stored_runs, stored_trials):
    """Per configuration of ``costs`` (its measured runs: train_seconds, n_steps, eval_seconds,
    stacked; one alone, and S members of one stacked group where its runs stack) the serial
    seconds of the stored protocol's work (see the module doc): a DataFrame with the
    configuration, the steps' seconds alone (``step_seconds``) and in a run (``run_step_seconds``,
    a stacked member's where it has one; ``stacked``: its group's size, else 1), ``seconds`` and
    ``stored_seconds``; configurations missing from the stored runs are left out."""
    ok = costs[costs["status"] == "ok"].copy()
    ok["prior"] = ok["prior"].fillna("")
    ok["stacked"] = _members(ok)
    # a stacked member's train_seconds is its group's clock: a member-step is 1/stacked of a group's step
    ok["step_seconds"] = (ok["train_seconds"] / ok["stacked"] / ok["n_steps"].where(ok["n_steps"] > 0)).fillna(0.0)
    alone = ok[ok["stacked"] == 1].drop_duplicates(CONFIG)
    grouped = ok[ok["stacked"] > 1].groupby(CONFIG, as_index=False).agg(
        run_step_seconds=("step_seconds", "mean"), run_eval_seconds=("eval_seconds", "mean"),
        stacked=("stacked", "max"))
    measured = alone[[*CONFIG, "step_seconds", "eval_seconds"]].merge(grouped, on=CONFIG, how="left")
    measured["run_step_seconds"] = measured["run_step_seconds"].fillna(measured["step_seconds"])
    measured["run_eval_seconds"] = measured["run_eval_seconds"].fillna(measured["eval_seconds"])
    measured["stacked"] = measured["stacked"].fillna(1)
    runs = stored_runs[stored_runs["status"] == "ok"].assign(prior=lambda f: f["prior"].fillna(""))
    runs = runs.assign(stacked=_members(runs))
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
    table = measured.merge(per_run, on=CONFIG).merge(
        per_trial[["task", "model", "method", "trials_per_study", "trial_steps", "stored_trial_seconds", "studies"]],
        on=["task", "model", "method"], how="left")
    table = table.fillna({"trials_per_study": 0.0, "trial_steps": 0.0, "stored_trial_seconds": 0.0, "studies": 1})
    table["seconds"] = (table["step_seconds"] * table["trials_per_study"] * table["trial_steps"]
                        + table["runs"] * (table["run_step_seconds"] * table["run_steps"] + table["run_eval_seconds"]))
    table["stored_seconds"] = table["stored_run_seconds"] + table["stored_trial_seconds"] / table["studies"]
    return table


def stored_wall_seconds() -> float | None:
    """The seconds the stored protocol's ``paper`` invocations ran, by its manifest (None without one)."""
    from harness.paper import SUITE, suite_wall_seconds

    seconds, invocations = suite_wall_seconds(REFERENCE, SUITE)
    return seconds if invocations else None


def protocol_rows(config: PerfConfig, table, measured_wall: float | None = None) -> list[dict[str, Any]]:
    """``protocol_seconds`` rows of :func:`estimate`'s ``table``: per task and for ``all`` of them the
    estimate and the stored protocol's per-fit seconds summed the same way (``stored``, the reference),
    each over :data:`WORKERS`; with ``measured_wall`` (the stored protocol's wall time, when the whole
    suite is priced) a ``measured`` row for ``all`` too, whose ratio to ``stored`` is what its run
    spent beyond its fits (Ray, Optuna, the store, idle workers)."""
    rows: list[dict[str, Any]] = []
    by_task = table.groupby("task")[["seconds", "stored_seconds"]].sum()
    for task, sums in [*by_task.iterrows(), ("all", by_task.sum())]:
        values = {"estimate": sums["seconds"] / WORKERS, "stored": sums["stored_seconds"] / WORKERS}
        if task == "all" and measured_wall is not None:
            values["measured"] = measured_wall
        rows += perf_rows(config, "protocol", "protocol_seconds", "s", values, reference="stored", task=str(task))
    return rows


def run(config: PerfConfig) -> tuple[list[dict[str, Any]], list[str]]:
    from harness import store

    stored_runs = stored_protocol_runs()
    if stored_runs is None:
        return [], [f"protocol skipped: no stored protocol at {REFERENCE} (a source checkout has it)"]
    unrun = missing_tasks(stored_runs, config.tasks)
    if unrun is not None:
        return [], [f"protocol skipped: {unrun}"]
    stored_trials = store.read_table(REFERENCE, "trials")
    tasks, steps = (QUICK_TASKS, QUICK_STEPS) if config.quick else (None, STEPS)
    costs = measured_costs(config, stored_runs, config.tasks or tasks, steps)
    table = estimate(costs, stored_runs, stored_trials)
    notes = []
    measured = set(config_keys(costs))
    missing = sorted(measured - set(map(tuple, table[CONFIG].itertuples(index=False))))
    if missing:
        notes.append(f"protocol: {len(missing)} configurations not estimated (failed here or not in {REFERENCE.name}): "
                     + ", ".join("/".join(str(part) for part in key if part) for key in missing[:8]))
    # the stored protocol's measured wall time stands beside the whole suite's estimate only
    measured_wall = None if config.tasks or config.quick else stored_wall_seconds()
    rows = protocol_rows(config, table, measured_wall)
    if measured_wall is not None:
        notes.append(f"protocol: 'measured' is the wall time of the stored protocol's invocations ({REFERENCE.name}"
                     "/manifest.json: its own code, not this checkout's), on which the ≤ 3 h goal is judged; "
                     "'estimate' leaves out Ray, Optuna, the store and idle workers: it compares code versions "
                     "in one sitting and is not a wall time")
    groups = table[table["stacked"] > 1]
    notes.append(f"protocol: {len(table)} configurations timed at {steps} steps (seed 0, first split, alone; "
                 f"{len(groups)} of them also as a stacked group of their runs' size, "
                 f"{'/'.join(str(int(size)) for size in sorted(set(groups['stacked'])))} members), times the work "
                 f"of the stored protocol in {REFERENCE}, over {WORKERS} workers; Ray/Optuna overheads not counted "
                 "(module doc)")
    return rows, notes
