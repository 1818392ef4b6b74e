"""Hyperparameter tuning with Optuna: the driver alone asks and tells; workers only train.

One study per (task, model, method) and configuration (budget, data settings, the suite's
fixed hyperparameters): its name is ``<task>__<model>__<method>__<hash>``, its storage a
journal file ``DIR/studies/<name>.journal`` (``JournalStorage(JournalFileBackend(...))``; only
this driver process writes it, so no database and no heartbeat is needed), and its sampler a
``TPESampler`` seeded from the name. Every method of a task gets the same number of trials.

A trial trains on the training split of seed 0 / fold 0 and is scored by the task's primary
metric on the validation split (never the test split). Pruning has MedianPruner semantics:
with at least ``N_STARTUP_TRIALS`` complete trials, the driver sends each new trial the
median of the complete trials' intermediate values at every evaluation step; the worker stops
as soon as it is strictly worse at a step (``pruned``). The driver then replays the
intermediate values into the trial (``trial.report``) and tells PRUNED / COMPLETE / FAIL.

Resuming: finished trials (COMPLETE, PRUNED, FAIL) count toward the budget. A trial left
RUNNING by an interrupted driver is told FAIL, flagged ``interrupted_<n>`` in the study's user
attributes, and not counted. Sequential seeded TPE is reproducible; with more executor slots
than studies a study runs several trials at once (TPE's constant liar), which is not.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.plan import PlannedRun, derive_seed, short_hash, with_params

N_STARTUP_TRIALS = 3


def study_name(run: PlannedRun) -> str:
    spec = run.spec
    config = short_hash({"budget": spec.budget, "data": spec.data, "fixed": run.overrides}, 8)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{spec.task}__{spec.model}__{spec.method}__{config}")


def open_study(results_dir: str | Path, name: str, direction: str):
    """Create or load the durable study ``name`` in ``DIR/studies``."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = Path(results_dir) / "studies" / f"{name}.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(path)))
    sampler = optuna.samplers.TPESampler(seed=derive_seed("study", name))
    return optuna.create_study(study_name=name, storage=storage, sampler=sampler, load_if_exists=True,
                               direction="maximize" if direction == "max" else "minimize")


def tunable(method) -> bool:
    """False when the method's search space is empty (nothing to tune)."""
    from optuna.trial import FixedTrial

    try:
        return bool(method.search_space(FixedTrial({})))
    except ValueError:  # FixedTrial raises for a parameter it was not given: there is one
        return True


def median_thresholds(study, final_step: int) -> dict[int, float]:
    """step → median intermediate value of the complete trials (none before N_STARTUP_TRIALS)."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < N_STARTUP_TRIALS:
        return {}
    by_step: dict[int, list[float]] = {}
    for trial in complete:
        for step, value in trial.intermediate_values.items():
            if math.isfinite(value):
                by_step.setdefault(int(step), []).append(value)
    return {step: statistics.median(values) for step, values in by_step.items() if step < final_step}


@dataclass
class StudyState:
    name: str
    run: PlannedRun                    # the seed-0 / fold-0 run this study tunes
    method: Any
    overrides: dict[str, Any]
    study: Any
    remaining: int
    in_flight: int = 0
    done: int = 0
    pending: dict[int, Any] = field(default_factory=dict)


def _finished_count(study) -> int:
    """Finished trials that count toward the budget; stale RUNNING ones are failed first."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        study.set_user_attr(f"interrupted_{trial.number}", True)
        study.tell(trial.number, state=TrialState.FAIL)
    interrupted = {k for k in study.user_attrs if k.startswith("interrupted_")}
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    return sum(1 for t in finished if f"interrupted_{t.number}" not in interrupted)


def best_params(study) -> dict[str, Any] | None:
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return json.loads(study.best_trial.user_attrs["params"])


def prepare_studies(runs: list[PlannedRun], results_dir, n_trials: int) -> tuple[dict[str, StudyState], list[str]]:
    """One StudyState per distinct study among ``runs`` (runnable runs only)."""
    from tasks.metrics import METRICS

    states: dict[str, StudyState] = {}
    notes: list[str] = []
    for run in sorted(runs, key=lambda r: (r.spec.seed, r.spec.fold)):
        name = study_name(run)
        if name in states:
            continue
        if not tunable(run.method):
            notes.append(f"{run.spec.method}: empty search space, default hyperparameters used")
            continue
        study = open_study(results_dir, name, METRICS.get(run.primary_metric, "max"))
        remaining = max(0, n_trials - _finished_count(study))
        states[name] = StudyState(name, run, run.method, run.overrides, study, remaining)
    return states, notes


