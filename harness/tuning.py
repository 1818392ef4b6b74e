"""Hyperparameter tuning with Optuna: the driver alone asks and tells; workers only train.

One study per (task, model, method) and configuration (budget, data settings, the suite's
fixed hyperparameters): its name is ``<task>__<model>__<method>__<hash>`` and its sampler a
``TPESampler`` seeded from the name. Every method of a task gets the same number of trials.
All the studies of a results directory live in one store, the journal file
``DIR/studies/optuna.journal`` (``JournalStorage(JournalFileBackend(...))``; only this driver
process writes it, so no database and no heartbeat is needed), which optuna-dashboard opens
as it is: ``optuna-dashboard DIR/studies/optuna.journal``. Each study carries ``task, model,
method, config`` as user attributes, each trial those and the ``run_id`` it trained (with its
``params``), so the dashboard's tables say which benchmark cell a trial belongs to.

A trial trains on the training split of seed 0 / fold 0 and is scored by the task's primary
metric on the validation split (never the test split): the objective is the validation value of
the model the run returns, which under the default model selection (``selection = "best_val"``)
is the best evaluation's checkpoint, i.e. the best validation value of the trial, scored on the
whole validation split. A trial without that value (e.g. stopped by a soft timeout before its
final evaluation) falls back to the best of its intermediate values. Pruning has MedianPruner semantics:
with at least ``N_STARTUP_TRIALS`` complete trials, the driver sends each new trial the
median of the complete trials' intermediate values at every evaluation step; the worker stops
as soon as it is strictly worse at a step (``pruned``). The driver then replays the
intermediate values into the trial (``trial.report``) and tells PRUNED / COMPLETE / FAIL.

Resuming: finished trials (COMPLETE, PRUNED, FAIL) count toward the budget. A trial left
RUNNING by an interrupted driver is told FAIL, flagged ``interrupted_<n>`` in the study's user
attributes, and not counted. Sequential seeded TPE is reproducible; with more executor slots
than studies a study runs several trials at once (TPE's constant liar), which is not.

The durable record is the ``trials`` table, not the journal: every finished trial is one row
with its parameters, value, state and intermediate values, so the journal is a cache that can
be deleted (or left out of a commit: it grows by megabytes a task). A study the store does not
hold but the table does is rebuilt from the table (:func:`restore_study`) before it is used:
same trial numbers, states, values and parameters in the same order, hence the same best trial
and the same tuned runs. Rows written before schema v4 carry no intermediate values, so their
restored trials set no pruning thresholds.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.dispatch import Dispatcher, Finished, Submission
from harness.plan import PlannedRun, derive_seed, short_hash, with_params
from harness.records import RunRecord, Status

N_STARTUP_TRIALS = 3


def study_name(run: PlannedRun) -> str:
    spec = run.spec
    config = short_hash({"budget": spec.budget, "data": spec.data, "fixed": run.overrides}, 8)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{spec.task}__{spec.model}__{spec.method}__{config}")


#: the one study store of a results directory (relative path)
STUDY_STORE = Path("studies") / "optuna.journal"
_storages: dict[Path, Any] = {}


def study_storage(results_dir: str | Path):
    """The results directory's study store (one JournalStorage per file and process: opening
    replays the journal, so it is done once)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = (Path(results_dir) / STUDY_STORE).resolve()
    if path not in _storages or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _storages[path] = JournalStorage(JournalFileBackend(str(path)))
    return _storages[path]


def open_study(results_dir: str | Path, name: str, direction: str, *, attrs: dict[str, Any] | None = None):
    """Create or load the durable study ``name`` in the results directory's study store;
    ``attrs`` (task, model, method, config) become the study's user attributes."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # constant liar: trials asked while others of the study run see those as if they had the
    # worst value so far, so a batch of concurrent asks spreads out instead of repeating one point
    sampler = optuna.samplers.TPESampler(seed=derive_seed("study", name), constant_liar=True)
    study = optuna.create_study(study_name=name, storage=study_storage(results_dir), sampler=sampler,
                                load_if_exists=True, direction="maximize" if direction == "max" else "minimize")
    for key, value in (attrs or {}).items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    return study


def cell_attrs(run: PlannedRun) -> dict[str, Any]:
    """What a study or trial belongs to, for optuna-dashboard's tables."""
    from harness.commands.run import config_label

    spec = run.spec
    return {"task": spec.task, "model": spec.model, "method": spec.method, "config": config_label(run)}


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


def trial_attrs(run: PlannedRun, trial_run: PlannedRun) -> dict[str, Any]:
    """A trial's user attributes: its cell (the study's ``run``), its parameters and the run it
    trains (``trial_run``: ``run`` with the trial's parameters)."""
    return {**cell_attrs(run), "params": json.dumps(trial_run.spec.params, sort_keys=True),
            "run_id": trial_run.run_id, "seed": trial_run.spec.seed, "fold": trial_run.spec.fold}


