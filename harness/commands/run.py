"""``ebm-bench run``: plan a suite, skip what the results dir holds, tune (optional), run
the rest on Ray (or serially), store every outcome, print the leaderboard.

Resume: a run whose id already has a row in ``DIR/runs`` is not run again, whatever its
status, unless ``--force`` (everything again) or ``--retry-failed`` (rows ``failed`` /
``timeout`` again). Rows ``skipped`` / ``unsupported`` decided at plan time are re-decided
every time (e.g. a task whose data has appeared since is run).
Durability: a finished run's row (and its curves) is written and fsynced before the driver
counts it (one small part per run, compacted at the end of an invocation and at the next start
when a table has more than ``store.COMPACT_AT`` parts, or by ``ebm-bench compact``); Ctrl-C,
SIGTERM and SIGHUP stop the driver cleanly, and even after a SIGKILL the next start re-runs
only the runs that have no row. Each run is claimed (``DIR/claims``, :mod:`harness.claims`)
while it runs, so a second driver on the same results dir skips it; a dead driver's claims are
taken over. The manifest records how each invocation ended: ``finished``, ``interrupted``,
``failed`` (an error ended the driver; with it), or ``killed`` (found stale by a later start). An
error after a stop signal is the stop (:mod:`harness.interrupts`): a library may have turned the
signal's exception into its own.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.suites import Suite


@dataclass
class RunOptions:
    results_dir: Path = Path("results")
    data_dir: Path | None = None
    executor: str = "ray"
    address: str | None = None
    num_cpus: int | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    timeout_per_run: float | None = None
    timeout_grace: float | None = None
    tune_trials: int | None = None   # None: the suite's value
    force: bool = False
    retry_failed: bool = False
    max_retries: int = 1
    progress: bool = True
    tune_only: bool = False
    claim_ttl: float | None = None   # seconds before an unrenewed claim is stale (None: claims.DEFAULT_TTL)
    #: seeds of one configuration trained stacked in one job, at most (1: each run alone;
    #: ``--no-stack``; None: the suite's ``stack``, else harness.dispatch.STACK_LIMIT); see
    #: harness.dispatch.stack_groups
    stack: int | None = None
    #: seconds after the invocation's start past which no run or trial is started; those running
    #: then finish and are stored (``--stop-after``; None: no limit)
    stop_after: float | None = None

    def stack_for(self, suite: Suite) -> int:
        """The stacking limit of this invocation: ``--stack``, else the suite's, else
        :data:`harness.dispatch.STACK_LIMIT`."""
        from harness.dispatch import STACK_LIMIT

        return next((limit for limit in (self.stack, suite.stack) if limit is not None), STACK_LIMIT)


@dataclass
class RunSummary:
    planned: int = 0
    to_run: int = 0
    already_done: int = 0
    counts: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False
    #: ``--stop-after`` ended the invocation (what was running then finished and is stored)
    stopped_at_limit: bool = False
    #: runs of the plan whose stored row is ok and that were not run again
    already_ok: int = 0
    #: non-ok outcomes (status, method, task, model, reason), for the closing summary
    problems: list[tuple] = field(default_factory=list)

    #: runs left to another live driver that had claimed them (their outcome is its to report)
    held_elsewhere: int = 0

    @property
    def succeeded(self) -> bool:
        """False when runs were planned but none ended ok (now or stored from before) and none is
        still being run by another driver."""
        return not self.planned or self.counts.get("ok", 0) + self.already_ok + self.held_elsewhere > 0


#: seconds a fresh Ray worker may take to start and import torch and the project before a run
#: begins (measured ~8 s on 2 loaded cores): the driver's clock starts at submission, and a
#: worker that replaces a dead one is cold, so the hard deadline must not count its start-up
WORKER_START_ALLOWANCE = 15.0


def _hard_timeout(options: RunOptions) -> float | None:
    """The driver kills a run at timeout + grace + start-up allowance after submitting it: the
    soft timeout stops training itself and leaves time to evaluate; the hard one catches hung code."""
    if options.timeout_per_run is None:
        return None
    grace = options.timeout_grace if options.timeout_grace is not None else max(10.0, 0.5 * options.timeout_per_run)
    return options.timeout_per_run + grace + WORKER_START_ALLOWANCE


def needs_run(run, stored: dict[str, str], options: RunOptions) -> bool:
    from harness.records import Status

    if options.force or run.run_id not in stored:
        return True
    try:
        status = Status(stored[run.run_id])
    except ValueError:  # a status this version does not know (a newer writer): the run is done
        return False
    return status.decided_at_plan or (options.retry_failed and status.retryable)


def _loader(data_dir):
    """Loads the TaskData of a RunSpec.data_key (task, seed, fold, data settings as JSON)."""
    def load(key):
        import json

        from tasks.registry import get_task

        task_name, seed, fold, settings = key
        val_fraction = json.loads(settings)["val_fraction"]
        return get_task(task_name).load(data_dir, seed=seed, fold=fold, val_fraction=val_fraction)
    return load


def run_suite(suite, filters=None, options: RunOptions | None = None, *, phases=None) -> RunSummary:
    """Plan, (tune,) execute and store ``suite`` (a name, a path, a Suite, or None: the grid the
    filters name, else quick); see the module docstring. ``phases`` (a progress.Phases) is told
    what the driver is doing until the first run starts."""
    from harness import claims as claims_module
    from harness import interrupts, manifest, store
    from harness.plan import Filters, plan_runs, resolve_suite
    from harness.progress import Phases

    options = options or RunOptions()
    phases = phases or Phases(enabled=options.progress)
    started = time.monotonic()
    phases("planning")
    suite, filters = resolve_suite(suite, filters or Filters())
    results_dir = store.check_writable(options.results_dir)
    plan = plan_runs(suite, filters, data_dir=options.data_dir)
    summary = RunSummary(planned=len(plan), notes=list(plan.notes))
    summary.problems += [(p.status, p.spec.method, p.spec.task, p.spec.model, p.reason) for p in plan if p.status]
    invocation = uuid.uuid4().hex[:12]
    ttl = claims_module.DEFAULT_TTL if options.claim_ttl is None else options.claim_ttl
    _recover(results_dir, invocation, ttl, summary)
    index = store.RunIndex(results_dir)
    stored = index.status
    claims = claims_module.Claims(results_dir, invocation, ttl=ttl)
    manifest.record_invocation(results_dir, invocation, suite=suite.name, suite_source=suite.source,
                               planned=len(plan), status="running")
    writer = store.ResultWriter(results_dir)
    restore_signals = interrupts.stop_on_signals()
    failure = None  # an error that ended the driver (the invocation is recorded `failed` with it)
    dispatcher = _dispatcher(options, writer, heartbeat=claims.renew, phases=phases, problems=summary.problems,
                             started=started)
    try:
        _record_plan_outcomes(plan, stored, options, writer, summary)
        runnable = _tuned(plan.runnable(), suite, options, dispatcher, results_dir, summary)
        if not options.tune_only:
            todo = sorted((r for r in runnable if needs_run(r, stored, options)), key=lambda r: r.spec.data_key)
            summary.to_run, summary.already_done = len(todo), len(runnable) - len(todo)
            todo_ids = {r.run_id for r in todo}
            summary.already_ok = sum(1 for r in runnable if r.run_id not in todo_ids and stored.get(r.run_id) == "ok")
            work = _ClaimedRuns(todo, suite.name, claims, index, options, stack=options.stack_for(suite))
            dispatcher.run(work, len(todo), counts=summary.counts)  # counted as they finish: Ctrl-C keeps them
            summary.held_elsewhere = claims.skipped
    except KeyboardInterrupt:
        summary.interrupted = True
    except interrupts.TimeLimitReached as limit:
        summary.stopped_at_limit = True
        summary.notes.append(f"stopped: {limit}; nothing more was started, and what was running then "
                             "finished and is stored")
    except Exception as exc:
        stop = interrupts.stop_requested()
        if stop is None:
            failure = f"{type(exc).__name__}: {exc}"
            raise
        # a library turned the signal's KeyboardInterrupt into an error of its own (harness.interrupts)
        summary.interrupted = True
        summary.notes.append(f"{stop} surfaced as {type(exc).__name__}: {exc}")
    finally:
        phases.done()
        # a second signal while cleaning up must not leave the manifest saying `running`
        with interrupts.signals_ignored():
            writer.flush()
            dispatcher.close()
            claims.close()
            _compact_if_needed(results_dir)  # many per-run parts make every later read slow
            if claims.skipped:
                summary.notes.append(f"{claims.skipped} run(s) skipped: claimed by another live driver on "
                                     f"{results_dir}")
            summary.seconds = time.monotonic() - started
            ending = {"status": "interrupted" if summary.interrupted else "stopped" if summary.stopped_at_limit
                      else "failed" if failure else "finished",
                      **({"error": failure} if failure else {})}
            manifest.record_invocation(results_dir, invocation, **ending,
                                       finished_at=store.utc_now().isoformat(), seconds=round(summary.seconds, 2),
                                       to_run=summary.to_run, counts=dict(summary.counts),
                                       claims_skipped=claims.skipped, claims_taken_over=claims.taken_over)
            restore_signals()
    return summary


class _ClaimedRuns:
    """The suite's runs (:class:`harness.dispatch.SuiteRuns`), each claimed before it is
    submitted and re-checked against the store after the claim (another driver releases a
    claim only once the run's row is on disk), numbered with its attempt, and released once
    its rows are written (:meth:`recorded`, called by the dispatcher after the write)."""

    def __init__(self, runs: list, title: str, claims, index, options: RunOptions, *, stack: int | None) -> None:
        from harness.dispatch import SuiteRuns

        self.inner = SuiteRuns(runs, title, stack=stack)
        self.title, self.claims, self.index, self.options = title, claims, index, options

    def data_keys(self) -> list:
        return self.inner.data_keys()

    def next(self):
        """The next job: the runs of the inner job this driver could claim and that still need
        running (a stacked group whose members are partly stored runs only the missing ones)."""
        from harness.dispatch import submission_of

        while True:
            submission = self.inner.next()
            if submission is None:
                return None
            claimed = [run for run in submission.runs if self.claims.try_claim(run.run_id)]
            if not claimed:
                continue
            self.index.refresh()
            todo = [run for run in claimed if self.options.force or needs_run(run, self.index.status, self.options)]
            for run in claimed:
                if run not in todo:
                    self.claims.release(run.run_id)
            if not todo:
                continue
            return submission if len(todo) == len(submission.runs) else submission_of(todo)

    def finish(self, submission, outcome):
        from harness.dispatch import Finished

        finished = self.inner.finish(submission, outcome)
        out = []
        for run, one in zip(submission.runs, finished if isinstance(finished, list) else [finished]):
            attempt = self.index.next_attempt(run.run_id)
            rows = {table: [{**row, "attempt": attempt, **({"attempts": attempt} if table == "runs" else {})}
                            for row in table_rows] for table, table_rows in one.rows.items()}
            out.append(Finished(rows=rows, status=one.status, display=rows.get("runs", [one.display])[0]))
        return out if isinstance(finished, list) else out[0]

    def recorded(self, submission) -> None:
        for run in submission.runs:
            self.index.attempts[run.run_id] = self.index.next_attempt(run.run_id)
            self.claims.release(run.run_id)


def _recover(results_dir, invocation: str, ttl: float, summary: RunSummary) -> None:
    """What a start does after any earlier end: remove dead writers' temp files, record earlier
    invocations found dead as ``killed`` (and drop their stale claims), compact tables grown to
    many small parts."""
    from harness import claims, manifest, store

    store.clean_stale_temp(results_dir)
    killed = manifest.settle_stale_invocations(results_dir, ttl=ttl, found_by=invocation)
    claims.clean_stale(results_dir, ttl=ttl)
    if killed:
        summary.notes.append(f"earlier invocation(s) {', '.join(killed)} ended without a word (killed); "
                             "their unfinished runs are run again")
    _compact_if_needed(results_dir)


def _compact_if_needed(results_dir) -> None:
    from harness import store

    if any(n > store.COMPACT_AT for n in store.part_counts(results_dir).values()):
        store.compact(results_dir)


def _record_plan_outcomes(plan, stored: dict[str, str], options: RunOptions, writer, summary: RunSummary) -> None:
    """Plan-time outcomes (unsupported / skipped): written once, re-written when they change."""
    from harness.worker import failure_record

    writer.add("runs", [failure_record(p, p.status, p.reason).to_row() for p in plan
                        if p.status and (options.force or stored.get(p.run_id) != p.status)])
    summary.counts.update(p.status for p in plan if p.status)


def _dispatcher(options: RunOptions, writer, *, heartbeat=None, phases=None, problems: list | None = None,
                started: float | None = None):
    """The executor loop of this invocation; its executor starts when the first job is submitted.
    ``phases`` hears of the executor's start; ``problems`` collects each non-ok run (for the summary);
    ``--stop-after`` counts from ``started`` (time.monotonic; default now)."""
    from harness.dispatch import Dispatcher
    from harness.executors import make_executor
    from harness.progress import Phases, RunProgress

    phases = phases or Phases(enabled=False)

    def start_executor():
        if options.executor == "serial":
            return make_executor("serial")
        phases("starting Ray")
        # the executor keeps the driver's signal handlers across ray.init (which replaces them)
        return make_executor(options.executor, address=options.address, num_cpus=options.num_cpus,
                             cpus_per_run=options.cpus_per_run, gpus_per_run=options.gpus_per_run,
                             max_retries=options.max_retries, on_phase=phases)

    def progress(total, title):
        phases.done()  # the progress bar takes over the status line
        return RunProgress(total, title=title, enabled=options.progress, problems=problems)

    worker_kwargs = {"threads": max(1, round(options.cpus_per_run)), "gpus": options.gpus_per_run,
                     "max_seconds": options.timeout_per_run}
    stop_at = None
    if options.stop_after is not None:
        stop_at = (time.monotonic() if started is None else started) + options.stop_after
    return Dispatcher(start_executor, _loader(options.data_dir), writer, worker_kwargs=worker_kwargs,
                      hard_timeout=_hard_timeout(options), heartbeat=heartbeat, progress=progress,
                      stop_at=stop_at, stop_after=options.stop_after)


def _tuned(runnable: list, suite, options: RunOptions, dispatcher, results_dir, summary: RunSummary) -> list:
    """``runnable`` with each run's hyperparameters replaced by its study's best (when tuning)."""
    from harness import tuning

    trials = suite.tune_trials if options.tune_trials is None else options.tune_trials
    if trials <= 0 or not runnable:
        return runnable
    best, notes = tuning.tune(runnable, dispatcher, results_dir=results_dir, n_trials=trials)
    summary.notes += notes
    return tuning.with_best(runnable, best)


# ----------------------------------------------------------------------------- CLI

#: exit status of an invocation that --stop-after ended (what ran is stored; run again to resume)
STOPPED_AT_LIMIT = 3

_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``--stop-after``'s value in seconds: a positive number, optionally followed by s, m or h
    (``90m``, ``2h``, ``1.5h``, ``5400``)."""
    value = text.strip().lower()
    scale = _DURATION_UNITS.get(value[-1:], None) if value else None
    number = value[:-1] if scale is not None else value
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90m, 2h, 5400 for seconds)") from None
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"a duration must be positive and finite, got {text!r}")
    return seconds


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``run`` and ``tune``."""
    from harness.suites import BUILTIN_SUITES

    parser.add_argument("--suite", default=None,
                        help=f"{' | '.join(BUILTIN_SUITES)} | PATH.toml; with it, --tasks/--methods/--models "
                             "narrow the suite (default: the grid those flags name, or quick without them)")
    parser.add_argument("--tasks", help="comma list of task names or globs (e.g. 'syn-*,emotions'); without "
                                        "--suite: the grid's tasks (default: the quick suite's)")
    parser.add_argument("--methods", help="comma list of method names or globs (e.g. 'minmin-*,exact-mle'); "
                                          "without --suite: default every method")
    parser.add_argument("--models", help="comma list of model names or globs (default: every model of each "
                                         "task's kind)")
    parser.add_argument("--seeds", type=int, help="number of seeds (overrides the suite)")
    parser.add_argument("--max-steps", type=int, help="optimiser steps per run (overrides the suite's budget)")
    parser.add_argument("--results-dir", default="results", help="results directory (default: ./results)")
    parser.add_argument("--data-dir", help="dataset directory (default: $EBM_BENCH_DATA)")
    parser.add_argument("--executor", choices=("ray", "serial"), default="ray",
                        help="ray (default: a local instance, or --address) or serial (in-process, for debugging)")
    parser.add_argument("--address", help="an existing Ray cluster (default: $RAY_ADDRESS, else a local instance)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    parser.add_argument("--cpus-per-run", type=float, default=1.0, help="CPUs per run (also torch threads; default 1)")
    parser.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs per run, fractions allowed (default 0)")
    parser.add_argument("--timeout-per-run", type=float,
                        help="seconds of training per run; past it training stops (status timeout) and a hung "
                             "run is killed after a grace period")
    parser.add_argument("--timeout-grace", type=float, help="extra seconds before a hung run is killed "
                                                            "(default: max(10, timeout/2))")
    parser.add_argument("--tune-trials", type=int, help="Optuna trials per task × model × method "
                                                        "(0 = default hyperparameters; default: the suite's)")
    parser.add_argument("--force", action="store_true", help="re-run runs the results dir already holds")
    parser.add_argument("--retry-failed", action="store_true", help="re-run runs stored as failed or timeout")
    parser.add_argument("--max-retries", type=int, default=1,
                        help="Ray retries of a run whose worker process died (>= 0, default 1); "
                             "exceptions are never retried")
    parser.add_argument("--stop-after", type=parse_duration, metavar="DURATION",
                        help="start no run or trial after this long (e.g. 90m, 2h, 5400 = seconds); those "
                             "running then finish and are stored, and the same command resumes (exit status 3)")
    parser.add_argument("--no-progress", action="store_true", help="no progress display")


DESCRIPTION = """\
Plan a suite, skip what the results dir holds, tune (optional), run the rest on Ray (or
serially), store every outcome, print the leaderboard.

