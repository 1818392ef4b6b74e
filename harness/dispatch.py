"""The one executor loop of ``run`` and ``tune``: submit runs, collect their outcomes, write
their rows, count them.

A :class:`Work` (the suite's runs, or the tuner's trials) says what to submit next and what
a finished job's rows are; the :class:`Dispatcher` owns everything else: starting the executor
(only when there is work), sharing task data with the workers (loaded once per data key,
dropped after its last run), keeping ``executor.capacity`` jobs in flight, and the single
place where a finished job's rows go to the writer and its status is counted
(:meth:`Dispatcher.record`). A stop signal (:mod:`harness.interrupts`) ends the loop between
jobs even when a library swallowed its exception; a job that ends after the stop is not recorded
(its outcome may be the signal's doing: a failed row): the next start runs it again.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness import interrupts
from harness.executors import Job, Outcome, SharedData, drive
from harness.records import Status

#: seconds between the driver's checks of deadlines and progress while jobs run
POLL_SECONDS = 1.0


@dataclass
class Submission:
    """One training job of a work: ``worker.execute_run(run, method, <task data>, **kwargs)``, or,
    for a stacked ``group`` of runs (seeds of one configuration, ``run`` its first),
    ``worker.execute_group(group, method, *<their task data>, **kwargs)``."""

    key: Any
    run: Any                       # a harness.plan.PlannedRun
    method: Any                    # its ebm.method.Method
    kwargs: dict[str, Any] = field(default_factory=dict)  # on top of the dispatcher's worker kwargs
    payload: Any = None            # the work's own bookkeeping
    group: list | None = None      # the runs trained stacked in this job (None: ``run`` alone)

    @property
    def runs(self) -> list:
        """The runs of this job (one, or the stacked group)."""
        return list(self.group) if self.group else [self.run]


@dataclass
class Finished:
    """What a finished submission leaves: rows per table (written in this order; curves before
    the runs they belong to), the status it counts as, and the row the progress display shows."""

    rows: dict[str, list[dict[str, Any]]]
    status: Status
    display: dict[str, Any]


class Work(Protocol):
    title: str

    def data_keys(self) -> list[Any]:
        """The data key of every submission to come (one entry per submission)."""
        ...

    def next(self) -> Submission | None:
        """The next job, or None when there is none now (there may be later: the dispatcher
        asks again after a job finishes) or ever."""
        ...

    def finish(self, submission: Submission, outcome: Outcome) -> Finished | list[Finished]:
        """Turn a job's outcome (a result, a dead worker, a hard timeout) into rows (a stacked
        group: one :class:`Finished` per run, each written and counted on its own)."""
        ...

    # optional: ``recorded(submission)``, called once the submission's rows are on disk (the
    # run driver releases the run's claim there)


class Dispatcher:
    """Runs :class:`Work` on an executor started on first use. ``load(data_key)`` gives a run's
    task data; ``worker_kwargs`` go to every ``execute_run``; ``hard_timeout`` is each job's
    deadline (seconds from submission); ``progress(total, title)`` makes a progress display."""

    def __init__(self, make_executor: Callable[[], Any], load: Callable[[Any], Any], writer, *,
                 worker_kwargs: dict[str, Any], hard_timeout: float | None,
                 progress: Callable[[int, str], Any], heartbeat: Callable[[], None] | None = None,
                 stop_at: float | None = None, stop_after: float | None = None) -> None:
        self._make_executor, self.load, self.writer = make_executor, load, writer
        # --stop-after: past ``stop_at`` (time.monotonic) no job is started; the running ones finish
        self.stop_at, self.stop_after = stop_at, stop_after
        self.heartbeat = heartbeat  # called while jobs run (the run driver renews its claims)
        self.worker_kwargs, self.hard_timeout, self.progress = worker_kwargs, hard_timeout, progress
        self._executor = None

    @property
    def executor(self):
        if self._executor is None:
            self._executor = self._make_executor()
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()
            self._executor = None

    def run(self, work: Work, total: int, counts: Counter | None = None) -> Counter:
        """Run ``total`` submissions of ``work`` to the end; returns the count of each status,
        kept in ``counts`` when given: it is updated as each run is written, so that a caller
        interrupted mid-way (Ctrl-C raises out of here) still knows what finished."""
        from harness.worker import execute_group, execute_run

        counts = Counter() if counts is None else counts
        if total <= 0:
            return counts
        executor = self.executor
        shared = SharedData(executor, self.load, work.data_keys())
        progress = self.progress(total, work.title)

        def data_of(run) -> Any:
            try:
                return shared.get(run.spec.data_key)
            except Exception as exc:  # noqa: BLE001 - the worker turns it into a failed row
                return exc

        time_up = False

        def next_job() -> Job | None:
            nonlocal time_up
            interrupts.raise_if_stopped()  # a stop a library swallowed: start nothing more
            if self.stop_at is not None and time.monotonic() >= self.stop_at:
                time_up = True  # asked of nothing: a tuner's next trial is asked only when it starts
                return None
            submission = work.next()
            if submission is None:
                return None
            kwargs = {**self.worker_kwargs, **submission.kwargs}
            if submission.group:
                # each run's data a top-level argument: Ray resolves object refs only there;
                # the hard deadline scales with the group (its soft one does: execute_group)
                group = submission.runs
                timeout = None if self.hard_timeout is None else self.hard_timeout * len(group)
                return Job(key=submission.key, fn=execute_group,
                           args=(group, submission.method, *(data_of(run) for run in group)),
                           kwargs={k: v for k, v in kwargs.items() if k != "prune_thresholds"},
                           timeout=timeout, payload=submission)
            return Job(key=submission.key, fn=execute_run, args=(submission.run, submission.method,
                       data_of(submission.run)), kwargs=kwargs, timeout=self.hard_timeout, payload=submission)

        def on_submit(job: Job) -> None:
            for _ in job.payload.runs:
                progress.started_one()

        def on_done(outcome: Outcome) -> None:
            # after a stop nothing more is told or recorded: a job that ends then may carry the
            # signal's doing (a library that made the KeyboardInterrupt an error, a failed row);
            # like the jobs still running, it is run again by the next start
            interrupts.raise_if_stopped()
            submission = outcome.job.payload
            for run in submission.runs:
                shared.release(run.spec.data_key)
            finished = work.finish(submission, outcome)
            every = finished if isinstance(finished, list) else [finished]
            self.record(every, counts)
            recorded = getattr(work, "recorded", None)
            if recorded is not None:
                recorded(submission)
            for one in every:
                progress.finished_one(one.display)

        try:
            drive(executor, next_job, on_done, on_submit=on_submit, poll=POLL_SECONDS, on_idle=self._idle)
        finally:
            progress.close()
        if time_up:  # drive returned with every started job recorded, the work not done
            raise interrupts.TimeLimitReached(self.stop_after or 0.0)
        return counts

    def _idle(self) -> None:
        interrupts.raise_if_stopped()
        if self.heartbeat is not None:
            self.heartbeat()

    def record(self, finished: list[Finished], counts: Counter) -> None:
        """The one place where a finished job is recorded: its rows go to the writer (which
        puts them on disk, fsynced, before it returns), then each run's status is counted. A
        stacked group's runs are written together, one part file per table (in the tables'
        order: curves before the runs they belong to), not one per member."""
        tables: dict[str, list[dict[str, Any]]] = {}
        for one in finished:
            for table, rows in one.rows.items():
                tables.setdefault(table, []).extend(rows)
        for table, rows in tables.items():
            self.writer.add(table, rows)
        for one in finished:
            counts[one.status] += 1


#: runs of one configuration trained stacked in one job at most (``ebm-bench run``'s default; ``--stack``
#: and a suite's ``stack`` override it). A multilabel task's configuration has 5 runs (seeds), cal500's
#: 25 (5 seeds x 5 folds), a ranking task's 50 (5 seeds x 10 folds). ``ebm-bench perf --benchmarks
#: group_size`` (2026-12-03, the other core busy): at the stored protocol's tuned hyperparameters a
#: group of 25 rather than 10 cost a member-step less in 73 of 78 configurations (median ratio 0.82;
#: lr-iris permutahedron exact-mle 1.02 → 0.54 ms, lr-vowel permutahedron mcmc-pcd 7.07 → 2.94; more in
#: 5, up to 1.22×, lr-vowel Birkhoff minmin-logistic-is 11.3 → 12.2), and in 12 of cal500's 14 sampling
#: configurations, whose steps draw the most (178k sample elements a member-step), in each of three
#: runs (median ratio 0.91; then ``--tasks cal500`` twice: 0.93, and 0.94 in 11 of 13, one timing left
#: out that hit a stall). Those 14 had a limit of 10 of their own while a throwaway first pass
#: contradicted the first of the three; the later two settled it.
STACK_LIMIT = 25


def describe_limit(limit: int) -> str:
    """One line for ``run --dry-run``: what stacking this limit gives."""
    return (f"stacking: up to {limit} runs of one configuration per job (methods that opt in)" if limit > 1
            else "stacking: off (every run alone)")


def group_count(runs: int, limit: int) -> int:
    """The fewest groups of at most ``limit`` that ``runs`` stackable runs of one configuration
    split into (:func:`stack_groups`; their sizes differ by one at most)."""
    return -(-runs // limit)


def stack_key(run) -> tuple | None:
    """Runs with equal keys (one task, model, method, hyperparameters, budget and data settings;
    any seed and fold) may train stacked in one job (:func:`harness.worker.execute_group`); None
    when this run trains alone: its method does not opt in (``can_stack``), or its prior q
    depends on the seed's training labels (``frequency``) and the method cannot take a prior per
    member (``stacks_priors``)."""
    method = run.method
    can_stack = getattr(method, "can_stack", None)
    if can_stack is None or not getattr(method, "stackable", False):
        return None
    params = dict(run.spec.params)
    if params.get("prior", "uniform") != "uniform" and not getattr(method, "stacks_priors", False):
        return None
    try:
        from ebm.spaces import make_space

        full = method.params(params)
        if not can_stack(make_space(run.kind, run.k, run.spec.model), run.spec.model, full):
            return None
    except (ValueError, KeyError, TypeError):  # the worker reports what is wrong with the run
        return None
    return (run.spec.config_hash,)


def stack_groups(runs: list, limit: int | None = None) -> list[list]:
    """``runs`` as jobs: the stackable runs of one :func:`stack_key` split into the fewest groups
    of at most ``limit`` (None: :data:`STACK_LIMIT`), of balanced
    sizes (7 runs, limit 5: 4 + 3), every other run alone. The largest groups come first (a group
    of S runs costs about as much as S/1.5 lone ones: started last, it would leave the other
    workers idle at the end — longest job first), then the order of their first run. ``limit`` ≤ 1
    stacks nothing."""
    if limit is not None and limit <= 1:
        return [[run] for run in runs]
    slots: list[Any] = []   # a lone run, or the key of a stack (placed at its first run)
    stacks: dict[tuple, list] = {}
    for run in runs:
        key = stack_key(run)
        if key is None:
            slots.append([run])
        else:
            if key not in stacks:
                stacks[key] = []
                slots.append(key)
            stacks[key].append(run)
    jobs: list[list] = []
    for slot in slots:
        if isinstance(slot, list):
            jobs.append(slot)
            continue
        members = stacks[slot]
        count = group_count(len(members), STACK_LIMIT if limit is None else limit)
        jobs += [members[i::count] for i in range(count)]
    return sorted(jobs, key=len, reverse=True)  # stable: equal sizes keep their order


class SuiteRuns:
    """The suite's runs (test split evaluated): each finished run is one ``runs`` row and its
    curves. Seeds of one configuration train stacked in one job, ``stack`` at most (1: none; None:
    :data:`STACK_LIMIT`)."""

    title: str

    def __init__(self, runs: list, title: str, *, stack: int | None = 1) -> None:
        self.runs, self.title = list(runs), title
        self._queue = iter(stack_groups(self.runs, stack))

    def data_keys(self) -> list[Any]:
        return [run.spec.data_key for run in self.runs]

    def next(self) -> Submission | None:
        group = next(self._queue, None)
        if group is None:
            return None
        return submission_of(group)

    def finish(self, submission: Submission, outcome: Outcome) -> Finished | list[Finished]:
        from harness.worker import failure_record

        runs = submission.runs
        if outcome.ok:
            results = outcome.value if submission.group else [outcome.value]
            pairs = [(result.record, result.curves) for result in results]
        else:  # the job never returned: a dead worker or a hard timeout
            status = Status.TIMEOUT if outcome.timed_out else Status.FAILED
            pairs = [(failure_record(run, status, outcome.failure), []) for run in runs]
        finished = []
        for record, curves in pairs:
            row = record.to_row()
            finished.append(Finished(rows={"curves": curves, "runs": [row]}, status=record.status or Status.FAILED,
                                     display=row))
        return finished if submission.group else finished[0]


def submission_of(group: list) -> Submission:
    """The job of one run, or of a stacked group of them (two or more)."""
    first = group[0]
    if len(group) == 1:
        return Submission(key=first.run_id, run=first, method=first.method)
    return Submission(key=tuple(run.run_id for run in group), run=first, method=first.method, group=list(group))