def recorded_trials(results_dir) -> dict[str, list[dict[str, Any]]]:
    """study → its rows of the ``trials`` table, one per trial number, in trial order (a row
    stored twice, by a compaction interrupted between its two steps, counts once)."""
    from harness.store import read_table

    frame = read_table(results_dir, "trials")
    if frame.empty:
        return {}
    frame = frame.drop_duplicates(["study", "trial_number"]).sort_values(["study", "trial_number"], kind="stable")
    return {name: rows.to_dict("records") for name, rows in frame.groupby("study", sort=False)}


def restore_study(study, rows: list[dict[str, Any]], run: PlannedRun, method) -> None:
    """Re-create an empty study's finished trials from its ``trials`` rows (module doc).

    Trial numbers are kept: a number without a row (a trial an interrupted driver left running)
    becomes a FAIL trial flagged ``interrupted_<n>``, as the original driver flagged it, so rows
    written later get the numbers they would have had. A trial's distributions are those the
    method's search space declares for its parameters; parameters the suite fixes (not tuned)
    are left out, as the value stored is the fixed one, not the suggestion."""
    from optuna.trial import FixedTrial, TrialState, create_trial

    by_number = {int(row["trial_number"]): row for row in rows}
    for number in range(max(by_number, default=-1) + 1):
        row = by_number.get(number)
        if row is None:
            study.add_trial(create_trial(state=TrialState.FAIL))
            study.set_user_attr(f"interrupted_{number}", True)
            continue
        params = json.loads(row["params_json"])
        suggested = FixedTrial(params)
        method.search_space(suggested)
        tuned = {k: v for k, v in suggested.params.items() if k not in run.overrides}
        state = TrialState[row["state"]]
        reported = row.get("intermediate_json")  # null (NaN in pandas) in rows written before v4
        intermediate = {int(step): float(v) for step, v in json.loads(reported if isinstance(reported, str) else "[]")}
        # Optuna's value of a pruned trial is its last intermediate value
        value = intermediate[max(intermediate)] if state is TrialState.PRUNED and intermediate else row["value"]
        has_value = state is not TrialState.FAIL and value is not None and math.isfinite(value)
        study.add_trial(create_trial(
            state=state, value=value if has_value else None, params=tuned,
            distributions={k: suggested.distributions[k] for k in tuned},
            intermediate_values=intermediate, user_attrs=trial_attrs(run, with_params(run, params, tuned=False))))


def with_best(runs: list[PlannedRun], best: dict[str, dict[str, Any]]) -> list[PlannedRun]:
    """``runs`` with each run of a study in ``best`` given that study's best parameters (its
    tuned run id); runs not planned to train (``status`` set at plan time) and runs of other
    studies as they are."""
    return [with_params(r, best[name], tuned=True) if not r.status and (name := study_name(r)) in best else r
            for r in runs]


def finished_best(runs: list[PlannedRun], results_dir, n_trials: int) -> dict[str, dict[str, Any]]:
    """study → best parameters, for each study of ``runs`` that the ``trials`` table shows
    finished (``n_trials`` finished trials, one of them complete): what ``run`` would train after
    tuning, found without opening or writing the study store (``run --dry-run``'s view). The
    study is rebuilt in memory by :func:`restore_study`, so its best trial is Optuna's own."""
    import optuna

    from tasks.metrics import direction

    recorded = recorded_trials(results_dir)
    best: dict[str, dict[str, Any]] = {}
    for run in runs:
        name = study_name(run)
        rows = recorded.get(name, [])
        if name in best or len(rows) < n_trials:
            continue
        study = optuna.create_study(storage=optuna.storages.InMemoryStorage(),
                                    direction="maximize" if direction(run.primary_metric) == "max" else "minimize")
        restore_study(study, rows, run, run.method)
        params = best_params(study)
        if params is not None:
            best[name] = params
    return best


def prepare_studies(runs: list[PlannedRun], results_dir, n_trials: int) -> tuple[dict[str, StudyState], list[str]]:
    """One StudyState per distinct study among ``runs`` (runnable runs only); a study the store
    lacks is first rebuilt from the ``trials`` table."""
    from tasks.metrics import direction

    states: dict[str, StudyState] = {}
    notes: list[str] = []
    untunable: set[str] = set()
    recorded: dict[str, list[dict[str, Any]]] | None = None  # read once, when a study needs it
    for run in sorted(runs, key=lambda r: (r.spec.seed, r.spec.fold)):
        name = study_name(run)
        if name in states or name in untunable:
            continue
        if not tunable(run.method):  # one note per method, not per run or study
            untunable.add(name)
            note = f"{run.spec.method}: empty search space, default hyperparameters used"
            if note not in notes:
                notes.append(note)
            continue
        study = open_study(results_dir, name, direction(run.primary_metric), attrs=cell_attrs(run))
        if not study.trials:
            recorded = recorded_trials(results_dir) if recorded is None else recorded
            if name in recorded:
                restore_study(study, recorded[name], run, run.method)
        remaining = max(0, n_trials - _finished_count(study))
        states[name] = StudyState(name, run, run.method, run.overrides, study, remaining)
    return states, notes


