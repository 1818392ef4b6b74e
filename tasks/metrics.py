"""Prediction metrics on dataset labels (multilabel 0/1 rows, ranking position rows).

Zero division (multilabel F1): F1 = 2TP / (2TP + FP + FN) is 0/0 only when a row (example-F1),
a label column (macro-F1) or the whole matrix (micro-F1) has no true and no predicted positive.
We score that case 1.0: predicting the empty set when the truth is empty is a perfect answer,
and scoring it 0 would punish correct abstention (scikit-learn ``zero_division=1.0``; every
other case is well defined and unaffected).
"""

from __future__ import annotations

import numpy as np

from tasks.base import check_labels

#: metric name -> "max" (higher is better) or "min" (lower is better).
METRICS: dict[str, str] = {
    "f1_example": "max",
    "f1_micro": "max",
    "f1_macro": "max",
    "hamming": "min",
    "subset_acc": "max",
    "kendall": "max",
    "spearman": "max",
    "exact_match": "max",
    "nll": "min",
    "tau_mae": "min",
    "kl_to_truth": "min",
}

ZERO_DIVISION = 1.0


def _check_pair(kind: str, y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = check_labels(kind, y_true, where="y_true")
    y_pred = check_labels(kind, y_pred, where="y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true shape {y_true.shape} != y_pred shape {y_pred.shape}")
    if y_true.shape[0] == 0:
        raise ValueError("metrics need at least one row")
    return y_true, y_pred


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Example-F1 (mean over rows), micro-F1 (pooled counts), macro-F1 (mean over labels),
    Hamming loss (fraction of wrong bits) and subset accuracy (fraction of rows exactly right)."""
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss

    y_true, y_pred = _check_pair("multilabel", y_true, y_pred)
    f1 = {avg: float(f1_score(y_true, y_pred, average=avg, zero_division=ZERO_DIVISION))
          for avg in ("samples", "micro", "macro")}
    return {
        "f1_example": f1["samples"],
        "f1_micro": f1["micro"],
        "f1_macro": f1["macro"],
        "hamming": float(hamming_loss(y_true, y_pred)),
        "subset_acc": float(accuracy_score(y_true, y_pred)),
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
