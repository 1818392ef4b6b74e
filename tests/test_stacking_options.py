"""Where a run's stacking limit comes from: ``--stack`` / ``--no-stack``, else the suite's
``[suite] stack``, else harness.dispatch.STACK_LIMIT; the rows say what happened."""

from __future__ import annotations

import pytest


def _suite_with_stack(tmp_path, stack: int | None):
    from harness_fixtures import write_suite

    path = write_suite(tmp_path, methods=("bce",), seeds=3, steps=10, eval_every=5)
    if stack is not None:
        path.write_text(path.read_text().replace('[suite]\n', f'[suite]\nstack = {stack}\n', 1))
    return path


@pytest.mark.parametrize("suite_stack, cli_stack, expected", [
    (None, None, 3),   # the default limit (25) stacks the 3 seeds
    (1, None, None),   # the suite says each run alone
    (2, None, 2),      # groups of at most 2: a pair, and one run alone
    (1, 3, 3),         # --stack overrides the suite
])
def test_the_rows_record_the_stacking_the_suite_or_the_flag_asked_for(tmp_path, suite_stack, cli_stack, expected):
    from harness_fixtures import serial_options

    from harness import store
    from harness.commands.run import run_suite

    suite = _suite_with_stack(tmp_path, suite_stack)
    summary = run_suite(suite, options=serial_options(tmp_path / "results", stack=cli_stack))
    assert summary.counts == {"ok": 3}
    stacked = store.read_table(tmp_path / "results", "runs")["stacked"]
    if expected is None:
        assert stacked.isna().all()
    elif expected == 2:
        assert stacked.isna().sum() == 1 and (stacked.dropna() == 2).sum() == 2
    else:
        assert (stacked == expected).all()


def test_the_stacking_limit_is_in_the_dry_run_and_the_builtin_time_studies_run_alone(tmp_path):
    from harness_fixtures import serial_options

    from harness.commands.run import dry_run
    from harness.plan import Filters
    from harness.suites import load_suite

    assert load_suite("paper-convergence").stack == 1 and load_suite("minmin-scale").stack == 1
    assert load_suite("paper").stack is None
    suite = _suite_with_stack(tmp_path, 1)
    assert "stacking: off" in dry_run(str(suite), Filters(), serial_options(tmp_path / "r"))
    assert "stacking: up to 4 runs" in dry_run(str(suite), Filters(), serial_options(tmp_path / "r", stack=4))
    (tmp_path / "default").mkdir()
    default = dry_run(str(_suite_with_stack(tmp_path / "default", None)), Filters(), serial_options(tmp_path / "r"))
    assert "stacking: up to 25 runs of one configuration per job (methods that opt in)" in default
