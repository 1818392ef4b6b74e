"""Optuna tuning: durable studies that resume, pruning thresholds, best params reused."""

from __future__ import annotations

import json
import statistics

import pytest

from harness import store, tuning
from harness.commands.run import run_suite
from harness.plan import plan_runs
from harness.suites import load_suite
from harness_fixtures import serial_options as _options
from harness_fixtures import write_suite

optuna = pytest.importorskip("optuna")


def _study(results_dir, suite):
    run = plan_runs(load_suite(suite))[0]
    return tuning.open_study(results_dir, tuning.study_name(run), "min")


def test_study_resumes_after_interruption(tmp_path):
    suite = write_suite(tmp_path, methods=("test-constant",), seeds=2, trials=4, steps=4, eval_every=2)
    results = tmp_path / "r"
    run_suite(suite, options=_options(results, tune_trials=2, tune_only=True))
    study = _study(results, suite)
    assert len(study.trials) == 2
    study.ask()  # a trial left RUNNING, as by a driver killed mid-trial
    summary = run_suite(suite, options=_options(results))  # the suite's 4 trials, then the runs
    study = _study(results, suite)
    states = [t.state.name for t in study.trials]
    assert states.count("FAIL") == 1
    assert {k: v for k, v in study.user_attrs.items() if k.startswith("interrupted_")} == {"interrupted_2": True}
    assert len([s for s in states if s in ("COMPLETE", "PRUNED")]) == 4
    trials = store.read_table(results, "trials")
    assert len(trials) == 4 and set(trials["state"]) <= {"COMPLETE", "PRUNED"}
    # the evaluated runs use the best trial's parameters (syn tasks: lowest validation NLL)
    runs = store.read_table(results, "runs")
    assert summary.counts == {"ok": 2} and runs["tuned"].all()
    complete = trials[trials["state"] == "COMPLETE"]
    best = json.loads(complete.loc[complete["value"].idxmin(), "params_json"])
    assert {json.loads(p)["noise"] for p in runs["params_json"]} == {best["noise"]}
    # nothing left to do: neither trials nor runs
    again = run_suite(suite, options=_options(results))
    assert again.to_run == 0 and len(_study(results, suite).trials) == 5


def test_median_thresholds_follow_complete_trials(tmp_path):
    study = optuna.create_study(direction="maximize")
    values = {0: [0.1, 0.2, 0.3], 1: [0.5, 0.1, 0.9], 2: [0.4, 0.4, 0.0]}
    for number in range(3):
        trial = study.ask()
        for step, value in zip((10, 20, 30), values[number]):
            trial.report(value, step)
        study.tell(trial, values[number][-1])
    pruned = study.ask()
    pruned.report(-5.0, 10)
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)  # pruned trials do not set thresholds
    thresholds = tuning.median_thresholds(study, final_step=30)
    assert thresholds == {10: statistics.median([0.1, 0.5, 0.4]), 20: statistics.median([0.2, 0.1, 0.4])}


def test_pruning_stops_a_worse_trial(tmp_path):
    """A threshold no value can beat prunes at the first evaluation step; one every value
    beats lets training finish (syn tasks minimise the validation NLL)."""
    from harness.worker import execute_run, is_worse
    from tasks.registry import get_task

    assert is_worse(0.5, 0.6, "max") and not is_worse(0.7, 0.6, "max") and is_worse(0.7, 0.6, "min")
    assert is_worse(float("nan"), 0.6, "max")
    run = plan_runs(load_suite(write_suite(tmp_path, steps=6, eval_every=2)))[0]
    data = get_task(run.spec.task).load(None, seed=0, fold=0, val_fraction=0.2)
    pruned = execute_run(run, run.method, data, prune_thresholds={2: -1e9, 4: -1e9}, evaluate_test=False)
    assert pruned.row["status"] == "pruned" and pruned.row["n_steps"] == 2
    assert [step for step, _ in pruned.intermediate] == [2]
    finished = execute_run(run, run.method, data, prune_thresholds={2: 1e9, 4: 1e9}, evaluate_test=False)
    assert finished.row["status"] == "ok" and finished.row["n_steps"] == 6
    assert [step for step, _ in finished.intermediate] == [2, 4, 6]
    assert "test_f1_example" not in finished.row  # trials never look at the test split


def test_tunable_detects_empty_search_spaces():
    from baselines.testing import FIXTURES

    assert tuning.tunable(FIXTURES["test-constant"])
    empty = type("Empty", (type(FIXTURES["test-constant"]),), {"search_space": lambda self, trial: {},
                                                                 "name": "test-empty"})()
    assert not tuning.tunable(empty)


def test_best_intermediate_follows_the_metric_direction():
    assert tuning.best_intermediate([(1, 0.2), (2, 0.5), (3, 0.4)], "max") == 0.5
    assert tuning.best_intermediate([(1, 2.0), (2, float("nan")), (3, 1.5)], "min") == 1.5
    assert tuning.best_intermediate([(1, float("nan"))], "max") is None


