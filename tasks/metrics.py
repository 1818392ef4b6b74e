"""Prediction metrics on dataset labels (multilabel 0/1 rows, ranking position rows).

Zero division (multilabel F1): F1 = 2TP / (2TP + FP + FN) is 0/0 only when a row (example-F1),
a label column (macro-F1) or the whole matrix (micro-F1) has no true and no predicted positive.
We score that case 1.0: predicting the empty set when the truth is empty is a perfect answer,
and scoring it 0 would punish correct abstention (scikit-learn ``zero_division=1.0``; every
other case is well defined and unaffected).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from tasks.base import check_labels
from tasks.names import unknown_name_error


@dataclass(frozen=True)
class Metric:
    """One quality measure of a fitted model: the single source of its name, direction and
    runs-table columns (the store's schema, the leaderboard and the tuner all read it from here).

    ``kind``: the task kind it applies to ("multilabel", "ranking", or "any"). ``family``: how
    the worker computes it — ``prediction`` (of the mode, per split), ``nll`` (per split),
    ``tau`` (audit of the learned log-partition) or ``truth`` (KL to a synthetic task's truth).
    ``column`` holds its test value; ``val_column`` its validation value (None: test only).
    ``ranked``: listed on the leaderboard (False for companions such as a Monte-Carlo error).
    ``lower_bound``: no correct value lies below it (−log p(y|x) ≥ 0 for a probability over a
    discrete Y); a value below it by more than its Monte-Carlo error is an estimate that failed
    (:meth:`impossible`), not a good model.
    """

    name: str
    direction: Literal["max", "min"]
    kind: Literal["multilabel", "ranking", "any"]
    column: str
    family: Literal["prediction", "nll", "tau", "truth"] = "prediction"
    val_column: str | None = None
    ranked: bool = True
    lower_bound: float | None = None

    def impossible(self, value: float | np.ndarray, stderr: float | np.ndarray = 0.0) -> bool | np.ndarray:
        """Whether ``value`` (a number or an array, with its Monte-Carlo standard error) lies below
        ``lower_bound`` by more than 3 standard errors and :data:`ROUNDING_SLACK`: it cannot be
        right. Always False without a bound."""
        if self.lower_bound is None:
            return np.zeros(np.shape(value), dtype=bool) if np.ndim(value) else False
        return np.asarray(value) < self.lower_bound - 3 * np.asarray(stderr) - ROUNDING_SLACK

    @property
    def maximize(self) -> bool:
        return self.direction == "max"

    def column_for(self, split: str) -> str:
        """The runs column of this metric on ``split`` ("val" or "test")."""
        column = self.val_column if split == "val" else self.column if split == "test" else None
        if column is None:
            raise ValueError(f"metric {self.name!r} has no {split!r} column")
        return column


#: float32 rounding of a mean NLL computed from log Z − g (both can be 10^4 nats for a peaked
#: model): a value this far below a metric's bound is still taken as the bound
ROUNDING_SLACK = 0.01


def _per_split(name: str, direction: Literal["max", "min"], kind: Literal["multilabel", "ranking", "any"],
               family: Literal["prediction", "nll"] = "prediction", ranked: bool = True,
               lower_bound: float | None = None) -> Metric:
    return Metric(name, direction, kind, f"test_{name}", family, f"val_{name}", ranked, lower_bound)


#: every metric, in runs-table order (``val_*`` and ``test_*`` columns follow this order)
ALL_METRICS: tuple[Metric, ...] = (
    _per_split("f1_example", "max", "multilabel"),
    _per_split("f1_micro", "max", "multilabel"),
    _per_split("f1_macro", "max", "multilabel"),
    _per_split("hamming", "min", "multilabel"),
    _per_split("subset_acc", "max", "multilabel"),
    _per_split("kendall", "max", "ranking"),
    _per_split("spearman", "max", "ranking"),
    _per_split("exact_match", "max", "ranking"),
    _per_split("nll", "min", "any", "nll", lower_bound=0.0),
    # the Monte-Carlo standard error of the mean NLL: reported next to it, never ranked
    _per_split("nll_stderr", "min", "any", "nll", ranked=False),
    Metric("tau_mae", "min", "any", "tau_mae", "tau"),
    Metric("kl_to_truth", "min", "any", "kl_to_truth", "truth"),
)
METRIC_BY_NAME: dict[str, Metric] = {m.name: m for m in ALL_METRICS}

#: ranked metric name -> "max" (higher is better) or "min" (lower is better); kept for old callers
METRICS: dict[str, str] = {m.name: m.direction for m in ALL_METRICS if m.ranked}


def get_metric(name: str) -> Metric:
    """The metric called ``name``; unknown names raise ValueError with a did-you-mean."""
    try:
        return METRIC_BY_NAME[name]
    except KeyError:
        raise unknown_name_error("metric", name, list(METRIC_BY_NAME)) from None


def direction(name: str, default: Literal["max", "min"] = "max") -> str:
    """"max" or "min" for a metric name (``default`` for a name this module does not know)."""
    metric = METRIC_BY_NAME.get(name)
    return metric.direction if metric else default


def split_columns(split: str) -> list[str]:
    """The runs columns of every metric measured on ``split`` ("val" or "test"), in order."""
    if split == "val":
        return [m.val_column for m in ALL_METRICS if m.val_column]
    return [m.column for m in ALL_METRICS if m.column.startswith(f"{split}_")]


def run_columns() -> list[str]:
    """Every metric column of the runs table, in schema order: val_*, test_*, then the rest."""
    test = split_columns("test")
    return split_columns("val") + test + [m.column for m in ALL_METRICS if m.column not in test]


ZERO_DIVISION = 1.0


def _check_pair(kind: str, y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = check_labels(kind, y_true, where="y_true")
    y_pred = check_labels(kind, y_pred, where="y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true shape {y_true.shape} != y_pred shape {y_pred.shape}")
    if y_true.shape[0] == 0:
        raise ValueError("metrics need at least one row")
    return y_true, y_pred


def f1_scores(tp: np.ndarray, true: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """F1 = 2TP / (|true| + |predicted|) = 2TP / (2TP + FP + FN), elementwise over counts, in float64;
    ``ZERO_DIVISION`` where nothing is true and nothing predicted (the formula scikit-learn uses)."""
    denominator = true.astype(np.float64) + predicted.astype(np.float64)
    empty = denominator == 0
    return np.where(empty, ZERO_DIVISION, 2.0 * tp.astype(np.float64) / np.where(empty, 1.0, denominator))


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Example-F1 (mean over rows), micro-F1 (pooled counts), macro-F1 (mean over labels),
    Hamming loss (fraction of wrong bits) and subset accuracy (fraction of rows exactly right).

    Counted in numpy: the same formulas as scikit-learn's ``f1_score`` (``zero_division=1``),
    ``hamming_loss`` and ``accuracy_score`` (tests check equality), without their ~15 ms of input
    validation per call, which a run paid at every curve point (``harness.worker``)."""
    y_true, y_pred = _check_pair("multilabel", y_true, y_pred)
    truth, predicted = y_true != 0, y_pred != 0
    hit = truth & predicted
    wrong = truth != predicted
    f1_rows = f1_scores(hit.sum(1), truth.sum(1), predicted.sum(1))
    f1_labels = f1_scores(hit.sum(0), truth.sum(0), predicted.sum(0))
    f1_micro = f1_scores(np.array(hit.sum()), np.array(truth.sum()), np.array(predicted.sum()))
    return {
        "f1_example": float(f1_rows.mean()),
        "f1_micro": float(f1_micro),
        "f1_macro": float(f1_labels.mean()),
        "hamming": float(np.count_nonzero(wrong)) / (wrong.shape[0] * wrong.shape[1]),
        "subset_acc": float((~wrong.any(axis=1)).mean()),
    }


def kendall_tau_rows(ranks_true: np.ndarray, ranks_pred: np.ndarray) -> np.ndarray:
    """Kendall's tau of each row pair of permutations: mean over label pairs i<j of
    sign(t_i - t_j) sign(p_i - p_j), i.e. (concordant - discordant) / (k(k-1)/2).

    scipy.stats.kendalltau has no axis argument and costs ~0.15 ms a row; this vectorised form is
    identical for tie-free rows (tests check it against scipy) and ~100x faster on big test sets.
    """
    i, j = np.triu_indices(ranks_true.shape[1], k=1)
    concordance = np.sign(ranks_true[:, i] - ranks_true[:, j]) * np.sign(ranks_pred[:, i] - ranks_pred[:, j])
    return concordance.mean(axis=1)


def ranking_metrics(ranks_true: np.ndarray, ranks_pred: np.ndarray) -> dict[str, float]:
    """Mean over rows of Kendall's tau and Spearman's rho between the position vectors, and the
    fraction of rows ranked exactly right. Rows are full permutations (no ties), so tau-b = tau-a
    and Spearman's rho is Pearson's r of the position vectors themselves (scipy, row-wise)."""
    from scipy.stats import pearsonr

    ranks_true, ranks_pred = _check_pair("ranking", ranks_true, ranks_pred)
    if ranks_true.shape[1] < 2:
        raise ValueError("ranking metrics need k >= 2 labels")
    spearman = pearsonr(ranks_true.astype(np.float64), ranks_pred.astype(np.float64), axis=1).statistic
    return {
        "kendall": float(kendall_tau_rows(ranks_true, ranks_pred).mean()),
        "spearman": float(np.mean(spearman)),
        "exact_match": float(np.mean((ranks_true == ranks_pred).all(axis=1))),
    }
