"""Damaged input is named, never a traceback: a results part whose column types conflict with
the schema (skipped with a warning naming it in run / leaderboard / merge / query; ``--strict``
stops), a damaged manifest.json (moved aside), a suite TOML that is not UTF-8, an empty or
header-only ARFF, and hyperparameter values of the wrong type (named ``params.<method>.<name>``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from harness_fixtures import write_suite

from harness import manifest, merge, query, store
from harness.commands.run import RunOptions, run_suite
from harness.plan import plan_runs
from harness.suites import SuiteError, load_suite

ROOT = Path(__file__).resolve().parent.parent
#: the CLI with the test fixture methods registered (tests/fixture_cli.py), in a real process
CLI = [sys.executable, str(ROOT / "tests" / "fixture_cli.py")]


def _serial(results: Path) -> RunOptions:
    return RunOptions(results_dir=results, executor="serial", progress=False)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=180)


#: the driver's phase lines ("ebm-bench: planning (0 s)") say what it is doing; they are not the message
PHASE_LINE = re.compile(r"^ebm-bench: [a-z][^:]* \(\d+ s\)$")


def _one_line(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip() and not PHASE_LINE.match(line)]


@pytest.fixture
def results_with_a_conflicting_part(tmp_path) -> tuple[Path, Path, Path]:
    """A results dir from a real 2-run suite, plus a readable part whose ``seed`` is a string."""
    suite = write_suite(tmp_path, seeds=2)
    results = tmp_path / "results"
    run_suite(suite, options=_serial(results))
    good = min((results / "runs").glob("part-*.parquet"))
    table = pq.read_table(good)
    column = table.schema.get_field_index("seed")
    bad_table = table.set_column(column, pa.field("seed", pa.string()), pa.array(["zero"] * table.num_rows))
    bad_table = bad_table.set_column(table.schema.get_field_index("run_id"), "run_id",
                                     pa.array(["forged"] * table.num_rows))
    bad = results / "runs" / "part-zzzz-seed-as-string.parquet"
    pq.write_table(bad_table, bad)
    return suite, results, bad


def test_schema_conflicting_part_is_named_in_every_reader(results_with_a_conflicting_part, tmp_path):
    from harness import leaderboard

    suite, results, bad = results_with_a_conflicting_part
    expect = f"{bad}.*does not fit the table's schema: column 'seed' is string"
    with pytest.warns(RuntimeWarning, match=expect):
        assert run_suite(suite, options=_serial(results)).to_run == 0   # the run driver (resume index)
    with pytest.warns(RuntimeWarning, match=expect):
        board = leaderboard.leaderboard_for(results)
    assert len(board)
    with pytest.warns(RuntimeWarning, match=expect):
        frame = query.run_query(results, "select count(*) as n from runs")
    assert frame["n"].iloc[0] == 2
    with pytest.warns(RuntimeWarning, match=expect):
        summary = merge.merge_results([results], tmp_path / "merged")
    assert summary.runs == 2
    with pytest.raises(store.CorruptFileError, match=str(bad)):
        store.read_table(results, "runs", on_corrupt="raise")


def test_schema_conflict_on_the_command_line(results_with_a_conflicting_part):
    """One ``warning:`` line naming the file and the answer; with --strict one error line, exit 2."""
    _suite, results, bad = results_with_a_conflicting_part
    out = _cli("leaderboard", "--results-dir", str(results), "--no-write", "--format", "csv")
    assert out.returncode == 0, out.stderr
    warning_lines = [line for line in _one_line(out.stderr) if line.startswith("warning:")]
    assert len(warning_lines) == 1 and str(bad) in warning_lines[0] and "Traceback" not in out.stderr
    strict = _cli("leaderboard", "--results-dir", str(results), "--no-write", "--strict")
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    assert len(_one_line(strict.stderr)) == 1 and str(bad) in strict.stderr


@pytest.mark.parametrize("damage", ["binary", "json-list", "directory"])
def test_damaged_manifest_is_moved_aside(tmp_path, damage):
    results = tmp_path / "results"
    results.mkdir()
    path = results / "manifest.json"
    if damage == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    elif damage == "json-list":
        path.write_text("[1, 2, 3]")
    else:
        path.mkdir()
        (path / "inside").write_text("x")
    with pytest.warns(RuntimeWarning, match=f"damaged manifest {path}.*moved aside") as caught:
        run_suite(write_suite(tmp_path), options=_serial(results))
    assert len({str(w.message) for w in caught if "manifest" in str(w.message)}) == 1
    doc = json.loads(path.read_text())
    assert doc["invocations"][-1]["status"] == "finished"
    aside = list(results.glob("manifest.json.damaged-*"))
    assert len(aside) == 1 and (aside[0].is_dir() == (damage == "directory"))
    assert not list(results.rglob(".tmp-*"))


def test_damaged_manifest_read_only_is_named(tmp_path):
    (tmp_path / "manifest.json").write_bytes(b"\xff\xfe\x00")
    with pytest.warns(RuntimeWarning, match=f"damaged manifest {tmp_path / 'manifest.json'}.*not UTF-8"):
        assert manifest.read_manifest(tmp_path) == {}
    assert (tmp_path / "manifest.json").exists()  # a reader does not move anything


def test_non_utf8_suite_names_the_file(tmp_path):
    path = write_suite(tmp_path)
    path.write_bytes(path.read_bytes().replace(b'name = "fixture"', b'name = "fixt\xe9re"'))
    with pytest.raises(SuiteError, match=f"^{path}: not UTF-8 text .*line 3"):
        load_suite(path)
    out = _cli("run", "--suite", str(path), "--executor", "serial", "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 2 and len(_one_line(out.stderr)) == 1 and str(path) in out.stderr


ARFF_HEADER = ("@relation r\n@attribute f1 numeric\n@attribute f2 numeric\n@attribute a {0,1}\n"
               "@attribute b {0,1}\n@data\n")


@pytest.mark.parametrize("content, message", [("", "empty file"), (ARFF_HEADER, "no data rows")])
def test_empty_or_header_only_arff_names_the_file(tmp_path, content, message):
    """A user task whose train file is empty or header-only: its runs fail with a reason naming
    the file (not an error deep in training)."""
    train = tmp_path / "train.arff"
    train.write_text(content)
    suite = tmp_path / "suite.toml"
    suite.write_text('[suite]\nname = "d"\nseeds = 1\n[budget]\nmax_steps = 5\nbatch_size = 4\neval_every = 5\n'
                     '[[grid]]\ntasks = ["bad-task"]\nmodels = ["unary"]\nmethods = ["test-constant"]\n'
                     '[tasks.bad-task]\nkind = "multilabel"\ntrain = "train.arff"\nn_labels = 2\n')
    try:
        run_suite(suite, options=_serial(tmp_path / "r"))
    except (ValueError, SuiteError) as exc:  # found while planning: one message naming it
        assert str(train) in str(exc) and message in str(exc)
        return
    rows = store.read_table(tmp_path / "r", "runs")
    assert (rows["status"] == "failed").all()
    for error in rows["error"]:
        assert str(train) in error and message in error


@pytest.mark.parametrize("value, shown", [("inf", "inf"), ("true", "True"), ("-0.5", "-0.5"), ('"fast"', "'fast'")])
def test_hyperparameter_values_are_checked_by_type(tmp_path, value, shown):
    suite = write_suite(tmp_path, methods=("minmin-logistic",), params=f"{{ minmin-logistic = {{ lr = {value} }} }}")
    with pytest.raises(SuiteError, match=f"params.minmin-logistic.lr must be a finite positive number, got {shown}$"):
        plan_runs(load_suite(suite))
    out = _cli("run", "--suite", str(suite), "--executor", "serial", "--results-dir", str(tmp_path / "r"))
    assert out.returncode == 2 and len(_one_line(out.stderr)) == 1, out.stderr
    assert "params.minmin-logistic.lr must be a finite positive number" in out.stderr


def test_integer_hyperparameter_refuses_a_float(tmp_path):
    suite = write_suite(tmp_path, methods=("minmin-logistic",), params="{ minmin-logistic = { n_samples = 2.5 } }")
    with pytest.raises(SuiteError, match="params.minmin-logistic.n_samples must be a positive integer, got 2.5"):
        plan_runs(load_suite(suite))


def test_a_tuned_value_is_accepted_as_a_fixed_one(tmp_path):
    """rank = 0 (no low-rank coupling) is in the tuning range, so a suite may fix it; −1 is refused."""
    suite = write_suite(tmp_path, methods=("minmin-logistic",), params="{ minmin-logistic = { rank = 0 } }")
    assert {run.spec.params["rank"] for run in plan_runs(load_suite(suite)) if run.spec.method == "minmin-logistic"} == {0}
    suite = write_suite(tmp_path, methods=("minmin-logistic",), params="{ minmin-logistic = { rank = -1 } }")
    with pytest.raises(SuiteError, match="params.minmin-logistic.rank must be a non-negative integer, got -1"):
        plan_runs(load_suite(suite))


def test_no_warning_for_a_clean_results_dir(tmp_path):
    results = tmp_path / "r"
    run_suite(write_suite(tmp_path), options=_serial(results))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.read_table(results, "runs")
        store.read_table(results, "curves")
        manifest.read_manifest(results)
