"""User tasks declared in a suite TOML file, read and validated like the built-in ones.

```toml
[tasks.my-flags]
kind = "multilabel"
train = "data/flags-train.arff"     # Mulan-style ARFF, dense or sparse
test = "data/flags-test.arff"       # optional; without it: n_folds-fold CV of train (default 5)
labels = "data/flags.xml"           # Mulan label XML, labels matched by name ...
# n_labels = 7                      # ... or: the last n_labels attributes are the labels
# k = 7                             # optional: checked against the files

[tasks.my-ranking]
kind = "ranking"
file = "data/german2005.xarff"      # XARFF; split as for lr-* tasks (10-fold CV)
# n_folds = 10, k = ..., description = "..."
```

Paths are relative to the TOML file's folder. Bad input raises ``ValueError`` (or
``FileNotFoundError`` for a missing file, naming the full path looked at) that says what is wrong:
unknown keys, labels not found, k mismatch, values that cannot be encoded, NaN/inf features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.base import KINDS, PRIMARY_METRIC, Task, TaskData, Unavailable
from tasks.mulan import read_label_names, read_multilabel
from tasks.names import did_you_mean
from tasks.prepare import assemble, assemble_cv
from tasks.xarff import read_xarff

_KEYS = {
    "multilabel": {"kind", "train", "test", "labels", "n_labels", "k", "n_folds", "description"},
    "ranking": {"kind", "file", "k", "n_folds", "description"},
}
_PATH_KEYS = ("train", "test", "labels", "file")


@dataclass(kw_only=True)
class UserTask(Task):
    """A task from a suite file; ``paths`` maps spec keys (train/test/labels/file) to absolute paths."""

    paths: dict[str, Path]
    declared_in: Path
    n_labels: int | None = None
    declared_k: int | None = None

    def _where(self, key: str) -> str:
        return f"task {self.name!r}: {key} file"

    def unavailable(self, data_dir: Path | None) -> Unavailable | None:
        for key, path in self.paths.items():
            if not path.is_file():
                return Unavailable(f"{key} file not found: {path}", f"paths in [tasks.{self.name}] are "
                                   f"relative to the suite file's folder {self.declared_in}")
        return None

    def _check_present(self) -> None:
        reason = self.available(None)
        if reason is not None:
            raise FileNotFoundError(f"task {self.name!r}: {reason}")

    def _check_k(self, k: int, source: str) -> None:
        if self.declared_k is not None and k != self.declared_k:
            raise ValueError(f"task {self.name!r}: k mismatch: the suite declares k = {self.declared_k} "
                             f"but {source} has {k} labels")

    def load(self, data_dir: Path | None, *, seed: int, fold: int = 0, val_fraction: float = 0.2) -> TaskData:
        self.check_fold(fold)
        self._check_present()
        common: dict[str, Any] = dict(name=self.name, kind=self.kind, seed=seed, val_fraction=val_fraction)
        if self.kind == "ranking":
            table = read_xarff(self.paths["file"])
            self._check_k(table.ranks.shape[1], str(self.paths["file"]))
            return assemble_cv(x=table.x, y=table.ranks, n_folds=self.n_folds, fold=fold,
                               label_names=table.label_names, feature_names=table.feature_names,
                               split_info=f"user file {self.paths['file']}", **common)
        label_names = read_label_names(self.paths["labels"]) if "labels" in self.paths else None
        train = read_multilabel(self.paths["train"], label_names=label_names, n_labels=self.n_labels)
        self._check_k(train.y.shape[1], str(self.paths["train"]))
        if "test" not in self.paths:
            return assemble_cv(x=train.x, y=train.y, n_folds=self.n_folds, fold=fold,
                               label_names=train.label_names, feature_names=train.feature_names,
                               split_info=f"user file {self.paths['train']} (no test file)", **common)
        test = read_multilabel(self.paths["test"], label_names=label_names, n_labels=self.n_labels)
        if test.label_names != train.label_names:
            raise ValueError(f"task {self.name!r}: k mismatch between train ({len(train.label_names)} labels "
                             f"{train.label_names[:5]}...) and test ({len(test.label_names)} labels "
                             f"{test.label_names[:5]}...)")
        if test.feature_names != train.feature_names:
            raise ValueError(f"task {self.name!r}: train and test declare different features "
                             f"({len(train.feature_names)} vs {len(test.feature_names)} encoded columns)")
        return assemble(x_train=train.x, y_train=train.y, x_test=test.x, y_test=test.y,
                        label_names=train.label_names, feature_names=train.feature_names,
                        split_info=f"user files {self.paths['train'].name} / {self.paths['test'].name}", **common)


def _positive_int(name: str, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"[tasks.{name}] {key} must be a positive integer, got {value!r}")
    return value


def _known_k(name: str, kind: str, paths: dict[str, Path], n_labels: int | None, declared_k: int | None) -> int:
    """k for listing before loading: declared, n_labels, or read from the label XML / XARFF when
    present (0 if unknown)."""
    if declared_k is not None:
        return declared_k
    if n_labels is not None:
        return n_labels
    source = paths.get("labels") if kind == "multilabel" else paths.get("file")
    if source is not None and source.is_file():
        return len(read_label_names(source)) if kind == "multilabel" else read_xarff(source).ranks.shape[1]
    return 0


def user_task_from_spec(name: str, spec: object, base_dir: Path) -> UserTask:
    """Validate one ``[tasks.<name>]`` table and build its task (files are read only on ``load``)."""
    if not isinstance(spec, dict):
        raise ValueError(f"[tasks.{name}] must be a table (kind = ..., ...), got {spec!r}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ValueError(f"[tasks.{name}] kind must be one of {KINDS}, got {kind!r}")
    for key in spec:
        if key not in _KEYS[kind]:
            hint = did_you_mean(key, sorted(_KEYS[kind])) or f"; allowed: {sorted(_KEYS[kind])}"
            raise ValueError(f"[tasks.{name}] unknown key {key!r} for a {kind} task{hint}")
    required = ("train",) if kind == "multilabel" else ("file",)
    for key in required:
        if key not in spec:
            raise ValueError(f"[tasks.{name}] a {kind} task needs {key} = \"path\"")
    if kind == "multilabel" and ("labels" in spec) == ("n_labels" in spec):
        raise ValueError(f"[tasks.{name}] give exactly one of labels = \"file.xml\" or n_labels = <int>")
    paths: dict[str, Path] = {}
    for key in _PATH_KEYS:
        if key in spec:
            if not isinstance(spec[key], str) or not spec[key]:
                raise ValueError(f"[tasks.{name}] {key} must be a path string, got {spec[key]!r}")
            paths[key] = (Path(base_dir) / Path(spec[key]).expanduser()).resolve()
    n_labels = _positive_int(name, "n_labels", spec["n_labels"]) if "n_labels" in spec else None
    declared_k = _positive_int(name, "k", spec["k"]) if "k" in spec else None
    if n_labels is not None and declared_k is not None and n_labels != declared_k:
        raise ValueError(f"[tasks.{name}] k mismatch: n_labels = {n_labels} but k = {declared_k}")
    has_test = "test" in paths
    default_folds = 1 if has_test else (5 if kind == "multilabel" else 10)
    n_folds = _positive_int(name, "n_folds", spec.get("n_folds", default_folds))
    if has_test and n_folds != 1:
        raise ValueError(f"[tasks.{name}] n_folds applies only without a test file")
    if not has_test and n_folds < 2:
        raise ValueError(f"[tasks.{name}] n_folds must be at least 2 for cross-validation, got {n_folds}")
    k = _known_k(name, kind, paths, n_labels, declared_k)
    return UserTask(
        name=name, kind=kind, k=k, primary_metric=PRIMARY_METRIC[kind],
        description=str(spec.get("description", f"user {kind} task from the suite file")),
        n_folds=n_folds, paths=paths, declared_in=Path(base_dir).resolve(),
        n_labels=n_labels, declared_k=declared_k,
    )
