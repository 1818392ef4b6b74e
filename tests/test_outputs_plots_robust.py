"""The plots' robust ranges: a spike or a run-away method does not set the scale, a curve's
steep start does (checked against numpy's own percentiles)."""

from __future__ import annotations

import numpy as np

from harness import plots


def test_spike_is_off_scale_but_the_pack_is_covered():
    pack = list(np.linspace(3.40, 3.50, 30))
    low, high = plots.robust_range(pack + [1.8e6])
    assert low <= 3.40 and 3.50 <= high < 3.6  # the spike does not flatten everything
    q1, q3 = np.percentile(pack + [1.8e6], [25, 75])
    assert high <= q3 + plots.FENCE * (q3 - q1) + 0.05 * (3.5 - 3.4) + 1e-12


def test_objective_fence_keeps_a_steep_start():
    curve = [4.4, 4.0, 3.8, 3.6, 3.5, 3.45, 3.42, 3.40, 3.38, 3.37]
    low, high = plots.robust_range(curve, fence=plots.OBJECTIVE_FENCE)
    assert low < 3.37 and high > 4.4
    low, high = plots.robust_range(curve + [1.8e6], fence=plots.OBJECTIVE_FENCE)
    assert high < 5


def test_flat_and_empty_series():
    low, high = plots.robust_range([2.0, 2.0, 2.0])
    assert low < 2.0 < high
    assert plots.robust_range([float("nan")]) is None


def test_dot_plot_leaves_out_methods_without_the_metric(tmp_path):
    import pandas as pd

    from harness.leaderboard import COLUMNS

    board = pd.DataFrame([
        dict(task="t", model="unary", config="a", method="a", metric="nll", mean=3.40, std=0.01, n_ok=2, n_failed=0, rank=1.0),
        dict(task="t", model="unary", config="b", method="b", metric="nll", mean=3.48, std=0.01, n_ok=2, n_failed=1, rank=2.0),
        dict(task="t", model="unary", config="s", method="s", metric="nll", mean=np.nan, std=np.nan, n_ok=2, n_failed=0,
             rank=np.nan),
        dict(task="t", model="pairwise", config="c", method="c", metric="nll", mean=np.nan, std=np.nan, n_ok=0, n_failed=2,
             rank=np.nan),
    ], columns=COLUMNS)
    paths = plots.plot_leaderboard_bars(board, {"t": "nll"}, tmp_path)
    assert [p.name for p in paths] == ["leaderboard-t.png"] and paths[0].stat().st_size > 5000
