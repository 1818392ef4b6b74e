"""scikit-learn reference predictors on exactly the splits ebm-bench's runs use.

They put the EBM numbers in context: a structured model that cannot beat independent
per-label logistic regressions is not worth its cost. Each reference trains on the run's
training part (``TaskData.x_train``, i.e. after the validation carve-out, like every method)
and is scored on the test split with the same metric functions as the runs.

Multilabel: one-vs-rest logistic regression, a classifier chain of logistic regressions
(random label order from the seed), and an MLP (scikit-learn's multi-label MLPClassifier).
Label ranking: ridge regression on each label's position then ranking by the predicted
positions, k-nearest-neighbour rank aggregation (the mean position over the neighbours —
Borda count, as in Cheng, Hühn & Hüllermeier's instance-based label ranking), and an
MLP regressor on positions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MULTILABEL_REFERENCES = ("sk-ovr-logreg", "sk-chain-logreg", "sk-mlp")
RANKING_REFERENCES = ("sk-ridge-ranks", "sk-knn-borda", "sk-mlp-ranks")


def _positions_to_ranks(scores: np.ndarray) -> np.ndarray:
    """Predicted positions (lower = better, real-valued) → a permutation of 0..k−1 per row."""
    return np.argsort(np.argsort(scores, axis=1, kind="stable"), axis=1).astype(np.int64)


def _multilabel_model(name: str, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.multioutput import ClassifierChain
    from sklearn.neural_network import MLPClassifier

    if name == "sk-ovr-logreg":
        from sklearn.multiclass import OneVsRestClassifier

        return OneVsRestClassifier(LogisticRegression(max_iter=2000))
    if name == "sk-chain-logreg":
        return ClassifierChain(LogisticRegression(max_iter=2000), order="random", random_state=seed)
    if name == "sk-mlp":
        return MLPClassifier(hidden_layer_sizes=(128,), max_iter=500, early_stopping=True, random_state=seed)
    raise ValueError(f"unknown multilabel reference {name!r}; known: {MULTILABEL_REFERENCES}")


def fit_predict_multilabel(name: str, x_train, y_train, x_test, seed: int) -> np.ndarray:
    """Train reference ``name`` and predict 0/1 test labels. Labels constant on the training
    rows are predicted as that constant (logistic regression refuses single-class data)."""
    y_train = np.asarray(y_train)
    constant = np.flatnonzero(y_train.min(axis=0) == y_train.max(axis=0))
    varying = np.setdiff1d(np.arange(y_train.shape[1]), constant)
    y_pred = np.zeros((len(x_test), y_train.shape[1]), dtype=np.int8)
    y_pred[:, constant] = y_train[0, constant]
    if varying.size:
        model = _multilabel_model(name, seed).fit(x_train, y_train[:, varying])
        y_pred[:, varying] = (np.asarray(model.predict(x_test)) > 0.5).astype(np.int8)
    return y_pred


def fit_predict_ranking(name: str, x_train, ranks_train, x_test, seed: int) -> np.ndarray:
    """Train reference ``name`` on position vectors and predict test rankings (positions)."""
    from sklearn.linear_model import Ridge
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.neural_network import MLPRegressor

    if name == "sk-ridge-ranks":
        model = Ridge(alpha=1.0)
    elif name == "sk-knn-borda":
        model = KNeighborsRegressor(n_neighbors=min(10, len(x_train)))
    elif name == "sk-mlp-ranks":
        model = MLPRegressor(hidden_layer_sizes=(128,), max_iter=1000, early_stopping=True, random_state=seed)
    else:
        raise ValueError(f"unknown ranking reference {name!r}; known: {RANKING_REFERENCES}")
    model.fit(x_train, np.asarray(ranks_train, dtype=np.float64))
    return _positions_to_ranks(np.asarray(model.predict(x_test)))


def reference_rows(task_name: str, data_dir: Path | None, seeds: range | list[int], *,
                   fold: int = 0) -> list[dict[str, Any]]:
    """One row per (reference, seed): ``task, method, seed, fold`` and every ``test_<metric>``."""
    from tasks.metrics import multilabel_metrics, ranking_metrics
    from tasks.registry import get_task

    task = get_task(task_name)
    names = MULTILABEL_REFERENCES if task.kind == "multilabel" else RANKING_REFERENCES
    rows = []
    for seed in seeds:
        data = task.load(data_dir, seed=seed, fold=fold)
        for name in names:
            if task.kind == "multilabel":
                y_pred = fit_predict_multilabel(name, data.x_train, data.y_train, data.x_test, seed)
                metrics = multilabel_metrics(data.y_test, y_pred)
            else:
                y_pred = fit_predict_ranking(name, data.x_train, data.y_train, data.x_test, seed)
                metrics = ranking_metrics(data.y_test, y_pred)
            rows.append({"task": task_name, "method": name, "seed": seed, "fold": fold,
                         **{f"test_{m}": v for m, v in metrics.items()}})
    return rows
