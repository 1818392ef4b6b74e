"""The one executor loop of ``run`` and ``tune``: submit runs, collect their outcomes, write
their rows, count them.

A :class:`Work` (the suite's runs, or the tuner's trials) says what to submit next and what
a finished job's rows are; the :class:`Dispatcher` owns everything else: starting the executor
(only when there is work), sharing task data with the workers (loaded once per data key,
dropped after its last run), keeping ``executor.capacity`` jobs in flight, and the single
place where a finished job's rows go to the writer and its status is counted
(:meth:`Dispatcher.finished`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.executors import Job, Outcome, SharedData, drive
from harness.records import Status

#: seconds between the driver's checks of deadlines and progress while jobs run
POLL_SECONDS = 1.0


@dataclass
class Submission:
    """One training job of a work: ``worker.execute_run(run, method, <task data>, **kwargs)``."""

    key: Any
    run: Any                       # a harness.plan.PlannedRun
    method: Any                    # its ebm.method.Method
    kwargs: dict[str, Any] = field(default_factory=dict)  # on top of the dispatcher's worker kwargs
    payload: Any = None            # the work's own bookkeeping


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

    def finish(self, submission: Submission, outcome: Outcome) -> Finished:
        """Turn a job's outcome (a result, a dead worker, a hard timeout) into rows."""
        ...

    # optional: ``recorded(submission)``, called once the submission's rows are on disk (the
    # run driver releases the run's claim there)


class Dispatcher:
    """Runs :class:`Work` on an executor started on first use. ``load(data_key)`` gives a run's
    task data; ``worker_kwargs`` go to every ``execute_run``; ``hard_timeout`` is each job's
    deadline (seconds from submission); ``progress(total, title)`` makes a progress display."""

    def __init__(self, make_executor: Callable[[], Any], load: Callable[[Any], Any], writer, *,
                 worker_kwargs: dict[str, Any], hard_timeout: float | None,
                 progress: Callable[[int, str], Any], heartbeat: Callable[[], None] | None = None) -> None:
        self._make_executor, self.load, self.writer = make_executor, load, writer
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

    def run(self, work: Work, total: int) -> Counter:
        """Run ``total`` submissions of ``work`` to the end; returns the count of each status."""
        from harness.worker import execute_run

        counts: Counter = Counter()
        if total <= 0:
            return counts
        executor = self.executor
        shared = SharedData(executor, self.load, work.data_keys())
        progress = self.progress(total, work.title)

        def next_job() -> Job | None:
            submission = work.next()
            if submission is None:
                return None
            try:
                data = shared.get(submission.run.spec.data_key)
            except Exception as exc:  # noqa: BLE001 - the worker turns it into a failed row
                data = exc
            return Job(key=submission.key, fn=execute_run, args=(submission.run, submission.method, data),
                       kwargs={**self.worker_kwargs, **submission.kwargs}, timeout=self.hard_timeout,
                       payload=submission)

        def on_done(outcome: Outcome) -> None:
            submission = outcome.job.payload
            shared.release(submission.run.spec.data_key)
            finished = work.finish(submission, outcome)
            self.finished(finished, counts)
            recorded = getattr(work, "recorded", None)
            if recorded is not None:
                recorded(submission)
            progress.finished_one(finished.display)

        try:
            drive(executor, next_job, on_done, on_submit=lambda job: progress.started_one(), poll=POLL_SECONDS,
                  on_idle=self.heartbeat)
        finally:
            progress.close()
        return counts

    def finished(self, finished: Finished, counts: Counter) -> None:
        """The one place where a finished job is recorded: its rows go to the writer (which
        puts them on disk, fsynced, before it returns), then its status is counted."""
        for table, rows in finished.rows.items():
            self.writer.add(table, rows)
        counts[finished.status] += 1


class SuiteRuns:
    """The suite's runs (test split evaluated): each finished run is one ``runs`` row and its curves."""

    title: str

    def __init__(self, runs: list, title: str) -> None:
        self.runs, self.title = list(runs), title
        self._queue = iter(self.runs)

    def data_keys(self) -> list[Any]:
        return [run.spec.data_key for run in self.runs]

    def next(self) -> Submission | None:
        run = next(self._queue, None)
        return None if run is None else Submission(key=run.run_id, run=run, method=run.method)

    def finish(self, submission: Submission, outcome: Outcome) -> Finished:
        from harness.worker import failure_record

        if outcome.ok:
            record, curves = outcome.value.record, outcome.value.curves
        else:  # the job never returned: a dead worker or a hard timeout
            status = Status.TIMEOUT if outcome.timed_out else Status.FAILED
            record, curves = failure_record(submission.run, status, outcome.failure), []
        row = record.to_row()
        return Finished(rows={"curves": curves, "runs": [row]}, status=record.status or Status.FAILED, display=row)
