"""From parsed arrays to a ``TaskData``: checks, splits, validation carve-out, standardisation.

Protocol (the same for every task):

* Test split: the official one where the files carry one; otherwise ``n_folds``-fold CV over
  a **fixed** shuffled partition (``KFold(shuffle=True, random_state=CV_SEED)``), so a
  (task, fold) pair names one test set whatever the run seed.
* Validation: ``val_fraction`` of the training split, drawn with the **run seed**
  (``train_test_split(random_state=seed)``); ``val_fraction = 0`` gives an empty validation set.
* Standardisation: z-score every feature with the mean and standard deviation of the final
  training part (after the validation carve-out), so validation rows are as unseen as test
  rows; a constant column (std < 1e-12) is only centred. Applied to train, val and test alike.
"""

from __future__ import annotations

import warnings

import numpy as np

from tasks.base import GroundTruth, TaskData, check_labels

CV_SEED = 0
_MIN_STD = 1e-12


def check_features(x: np.ndarray, feature_names: list[str], *, where: str) -> np.ndarray:
    """``x`` as float64, or ValueError naming the columns with NaN/inf (missing ``?`` values read as NaN)."""
    x = np.asarray(x, dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        cols = np.flatnonzero(bad.any(axis=0))
        described = ", ".join(f"{feature_names[c]!r} ({int(bad[:, c].sum())} rows)" for c in cols[:5])
        more = f" and {len(cols) - 5} more columns" if len(cols) > 5 else ""
        raise ValueError(
            f"{where}: features contain NaN/inf (or missing '?') values in {described}{more}; "
            "impute or drop them before benchmarking"
        )
    return x


def fold_indices(n: int, n_folds: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices of ``fold`` in a fixed ``n_folds``-fold shuffled partition."""
    from sklearn.model_selection import KFold

    if n < n_folds:
        raise ValueError(f"{n} rows cannot be split into {n_folds} folds")
    splits = KFold(n_splits=n_folds, shuffle=True, random_state=CV_SEED).split(np.arange(n))
    for index, (train, test) in enumerate(splits):
        if index == fold:
            return train, test
    raise ValueError(f"fold {fold} out of range 0..{n_folds - 1}")


def fold_sizes(n: int, n_folds: int) -> tuple[int, int]:
    """(train, test) sizes of fold 0 (KFold gives the first ``n % n_folds`` folds one extra row)."""
    n_test = n // n_folds + (1 if n % n_folds else 0)
    return n - n_test, n_test


def carve_validation(n: int, seed: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) row indices: a seeded ``val_fraction`` of ``range(n)`` held out."""
    from sklearn.model_selection import train_test_split

    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rows = np.arange(n)
    if val_fraction == 0.0:
        return rows, rows[:0]
    train, val = train_test_split(rows, test_size=val_fraction, random_state=seed, shuffle=True)
    return np.sort(train), np.sort(val)


def standardise(x_fit: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """(x - mean) / std with statistics of ``x_fit``; constant columns are only centred."""
    mean = x_fit.mean(axis=0)
    std = x_fit.std(axis=0)
    std = np.where(std < _MIN_STD, 1.0, std)
    return [((x - mean) / std).astype(np.float32) for x in (x_fit, *others)]


def warn_constant_labels(name: str, y_train: np.ndarray, label_names: list[str]) -> None:
    """Warn (once per load) about multilabel columns constant over the training part; training goes on."""
    constant = np.flatnonzero((y_train == y_train[:1]).all(axis=0)) if len(y_train) else np.arange(0)
    if constant.size:
        shown = ", ".join(f"{label_names[j]!r}={int(y_train[0, j])}" for j in constant[:5])
        more = f" and {constant.size - 5} more" if constant.size > 5 else ""
        warnings.warn(
            f"task {name!r}: {constant.size} label(s) constant over the training part ({shown}{more}); "
            "continuing (their models see a single class)",
            UserWarning,
            stacklevel=3,
        )


def assemble(
    *,
    name: str,
    kind: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    label_names: list[str],
    feature_names: list[str],
    split_info: str,
    seed: int,
    val_fraction: float,
    truth: GroundTruth | None = None,
    standardise_features: bool = True,
) -> TaskData:
    """Check labels and features, carve validation from train by ``seed``, standardise, build TaskData."""
    x_train = check_features(x_train, feature_names, where=f"task {name!r} train split")
    x_test = check_features(x_test, feature_names, where=f"task {name!r} test split")
    y_train = check_labels(kind, y_train, where=f"task {name!r} train labels")
    y_test = check_labels(kind, y_test, where=f"task {name!r} test labels")
    if y_train.shape[1] != y_test.shape[1] or x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"task {name!r}: train has {x_train.shape[1]} features / {y_train.shape[1]} labels, "
                         f"test has {x_test.shape[1]} / {y_test.shape[1]}")
    train_rows, val_rows = carve_validation(len(x_train), seed, val_fraction)
    x_fit, x_val, x_te = x_train[train_rows], x_train[val_rows], x_test
    if standardise_features:
        x_fit, x_val, x_te = standardise(x_fit, x_val, x_te)
    else:
        x_fit, x_val, x_te = (a.astype(np.float32) for a in (x_fit, x_val, x_te))
    if kind == "multilabel":
        warn_constant_labels(name, y_train[train_rows], label_names)
    info = f"{split_info}; validation {len(val_rows)} rows ({val_fraction:g} of train, seed {seed})"
    return TaskData(
        name=name, kind=kind, k=y_train.shape[1],
        x_train=x_fit, y_train=y_train[train_rows], x_val=x_val, y_val=y_train[val_rows],
        x_test=x_te, y_test=y_test, label_names=list(label_names), feature_names=list(feature_names),
        split_info=info, truth=truth,
    )


def assemble_cv(*, x: np.ndarray, y: np.ndarray, n_folds: int, fold: int, split_info: str, **kwargs) -> TaskData:
    """``assemble`` for data without an official split: fold ``fold`` of the fixed partition is the test set."""
    train, test = fold_indices(len(x), n_folds, fold)
    info = (f"{split_info}; {n_folds}-fold CV (KFold shuffle, random_state={CV_SEED}), "
            f"fold {fold}: test {len(test)} rows")
    return assemble(x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test], split_info=info, **kwargs)
