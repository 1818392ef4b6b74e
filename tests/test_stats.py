"""harness.stats against scipy.stats / statsmodels on fixed arrays."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from harness import stats

A = np.array([0.61, 0.64, 0.59, 0.66, 0.63])
B = np.array([0.58, 0.60, 0.57, 0.61, 0.62])
C = np.array([0.60, 0.65, 0.58, 0.64, 0.64])


def _long(**configs) -> pd.DataFrame:
    return pd.DataFrame([{"config": name, "unit": f"{i}/0", "value": v}
                         for name, values in configs.items() for i, v in enumerate(values)])


def test_paired_p_values_are_scipys():
    assert stats.paired_p_value(A - B, "t") == pytest.approx(sps.ttest_rel(A, B).pvalue, rel=1e-12)
    assert stats.paired_p_value(A - B, "wilcoxon") == pytest.approx(sps.wilcoxon(A, B).pvalue, rel=1e-12)
    # exact Wilcoxon on 5 pairs all of one sign: 2 / 2^5, the smallest p it can give
    assert stats.paired_p_value(A - B, "wilcoxon") == pytest.approx(2 / 32)
    assert math.isnan(stats.paired_p_value(np.array([0.1])))
    assert stats.paired_p_value(np.array([0.2, 0.2, 0.2])) == 0.0  # a constant shift
    assert stats.paired_p_value(np.array([0.0, 0.0])) == 1.0      # identical results
    with pytest.raises(ValueError, match="unknown paired test"):
        stats.paired_p_value(A - B, "sign")


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(5)
    for m in (1, 2, 3, 7, 20):
        p = rng.uniform(0, 0.2, m)
        p[rng.integers(0, m)] = p[0]  # a tie
        np.testing.assert_allclose(stats.holm(p), multipletests(p, method="holm")[1], rtol=1e-12)


def test_holm_matches_the_step_down_definition():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.20])
    finite = np.array([0.01, 0.04, 0.03, 0.20])
    # textbook: sort ascending, multiply the i-th smallest by (m − i), running max, cap at 1
    order = np.argsort(finite)
    adjusted = np.minimum(1, np.maximum.accumulate(finite[order] * (len(finite) - np.arange(len(finite)))))
    expected = np.empty_like(finite)
    expected[order] = adjusted
    out = stats.holm(p)
    np.testing.assert_allclose(out[[0, 1, 2, 4]], expected)
    assert math.isnan(out[3])


def test_versus_best_pairs_tests_and_corrects():
    table = stats.versus_best(_long(a=A, b=B, c=C), "max").set_index("config")
    raw = {"b": sps.ttest_rel(A, B).pvalue, "c": sps.ttest_rel(A, C).pvalue}
    holm = stats.holm(np.array([raw["b"], raw["c"]]))
    assert table.at["b", "p_value"] == pytest.approx(raw["b"]) and table.at["c", "p_value"] == pytest.approx(raw["c"])
    assert table.at["b", "p_holm"] == pytest.approx(holm[0]) and table.at["c", "p_holm"] == pytest.approx(holm[1])
    assert table.at["a", "tied_best"] and math.isnan(table.at["a", "p_value"])
    assert holm[0] < 0.05 and not table.at["b", "tied_best"]   # b is worse on every seed
    assert holm[1] >= 0.05 and table.at["c", "tied_best"]      # c is within noise of a
    assert (table["n_pairs"] == 5).all()
    # direction: minimising the same numbers makes b the best
    assert stats.versus_best(_long(a=A, b=B), "min").set_index("config").at["b", "tied_best"]


def test_versus_best_pairs_only_shared_units():
    values = _long(a=A, b=B)
    values = values[~((values.config == "b") & values.unit.isin(["0/0", "1/0"]))]
    table = stats.versus_best(values, "max").set_index("config")
    assert table.at["b", "n_pairs"] == 3
    assert table.at["b", "p_value"] == pytest.approx(sps.ttest_rel(A[2:], B[2:]).pvalue)


def test_paired_difference_interval_is_the_t_interval():
    result = stats.paired_difference(A, B)
    d = A - B
    low, high = sps.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=sps.sem(d))
    assert (result.n, result.mean) == (5, pytest.approx(d.mean()))
    assert result.low == pytest.approx(low) and result.high == pytest.approx(high)
    assert result.p_value == pytest.approx(sps.ttest_rel(A, B).pvalue)
    assert stats.paired_difference(A[:1], B[:1]).n == 1 and math.isnan(stats.paired_difference(A[:1], B[:1]).low)


def test_friedman_matches_scipy_and_nemenyi_is_scikit_posthocs():
    import scikit_posthocs as sp

    rng = np.random.default_rng(3)
    raw = rng.normal(size=(8, 4)) + np.array([0.0, 0.3, 0.8, 1.5])
    matrix = pd.DataFrame(raw, columns=["w", "x", "y", "z"])
    result = stats.friedman(matrix, "max")
    expected = sps.friedmanchisquare(*raw.T)
    assert result.statistic == pytest.approx(expected.statistic) and result.p_value == pytest.approx(expected.pvalue)
    # mean ranks, 1 = best (highest score)
    ranks = sps.rankdata(-raw, axis=1).mean(axis=0)
    np.testing.assert_allclose(result.mean_ranks.reindex(matrix.columns).to_numpy(), ranks)
    np.testing.assert_allclose(result.nemenyi.to_numpy(), sp.posthoc_nemenyi_friedman(raw).to_numpy())
    assert stats.friedman(matrix.iloc[:, :2]) is None and stats.friedman(matrix.iloc[:1]) is None


def test_critical_difference_figure_draws(tmp_path):
    rng = np.random.default_rng(4)
    matrix = pd.DataFrame(rng.normal(size=(6, 3)) + [0, 1, 2], columns=["p", "q", "r"])
    figure = stats.critical_difference_figure(stats.friedman(matrix), "test")
    figure.savefig(tmp_path / "cd.png")
    assert (tmp_path / "cd.png").stat().st_size > 1000


def test_vectorised_p_values_equal_the_per_column_ones():
    rng = np.random.default_rng(6)
    d = rng.normal(0.1, 0.2, size=(6, 5))
    d[0, 1] = np.nan           # an unshared unit
    d[:, 2] = 0.3              # a constant shift
    d[1:, 3] = np.nan          # a single pair
    out = stats.paired_p_values(d)
    for j in range(5):
        expected = stats.paired_p_value(d[:, j])
        assert (math.isnan(out[j]) and math.isnan(expected)) or out[j] == pytest.approx(expected, rel=1e-12)
    assert out[0] == pytest.approx(sps.ttest_1samp(d[:, 0], 0).pvalue) and out[2] == 0.0 and math.isnan(out[3])