def trial_row(state: StudyState, trial, params: dict, value, status: str, row: dict | None, error: str | None) -> dict:
    from harness.store import utc_now

    spec = state.run.spec
    return {"study": state.name, "trial_number": trial.number, "task": spec.task, "model": spec.model,
            "method": spec.method, "params_json": json.dumps(params, sort_keys=True), "value": value,
            "state": status, "n_steps": (row or {}).get("n_steps"), "error": error,
            "started_at": (row or {}).get("started_at") or trial.datetime_start, "finished_at": utc_now()}


def tell(state: StudyState, trial, params: dict, outcome) -> dict:
    """Tell the study how a trial went; return its trials-table row."""
    from optuna.trial import TrialState

    result = outcome.value if outcome.ok else None
    row = result.row if result is not None else None
    if result is not None:
        for step, value in result.intermediate:
            if value is not None and math.isfinite(value):
                trial.report(value, step)
    status = row["status"] if row else ("timeout" if outcome.timed_out else "failed")
    error = (row or {}).get("error") or outcome.failure
    value = row.get(f"val_{state.run.primary_metric}") if row else None
    if status == "pruned":
        state.study.tell(trial, state=TrialState.PRUNED)
        return trial_row(state, trial, params, value, "PRUNED", row, error)
    if status in ("ok", "timeout") and value is not None and math.isfinite(value):
        state.study.tell(trial, value)
        return trial_row(state, trial, params, value, "COMPLETE", row, error)
    state.study.tell(trial, state=TrialState.FAIL)
    return trial_row(state, trial, params, value, "FAIL", row, error or f"no validation {state.run.primary_metric}")


def tune(runs: list[PlannedRun], *, executor, shared, results_dir, n_trials: int,
         worker_kwargs: dict[str, Any], hard_timeout: float | None, writer, progress_factory=None) -> tuple[dict[str, dict], list[str]]:
    """Run the studies of ``runs`` to ``n_trials`` finished trials each.
    Returns (study name → best params, notes). ``shared`` is an executors.SharedData."""
    states, notes = prepare_studies(runs, results_dir, n_trials)
    order = [s for s in states.values() if s.remaining > 0]
    if order:
        _run_trials(order, executor, shared, worker_kwargs, hard_timeout, writer, progress_factory)
    best = {}
    for name, state in states.items():
        params = best_params(state.study)
        if params is None:
            notes.append(f"study {name}: no complete trial; default hyperparameters used")
        else:
            best[name] = params
    return best, notes


def _run_trials(order: list[StudyState], executor, shared, worker_kwargs, hard_timeout, writer, progress_factory) -> None:
    from harness.executors import Job, drive
    from harness.worker import execute_run

    per_study = max(1, executor.capacity // len(order))
    total = sum(s.remaining for s in order)
    progress = progress_factory(total, "tuning") if progress_factory else None
    cursor = [0]

    def next_job() -> Job | None:
        for _ in range(len(order)):
            state = order[cursor[0] % len(order)]
            cursor[0] += 1
            if state.done + state.in_flight >= state.remaining or state.in_flight >= per_study:
                continue
            trial = state.study.ask()
            # the suite's grid params stay fixed: they override what the search space suggests
            params = state.method.params({**state.method.search_space(trial), **state.overrides})
            trial.set_user_attr("params", json.dumps(params, sort_keys=True))
            trial_run = with_params(state.run, params, tuned=False)
            state.in_flight += 1
            thresholds = median_thresholds(state.study, state.run.spec.budget["max_steps"])
            try:
                data = shared.get(state.run.spec.data_key)
            except Exception as exc:  # noqa: BLE001
                data = exc
            return Job(key=(state.name, trial.number), fn=execute_run, args=(trial_run, state.method, data),
                       kwargs={**worker_kwargs, "prune_thresholds": thresholds, "evaluate_test": False},
                       timeout=hard_timeout, payload=(state, trial, params))
        return None

    def on_done(outcome) -> None:
        state, trial, params = outcome.job.payload
        state.in_flight -= 1
        state.done += 1
        row = tell(state, trial, params, outcome)
        writer.add("trials", [row])
        if progress is not None:
            progress.finished_one({"status": "ok" if row["state"] in ("COMPLETE", "PRUNED") else "failed",
                                   "task": state.run.spec.task, "model": state.run.spec.model,
                                   "method": state.run.spec.method, "trial": trial.number, "error": row["error"]})

    try:
        drive(executor, next_job, on_done, on_submit=(lambda job: progress.started_one()) if progress else None,
              poll=1.0)
    finally:
        writer.flush()
        if progress is not None:
            progress.close()

