"""Benchmark ``throughput``: finished runs per hour on a fixed mini-grid, with and without
stacking (several seeds of one configuration trained as one stacked model), side by side.

Each contender is a full ``run_suite`` (planning, shared task data, execution on a local Ray
instance with 2 workers, evaluation, durable Parquet writes) of the same grid into a fresh
results directory: every registered method on a multilabel and a ranking task, seeds 5,
300 steps (the issue's mini-grid: yeast/unary and lr-glass/permutahedron with the data sets;
without them syn-ising-k8/unary and syn-pl-k6/permutahedron). ``--quick``: 3 seeds, 60 steps,
the synthetic tasks. Ray start-up is paid outside the timed suite (as in ``harness``).

Contenders: ``unstacked`` (every run alone: the old path), ``stacked`` (up to 5 seeds of one
configuration per job: the same runs, the same work), and ``stacked+patience`` (stacked, and a run
stops after as many evaluations without a better validation score as the ``paper`` suite's budget
says: less work per run, different selected models, so it is shown beside the goal, not judged by it).

Rows: ``runs_per_hour`` (ok runs / the driver's wall seconds × 3600) of each contender relative to
``unstacked`` (goal for ``stacked``: ≥ 3×), and ``wall_seconds``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from harness.perf.common import PerfConfig, interleaved, perf_rows

SUITE_TOML = """
[suite]
name = "perf-throughput"
seeds = {seeds}
tune_trials = 0

[budget]
max_steps = {steps}
batch_size = 64
eval_every = {eval_every}
{patience}

[[grid]]
tasks = ["{multilabel}"]
models = ["unary"]
methods = ["*"]

[[grid]]
tasks = ["{ranking}"]
models = ["permutahedron"]
methods = ["*"]
"""
#: (multilabel task, ranking task) with the data sets, and without
REAL_TASKS, BUNDLED_TASKS = ("yeast", "lr-glass"), ("syn-ising-k8", "syn-pl-k6")


@dataclass(frozen=True)
class Contender:
    """How the mini-grid is run: ``stack`` (RunOptions.stack: the most seeds of one configuration
    trained as one job) and whether runs stop early with the ``paper`` suite's ``patience``."""

    stack: int
    paper_patience: bool = False


CONTENDERS = {"unstacked": Contender(1), "stacked": Contender(5), "stacked+patience": Contender(5, True)}
WORKERS = 2


def mini_grid_tasks(config: PerfConfig) -> tuple[str, str]:
    """The issue's tasks when their files are in the data directory (not in ``--quick``)."""
    from tasks.registry import get_task

    if config.quick or any(get_task(name).available(config.data_dir) is not None for name in REAL_TASKS):
        return BUNDLED_TASKS
    return REAL_TASKS


def throughput_suite(config: PerfConfig, tasks: tuple[str, str], patience: int | None = None):
    from harness.suites import parse_suite

    seeds, steps = (3, 60) if config.quick else (5, 300)
    text = SUITE_TOML.format(seeds=seeds, steps=steps, eval_every=max(steps // 10, 1), multilabel=tasks[0],
                             ranking=tasks[1], patience="" if patience is None else f"patience = {patience}")
    return parse_suite(text, source="<perf throughput>")


def _patience(contender: Contender) -> int | None:
    from harness.suites import load_suite

    return load_suite("paper").budget.get("patience") if contender.paper_patience else None


def suite_outcome(config: PerfConfig, tasks: tuple[str, str], contender: Contender) -> tuple[float, int]:
    """(wall seconds, ok runs) of the mini-grid run on a fresh local Ray instance."""
    import ray

    from harness.commands.run import RunOptions, run_suite
    from harness.perf.scaling import start_ray

    with tempfile.TemporaryDirectory(prefix="ebm-perf-throughput-") as results_dir:
        options = RunOptions(results_dir=Path(results_dir), data_dir=config.data_dir, progress=False,
                             executor="ray", cpus_per_run=1.0, stack=contender.stack)
        start_ray(WORKERS)
        try:
            summary = run_suite(throughput_suite(config, tasks, _patience(contender)), None, options)
        finally:
            ray.shutdown()
    return summary.seconds, int(summary.counts.get("ok", 0))


def run(config: PerfConfig) -> tuple[list[dict[str, Any]], list[str]]:
    import ray

    if ray.is_initialized():
        return [], ["throughput skipped: Ray is already running in this process (the benchmark starts its own)"]
    tasks = mini_grid_tasks(config)
    samples = interleaved({name: partial(suite_outcome, config, tasks, contender)
                           for name, contender in CONTENDERS.items()}, 1)
    oks = {name: values[0][1] for name, values in samples.items()}
    if len(set(oks.values())) != 1 or not next(iter(oks.values())):
        raise RuntimeError(f"throughput benchmark: the contenders finished different numbers of ok runs: {oks}")
    seconds = {name: [values[0][0]] for name, values in samples.items()}
    per_hour = {name: [oks[name] / s[0] * 3600.0] for name, s in seconds.items()}
    ids: dict[str, Any] = {"task": "+".join(tasks), "model": "unary+permutahedron", "k": None}
    rows = perf_rows(config, "throughput", "runs_per_hour", "runs/h", per_hour, reference="unstacked", **ids)
    rows += perf_rows(config, "throughput", "wall_seconds", "s", seconds, reference="unstacked", **ids)
    suite = throughput_suite(config, tasks)
    note = (f"throughput: {oks['stacked']} ok runs per contender ({', '.join(tasks)}, every method, "
            f"{suite.seeds} seeds, {suite.budget['max_steps']} steps), Ray {WORKERS} workers")
    return rows, [note]