def trial_row(state: StudyState, trial, params: dict, value, status: str, record: RunRecord | None,
              error: str | None, reported: list[tuple[int, float]]) -> dict:
    from harness.store import utc_now

    spec = state.run.spec
    return {"study": state.name, "trial_number": trial.number, "task": spec.task, "model": spec.model,
            "method": spec.method, "params_json": json.dumps(params, sort_keys=True), "value": value,
            "state": status, "n_steps": record.n_steps if record else None, "error": error,
            "started_at": (record.started_at if record else None) or trial.datetime_start, "finished_at": utc_now(),
            "intermediate_json": json.dumps([[int(step), float(v)] for step, v in reported])}


def best_intermediate(intermediate: list[tuple[int, float]], direction: str) -> float | None:
    """The best finite intermediate (validation) value in the metric's direction, or None."""
    values = [v for _, v in intermediate if v is not None and math.isfinite(v)]
    if not values:
        return None
    return max(values) if direction == "max" else min(values)


def tell(state: StudyState, trial, params: dict, outcome) -> dict:
    """Tell the study how a trial went; return its trials-table row."""
    from optuna.trial import TrialState

    from tasks.metrics import get_metric

    result = outcome.value if outcome.ok else None
    record: RunRecord | None = result.record if result is not None else None
    reported = [(step, value) for step, value in (result.intermediate if result is not None else [])
                if value is not None and math.isfinite(value)]
    for step, value in reported:
        trial.report(value, step)
    if record is not None:
        status = record.status
        error = record.error or outcome.failure
        value = record.metric(get_metric(state.run.primary_metric).column_for("val"))
        if value is None or not math.isfinite(value):
            direction = get_metric(state.run.primary_metric).direction
            value = best_intermediate(result.intermediate if result else [], direction)
    else:
        status, error, value = Status.TIMEOUT if outcome.timed_out else Status.FAILED, outcome.failure, None
    if status is Status.PRUNED:
        state.study.tell(trial, state=TrialState.PRUNED)
        return trial_row(state, trial, params, value, "PRUNED", record, error, reported)
    # a soft timeout still measured the model as it was: a usable trial
    if status in (Status.OK, Status.TIMEOUT) and value is not None and math.isfinite(value):
        state.study.tell(trial, value)
        return trial_row(state, trial, params, value, "COMPLETE", record, error, reported)
    state.study.tell(trial, state=TrialState.FAIL)
    return trial_row(state, trial, params, value, "FAIL", record, error or f"no validation {state.run.primary_metric}",
                     reported)


def tune(runs: list[PlannedRun], dispatcher: Dispatcher, *, results_dir,
         n_trials: int) -> tuple[dict[str, dict], list[str]]:
    """Run the studies of ``runs`` to ``n_trials`` finished trials each, on ``dispatcher``.
    Returns (study name → best params, notes)."""
    states, notes = prepare_studies(runs, results_dir, n_trials)
    order = [s for s in states.values() if s.remaining > 0]
    if order:
        try:
            dispatcher.run(Trials(order, dispatcher.executor.capacity), sum(s.remaining for s in order))
        finally:
            dispatcher.writer.flush()
    best = {}
    for name, state in states.items():
        params = best_params(state.study)
        if params is None:
            notes.append(f"study {name}: no complete trial; default hyperparameters used")
        else:
            best[name] = params
    return best, notes


class Trials:
    """The tuner's :class:`~harness.dispatch.Work`: trials asked of the studies in turn, each
    study keeping at most its share of the executor's slots; a finished trial is told to its
    study and becomes one ``trials`` row (never a ``runs`` row: trials never see the test split)."""

    title = "tuning"

    def __init__(self, order: list[StudyState], capacity: int) -> None:
        self.order = order
        self.per_study = max(1, capacity // len(order))
        self.cursor = 0

    def data_keys(self) -> list[Any]:
        return [s.run.spec.data_key for s in self.order for _ in range(s.remaining)]

    def next(self) -> Submission | None:
        for _ in range(len(self.order)):
            state = self.order[self.cursor % len(self.order)]
            self.cursor += 1
            if state.done + state.in_flight >= state.remaining or state.in_flight >= self.per_study:
                continue
            trial = state.study.ask()
            # the suite's grid params stay fixed: they override what the search space suggests
            params = state.method.params({**state.method.search_space(trial), **state.overrides})
            trial_run = with_params(state.run, params, tuned=False)
            for key, value in trial_attrs(state.run, trial_run).items():
                trial.set_user_attr(key, value)
            state.in_flight += 1
            thresholds = median_thresholds(state.study, state.run.spec.budget["max_steps"])
            return Submission(key=(state.name, trial.number), run=trial_run,
                              method=state.method, kwargs={"prune_thresholds": thresholds, "evaluate_test": False},
                              payload=(state, trial, params))
        return None

    def finish(self, submission: Submission, outcome) -> Finished:
        state, trial, params = submission.payload
        state.in_flight -= 1
        state.done += 1
        row = tell(state, trial, params, outcome)
        status = Status.OK if row["state"] in ("COMPLETE", "PRUNED") else Status.FAILED
        spec = state.run.spec
        display = {"status": status, "task": spec.task, "model": spec.model, "method": spec.method,
                   "trial": trial.number, "error": row["error"]}
        return Finished(rows={"trials": [row]}, status=status, display=display)
