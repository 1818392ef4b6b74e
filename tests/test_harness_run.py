"""The run driver (serial executor): failure rows, resume, --force / --retry-failed, a driver
killed mid-suite, two drivers on one results dir, and the CLI's fast start and messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import store
from harness.commands.run import run_suite
from harness.plan import Filters, plan_runs
from harness.suites import load_suite
from harness_fixtures import serial_options as _serial
from harness_fixtures import write_suite

ROOT = Path(__file__).resolve().parent.parent
#: the CLI in a real process, with the fixture methods registered
CLI = [sys.executable, str(ROOT / "tests" / "fixture_cli.py")]


def _cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, **kw)


def test_failures_become_rows_and_suite_completes(tmp_path):
    suite = write_suite(tmp_path, methods=("test-raises", "test-diverge", "test-constant"), seeds=2)
    summary = run_suite(suite, options=_serial(tmp_path / "results"))
    runs = store.read_table(tmp_path / "results", "runs").set_index("method")
    assert summary.counts == {"failed": 2, "diverged": 2, "ok": 2}
    failed = runs.loc["test-raises"]
    assert set(failed["error"]) == {"ValueError: fixture failure"}
    assert all("fixture failure" in tb for tb in failed["traceback"])
    assert set(runs.loc["test-diverge", "status"]) == {"diverged"}
    ok = runs.loc["test-constant"]
    assert set(ok["status"]) == {"ok"} and ok["test_f1_example"].notna().all() and ok["test_nll"].notna().all()
    assert ok["kl_to_truth"].notna().all() and (ok["n_steps"] == 20).all()
    curves = store.read_table(tmp_path / "results", "curves")
    assert set(curves["run_id"]) == set(ok["run_id"])
    assert set(curves["step"]) == {10, 20} and set(curves["split"]) == {"train", "val"}
    manifest = (tmp_path / "results" / "manifest.json").read_text()
    assert '"git_sha"' in manifest and '"command_line"' in manifest and '"finished"' in manifest


def test_constant_fixture_predicts_the_most_frequent_label_set(tmp_path):
    """Independent check of the metrics path: the fixture's test F1 equals the F1 of always
    predicting the most frequent training row, computed here with numpy."""
    import numpy as np

    from tasks.registry import get_task

    suite = write_suite(tmp_path, methods=("test-constant",))
    run_suite(suite, options=_serial(tmp_path / "r"))
    row = store.read_table(tmp_path / "r", "runs").iloc[0]
    data = get_task("syn-ising-k8").load(None, seed=0, fold=0, val_fraction=0.2)
    rows, counts = np.unique(data.y_train, axis=0, return_counts=True)
    guess = rows[counts.argmax()]
    tp = (data.y_test * guess).sum(1)
    denominator = data.y_test.sum(1) + guess.sum()
    f1 = np.where(denominator == 0, 1.0, 2 * tp / np.maximum(denominator, 1))
    assert row["test_f1_example"] == pytest.approx(f1.mean(), abs=1e-12)
    assert row["test_hamming"] == pytest.approx((data.y_test != guess).mean(), abs=1e-12)


def test_resume_runs_only_the_missing_runs(tmp_path):
    suite = load_suite(write_suite(tmp_path, methods=("test-constant", "test-raises"), seeds=3))
    first = run_suite(suite, Filters(seeds=1), _serial(tmp_path / "r"))          # "stopped" after seed 0
    assert first.to_run == 2
    second = run_suite(suite, options=_serial(tmp_path / "r"))
    assert (second.to_run, second.already_done) == (4, 2)
    third = run_suite(suite, options=_serial(tmp_path / "r"))
    assert third.to_run == 0
    uninterrupted = run_suite(suite, options=_serial(tmp_path / "u"))
    resumed = store.read_table(tmp_path / "r", "runs")
    assert len(resumed) == len(uninterrupted_rows := store.read_table(tmp_path / "u", "runs")) == 6
    assert set(resumed["run_id"]) == set(uninterrupted_rows["run_id"]) == {p.run_id for p in plan_runs(suite)}
    assert uninterrupted.to_run == 6
    # --retry-failed re-runs the failed rows only; --force everything
    assert run_suite(suite, options=_serial(tmp_path / "r", retry_failed=True)).to_run == 3
    assert run_suite(suite, options=_serial(tmp_path / "r", force=True)).to_run == 6
    assert len(store.read_table(tmp_path / "r", "runs")) == 6


def test_an_interrupted_run_counts_what_finished_before_the_interrupt(tmp_path):
    """SIGINT (Ctrl-C) mid-suite to a real driver: it exits 130, and the manifest counts exactly
    the runs already on disk (it once said "nothing new" while the progress bar showed them ok)."""
    import json

    suite = write_suite(tmp_path, methods=("test-sleep",), seeds=10, params="{ test-sleep = { seconds = 0.5 } }")
    results = tmp_path / "r"
    args = [*CLI, "run", "--suite", str(suite), "--executor", "serial",
            "--results-dir", str(results), "--no-progress", "--no-leaderboard"]
    # SIGINT as a terminal's Ctrl-C delivers it: a background parent (CI under nohup) leaves it
    # ignored, and an ignored SIGINT is inherited, so the child gets the default disposition back
    driver = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list((results / "runs").glob("part-*"))) < 2:
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=60) == 130, driver.stderr.read()
    stored = len(store.read_table(results, "runs", on_corrupt="raise"))
    assert 2 <= stored < 10
    invocation = json.loads((results / "manifest.json").read_text())["invocations"][-1]
    assert invocation["status"] == "interrupted" and invocation["counts"] == {"ok": stored}


def test_driver_killed_mid_suite_then_resumed(tmp_path):
    suite = write_suite(tmp_path, methods=("test-sleep",), seeds=6, params="{ test-sleep = { seconds = 0.4 } }")
    results = tmp_path / "r"
    args = [*CLI, "run", "--suite", str(suite), "--executor", "serial",
            "--results-dir", str(results), "--no-progress", "--no-leaderboard"]
    driver = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list((results / "runs").glob("part-*"))) < 2:
        time.sleep(0.05)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    done_before = store.completed_run_ids(results, on_corrupt="raise")
    assert 2 <= len(done_before) < 6
    resumed = _cli("run", "--suite", str(suite), "--executor", "serial", "--results-dir", str(results),
                   "--no-progress", "--no-leaderboard")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{6 - len(done_before)} run" in resumed.stderr
    raw = store.read_arrow(results, "runs", on_corrupt="raise")
    planned = {p.run_id for p in plan_runs(load_suite(suite))}
    assert sorted(raw["run_id"].to_pylist()) == sorted(planned)  # exactly the plan: no duplicate, none lost


def test_two_drivers_on_one_results_dir(tmp_path):
    suite = write_suite(tmp_path, methods=("test-constant", "test-raises"), seeds=4)
    results = tmp_path / "r"
    args = [*CLI, "run", "--suite", str(suite), "--executor", "serial",
            "--results-dir", str(results), "--no-progress", "--no-leaderboard"]
    drivers = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for driver in drivers:
        assert driver.wait(timeout=120) == 0, driver.stderr.read()
    runs = store.read_table(results, "runs", on_corrupt="raise")  # no corrupt file
    assert sorted(runs["run_id"]) == sorted(p.run_id for p in plan_runs(load_suite(suite)))
    assert len(store.read_arrow(results, "runs")) == 8  # claims: each run by one driver only


def test_cli_help_is_light():
    code = ("import sys, harness.cli as c; c.build_parser().format_help(); "
            "heavy = [m for m in ('torch', 'ray', 'optuna', 'duckdb', 'matplotlib', 'pandas') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
    assert "run" in _cli("--help").stdout


@pytest.mark.parametrize("args, message", [
    (["run", "--suite", "quik"], "did you mean 'quick'"),
    (["run", "--methods", "minmin-logistc"], "did you mean 'minmin-logistic'"),
    (["run", "--tasks", "syn-isin-k8"], "did you mean 'syn-ising-k8'"),
])
def test_cli_bad_names(args, message, tmp_path):
    out = _cli(*args, "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_cli_malformed_suite_and_unwritable_dir(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[suite]\nseeds = 2\n[[grid]\n")
    out = _cli("run", "--suite", str(bad), "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 2 and "line 3" in out.stderr
    (tmp_path / "file").write_text("")
    out = _cli("run", "--suite", str(write_suite(tmp_path)), "--results-dir", str(tmp_path / "file" / "r"))
    assert out.returncode == 2 and "not writable" in out.stderr


def test_nan_features_give_a_failed_row_naming_the_problem(tmp_path, monkeypatch):
    import numpy as np

    from harness.worker import execute_run
    from tasks.registry import get_task

    run = plan_runs(load_suite(write_suite(tmp_path)))[0]
    data = get_task("syn-ising-k8").load(None, seed=0, fold=0, val_fraction=0.2)
    data.x_train[3, 2] = np.nan
    row = execute_run(run, run.method, data).row
    assert row["status"] == "failed" and "NaN/inf" in row["error"] and "row 3, column 2" in row["error"]


def test_test_metrics_audit_tau_against_the_nll_log_partition():
    """The τ audit and the NLL of a sampled space (pairwise k = 20: 2^20 label sets, importance
    sampling) read one log Z(x) estimate, the NLL's seeded draws: tau_mae is mean |τ − log Z| with
    the log Z of an independent call on the evaluator's seed, and the NLL is unchanged by the sharing."""
    import numpy as np
    import torch

    from baselines.registry import get_method
    from ebm.method import Budget
    from ebm.spaces import make_space
    from harness.perf.common import random_fit_data
    from harness.worker import TAU_INPUTS, _Evaluator, _test_metrics

    k, seed = 20, 11
    space = make_space("multilabel", k, "pairwise")
    data = random_fit_data(k, n=96, d=8, seed=3)
    fitted = get_method("minmin-logistic").fit(space, "pairwise", data, {"hidden": 16}, Budget(max_steps=5),
                                               seed=0, device=torch.device("cpu"))
    x, y = data.x_train[:40], data.y_train[:40]
    test = _Evaluator("multilabel", space, x, space.to_labels(y), y, seed)
    values, tau_rows = _test_metrics(fitted, test, x.numpy(), None, "run", seed)

    log_z, _ = fitted.log_partition(x, generator=torch.Generator().manual_seed(seed))
    other, _ = fitted.log_partition(x, generator=torch.Generator().manual_seed(seed + 1))
    tau = fitted.tau_estimate(x[:TAU_INPUTS]).double()
    assert values["tau_mae"] == pytest.approx(float((tau - log_z.double()).abs().mean()), rel=1e-12)
    assert values["tau_mae"] != pytest.approx(float((tau - other.double()).abs().mean()), rel=1e-9)  # draws matter
    plotted = [row["value"] for row in tau_rows if row["metric"] == "logz"]  # the τ plot's log Z
    assert plotted == pytest.approx(log_z.double().tolist(), rel=1e-12)
    nll, _ = fitted.nll(x, y, generator=torch.Generator().manual_seed(seed))  # estimated on its own
    assert values["nll"] == pytest.approx(float(nll.mean()), rel=1e-12)
    assert np.isfinite(values["nll_stderr"]) and values["nll_stderr"] > 0


