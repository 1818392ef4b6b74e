"""Benchmark ``harness``: the same 16 short runs through the serial executor, Ray with 1 worker
and Ray with 2 workers.

Each contender is a full ``run_suite`` (planning, shared task data, execution, evaluation,
Parquet writes) into a fresh results directory; its wall time is the driver's own clock
(``RunSummary.seconds``). For a Ray contender, Ray is started here (``num_cpus`` = the worker
count) and its workers are warmed up (:func:`warm_process` in each; Ray reuses those worker
processes) *before* the suite, and Ray is shut down after it; the serial contender's process is
warmed the same way. That
start-up is a fixed cost per suite, reported on its own (``startup_seconds``) and added back in
``cold_wall_seconds``: 16 short runs would otherwise let a one-off cost of seconds pass for
per-run overhead, which is what matters for a real suite (it runs for minutes).

Rows: ``wall_seconds`` (warm) and ``cold_wall_seconds`` of ``ray-1`` relative to ``serial``
(overhead = ratio − 1; goal ≤ 10% on the warm figure) and of ``ray-2`` relative to ``ray-1``
(speedup = 1 / ratio; goal ≥ 1.6× on 2 cores).
"""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from harness.perf.common import PerfConfig, RowIds, interleaved, median, perf_rows

TASK = "syn-ising-k8"
SUITE_TOML = """
[suite]
name = "perf-harness"
seeds = 2
tune_trials = 0

[budget]
max_steps = {steps}
batch_size = 64
eval_every = {eval_every}

[[grid]]
tasks = ["{task}"]
models = ["unary", "pairwise"]
methods = ["minmin-logistic", "nce", "bce", "mcmc-pcd"]
"""
N_RUNS = 16  # 2 models × 4 methods × 2 seeds
CONTENDERS = {"serial": 0, "ray-1": 1, "ray-2": 2}  # name → Ray workers (0: serial executor)


def perf_suite(config: PerfConfig):
    from harness.suites import parse_suite

    steps = 100 if config.quick else 300
    return parse_suite(SUITE_TOML.format(steps=steps, eval_every=steps // 2, task=TASK), source="<perf harness>")


def warm_process(hold: float = 0.0) -> int:
    """Import what a run imports lazily: the executor's own warm-up (:func:`harness.executors.warm_worker`)
    plus ``torch._dynamo``, which the first optimizer step pulls in (~1.3 s here; warm_worker
    misses it). ``hold`` keeps the worker busy so that concurrent calls land on distinct workers."""
    import torch._dynamo  # noqa: F401

    from harness.executors import warm_worker

    pid = warm_worker()
    time.sleep(hold)
    return pid


def start_ray(workers: int) -> float:
    """Start a local Ray instance with ``workers`` CPUs whose workers import this checkout, and
    warm up ``workers`` worker processes; seconds taken."""
    import logging

    import ray

    from harness.executors import project_pythonpath

    start = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING,
             runtime_env={"env_vars": {"PYTHONPATH": project_pythonpath()}})
    warm = ray.remote(num_cpus=1)(warm_process)
    # ray's remote() overloads type a function whose parameters all have defaults as taking none
    pids = ray.get([warm.remote(0.5) for _ in range(workers)])  # type: ignore[call-arg]
    if len(set(pids)) != workers:
        raise RuntimeError(f"harness benchmark: warmed {len(set(pids))} distinct Ray workers, wanted {workers}")
    return time.perf_counter() - start


def suite_seconds(config: PerfConfig, workers: int, startups: dict[int, list[float]]) -> float:
    """Wall seconds of ``run_suite`` for the perf suite with the given executor."""
    import ray

    from harness.commands.run import RunOptions, run_suite

    with tempfile.TemporaryDirectory(prefix="ebm-perf-harness-") as results_dir:
        options = RunOptions(results_dir=Path(results_dir), data_dir=config.data_dir, progress=False,
                             executor="ray" if workers else "serial", cpus_per_run=1.0)
        if workers:
            startups[workers].append(start_ray(workers))
        try:
            summary = run_suite(perf_suite(config), None, options)
        finally:
            if workers:
                ray.shutdown()
    ok = summary.counts.get("ok", 0)
    if ok != N_RUNS:
        raise RuntimeError(f"harness benchmark: expected {N_RUNS} ok runs, got {dict(summary.counts)}")
    return summary.seconds


def run(config: PerfConfig) -> tuple[list[dict[str, Any]], list[str]]:
    import ray

    if ray.is_initialized():
        return [], ["harness skipped: Ray is already running in this process (the benchmark starts its own)"]
    from tasks.registry import get_task

    for seed in range(2):  # load (and cache) the task data first, so no contender pays for it alone
        get_task(TASK).load(config.data_dir, seed=seed, fold=0, val_fraction=0.2)
    warm_process()
    reps = 1 if config.quick else 3
    startups: dict[int, list[float]] = {1: [], 2: []}
    samples = interleaved({name: partial(suite_seconds, config, workers, startups)
                           for name, workers in CONTENDERS.items()}, reps)
    warm = {name: list(values) for name, values in samples.items()}
    startup = {f"ray-{w}": median(values) for w, values in startups.items()}
    cold = {name: median(warm[name]) + startup.get(name, 0.0) for name in warm}
    ids: RowIds = {"task": TASK, "model": "unary+pairwise", "k": 8}
    rows = []
    for metric, seconds in (("wall_seconds", warm), ("cold_wall_seconds", cold)):
        rows += perf_rows(config, "harness", metric, "s", {"serial": seconds["serial"], "ray-1": seconds["ray-1"]},
                          reference="serial", **ids)
        rows += perf_rows(config, "harness", metric, "s", {"ray-2": seconds["ray-2"], "ray-1": seconds["ray-1"]},
                          reference="ray-1", **ids)[:1]
    rows += perf_rows(config, "harness", "startup_seconds", "s", startup, **ids)
    return rows, [f"harness: {N_RUNS} runs of {TASK} per contender, {reps} interleaved repetition(s)"]
