"""Terminal tables fit the terminal: the leaderboard at 80 columns, every row on one line."""

from __future__ import annotations

import pandas as pd
import pytest

from harness import leaderboard
from test_outputs_fixtures import results_dir  # noqa: F401 (fixture)

LONG = [("sk-digits-ranking", "permutahedron", m, "kendall") for m in
        ("minmin-sparsemax", "minmin-logistic", "exact-mle", "minmax-reinforce")] + \
       [("syn-ising-k16", "pairwise", m, metric) for m in ("minmin-entmax15", "exact-sparsemax")
        for metric in ("nll", "f1_example", "f1_micro", "f1_macro", "hamming", "kl_to_truth")]


def _long_board() -> pd.DataFrame:
    rows = [dict(task=t, model=mo, config=me, method=me, metric=mt, mean=0.123456 + i, std=0.0123, n_ok=5, n_failed=i % 3,
                 rank=1.0 + i % 4) for i, (t, mo, me, mt) in enumerate(LONG)]
    return pd.DataFrame(rows, columns=leaderboard.COLUMNS)


def test_default_table_fits_80_columns_with_primary_metric_and_counts():
    text = leaderboard.format_leaderboard(_long_board(), width=80)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80
    # every (task, model, method) is one row: its name appears on exactly one line
    for task, model, method, _ in LONG:
        assert sum(1 for line in lines if method in line and task in line) == 1, method
    header = " ".join(lines)
    assert "kendall" in header and "nll" in header and "n_ok" in header and "n_failed" in header
    assert "f1_macro" not in header and "hamming" not in header  # only the primary metrics by default


def test_metrics_all_and_lists_show_more_and_other_formats_stay_complete():
    board = _long_board()
    wide = leaderboard.format_leaderboard(board, metrics=("all",), width=80)
    assert "f1_macro" in wide and "hamming" in wide
    some = leaderboard.format_leaderboard(board, metrics=("hamming",), width=80)
    assert "hamming" in some and "f1_macro" not in some
    for fmt in ("markdown", "latex"):
        text = leaderboard.format_leaderboard(board, fmt)
        assert "f1\\_macro" in text or "f1_macro" in text
    with pytest.raises(ValueError, match="metric 'acc'"):
        leaderboard.format_leaderboard(board, metrics=("acc",))


def test_cli_leaderboard_in_80_columns(results_dir, capsys, monkeypatch):  # noqa: F811
    import argparse

    from harness.commands import leaderboard as command

    monkeypatch.setenv("COLUMNS", "80")
    args = argparse.Namespace(results_dir=str(results_dir), task=None, metric=None, metrics=None, format="table",
                              no_write=True)
    assert command.run(args) == 0
    out = capsys.readouterr().out
    assert out.strip() and max(map(len, out.splitlines())) <= 80
