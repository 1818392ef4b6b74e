"""The one executor loop (harness.dispatch): data shared once per key and dropped after its last
run, every finished job's rows written, statuses counted, on the serial executor."""

from __future__ import annotations

from collections import Counter

from harness_fixtures import write_suite

from harness.dispatch import Dispatcher, SuiteRuns
from harness.executors import SerialExecutor
from harness.plan import plan_runs
from harness.records import Status
from harness.suites import load_suite


class _Rows:
    """A writer that keeps the rows it is given (the dispatcher's side of the store boundary)."""

    def __init__(self) -> None:
        self.tables: dict[str, list[dict]] = {}

    def add(self, table, rows):
        self.tables.setdefault(table, []).extend(rows)

    def flush(self):
        pass


class _Progress:
    def __init__(self, total, title):
        self.total, self.title, self.started, self.finished = total, title, 0, []

    def started_one(self):
        self.started += 1

    def finished_one(self, row):
        self.finished.append(row)

    def close(self):
        pass


def test_suite_runs_share_data_once_per_key_and_are_counted(tmp_path):
    from tasks.registry import get_task

    suite = load_suite(write_suite(tmp_path, methods=("test-constant", "test-raises", "test-diverge"), seeds=2,
                                   steps=4, eval_every=2))
    runs = sorted(plan_runs(suite).runnable(), key=lambda r: r.spec.data_key)
    loads: list = []

    def load(key):
        loads.append(key)
        task, seed, fold, _ = key
        return get_task(task).load(None, seed=seed, fold=fold, val_fraction=0.2)

    progresses: list[_Progress] = []

    def make_progress(total, title):
        progresses.append(_Progress(total, title))
        return progresses[-1]

    writer = _Rows()
    dispatcher = Dispatcher(SerialExecutor, load, writer, worker_kwargs={}, hard_timeout=None, progress=make_progress)
    counts = dispatcher.run(SuiteRuns(runs, "fixture"), len(runs))
    dispatcher.close()
    assert counts == Counter({Status.OK: 2, Status.FAILED: 2, Status.DIVERGED: 2})
    assert sorted(loads) == sorted({r.spec.data_key for r in runs})  # each data key loaded once (2 seeds)
    assert [row["run_id"] for row in writer.tables["runs"]] == [r.run_id for r in runs]
    assert {row["run_id"] for row in writer.tables["curves"]} == {r.run_id for r in runs
                                                                  if r.spec.method == "test-constant"}
    (progress,) = progresses
    assert (progress.total, progress.title, progress.started, len(progress.finished)) == (6, "fixture", 6, 6)


def test_nothing_to_do_starts_no_executor():
    started = []
    dispatcher = Dispatcher(lambda: started.append(1), lambda key: None, _Rows(), worker_kwargs={},
                            hard_timeout=None, progress=_Progress)
    assert dispatcher.run(SuiteRuns([], "empty"), 0) == Counter()
    assert started == []


def test_stacked_groups_are_submitted_first_largest_first(tmp_path):
    """Longest job first: a stacked group (about the cost of several lone runs) started last would
    leave the other workers idle; lone runs keep their plan order after the groups."""
    from harness_fixtures import write_suite

    from harness.dispatch import SuiteRuns, stack_groups
    from harness.plan import plan_runs
    from harness.suites import load_suite

    runs = plan_runs(load_suite(write_suite(tmp_path, methods=("minmin-finite", "bce", "exact-mle"), seeds=7)))
    runs = sorted(runs.runnable(), key=lambda r: (r.spec.method != "minmin-finite", r.spec.method, r.spec.seed))
    sizes = [len(job) for job in stack_groups(runs, 5)]
    assert sizes == [4, 4, 3, 3] + [1] * 7  # bce and exact-mle: 4 + 3 each; minmin-finite (first in plan) alone
    work = SuiteRuns(runs, "t", stack=5)
    first = work.next()
    assert first is not None and first.group is not None and len(first.group) == 4
    lone = [job[0].spec.seed for job in stack_groups(runs, 5) if len(job) == 1]
    assert lone == list(range(7))