def test_test_metrics_of_the_constant_floor():
    """The constant floor's test NLL through the worker is −log q(y) (its g ≡ 0, log Z = 0), with
    the log Z shared with the τ audit going through its own ``nll``."""
    import torch

    from baselines.registry import get_method
    from ebm.method import Budget
    from ebm.spaces import make_space
    from harness.perf.common import random_fit_data
    from harness.worker import _Evaluator, _test_metrics

    k = 20
    space = make_space("multilabel", k, "unary")
    data = random_fit_data(k, n=64, d=8, seed=3)
    fitted = get_method("constant").fit(space, "unary", data, {}, Budget(max_steps=1), seed=0,
                                        device=torch.device("cpu"))
    x, y = data.x_train[:30], data.y_train[:30]
    values, _ = _test_metrics(fitted, _Evaluator("multilabel", space, x, space.to_labels(y), y, 1), x.numpy(), None,
                              "run", 1)
    # its q: independent Bernoullis at the training label frequencies (clipped to [0.01, 0.99])
    frequency = data.y_train.double().mean(0).clamp(0.01, 0.99)
    log_q = (y.double() * frequency.log() + (1 - y.double()) * (1 - frequency).log()).sum(-1)
    assert values["nll"] == pytest.approx(float(-log_q.mean()), rel=1e-5)
    assert values["nll_stderr"] == 0 and values["tau_mae"] is None


def test_stop_after_reads_durations_and_refuses_others_in_one_line():
    import argparse

    from harness.commands.run import parse_duration

    assert [parse_duration(text) for text in ("5400", "90m", "2h", "1.5h", "30s", " 2H ")] == \
        [5400.0, 5400.0, 7200.0, 5400.0, 30.0, 7200.0]
    for text, problem in (("0", "positive"), ("-1h", "positive"), ("nan", "positive"), ("inf", "finite"),
                          ("2x", "not a duration"), ("", "not a duration"), ("h", "not a duration")):
        with pytest.raises(argparse.ArgumentTypeError, match=problem) as refused:
            parse_duration(text)
        assert "\n" not in str(refused.value)