def test_one_study_store_per_results_dir_with_tagged_trials(tmp_path):
    """Every study of a results dir is in DIR/studies/optuna.journal (what optuna-dashboard
    opens), and each trial says which task, model, configuration and run it trained."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    suite = write_suite(tmp_path, methods=("test-constant", "test-diverge"), trials=2, steps=4, eval_every=2)
    results = tmp_path / "r"
    run_suite(suite, options=_options(results, tune_only=True))
    assert [p.name for p in (results / "studies").iterdir()] == ["optuna.journal"]
    storage = JournalStorage(JournalFileBackend(str(results / "studies" / "optuna.journal")))  # a fresh reader
    summaries = optuna.get_all_study_summaries(storage)
    assert sorted(s.user_attrs["method"] for s in summaries) == ["test-constant", "test-diverge"]
    plan = {r.run_id: r for r in plan_runs(load_suite(suite))}
    for summary in summaries:
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        assert len(study.trials) == 2
        for trial in study.trials:
            attrs = trial.user_attrs
            assert (attrs["task"], attrs["model"], attrs["config"]) == ("syn-ising-k8", "unary", attrs["method"])
            assert attrs["seed"] == 0 and attrs["fold"] == 0 and len(attrs["run_id"]) == 16
            # the run id is the id of the run with the trial's parameters
            base = next(r for r in plan.values() if r.spec.method == attrs["method"] and r.spec.seed == 0)
            assert attrs["run_id"] == tuning.with_params(base, json.loads(attrs["params"]), tuned=False).run_id


def test_a_method_without_search_space_is_noted_once_not_per_run(tmp_path):
    """`constant` has nothing to tune: one note for the method, however many runs and studies."""
    suite = write_suite(tmp_path, methods=("constant", "test-constant"), seeds=4, trials=1)
    runs = plan_runs(load_suite(suite)).runnable()
    assert sum(r.spec.method == "constant" for r in runs) == 4
    states, notes = tuning.prepare_studies(runs, tmp_path / "results", n_trials=1)
    assert notes == ["constant: empty search space, default hyperparameters used"]
    assert {s.run.spec.method for s in states.values()} == {"test-constant"}


def test_a_deleted_study_store_is_rebuilt_from_the_trials_table(tmp_path):
    """The journal is a cache of the trials table: without it, `run` rebuilds every study with the
    same trial numbers (an interrupted trial's gap included), states, values, parameters and
    pruning thresholds, so nothing is tuned or run again and the best trial is the same."""
    suite = write_suite(tmp_path, methods=("test-constant", "test-diverge"), seeds=2, trials=4, steps=4, eval_every=2)
    results = tmp_path / "r"
    run_suite(suite, options=_options(results, tune_trials=2, tune_only=True))
    _study(results, suite).ask()  # a trial left RUNNING by a killed driver: number 2 gets no row
    first = run_suite(suite, options=_options(results))
    assert sum(first.counts.values()) == 4  # test-diverge's runs diverge: still finished

    def snapshot(study):
        return [(t.number, t.state.name, t.value if t.state.name == "COMPLETE" else None, t.params,
                 t.intermediate_values, t.user_attrs.get("params"), t.user_attrs.get("run_id")) for t in study.trials
                if t.state.name != "FAIL"]

    runs = plan_runs(load_suite(suite)).runnable()
    names = sorted({tuning.study_name(r) for r in runs})
    before = {n: tuning.open_study(results, n, "min") for n in names}
    expected = {n: (snapshot(s), tuning.best_params(s), tuning.median_thresholds(s, 4),
                    {k for k in s.user_attrs if k.startswith("interrupted_")}) for n, s in before.items()}
    assert expected[tuning.study_name(runs[0])][3] == {"interrupted_2"}
    tuning._storages.clear()
    (results / tuning.STUDY_STORE).unlink()

    again = run_suite(suite, options=_options(results))
    assert again.to_run == 0
    for name in names:
        study = tuning.open_study(results, name, "min")
        assert (snapshot(study), tuning.best_params(study), tuning.median_thresholds(study, 4),
                {k for k in study.user_attrs if k.startswith("interrupted_")}) == expected[name]
        assert tuning._finished_count(study) == 4
    assert len(store.read_table(results, "trials")) == 8  # no trial ran twice


def test_dry_run_sees_the_tuned_runs_of_finished_studies(tmp_path):
    """A tuned run's id hashes its study's best parameters: the dry run finds them in the trials
    table (read only) and counts the stored tuned runs as stored, the runs of unfinished studies
    as to run; the journal is neither needed nor written."""
    from harness.commands.run import dry_run

    suite = write_suite(tmp_path, methods=("test-constant", "constant"), seeds=2, trials=3)
    results = tmp_path / "r"
    before = dry_run(suite, None, _options(results))
    assert "0 of 1 studies finished" in before and "4 to run, 0 already stored" in before
    run_suite(suite, options=_options(results, tune_trials=2, tune_only=True))  # 2 of 3 trials
    assert "0 of 1 studies finished" in dry_run(suite, None, _options(results))
    run_suite(suite, options=_options(results))
    (results / tuning.STUDY_STORE).unlink()
    tuning._storages.clear()
    after = dry_run(suite, None, _options(results))
    assert "1 of 1 studies finished" in after and "0 to run, 4 already stored" in after
    assert not (results / tuning.STUDY_STORE).exists()
