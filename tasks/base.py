"""Task interface: what is learned (features, labels, splits) and how it is judged.

Label encodings (the "dataset label" column of docs/ARCHITECTURE.md):

* multilabel: ``y`` int8 array ``(n, k)`` of 0/1.
* ranking: ``ranks`` int64 array ``(n, k)``; ``ranks[i, j]`` is the position of
  label ``j`` in row ``i``'s ranking, 0 = best (each row a permutation of 0..k-1).

The size of the output space is ``|Y| = 2^k`` (multilabel) or ``k!`` (ranking).
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

KINDS = ("multilabel", "ranking")
DATA_ENV_VAR = "EBM_BENCH_DATA"
PRIMARY_METRIC = {"multilabel": "f1_example", "ranking": "kendall", "synthetic": "nll"}


@runtime_checkable
class GroundTruth(Protocol):
    """The known conditional p(y | x) of a synthetic task (in dataset-label encoding)."""

    def log_prob(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Natural-log probability log p(y_i | x_i), one value per row; shape ``(n,)``."""

    def sample(self, x: np.ndarray, n_per_x: int, rng: np.random.Generator) -> np.ndarray:
        """Exact draws y ~ p(. | x_i); shape ``(n_x, n_per_x, k)``."""


def log10_space_size(kind: str, k: int) -> float:
    """log10 |Y|: ``k log10 2`` for label subsets, ``log10 k! = lgamma(k+1)/ln 10`` for permutations."""
    if kind == "multilabel":
        return k * math.log10(2.0)
    if kind == "ranking":
        return math.lgamma(k + 1) / math.log(10.0)
    raise ValueError(f"unknown task kind {kind!r}; expected one of {KINDS}")


def check_labels(kind: str, y: np.ndarray, *, where: str = "labels") -> np.ndarray:
    """Return ``y`` in its canonical dtype, or raise ValueError naming what is wrong."""
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"{where}: expected a 2-D (n, k) array, got shape {y.shape}")
    if kind == "multilabel":
        bad = ~np.isin(y, (0, 1))
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(f"{where}: multilabel values must be 0/1; row {i}, label {j} is {y[i, j]!r}")
        return y.astype(np.int8)
    if kind == "ranking":
        k = y.shape[1]
        if y.size and not np.array_equal(np.sort(y, axis=1), np.broadcast_to(np.arange(k), y.shape)):
            bad_row = int(np.flatnonzero((np.sort(y, axis=1) != np.arange(k)).any(axis=1))[0])
            raise ValueError(
                f"{where}: each ranking row must be a permutation of positions 0..{k - 1}; "
                f"row {bad_row} is {y[bad_row].tolist()}"
            )
        return y.astype(np.int64)
    raise ValueError(f"unknown task kind {kind!r}; expected one of {KINDS}")


@dataclass
class TaskData:
    """One loaded split of a task. Features are float32 ``(n, d)``; labels as in the module docstring."""

    name: str
    kind: str
    k: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    label_names: list[str]
    feature_names: list[str]
    split_info: str
    truth: GroundTruth | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: unknown kind {self.kind!r}; expected one of {KINDS}")
        d = self.x_train.shape[1]
        for part in ("train", "val", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if x.ndim != 2 or x.shape[1] != d or x.dtype != np.float32:
                raise ValueError(f"task {self.name!r}: x_{part} must be float32 (n, {d}), got {x.dtype} {x.shape}")
            if y.shape != (x.shape[0], self.k):
                raise ValueError(f"task {self.name!r}: y_{part} shape {y.shape} != ({x.shape[0]}, {self.k})")
        if len(self.label_names) != self.k or len(self.feature_names) != d:
            raise ValueError(f"task {self.name!r}: {len(self.label_names)} label names for k={self.k}, "
                             f"{len(self.feature_names)} feature names for d={d}")

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def log10_size(self) -> float:
        return log10_space_size(self.kind, self.k)


@dataclass(frozen=True)
class Unavailable:
    """Why a task cannot be loaded here: the ``problem`` (which file, where we looked) and the
    ``remedy`` (how to get it), kept apart because every file-backed task shares one remedy, which a
    listing of many tasks states once."""

    problem: str
    remedy: str = ""
    missing: str | None = None  # the (first) missing file, relative to the data directory

    def __str__(self) -> str:
        return f"{self.problem}; {self.remedy}" if self.remedy else self.problem


@dataclass
class TaskInfo:
    """One row of ``ebm-bench tasks``. ``n_train`` counts the whole training split (validation included)."""

    name: str
    kind: str
    k: int
    log10_size: float
    n_train: int | None
    n_test: int | None
    n_features: int | None
    primary_metric: str
    unavailable: Unavailable | None = None

    @property
    def available(self) -> bool:
        return self.unavailable is None


@dataclass(kw_only=True)
class Task(ABC):
    """A named learning problem. Subclasses implement ``available`` and ``load``.

    ``n_features`` is the width of ``x`` the model sees (after one-hot encoding);
    ``n_train``/``n_test`` are the split sizes for fold 0 (validation included in n_train).
    ``n_folds`` is 1 for tasks with a fixed split; otherwise ``load(fold=...)`` picks one
    of ``n_folds`` cross-validation folds (a fixed partition, independent of the run seed).
    ``data_dir=None`` means "env EBM_BENCH_DATA, if set" for tasks that read files; bundled
    tasks ignore it. A missing file raises FileNotFoundError, any other bad input ValueError.
    """

    name: str
    kind: str
    k: int
    primary_metric: str
    description: str
    n_features: int | None = None
    n_train: int | None = None
    n_test: int | None = None
    n_folds: int = 1

    @abstractmethod
    def unavailable(self, data_dir: Path | None) -> Unavailable | None:
        """None when the task can be loaded, else why not (which file, where, how to get it)."""

    def available(self, data_dir: Path | None) -> str | None:
        """None when the task can be loaded, else why not, as one line for an error or a note."""
        missing = self.unavailable(data_dir)
        return None if missing is None else str(missing)

    @abstractmethod
    def load(self, data_dir: Path | None, *, seed: int, fold: int = 0, val_fraction: float = 0.2) -> TaskData:
        """Load the task; ``seed`` picks the validation carve-out, ``fold`` the CV fold."""

    @property
    def log10_size(self) -> float:
        return log10_space_size(self.kind, self.k)

    def check_fold(self, fold: int) -> None:
        if not 0 <= fold < self.n_folds:
            raise ValueError(
                f"task {self.name!r} has {self.n_folds} fold(s) (0..{self.n_folds - 1}); got fold={fold}"
            )

    def info(self, data_dir: Path | None) -> TaskInfo:
        missing = self.unavailable(data_dir)
        return TaskInfo(
            name=self.name, kind=self.kind, k=self.k, log10_size=self.log10_size,
            n_train=self.n_train, n_test=self.n_test, n_features=self.n_features,
            primary_metric=self.primary_metric, unavailable=missing,
        )


def resolve_data_dir(cli_value: str | Path | None) -> Path | None:
    """The data directory: the CLI value if given, else env ``EBM_BENCH_DATA``, else None."""
    if cli_value not in (None, ""):
        return Path(cli_value).expanduser()
    env = os.environ.get(DATA_ENV_VAR, "")
    return Path(env).expanduser() if env else None
