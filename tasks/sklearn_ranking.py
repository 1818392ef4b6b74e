"""Label-ranking tasks built from scikit-learn's bundled classification data (no download).

Procedure of Cheng, Hühn & Hüllermeier (2009, "Decision tree and instance-based learning for
label ranking") for turning a classification data set into a label-ranking one: fit a naive
Bayes classifier (here ``GaussianNB`` with default settings) on the **whole** data set, then
rank, for every example, all classes by the classifier's posterior probability, most probable
first. We rank by the joint log-likelihood ``log P(c) + log P(x | c)`` (``predict_joint_log_proba``),
which orders classes exactly as the posterior but does not underflow to ties; remaining exact
ties go to the lower class index. The class names become the label names. Split: 10-fold CV
(fixed partition, as for ``lr-*`` tasks); features standardised with training statistics.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.base import PRIMARY_METRIC, Task, TaskData, Unavailable
from tasks.prepare import assemble_cv, fold_sizes


def naive_bayes_ranks(x: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Positions (n, k): rank of each class by GaussianNB's posterior fitted on (x, classes), 0 = most probable."""
    from sklearn.naive_bayes import GaussianNB

    joint = GaussianNB().fit(x, classes).predict_joint_log_proba(x)
    order = np.argsort(-joint, axis=1, kind="stable")  # stable: ties -> lower class index first
    return np.argsort(order, axis=1).astype(np.int64)


@functools.lru_cache(maxsize=4)
def _build(loader_name: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader_name)()
    x = np.asarray(bunch.data, dtype=np.float64)
    ranks = naive_bayes_ranks(x, bunch.target)
    feature_names = [str(name) for name in getattr(bunch, "feature_names", [f"x{i}" for i in range(x.shape[1])])]
    label_names = [str(name) for name in bunch.target_names]
    return x, ranks, feature_names, label_names


@dataclass(kw_only=True)
class SklearnRankingTask(Task):
    loader: str  # name of the sklearn.datasets loader, e.g. "load_iris"
    n_folds: int = 10

    def unavailable(self, data_dir: Path | None) -> Unavailable | None:
        return None

    def load(self, data_dir: Path | None, *, seed: int, fold: int = 0, val_fraction: float = 0.2) -> TaskData:
        self.check_fold(fold)
        x, ranks, feature_names, label_names = _build(self.loader)
        return assemble_cv(x=x, y=ranks, n_folds=self.n_folds, fold=fold, label_names=label_names,
                           feature_names=feature_names, name=self.name, kind="ranking", seed=seed,
                           val_fraction=val_fraction,
                           split_info=f"sklearn.datasets.{self.loader}, ranked by GaussianNB posterior")


def builtin_tasks() -> list[Task]:
    tasks: list[Task] = []
    for short, loader, rows, d, k in (("iris", "load_iris", 150, 4, 3), ("wine", "load_wine", 178, 13, 3),
                                      ("digits", "load_digits", 1797, 64, 10)):
        n_train, n_test = fold_sizes(rows, 10)
        tasks.append(SklearnRankingTask(
            name=f"sk-{short}-ranking", kind="ranking", k=k, primary_metric=PRIMARY_METRIC["ranking"],
            description=f"sklearn {short} classes ranked by naive-Bayes posterior (Cheng et al. 2009); 10-fold CV",
            n_features=d, n_train=n_train, n_test=n_test, loader=loader))
    return tasks
