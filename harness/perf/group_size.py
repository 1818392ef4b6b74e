"""Benchmark ``group_size``: milliseconds per member-step of one configuration's stacked group of
``ebm-bench run``'s default size (:data:`harness.dispatch.STACK_LIMIT`, 25) against one of 10 (the
size before), for every configuration of the stored ``paper`` protocol that has at least 25 runs
that stack (cal500's 5 seeds × 5 folds, a ranking task's 5 × 10), at its tuned hyperparameters
(those :mod:`harness.perf.protocol` prices); ``--tasks`` picks tasks.

Each configuration trains as a group of 10 members and as one of 25 (seeds 0-4 on as many
folds as it takes), each size twice, at ``SHORT`` and at ``LONG`` steps with no evaluation
(:func:`ebm.stacking.fit_stacked`); a member-step costs (t_long − t_short) / (members × (LONG −
SHORT)), so the group's set-up drops out. The two sizes alternate in ``REPS`` repetitions.
Rows: ``ms_per_member_step`` of ``<method>[stacked=25]`` against ``<method>[stacked=10]`` per task
and model (``<method>[prior=frequency]…`` for the other prior); a note counts the configurations
the larger group made cheaper, leaving out (and naming) those whose repetitions' ratios disagree by
more than ``UNSTABLE_SPREAD``. The machine's load is what it is: the protocol runs two workers at
once, so timing with both cores busy is the representative case (run two at once, or beside other
work, and compare ratios only).
"""

from __future__ import annotations

import math
import time
from typing import Any

from harness.perf.common import PerfConfig, median, perf_rows

#: the group sizes compared: the size before 2026-12-03 and the default (harness.dispatch.STACK_LIMIT)
SIZES = (10, 25)
#: steps of the short and the long fit of each timing (--quick: fewer, lr-iris only)
SHORT, LONG = 10, 60
QUICK_SHORT, QUICK_LONG = 5, 25
QUICK_TASKS = ("lr-iris",)
#: repetitions of each size (alternating)
REPS = 2


def _configurations(config: PerfConfig, stored_runs, tasks: tuple[str, ...] | None) -> list[Any]:
    """One planned run (seed 0, first split, the stored tuned hyperparameters) per configuration
    of the stored protocol that has at least ``max(SIZES)`` ok runs and whose runs stack."""
    from collections import Counter

    from harness.dispatch import stack_key
    from harness.perf.protocol import config_key, config_keys, cost_suite
    from harness.plan import plan_runs

    counts = Counter(config_keys(stored_runs[stored_runs["status"] == "ok"]))
    return [run for run in plan_runs(cost_suite(LONG, stored_runs, tasks), data_dir=config.data_dir).runnable()
            if counts[config_key(run)] >= max(SIZES) and stack_key(run) is not None]


def _members(config: PerfConfig, run, size: int, cache: dict) -> tuple[Any, list[Any]]:
    """The space and ``size`` members of ``run``'s configuration: seeds 0-4 of fold 0, then of
    fold 1, … (a protocol group holds several seeds and folds of one configuration)."""
    from ebm.stacking import Member
    from harness.fitdata import prepare_fit
    from tasks.registry import get_task

    task = get_task(run.spec.task)
    pairs = [(seed, fold) for fold in range(task.n_folds) for seed in range(5)][:size]
    members, space = [], None
    for seed, fold in pairs:
        key = (run.spec.task, run.spec.model, run.spec.params.get("prior"), seed, fold)
        if key not in cache:
            data = task.load(config.data_dir, seed=seed, fold=fold)
            cache[key] = prepare_fit(data, run.kind, run.spec.model, run.spec.params.get("prior"))
        member_space, fit_data = cache[key]
        space = space or member_space
        members.append(Member(fit_data, 1000 * fold + seed, None, member_space))
    return space, members


