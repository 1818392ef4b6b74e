"""The Ray executor on the session's local Ray instance: a real small run, a worker that dies,
a run past its timeout."""

from __future__ import annotations

import time

import pytest

from harness import store
from harness.commands.run import RunOptions, run_suite
from harness_fixtures import write_suite

pytestmark = pytest.mark.ray


def _ray(results_dir, **kw) -> RunOptions:
    return RunOptions(results_dir=results_dir, executor="ray", progress=False, **kw)


def test_small_ray_run_with_a_real_method_and_a_dying_worker(ray_session, tmp_path):
    suite = write_suite(tmp_path, methods=("minmin-logistic", "test-constant", "test-exit", "test-raises"), seeds=1,
                        steps=20, params="{ minmin-logistic = { hidden = 16 } }")
    summary = run_suite(suite, options=_ray(tmp_path / "r", max_retries=0))
    runs = store.read_table(tmp_path / "r", "runs").set_index("method")
    assert summary.counts == {"ok": 2, "failed": 2}
    assert runs.loc["test-exit", "error"].startswith("worker died:")
    assert runs.loc["test-raises", "error"] == "ValueError: fixture failure"
    real = runs.loc["minmin-logistic"]
    assert real["status"] == "ok" and real["n_steps"] == 20 and real["device"] == "cpu"
    assert real["energy_evals"] > 0 and 0 <= real["test_f1_example"] <= 1 and real["tau_mae"] >= 0
    assert ray_session.is_initialized()  # the executor reuses and leaves the session's instance


def test_timeout_row(ray_session, tmp_path):
    suite = write_suite(tmp_path, methods=("test-sleep", "test-constant"), seeds=1,
                        params="{ test-sleep = { seconds = 60 } }")
    summary = run_suite(suite, options=_ray(tmp_path / "r", timeout_per_run=1.0, timeout_grace=1.5))
    runs = store.read_table(tmp_path / "r", "runs").set_index("method")
    assert runs.loc["test-sleep", "status"] == "timeout" and "killed after" in runs.loc["test-sleep", "error"]
    assert runs.loc["test-constant", "status"] == "ok"
    assert summary.seconds < 60  # killed at 1 + 1.5 + the worker start-up allowance


def test_a_job_that_finished_past_its_deadline_is_collected_not_killed(ray_session):
    """Its result arrived before the driver looked again (a busy driver, a late poll): the
    finished work counts; only a job still running at its deadline is cancelled."""
    from harness.executors import Job, RayExecutor

    executor = RayExecutor(num_cpus=2)
    try:
        executor.submit(Job(key="done", fn=pow, args=(2, 10), timeout=1.0))
        executor.submit(Job(key="hung", fn=time.sleep, args=(60,), timeout=1.0))
        time.sleep(2.5)  # both past their deadline; only "done" has its result
        outcomes = {}
        while executor.in_flight:
            outcomes.update((outcome.job.key, outcome) for outcome in executor.wait())
    finally:
        executor.close()
    assert outcomes["done"].ok and outcomes["done"].value == 1024
    assert outcomes["hung"].timed_out and "killed after 1 s" in outcomes["hung"].failure