def test_the_default_stacking_limit_is_the_same_for_every_configuration(tmp_path):
    """``run``'s default (no ``--stack``, no suite ``stack``): groups of up to 25 for every
    configuration, one that draws many samples a step (minmin-logistic at n′ = 2048) as one that
    draws none (bce); an explicit limit likewise."""
    from harness_fixtures import write_suite

    from harness.commands.run import RunOptions
    from harness.dispatch import STACK_LIMIT, stack_groups
    from harness.plan import plan_runs
    from harness.suites import load_suite

    suite = load_suite(write_suite(tmp_path, methods=("bce", "minmin-logistic"), seeds=30,
                                   params="{ minmin-logistic = { n_samples = 2048 } }"))
    runs = plan_runs(suite).runnable()
    default = RunOptions(results_dir=tmp_path).stack_for(suite)
    assert default == STACK_LIMIT == 25 and RunOptions(results_dir=tmp_path, stack=7).stack_for(suite) == 7

    def sizes(limit):
        jobs = stack_groups(runs, limit)
        return {method: sorted(len(job) for job in jobs if job[0].spec.method == method)
                for method in ("bce", "minmin-logistic")}

    assert sizes(default) == sizes(None) == {"bce": [15, 15], "minmin-logistic": [15, 15]}
    assert sizes(10) == {"bce": [10, 10, 10], "minmin-logistic": [10, 10, 10]}


class _Calls(_Rows):
    """A writer that also keeps each ``add`` call (table, run ids) in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[str]]] = []

    def add(self, table, rows):
        rows = list(rows)
        self.calls.append((table, [row["run_id"] for row in rows]))
        super().add(table, rows)


def test_a_stacked_group_is_written_in_one_call_per_table_curves_first(tmp_path):
    """A group of 3 seeds (bce stacks) and a lone run (minmin-finite does not): the group's runs
    reach the writer as one curves call then one runs call holding all 3 members (one part file
    each, not 3), before any of them is counted; the lone run as its own pair."""
    runs = plan_runs(load_suite(write_suite(tmp_path, methods=("bce", "minmin-finite"), seeds=3, steps=4,
                                            eval_every=2)))
    runs = [r for r in runs.runnable() if r.spec.method == "bce" or r.spec.seed == 0]
    writer = _Calls()

    def load(key):
        from tasks.registry import get_task

        task, seed, fold, _ = key
        return get_task(task).load(None, seed=seed, fold=fold, val_fraction=0.2)

    dispatcher = Dispatcher(SerialExecutor, load, writer, worker_kwargs={}, hard_timeout=None, progress=_Progress)
    counts = dispatcher.run(SuiteRuns(runs, "fixture", stack=5), len(runs))
    dispatcher.close()
    assert counts == Counter({Status.OK: 4})
    group = sorted(r.run_id for r in runs if r.spec.method == "bce")
    (lone,) = [r.run_id for r in runs if r.spec.method == "minmin-finite"]
    assert [table for table, _ in writer.calls] == ["curves", "runs", "curves", "runs"]
    assert [sorted(set(ids)) for _, ids in writer.calls] == [group, group, [lone], [lone]]
    assert len(writer.tables["runs"]) == 4


def test_past_the_stop_time_nothing_starts_and_the_running_job_is_recorded(tmp_path):
    """``--stop-after``: the time runs out while the first job runs (the work moves the stop time
    to now when it hands that job out). That job still finishes and its rows are written; no
    other job starts; then the dispatcher raises TimeLimitReached (the invocation ends
    ``stopped``, with nothing to redo)."""
    import time

    import pytest

    from harness.interrupts import TimeLimitReached
    from tasks.registry import get_task

    suite = load_suite(write_suite(tmp_path, methods=("test-constant",), seeds=3, steps=4, eval_every=2))
    runs = sorted(plan_runs(suite).runnable(), key=lambda r: r.spec.data_key)
    assert len(runs) == 3

    class RunsThatUseUpTheTime(SuiteRuns):
        def next(self):
            submission = super().next()
            dispatcher.stop_at = time.monotonic()  # after this job, the time is up
            return submission

    def load(key):
        task, seed, fold, _ = key
        return get_task(task).load(None, seed=seed, fold=fold, val_fraction=0.2)

    writer, progress = _Rows(), []
    dispatcher = Dispatcher(SerialExecutor, load, writer, worker_kwargs={}, hard_timeout=None,
                            progress=lambda total, title: progress.append(_Progress(total, title)) or progress[-1],
                            stop_at=time.monotonic() + 3600, stop_after=3600)
    counts: Counter = Counter()
    with pytest.raises(TimeLimitReached, match="--stop-after 3600 s"):
        dispatcher.run(RunsThatUseUpTheTime(runs, "fixture", stack=1), len(runs), counts=counts)
    dispatcher.close()
    assert counts == Counter({Status.OK: 1})
    assert [row["run_id"] for row in writer.tables["runs"]] == [runs[0].run_id]
    assert progress[0].started == 1
