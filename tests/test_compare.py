"""``ebm-bench compare``: paired differences against scipy, verdicts, name resolution, CLI."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from test_outputs_fixtures import results_dir  # noqa: F401 (fixture)

from harness.commands import compare as command


def _runs(cells: dict) -> pd.DataFrame:
    """cells: (task, model, metric) -> {config: [values by seed]} (None = failed run)."""
    rows = []
    for (task, model, metric), configs in cells.items():
        for config, values in configs.items():
            for seed, value in enumerate(values):
                rows.append({"run_id": f"{task}{model}{config}{seed}", "task": task, "model": model,
                             "method": config.split("[")[0], "config": config, "seed": seed, "fold": 0,
                             "status": "failed" if value is None else "ok", f"test_{metric}": value,
                             "primary_metric": metric})
    return pd.DataFrame(rows)


A = [0.61, 0.64, 0.59, 0.66, 0.63]
B = [0.58, 0.60, 0.57, 0.61, 0.62]
C = [0.60, 0.65, 0.58, 0.64, 0.64]


def test_paired_difference_interval_and_verdicts():
    runs = _runs({
        ("t1", "unary", "f1_example"): {"m[x=1]": A, "base": B},           # A better on every seed: win
        ("t2", "unary", "f1_example"): {"m[x=1]": B, "base": A},           # loss
        ("t3", "unary", "f1_example"): {"m[x=1]": A, "base": C},           # within noise: tie
        ("t4", "unary", "nll"): {"m[x=1]": [2.0, 2.1, 1.9], "base": [2.5, 2.7, 2.4]},  # lower nll: win
        ("t5", "unary", "f1_example"): {"m[x=1]": [0.5, None, 0.6], "base": [0.4, 0.5, None]},  # 1 pair: tie
    })
    result = command.compare(runs, "m", "base")  # a method name with one configuration resolves to it
    assert result.a == "m[x=1]"
    cells = result.cells.set_index("task")
    d = np.array(A) - np.array(B)
    low, high = sps.t.interval(0.95, 4, loc=d.mean(), scale=sps.sem(d))
    assert cells.at["t1", "diff"] == pytest.approx(d.mean())
    assert (cells.at["t1", "low"], cells.at["t1", "high"]) == (pytest.approx(low), pytest.approx(high))
    assert cells.at["t1", "p_value"] == pytest.approx(sps.ttest_rel(A, B).pvalue)
    assert cells["verdict"].to_dict() == {"t1": "win", "t2": "loss", "t3": "tie", "t4": "win", "t5": "tie"}
    assert cells.at["t5", "n"] == 1
    assert result.counts == {"win": 2, "tie": 2, "loss": 1, "invalid": 0}
    only = command.compare(runs, "m[x=1]", "base", task="t[12]")
    assert set(only.cells["task"]) == {"t1", "t2"}


def test_names_are_resolved_or_refused_with_choices():
    runs = _runs({("t1", "unary", "f1_example"): {"m[x=1]": A, "m[x=2]": C, "base": B}})
    with pytest.raises(ValueError, match="has 2 configurations here; name one: m\\[x=1\\], m\\[x=2\\]"):
        command.compare(runs, "m", "base")
    with pytest.raises(ValueError, match="did you mean 'base'"):
        command.compare(runs, "m[x=1]", "bsae")
    with pytest.raises(ValueError, match="same configuration"):
        command.compare(runs, "base", "base")


def test_cli_on_the_fixture(results_dir, capsys):  # noqa: F811
    args = argparse.Namespace(results_dir=str(results_dir), a="minmin-logistic", b="bce", task=None, metric=None,
                              format="table")
    assert command.run(args) == 0
    out = capsys.readouterr().out
    assert "minmin-logistic vs bce" in out and "win/tie/loss of minmin-logistic against bce" in out
    args.format = "csv"
    assert command.run(args) == 0
    frame = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    # yeast/unary pairs seeds 0 and 1 (bce's seed 2 does not exist): 0.60−0.50, 0.62−0.54
    unary = frame[(frame.task == "yeast") & (frame.model == "unary")].iloc[0]
    assert unary["n"] == 2 and unary["diff"] == pytest.approx(np.mean([0.10, 0.08]))
    args.a = "nope"
    assert command.run(args) == 2
    assert "unknown configuration or method 'nope'" in capsys.readouterr().err


def test_a_cell_with_impossible_values_is_invalid_not_a_win():
    """A's NLLs are −40,000 nats (a failed log Z estimate; no Monte-Carlo error column here, so
    only the rounding slack applies): far "better" than B's, yet the cell is not judged."""
    runs = _runs({("t1", "unary", "nll"): {"a": [-40_000.0, -41_000.0, -39_000.0], "b": [2.0, 2.1, 1.9]},
                  ("t2", "unary", "nll"): {"a": [1.0, 1.1, 0.9], "b": [2.0, 2.1, 1.9]}})
    result = command.compare(runs, "a", "b")
    verdicts = dict(zip(result.cells["task"], result.cells["verdict"]))
    assert verdicts == {"t1": "invalid", "t2": "win"}
    assert result.counts == {"win": 1, "tie": 0, "loss": 0, "invalid": 1}
    assert "1 cell(s) invalid" in command.format_comparison(result)


def test_the_cost_of_each_side_is_its_paired_runs_training_seconds():
    """Seconds per run: a stacked run's group seconds over the group's size; only the runs that
    are paired count (A's unpaired seed 2 does not); the line weighs the cells by their pairs."""
    runs = _runs({("t1", "unary", "f1_example"): {"a": [0.6, 0.7, 0.8], "b": [0.5, 0.6, None]},
                  ("t2", "unary", "f1_example"): {"a": [0.6, 0.7], "b": [0.5, 0.6]}})
    seconds = {("t1", "a"): ([10.0, 20.0, 999.0], 5), ("t1", "b"): ([3.0, 5.0, 7.0], None),
               ("t2", "a"): ([4.0, 4.0], None), ("t2", "b"): ([8.0, 8.0], 2)}
    for (task, config), (values, size) in seconds.items():
        rows = runs.index[(runs["task"] == task) & (runs["config"] == config)]
        runs.loc[rows, "train_seconds"] = values
        runs.loc[rows, "stacked"] = size
    result = command.compare(runs, "a", "b")
    cells = result.cells.set_index("task")
    assert cells.at["t1", "seconds_a"] == pytest.approx((10 / 5 + 20 / 5) / 2)  # seeds 0 and 1 are paired
    assert cells.at["t1", "seconds_b"] == pytest.approx((3 + 5) / 2)
    assert (cells.at["t2", "seconds_a"], cells.at["t2", "seconds_b"]) == (pytest.approx(4.0), pytest.approx(4.0))
    line = command.format_comparison(result).splitlines()[-1]
    # both cells have 2 pairs: A (3 + 4) / 2 = 3.5, B (4 + 4) / 2 = 4
    assert line.endswith("a 3.5, b 4 (A/B 0.88×)"), line
    assert "seconds_a" in command.format_comparison(result, "csv").splitlines()[0]