The grid: without --suite, --tasks / --methods / --models name it (tasks and methods are
names or globs over everything registered; every model of each task's kind unless --models),
with the quick suite's budget and seeds unless --max-steps / --seeds say otherwise. With
--suite they narrow that suite's grid. No flags at all: the quick suite.

  ebm-bench run --tasks 'syn-*' --methods 'minmin-*,exact-mle' --models pairwise --dry-run
  ebm-bench run --suite paper --tasks yeast

Resume: a run whose id already has a row in DIR/runs is not run again, whatever its status,
unless --force (everything again) or --retry-failed (rows failed / timeout again). Rows
skipped / unsupported decided at plan time are re-decided every time. Only this driver writes
results, in small batches as runs finish; Ctrl-C keeps what finished.

Time limit: --stop-after 2h starts nothing after two hours and lets what is running finish,
so that a protocol longer than a working session ends with nothing to redo; run the same
command again to go on.

Exit status: 0 when at least one planned run is ok (now or from before), 1 when none is,
2 for bad input, 3 when --stop-after stopped it, 130 when interrupted.
"""


def register(subparsers) -> None:
    from harness.dispatch import STACK_LIMIT

    parser = subparsers.add_parser("run", help="run a benchmark suite (resumable) and print the leaderboard",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="print the planned runs (grouped, with what is already stored and what is skipped "
                             "and why) and their count, then exit")
    parser.add_argument("--no-leaderboard", action="store_true", help="do not print the leaderboard at the end")
    parser.add_argument("--strict", action="store_true",
                        help="stop at a damaged results file instead of skipping it with a warning")
    parser.add_argument("--stack", type=int, default=RunOptions.stack, metavar="N",
                        help="train up to N runs of one configuration (other seeds or folds) of a method that "
                             "opts in stacked in one vmapped step, each with its own row (default: the suite's "
                             f"`stack`, else {STACK_LIMIT})")
    parser.add_argument("--no-stack", action="store_true", help="train every run alone (same as --stack 1)")
    parser.set_defaults(func=main)


def options_from_args(args, *, tune_only: bool = False):
    from harness.plan import Filters
    from tasks.registry import resolve_data_dir

    if args.cpus_per_run <= 0 or args.gpus_per_run < 0:
        raise ValueError("--cpus-per-run must be > 0 and --gpus-per-run >= 0")
    if args.timeout_per_run is not None and args.timeout_per_run <= 0:
        raise ValueError("--timeout-per-run must be positive")
    if args.seeds is not None and args.seeds < 1:
        raise ValueError("--seeds must be at least 1")
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError("--max-steps must be at least 1")
    if args.max_retries < 0:
        raise ValueError(f"--max-retries must be >= 0, got {args.max_retries} (Ray would read a negative "
                         "value as retrying forever)")
    if args.tune_trials is not None and args.tune_trials < 0:
        raise ValueError("--tune-trials must be >= 0")
    if getattr(args, "stack", None) is not None and args.stack < 1:
        raise ValueError(f"--stack must be at least 1 (1: every run alone), got {args.stack}")
    filters = Filters(tasks=Filters.parse_list(args.tasks), methods=Filters.parse_list(args.methods),
                      models=Filters.parse_list(args.models), seeds=args.seeds, max_steps=args.max_steps)
    options = RunOptions(results_dir=Path(args.results_dir), data_dir=resolve_data_dir(args.data_dir),
                         executor=args.executor, address=args.address, num_cpus=args.num_cpus,
                         cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
                         timeout_per_run=args.timeout_per_run, timeout_grace=args.timeout_grace,
                         tune_trials=args.tune_trials, force=args.force, retry_failed=args.retry_failed,
                         max_retries=args.max_retries, progress=not args.no_progress, tune_only=tune_only,
                         stop_after=args.stop_after,
                         stack=1 if getattr(args, "no_stack", False) else getattr(args, "stack", RunOptions.stack))
    return filters, options


def print_summary(summary: RunSummary, results_dir: Path, *, stream=None) -> None:
    """The closing lines: notes, counts, then every non-ok outcome grouped by status and reason."""
    from harness.progress import problem_lines

    stream = stream or sys.stderr

    for note in summary.notes:
        print(f"note: {note}", file=stream)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items())) or "nothing new"
    print(f"{summary.planned} planned, {summary.already_done} already in {results_dir}, {summary.to_run} run: "
          f"{counts} ({summary.seconds:.1f} s)", file=stream)
    lines = problem_lines(summary.problems)
    if lines:
        print("not ok:", file=stream)
        for line in lines:
            print(f"  {line}", file=stream)
    if summary.interrupted:
        print("interrupted: finished runs are saved; run the same command again to resume", file=stream)
    elif summary.stopped_at_limit:
        print("stopped at --stop-after: finished runs are saved; run the same command again to resume", file=stream)
    elif not summary.succeeded:
        print("no planned run succeeded (exit status 1)", file=stream)


def show_leaderboard(results_dir: Path) -> None:
    from harness import leaderboard

    leaderboard.write_leaderboard(results_dir)
    sys.stdout.write(leaderboard.format_leaderboard(leaderboard.leaderboard_for(results_dir)))


def main(args) -> int:
    from harness import interrupts

    # from the start: a SIGTERM while planning or starting Ray is a Ctrl-C too
    restore_signals = interrupts.stop_on_signals()
    try:
        return _main(args)
    except Exception as exc:
        stop = interrupts.stop_requested()
        if stop is None:
            raise
        # a library turned the signal's KeyboardInterrupt into an error of its own (harness.interrupts)
        print(f"ebm-bench: interrupted ({stop} surfaced as {type(exc).__name__}: {exc})", file=sys.stderr)
        return 130
    finally:
        restore_signals()


def _main(args) -> int:
    from harness.progress import Phases

    phases = Phases(enabled=not args.no_progress and not args.dry_run)
    filters, options = options_from_args(args)
    if args.dry_run:
        sys.stdout.write(dry_run(args.suite, filters, options))
        return 0
    summary = run_suite(args.suite, filters, options, phases=phases)
    print_summary(summary, options.results_dir)
    if summary.interrupted:
        return 130
    if summary.stopped_at_limit:
        return STOPPED_AT_LIMIT
    if not args.no_leaderboard and summary.counts.get("ok", 0) + summary.already_ok:
        show_leaderboard(options.results_dir)
    return 0 if summary.succeeded else 1


def dry_run(suite, filters, options: RunOptions) -> str:
    """The plan, grouped by task × model × configuration: seeds, folds, how many runs, how many
    already stored (and their statuses), plan-time skips with the reason; then the totals.
    Nothing is written."""
    from harness import store
    from harness.dispatch import describe_limit
    from harness.plan import plan_runs, resolve_suite
    from harness.tables import render_table

    suite, filters = resolve_suite(suite, filters)
    plan = plan_runs(suite, filters, data_dir=options.data_dir)
    stored = store.run_statuses(options.results_dir) if Path(options.results_dir, "runs").is_dir() else {}
    trials = suite.tune_trials if options.tune_trials is None else options.tune_trials
    runs_of_plan, tuning_note = _as_tuned(list(plan), trials, options) if trials > 0 else (list(plan), None)
    groups: dict[tuple, list] = {}
    for run in runs_of_plan:
        groups.setdefault((run.spec.task, run.spec.model, config_label(run)), []).append(run)
    rows, to_run, done, at_plan = [], 0, 0, 0
    reasons: dict[str, int] = {}  # plan-time reasons, numbered once (footnotes under the table)
    for (task, model, config), runs in groups.items():
        statuses = Counter(stored[r.run_id] for r in runs if r.run_id in stored and not r.status)
        pending = [r for r in runs if not r.status and needs_run(r, stored, options)]
        skipped = [r for r in runs if r.status]
        to_run, at_plan = to_run + len(pending), at_plan + len(skipped)
        done += len(runs) - len(pending) - len(skipped)
        if skipped:
            number = reasons.setdefault(str(skipped[0].reason), len(reasons) + 1)
            state = f"{skipped[0].status} [{number}]"
        elif not pending:
            state = "stored (" + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) + ")"
        else:
            state = "to run" + (f" ({len(runs) - len(pending)} stored)" if len(pending) < len(runs) else "")
        rows.append([task, model, config, _span(r.spec.seed for r in runs), _span(r.spec.fold for r in runs),
                     len(runs), state])
    lines = [render_table(["task", "model", "config", "seeds", "folds", "runs", "state"], rows,
                          title=f"ebm-bench run --dry-run: suite {suite.name!r} → {options.results_dir}",
                          right=["runs"])]
    lines += [f"[{number}] {reason}\n" for reason, number in reasons.items()]
    lines += [f"note: {note}\n" for note in plan.notes]
    if tuning_note:
        lines.append(tuning_note)
    lines.append(describe_limit(options.stack_for(suite)) + "\n")
    budget = plan[0].spec.budget if plan else {}
    lines.append(f"{len(plan)} planned runs: {to_run} to run, {done} already stored, {at_plan} skipped or "
                 f"unsupported at plan time (budget {', '.join(f'{k}={v}' for k, v in budget.items())})\n")
    return "".join(lines)


def _as_tuned(plan: list, trials: int, options: RunOptions) -> tuple[list, str]:
    """The plan as ``run`` would train it after tuning: each run of a study that the trials
    table shows finished gets the study's best parameters (its tuned run id, which the store may
    hold); the runs of studies still to tune keep their untuned ids, unknown until the study
    ends, so they count as to run. Nothing is written."""
    from harness import tuning

    runnable = [r for r in plan if not r.status]
    best = tuning.finished_best(runnable, options.results_dir, trials)
    studies = {tuning.study_name(r) for r in runnable if tuning.tunable(r.method)}
    tuned = tuning.with_best(plan, best)
    note = (f"tuning first: {trials} Optuna trials per task × model × method; {len(studies & best.keys())} of "
            f"{len(studies)} studies finished (their tuned runs are shown), the runs of the others are counted "
            "to run (a tuned run's id is known when its study ends)\n")
    return tuned, note


def config_label(run) -> str:
    """``method`` or ``method[param=value,...]`` for the suite's fixed hyperparameters
    (benchopt style); the plan's own label when it has one."""
    label = getattr(run, "config", None) or getattr(run.spec, "config", None)
    if isinstance(label, str) and label:
        return label
    params = ",".join(f"{k}={v}" for k, v in sorted(run.overrides.items()))
    return f"{run.spec.method}[{params}]" if params else run.spec.method


def _span(values) -> str:
    """0..4 for a contiguous set of ints, else a comma list."""
    values = sorted(set(values))
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return ",".join(map(str, values))