def _member_step_ms(run, space, members, short: int, long: int) -> float:
    """ms per member-step of ``members`` trained as one group: the long fit's seconds less the
    short one's, over members × the steps between them."""
    import torch

    from ebm.method import Budget
    from ebm.stacking import fit_stacked

    seconds = []
    for steps in (short, long):
        budget = Budget(max_steps=steps, batch_size=int(run.spec.budget["batch_size"]), eval_every=10 * long)
        t0 = time.perf_counter()
        fit_stacked(run.method, space, run.spec.model, members, dict(run.spec.params), budget,
                    device=torch.device("cpu"))
        seconds.append(time.perf_counter() - t0)
    return 1000 * (seconds[1] - seconds[0]) / (len(members) * (long - short))


def run(config: PerfConfig) -> tuple[list[dict[str, Any]], list[str]]:
    from harness.perf.common import UNSTABLE_SPREAD, Threads, is_unstable
    from harness.perf.protocol import REFERENCE, missing_tasks, stored_protocol_runs

    stored_runs = stored_protocol_runs()
    if stored_runs is None:
        return [], [f"group_size skipped: no stored protocol at {REFERENCE} (a source checkout has it)"]
    unrun = missing_tasks(stored_runs, config.tasks)
    if unrun is not None:
        return [], [f"group_size skipped: {unrun}"]
    short, long = (QUICK_SHORT, QUICK_LONG) if config.quick else (SHORT, LONG)
    tasks = config.tasks or (QUICK_TASKS if config.quick else None)
    rows: list[dict[str, Any]] = []
    ratios: list[float] = []
    unstable: list[str] = []
    failed = []
    with Threads(config.threads):
        for run in _configurations(config, stored_runs, tasks):
            cache: dict = {}
            prior = run.spec.params.get("prior")
            label = run.spec.method + (f"[prior={prior}]" if prior and prior != "uniform" else "")
            try:
                groups = {size: _members(config, run, size, cache) for size in SIZES}
                _member_step_ms(run, *groups[SIZES[0]], 1, 2)  # warm-up: first calls pay for lazy set-up
                times: dict[int, list[float]] = {size: [] for size in SIZES}
                for _ in range(1 if config.quick else REPS):
                    for size in SIZES:
                        times[size].append(_member_step_ms(run, *groups[size], short, long))
            except (RuntimeError, ValueError) as exc:
                failed.append(f"{run.spec.task}/{run.spec.model}/{label}: {type(exc).__name__}: {exc}")
                continue
            values = {f"{label}[stacked={size}]": times[size] for size in SIZES}
            pair = perf_rows(config, "group_size", "ms_per_member_step", "ms", values,
                             reference=f"{label}[stacked={SIZES[0]}]", task=run.spec.task, model=run.spec.model,
                             k=run.k)
            rows += pair
            # a repetition that hit a stall (flagged in the table), or a timing ≤ 0 (the machine so busy
            # that the long fit took no longer than the short one): such a ratio is no comparison
            timed = all(0 < row["value"] < math.inf for row in pair)
            if not timed or is_unstable(pair[-1]["ratio_spread"]):
                unstable.append(f"{run.spec.task}/{run.spec.model}/{label}")
            else:
                ratios.append(pair[-1]["ratio"])
    notes = [f"group_size: ms per member-step of groups of {SIZES[1]} against {SIZES[0]} ({long - short} steps "
             f"between a {short}- and a {long}-step fit, {'1 repetition' if config.quick else f'{REPS} repetitions'}), "
             f"stored protocol in {REFERENCE.name}"]
    if ratios:
        notes.append(f"group_size: {SIZES[1]} members cheaper per member-step than {SIZES[0]} in "
                     f"{sum(ratio < 1 for ratio in ratios)} of {len(ratios)} configurations (median ratio "
                     f"{median(ratios):.2f})")
    if unstable:
        notes.append(f"group_size: {len(unstable)} configurations left out of that count, their repetitions' ratios "
                     f"more than {UNSTABLE_SPREAD:g}x apart or a timing not positive (unstable: run them again): "
                     + ", ".join(unstable[:4]))
    if failed:
        notes.append(f"group_size: {len(failed)} configurations failed here: " + "; ".join(failed[:4]))
    return rows, notes
