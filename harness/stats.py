"""Paired statistics for comparing configurations: the numbers behind "is the difference real?".

Everything here is a thin, documented layer over scipy.stats and scikit-posthocs (Nemenyi,
critical-difference diagram); the one exception is Holm's step-down correction (five lines,
checked against statsmodels in the tests; see :func:`holm`).

* **Pairing.** Two configurations are compared on the runs they share: the same task × model and
  the same (seed, fold) — same data split, same budget — so the difference d_u = a_u − b_u of
  each pairing unit u removes the split-to-split variation both share.
* **Per task: each config against the best** (:func:`versus_best`). The best is the config with
  the best mean; every other config is tested against it with a two-sided paired test on the
  shared units, and the p-values of one task × model × metric are Holm-corrected together
  (:func:`holm`, a step-down Bonferroni that controls the family-wise error rate). A config
  whose corrected p ≥ ``ALPHA`` is *not significantly different from the best* (the best
  itself is, trivially).
  The default test is the paired t-test (``scipy.stats.ttest_rel``): with the 2–5 seeds of a
  typical suite the exact Wilcoxon signed-rank test cannot reject at 5 % at all (its smallest
  two-sided p is 2/2^n: 0.0625 for n = 5), so it would call every difference "not significant".
  ``test="wilcoxon"`` (``scipy.stats.wilcoxon``, exact for small n) is available for larger n.
  Fewer than two shared units: no test (p = NaN, counted as not significantly different).
  All differences equal (to 1e-12, relative): p = 1 when they are all zero (identical results), p = 0 otherwise (a
  constant nonzero shift; the t statistic is infinite).
* **One pair, with an interval** (:func:`paired_difference`): mean of d, its 95 % t-interval
  mean ± t_{0.975, n−1} · sd/√n (``scipy.stats.t``), and the paired t-test's p-value.
* **Across tasks** (:func:`friedman`): the Friedman test (``scipy.stats.friedmanchisquare``) on a
  blocks × configs matrix (one block per task × model cell that every config has), and the
  Nemenyi post-hoc p-values (``scikit_posthocs.posthoc_nemenyi_friedman``) that the
  critical-difference diagram (:func:`critical_difference_figure`) draws as bars joining
  configs that are not significantly different.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

ALPHA = 0.05
TESTS = ("t", "wilcoxon")


def _degenerate(d: np.ndarray) -> float | None:
    """The p-value of differences the tests cannot handle: fewer than two (NaN), or all equal up
    to float rounding (1 when all are zero, identical results; 0 for a constant nonzero shift,
    where the t statistic is infinite). None otherwise."""
    if len(d) < 2:
        return math.nan
    scale = max(1.0, float(np.abs(d).max()))
    if np.ptp(d) <= 1e-12 * scale:
        return 1.0 if abs(d[0]) <= 1e-12 * scale else 0.0
    return None


def paired_p_value(differences: np.ndarray, test: str = "t") -> float:
    """Two-sided p-value that the paired differences have mean (t) / median (wilcoxon) zero."""
    from scipy import stats

    if test not in TESTS:
        raise ValueError(f"unknown paired test {test!r}; choose one of {', '.join(TESTS)}")
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    special = _degenerate(d)
    if special is not None:
        return special
    if test == "t":
        return float(stats.ttest_1samp(d, 0.0).pvalue)
    return float(stats.wilcoxon(d).pvalue)


def paired_p_values(differences: np.ndarray, test: str = "t") -> np.ndarray:
    """:func:`paired_p_value` of each column of a units × comparisons matrix (NaN = no pair);
    the t-tests of complete, non-degenerate columns run as one vectorised scipy call."""
    from scipy import stats

    d = np.asarray(differences, dtype=np.float64)
    out = np.full(d.shape[1], np.nan)
    batch = []
    for j in range(d.shape[1]):
        column = d[:, j]
        complete = bool(np.isfinite(column).all())
        if test == "t" and complete and _degenerate(column) is None:
            batch.append(j)
        else:
            out[j] = paired_p_value(column, test)
    if batch:
        out[batch] = stats.ttest_1samp(d[:, batch], 0.0, axis=0).pvalue
    return out


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values; NaN entries stay NaN (and are not counted in m).

    With the m finite p-values sorted ascending, p_(1) ≤ … ≤ p_(m), the adjusted values are
    p̃_(i) = min(1, max_{j ≤ i} (m − j + 1) p_(j)). scipy has no Holm (``false_discovery_control``
    is Benjamini–Hochberg); ``statsmodels.stats.multitest.multipletests(method="holm")`` computes
    the same numbers (the tests check it) but runs ``gc.collect()`` on every call, which costs
    ~0.3 s per leaderboard cell in a process that holds torch, so the five lines are here."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def versus_best(values: pd.DataFrame, direction: str, *, test: str = "t", alpha: float = ALPHA) -> pd.DataFrame:
    """Each config against the best of one task × model × metric.

    ``values``: columns ``config``, ``unit`` (the pairing key, e.g. "seed/fold") and ``value``
    (one per config × unit; repeats are averaged). Returns one row per config: ``config, mean,
    n_pairs, p_value, p_holm, tied_best`` (tied_best: not significantly different from the best,
    or the best). The best is the config with the best mean in ``direction`` ("max" | "min");
    ties go to the first in sorted order."""
    finite = np.isfinite(pd.to_numeric(values["value"], errors="coerce").to_numpy(dtype=np.float64))
    values = values[finite]
    if values.empty:
        return pd.DataFrame(columns=["config", "mean", "n_pairs", "p_value", "p_holm", "tied_best"])
    configs, column = np.unique(values["config"].to_numpy(dtype=str), return_inverse=True)
    _, row = np.unique(values["unit"].to_numpy(dtype=str), return_inverse=True)
    v = values["value"].to_numpy(dtype=np.float64)
    sums = np.zeros((row.max() + 1, len(configs)))
    counts = np.zeros_like(sums)
    np.add.at(sums, (row, column), v)
    np.add.at(counts, (row, column), 1.0)
    grid = np.where(counts > 0, sums / np.maximum(counts, 1.0), np.nan)  # units × configs
    means = sums.sum(0) / counts.sum(0)
    best = int(np.argmax(means) if direction == "max" else np.argmin(means))
    others = np.array([j for j in range(len(configs)) if j != best], dtype=int)
    differences = grid[:, others] - grid[:, [best]]  # NaN where either run is missing
    p_value = np.full(len(configs), np.nan)
    p_holm = np.full(len(configs), np.nan)
    n_pairs = np.isfinite(grid[:, best]).sum() * np.ones(len(configs), dtype=np.int64)
    if len(others):
        n_pairs[others] = np.isfinite(differences).sum(0)
        p_value[others] = paired_p_values(differences, test)
        p_holm[others] = holm(p_value[others])
    tied = ~(p_holm < alpha)  # NaN (no test possible) counts as tied; the best's p is NaN
    return pd.DataFrame({"config": configs, "mean": means, "n_pairs": n_pairs, "p_value": p_value,
                         "p_holm": p_holm, "tied_best": tied})


@dataclass(frozen=True)
class PairedDifference:
    """mean of a − b over ``n`` shared units, its 95 % t-interval and the paired t-test p-value."""

    n: int
    mean: float
    low: float
    high: float
    p_value: float


def paired_difference(a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95) -> PairedDifference:
    """a − b paired element by element (NaN pairs dropped): mean, t-interval, two-sided p."""
    from scipy import stats

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return PairedDifference(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if n < 2:
        return PairedDifference(1, mean, math.nan, math.nan, math.nan)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return PairedDifference(n, mean, mean - half, mean + half, paired_p_value(d, "t"))


@dataclass(frozen=True)
class Friedman:
    """Friedman test over ``n_blocks`` blocks and the configs' mean ranks (1 = best)."""

    statistic: float
    p_value: float
    n_blocks: int
    mean_ranks: pd.Series
    nemenyi: pd.DataFrame  # config × config p-values


