"""Benchmark ``harness``: the same 16 short runs through the serial executor, Ray with 1 worker
and Ray with 2 workers.

Each contender is a full ``run_suite`` (planning, shared task data, the executor's worker
warm-up, execution, evaluation, Parquet writes) into a fresh results directory; its wall time
is the driver's own clock (``RunSummary.seconds``). Ray is started here (``num_cpus`` = the
worker count) *before* each Ray contender and shut down after it; that start-up is reported
separately (``startup_seconds``), since a user pays it once per suite, not per run.

Rows: ``wall_seconds`` of ``ray-1`` relative to ``serial`` (overhead = ratio − 1; target ≤ 10%)
and of ``ray-2`` relative to ``ray-1`` (speedup = 1 / ratio; target ≥ 1.6× on 2 cores).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from harness.perf.common import PerfConfig, interleaved, median, perf_rows

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


def start_ray(workers: int) -> float:
    """Start a local Ray instance with ``workers`` CPUs whose workers import this checkout; seconds taken."""
    import logging

    import ray

    from harness.executors import _pythonpath

    start = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING,
             runtime_env={"env_vars": {"PYTHONPATH": _pythonpath()}})
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
    reps = 1 if config.quick else 3
    startups: dict[int, list[float]] = {1: [], 2: []}
    samples = interleaved({name: (lambda w=workers: suite_seconds(config, w, startups))
                           for name, workers in CONTENDERS.items()}, reps)
    seconds = {name: median(values) for name, values in samples.items()}
    ids = dict(task=TASK, model="unary+pairwise", k=8)
    rows = perf_rows(config, "harness", "wall_seconds", "s", {"serial": seconds["serial"], "ray-1": seconds["ray-1"]},
                     reference="serial", **ids)
    rows += perf_rows(config, "harness", "wall_seconds", "s", {"ray-2": seconds["ray-2"], "ray-1": seconds["ray-1"]},
                      reference="ray-1", **ids)[:1]
    rows += perf_rows(config, "harness", "startup_seconds", "s",
                      {f"ray-{w}": median(values) for w, values in startups.items()}, **ids)
    return rows, [f"harness: {N_RUNS} runs of {TASK} per contender, {reps} interleaved repetition(s)"]
