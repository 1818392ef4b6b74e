"""Faults the pipeline tests (tests/test_harness_*.py) do not already cover: a corrupt results
file and a crashed write met by a resuming driver, concurrent perf writers, and bad inputs that
must each give a clear message (unknown model, k beyond the exact limit, NaN/inf features in a
user task). Dying workers, SIGKILLed drivers, two drivers and malformed TOML are in
test_harness_run.py / test_harness_ray.py."""

from __future__ import annotations

import multiprocessing
import warnings
from pathlib import Path

import pytest

from harness import store
from harness.commands.run import run_suite
from harness.plan import Filters, plan_runs
from harness.suites import load_suite
from harness_fixtures import serial_options as _serial

SUITE = """
[suite]
name = "faults"
seeds = {seeds}

[budget]
max_steps = 10
batch_size = 16
eval_every = 10

[[grid]]
tasks = ["{task}"]
models = ["{model}"]
methods = {methods}
params = {params}
{extra}
"""


def _suite(directory: Path, *, methods=("test-constant",), seeds: int = 1, task: str = "syn-ising-k8",
           model: str = "unary", params: str = "{}", extra: str = "") -> Path:
    path = directory / "suite.toml"
    listed = "[" + ", ".join(f'"{m}"' for m in methods) + "]"
    path.write_text(SUITE.format(seeds=seeds, task=task, model=model, methods=listed, params=params, extra=extra))
    return path


def test_corrupt_runs_file_and_crashed_write_on_resume(tmp_path, capsys):
    """A part file truncated after the fact and a temp file left by a write that never finished:
    the resuming driver warns naming the bad file, re-runs exactly the runs whose rows it cannot
    read, ignores the temp file; afterwards every planned run has one readable row."""
    suite = load_suite(_suite(tmp_path, seeds=4))
    results = tmp_path / "r"
    run_suite(suite, Filters(seeds=2), _serial(results))          # one part file per run: seeds 0, 1
    run_suite(suite, None, _serial(results))                      # then seeds 2, 3
    parts = sorted((results / "runs").glob("part-*.parquet"))
    assert len(parts) == 4
    lost = set(store.read_table(results, "runs").query("seed < 2")["run_id"])
    for part in parts[:2]:
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    first = parts[0]
    (results / "runs" / ".tmp-crashed.parquet").write_bytes(b"PAR1 half a file")

    with pytest.warns(RuntimeWarning, match=first.name):
        summary = run_suite(suite, None, _serial(results))
    assert (summary.to_run, summary.already_done) == (2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        readable = store.read_arrow(results, "runs")["run_id"].to_pylist()
    assert sorted(readable) == sorted(p.run_id for p in plan_runs(suite))  # no duplicate, none lost
    assert lost <= set(readable)

    from harness.cli import main

    assert main(["query", "select count(*) as n from runs", "--results-dir", str(results), "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == ["n", "4"] and first.name in captured.err and ".tmp-" not in captured.err


def _perf_writer(directory: str, prefix: str, n: int) -> None:
    for i in range(n):
        store.append_rows(directory, "perf", [{"benchmark": f"{prefix}{i}", "value": float(i)}])


def test_two_perf_writers_lose_nothing(tmp_path):
    """Two perf invocations appending into one results dir at once: every row is in the part
    files, and no file (parts or the perf.parquet mirror) is ever corrupt."""
    import pyarrow.parquet as pq

    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(_perf_writer, [str(tmp_path)] * 2, ["x", "y"], [12, 12], timeout=60))  # re-raises failures
    parts = store.read_table(tmp_path, "perf", on_corrupt="raise")
    assert sorted(parts["benchmark"]) == sorted(f"{p}{i}" for p in "xy" for i in range(12))
    mirror = pq.read_table(tmp_path / "perf.parquet")["benchmark"].to_pylist()
    # each append rewrites the mirror from the parts it sees: whole, and the last rewrite saw at
    # least all of its own writer's rows (it may miss a row the other wrote meanwhile)
    assert set(mirror) <= set(parts["benchmark"]) and len(mirror) >= 12


def test_unknown_model_gets_did_you_mean(tmp_path, capsys):
    from harness.cli import main

    assert main(["run", "--models", "pairwse", "--executor", "serial", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'pairwse'" in err and "did you mean 'pairwise'" in err and "Traceback" not in err


def test_k_beyond_the_exact_limit_is_a_skipped_row_with_its_reason(tmp_path):
    """exact-mle limited to |Y| <= 128 on an 8-label pairwise task (|Y| = 256): a skipped row that
    says why; the rest of the suite runs."""
    suite = _suite(tmp_path, methods=("exact-mle", "test-constant"), model="pairwise",
                   params="{ exact-mle = { max_subsets = 128 } }")
    summary = run_suite(suite, None, _serial(tmp_path / "r"))
    runs = store.read_table(tmp_path / "r", "runs").set_index("method")
    assert summary.counts == {"skipped": 1, "ok": 1}
    assert runs.loc["exact-mle", "status"] == "skipped"
    assert "|Y| = 256 exceeds max_subsets = 128" in runs.loc["exact-mle", "error"]
    assert runs.loc["test-constant", "status"] == "ok"


ARFF = """@relation faulty
@attribute f1 numeric
@attribute f2 numeric
@attribute a {0,1}
@attribute b {0,1}
@data
"""


@pytest.mark.parametrize("bad", ["inf", "nan"])
def test_non_finite_features_in_a_user_task_fail_its_runs_with_the_reason(tmp_path, bad):
    rows = [f"{i * 0.1},{(i % 3) * 1.0},{i % 2},{(i // 2) % 2}" for i in range(30)]
    rows[7] = f"{bad},1.0,1,0"
    (tmp_path / "train.arff").write_text(ARFF + "\n".join(rows) + "\n")
    (tmp_path / "test.arff").write_text(ARFF + "\n".join(rows[10:20]) + "\n")
    extra = '[tasks.faulty-task]\nkind = "multilabel"\ntrain = "train.arff"\ntest = "test.arff"\nn_labels = 2\n'
    suite = _suite(tmp_path, seeds=2, task="faulty-task", extra=extra)
    summary = run_suite(suite, None, _serial(tmp_path / "r"))
    runs = store.read_table(tmp_path / "r", "runs")
    assert summary.counts == {"failed": 2} and len(runs) == 2
    for error in runs["error"]:
        assert "loading task data failed" in error and "NaN/inf" in error and "'f1'" in error