def block_ranks(matrix: pd.DataFrame, direction: str | pd.Series = "max") -> pd.DataFrame:
    """Rank of each config (column) within each block (row), 1 = best, ties averaged.
    ``direction`` is one direction for all blocks or a Series indexed like the rows."""
    directions = direction if isinstance(direction, pd.Series) else pd.Series(direction, index=matrix.index)
    signed = matrix.mul(np.where(directions.reindex(matrix.index).eq("max"), -1.0, 1.0), axis=0)
    return signed.rank(axis=1, method="average")


def friedman(matrix: pd.DataFrame, direction: str | pd.Series = "max") -> Friedman | None:
    """Friedman test on a blocks × configs matrix of scores (no NaN); None with fewer than two
    blocks or three configs (the test needs them)."""
    import scikit_posthocs as sp
    from scipy import stats

    matrix = matrix.dropna()
    if matrix.shape[0] < 2 or matrix.shape[1] < 3:
        return None
    ranks = block_ranks(matrix, direction)
    # the test is on within-block ranks, so the sign convention is the ranks' (1 = best)
    result = stats.friedmanchisquare(*[ranks[c].to_numpy() for c in ranks.columns])
    nemenyi = sp.posthoc_nemenyi_friedman(ranks.to_numpy())
    nemenyi.index = nemenyi.columns = list(ranks.columns)
    return Friedman(float(result.statistic), float(result.pvalue), int(matrix.shape[0]),
                    ranks.mean().sort_values(), nemenyi)


def critical_difference_figure(result: Friedman, title: str):
    """A matplotlib Figure: scikit-posthocs' critical-difference diagram of the mean ranks,
    configs joined by a bar when Nemenyi does not separate them (p ≥ ALPHA)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import scikit_posthocs as sp

    n = len(result.mean_ranks)
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.28 * n))
    sp.critical_difference_diagram(result.mean_ranks, result.nemenyi, ax=ax, alpha=ALPHA)
    ax.set_title(f"{title}\nFriedman χ² = {result.statistic:.2f}, p = {result.p_value:.3g} "
                 f"over {result.n_blocks} task × model cells; bars: Nemenyi p ≥ {ALPHA}", fontsize=9)
    return fig
