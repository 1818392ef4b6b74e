"""The command line as a grid (``--tasks/--methods/--models`` without ``--suite``), filters
that match nothing, ``run --dry-run``, and the closing summary and exit status of ``run``."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
from pathlib import Path

import pytest

from harness.commands.run import RunOptions, print_summary, run_suite
from harness.plan import Filters, plan_runs, resolve_suite
from harness.suites import SuiteError, load_suite
from harness_fixtures import write_suite

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args, **kw) -> subprocess.CompletedProcess:
    """The CLI in a real process, with the test fixture methods registered (tests/fixture_cli.py)."""
    return subprocess.run([sys.executable, str(ROOT / "tests" / "fixture_cli.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False, **kw)


def _grid(tmp_path, **filters):
    suite, filters = resolve_suite(None, Filters(**filters))
    return suite, plan_runs(suite, filters, data_dir=tmp_path)


def test_method_glob_expands_over_every_registered_method(tmp_path):
    from baselines.registry import list_methods
    from ebm.spaces import MODELS

    suite, plan = _grid(tmp_path, tasks=("syn-ising-k8",), methods=("minmin-*",))
    expected = {m.name for m in list_methods() if fnmatch.fnmatchcase(m.name, "minmin-*")}
    assert len(expected) > 2 and {p.spec.method for p in plan} == expected
    assert {p.spec.model for p in plan} == set(MODELS["multilabel"])  # every model of the task's kind
    quick = load_suite("quick")
    assert {p.spec.seed for p in plan} == set(range(quick.seeds))
    assert all(p.spec.budget == quick.budget for p in plan)
    assert len(plan) == len(expected) * len(MODELS["multilabel"]) * quick.seeds


def test_readme_grid_example_plans_named_task_without_data_as_skipped(tmp_path):
    from ebm.spaces import MODELS
    from tasks.registry import list_tasks

    suite, plan = _grid(tmp_path, tasks=("syn-*", "yeast"), methods=("minmin-*", "exact-mle"), models=("pairwise",),
                        seeds=3)
    assert {p.spec.task for p in plan} == {"syn-ising-k8", "syn-ising-k12", "syn-ising-k16", "yeast"}
    assert {p.spec.model for p in plan} == {"pairwise"} and {p.spec.seed for p in plan} == {0, 1, 2}
    yeast = [p for p in plan if p.spec.task == "yeast"]
    assert yeast and all(p.status == "skipped" and "data not available" in p.reason for p in yeast)
    assert all(p.status is None for p in plan if p.spec.task != "yeast")
    # the permutation tasks syn-* also matched have no pairwise model: said, not dropped silently
    ranking = [t.name for t in list_tasks() if t.name.startswith("syn-") and t.kind == "ranking"]  # registry order
    assert ranking and plan.notes == [f"ranking tasks left out: --models 'pairwise' selects none of their models "
                                      f"({', '.join(MODELS['ranking'])}): {', '.join(ranking)}"]


def test_without_flags_the_quick_suite_runs(tmp_path):
    suite, filters = resolve_suite(None, Filters())
    assert suite.name == "quick" and filters == Filters()


@pytest.mark.parametrize("suite, filters, message", [
    ("quick", dict(tasks=("syn-ising-k8",), methods=("minmin-finite",)),
     r"--methods 'minmin-finite' matches no method of suite 'quick'.*minmin-logistic"),
    ("quick", dict(tasks=("yeast",)), r"--tasks 'yeast' matches no task of suite 'quick'.*syn-ising-k8"),
    (None, dict(tasks=("sk-iris-ranking",), models=("pairwise",)),
     r"--models 'pairwise' matches no model .*permutahedron"),
    (None, dict(tasks=("nothing-*",)), r"--tasks 'nothing-\*' matches nothing"),
    (None, dict(tasks=("syn-ising-k8",), methods=("zz-*",)), r"--methods 'zz-\*' matches nothing"),
])
def test_a_filter_matching_nothing_is_named(tmp_path, suite, filters, message):
    with pytest.raises(SuiteError, match=message):
        resolved, flt = resolve_suite(suite, Filters(**filters))
        plan_runs(resolved, flt, data_dir=tmp_path)


def test_suite_help_names_every_built_in_suite():
    from harness.cli import build_parser
    from harness.suites import BUILTIN_SUITES

    parser = build_parser()
    for command in ("run", "tune"):
        action = next(a for a in parser._subparsers._group_actions[0].choices[command]._actions
                      if "--suite" in a.option_strings)
        named = [name.strip() for name in action.help.split(";")[0].split("|")]
        assert named == [*BUILTIN_SUITES, "PATH.toml"], (command, action.help)
    for name in BUILTIN_SUITES:  # and each name it offers loads
        assert load_suite(name).name == name


def test_dry_run_groups_the_plan_and_writes_nothing(tmp_path):
    results = tmp_path / "results"
    args = ("run", "--dry-run", "--tasks", "syn-ising-k8,yeast", "--methods", "bce,test-constant", "--models",
            "unary", "--results-dir", str(results), "--data-dir", str(tmp_path), "--max-steps", "5")
    out = _cli(*args)
    assert out.returncode == 0, out.stderr
    assert "8 planned runs: 4 to run, 0 already stored, 4 skipped or unsupported at plan time" in out.stdout
    assert "skipped [1]" in out.stdout and "[1] data not available" in out.stdout
    assert not results.exists()
    # after running part of it, the dry run says what is stored
    ran = _cli("run", "--tasks", "syn-ising-k8", "--methods", "test-constant", "--models", "unary", "--executor",
               "serial", "--results-dir", str(results), "--max-steps", "5", "--no-progress", "--no-leaderboard")
    assert ran.returncode == 0, ran.stderr
    out = _cli(*args)
    assert "8 planned runs: 2 to run, 2 already stored, 4 skipped" in out.stdout
    assert "stored (ok 2)" in out.stdout


def test_summary_groups_non_ok_runs_and_exit_status(tmp_path, capsys):
    suite = write_suite(tmp_path, methods=("test-raises", "test-diverge"), seeds=2)
    options = RunOptions(results_dir=tmp_path / "r", executor="serial", progress=False)
    summary = run_suite(suite, options=options)
    assert not summary.succeeded
    print_summary(summary, options.results_dir)
    err = capsys.readouterr().err
    assert "failed 2: test-raises on syn-ising-k8 (unary) — ValueError: fixture failure" in err
    assert "diverged 2: test-diverge on syn-ising-k8 (unary)" in err
    assert "no planned run succeeded" in err
    # the CLI says so with exit status 1; a suite with one ok run exits 0
    out = _cli("run", "--suite", str(suite), "--executor", "serial", "--results-dir", str(tmp_path / "r2"),
               "--no-progress")
    assert out.returncode == 1 and "failed 2: test-raises" in out.stderr
    ok_suite = write_suite(tmp_path, methods=("test-raises", "test-constant"), name="ok.toml")
    out = _cli("run", "--suite", str(ok_suite), "--executor", "serial", "--results-dir", str(tmp_path / "r3"),
               "--no-progress", "--no-leaderboard")
    assert out.returncode == 0 and "failed 1: test-raises" in out.stderr


def test_plan_time_skips_are_summarised_with_their_reason(tmp_path):
    suite, flt = resolve_suite(None, Filters(tasks=("yeast", "syn-ising-k8"), methods=("test-constant",),
                                             models=("unary",), seeds=1, max_steps=5))
    summary = run_suite(suite, flt, RunOptions(results_dir=tmp_path / "r", data_dir=tmp_path, executor="serial",
                                               progress=False))
    from harness.progress import problem_lines

    lines = problem_lines(summary.problems)
    assert summary.succeeded and len(lines) == 1
    assert lines[0].startswith("skipped 1: test-constant on yeast (unary) — data not available")
