"""Real benchmark tasks backed by files in the data directory (``--data-dir`` / ``EBM_BENCH_DATA``).

Layout and counts: ``<data_dir>/PROVENANCE.md``. Multilabel tasks use the official Mulan
train/test split; cal500 has none and uses 5-fold CV (fixed partition, ``tasks.prepare``; 5
rather than 10 folds so each test fold keeps ~100 of the 502 rows). Label-ranking tasks
(``lr-*``) use 10-fold CV, the protocol of Cheng, Hühn & Hüllermeier (2009); fold 0 is the
default (a 90/10 split). Features are standardised with training statistics (``tasks.prepare``);
the upstream XARFF features are already scaled, which standardising leaves harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.base import PRIMARY_METRIC, Task, TaskData, Unavailable, resolve_data_dir
from tasks.mulan import read_label_names, read_multilabel
from tasks.prepare import assemble, assemble_cv, fold_sizes
from tasks.xarff import read_headerless_ranking, read_xarff

_WHERE = "the folder holding multilabel/ and label_ranking/"
_HOW_TO_GET = "get the public files with `ebm-bench data fetch --to DIR` (sources and sha256 in its manifest)"


def missing_file(data_dir: Path | None, relative_paths: list[str]) -> Unavailable | None:
    """None when every file exists under ``data_dir`` (None: env EBM_BENCH_DATA), else which one is
    missing (relative to the data directory) and, as the remedy every such task shares, where we
    looked and how to get the files."""
    data_dir = data_dir if data_dir is not None else resolve_data_dir(None)
    if data_dir is None:
        return Unavailable(f"needs {relative_paths[0]}", f"no data directory given: pass --data-dir or set "
                           f"EBM_BENCH_DATA to {_WHERE}; {_HOW_TO_GET}", missing=relative_paths[0])
    for relative in relative_paths:
        if not (Path(data_dir) / relative).is_file():
            return Unavailable(f"missing {relative}", f"looked in data dir {data_dir} (--data-dir or "
                               f"EBM_BENCH_DATA: {_WHERE}); {_HOW_TO_GET}", missing=relative)
    return None


def _data_dir_or_raise(task: Task, data_dir: Path | None, files: list[str]) -> Path:
    missing = missing_file(data_dir, files)
    if missing is not None:
        raise FileNotFoundError(f"task {task.name!r}: {missing}")
    root = data_dir if data_dir is not None else resolve_data_dir(None)
    if root is None:  # missing_file reports an unset folder; kept for the type checker
        raise FileNotFoundError(f"task {task.name!r}: no data folder (set EBM_BENCH_DATA or pass --data-dir)")
    return Path(root)


@dataclass(kw_only=True)
class MulanTask(Task):
    """A Mulan multilabel dataset: ``train``/``test`` ARFF (or one ``full`` file with CV) + XML labels."""

    folder: str
    xml: str
    train: str | None = None
    test: str | None = None
    full: str | None = None

    def _files(self) -> list[str]:
        names = [self.train, self.test] if self.full is None else [self.full]
        return [f"multilabel/{self.folder}/{name}" for name in (*names, self.xml)]

    def unavailable(self, data_dir: Path | None) -> Unavailable | None:
        return missing_file(data_dir, self._files())

    def load(self, data_dir: Path | None, *, seed: int, fold: int = 0, val_fraction: float = 0.2) -> TaskData:
        self.check_fold(fold)
        root = _data_dir_or_raise(self, data_dir, self._files()) / "multilabel" / self.folder
        labels = read_label_names(root / self.xml)
        common: dict[str, Any] = dict(name=self.name, kind="multilabel", seed=seed, val_fraction=val_fraction)
        if self.full is not None:
            table = read_multilabel(root / self.full, label_names=labels)
            return assemble_cv(x=table.x, y=table.y, n_folds=self.n_folds, fold=fold,
                               label_names=table.label_names, feature_names=table.feature_names,
                               split_info=f"{self.full} (no official split)", **common)
        if self.train is None or self.test is None:
            raise ValueError(f"task {self.name!r} declares neither a full file nor train and test files")
        train = read_multilabel(root / self.train, label_names=labels)
        test = read_multilabel(root / self.test, label_names=labels)
        if train.feature_names != test.feature_names:
            raise ValueError(f"task {self.name!r}: {self.train} and {self.test} declare different features")
        return assemble(x_train=train.x, y_train=train.y, x_test=test.x, y_test=test.y,
                        label_names=train.label_names, feature_names=train.feature_names,
                        split_info=f"official Mulan split {self.train} / {self.test}", **common)


@dataclass(kw_only=True)
class LabelRankingTask(Task):
    """A label-ranking XARFF file (or the headerless fried CSV), 10-fold CV."""

    file: str
    headerless_features: int | None = None  # set for the headerless CSV: number of numeric columns
    n_folds: int = 10

    def unavailable(self, data_dir: Path | None) -> Unavailable | None:
        return missing_file(data_dir, [f"label_ranking/{self.file}"])

    def load(self, data_dir: Path | None, *, seed: int, fold: int = 0, val_fraction: float = 0.2) -> TaskData:
        self.check_fold(fold)
        path = _data_dir_or_raise(self, data_dir, [f"label_ranking/{self.file}"]) / "label_ranking" / self.file
        if self.headerless_features is None:
            table = read_xarff(path)
        else:
            labels = tuple(f"L{j + 1}" for j in range(self.k))
            table = read_headerless_ranking(path, self.headerless_features, labels)
        if table.ranks.shape[1] != self.k:
            raise ValueError(f"task {self.name!r}: {path} has k={table.ranks.shape[1]} labels, expected {self.k}")
        return assemble_cv(x=table.x, y=table.ranks, n_folds=self.n_folds, fold=fold,
                           label_names=table.label_names, feature_names=table.feature_names,
                           split_info=self.file, name=self.name, kind="ranking",
                           seed=seed, val_fraction=val_fraction)


# name: (folder, train, test, xml, n_features after encoding, n_train, n_test, k, what)
_MULAN = {
    "yeast": ("yeast", "yeast-train.arff", "yeast-test.arff", "yeast.xml", 103, 1500, 917, 14,
              "gene functional classes"),
    "scene": ("scene", "scene-train.arff", "scene-test.arff", "scene.xml", 294, 1211, 1196, 6, "image scene types"),
    "emotions": ("emotions", "emotions-train.arff", "emotions-test.arff", "emotions.xml", 72, 391, 202, 6,
                 "music emotions"),
    "birds": ("birds", "birds-train.arff", "birds-test.arff", "birds.xml", 271, 322, 323, 19,
              "bird species in audio (2 nominal features, one-hot)"),
    "enron": ("enron", "enron-train.arff", "enron-test.arff", "enron.xml", 1001, 1123, 579, 53, "e-mail folders"),
    "corel5k": ("corel5k", "Corel5k-train-sparse.arff", "Corel5k-test-sparse.arff", "Corel5k.xml", 499, 4500, 500,
                374, "image annotation (sparse ARFF)"),
    "bibtex": ("bibtex", "bibtex-train.arff", "bibtex-test.arff", "bibtex.xml", 1836, 4880, 2515, 159,
               "BibTeX tags (sparse ARFF)"),
    "delicious": ("delicious", "delicious-train.arff", "delicious-test.arff", "delicious.xml", 500, 12920, 3185,
                  983, "web bookmark tags (sparse ARFF)"),
}

# task name: (file, rows, n_features after encoding, k)
_RANKING = {
    "lr-authorship": ("analcatdata-authorship_dense.xarff", 841, 70, 4),
    "lr-bodyfat": ("bodyfat_dense.xarff", 252, 7, 7),
    "lr-calhousing": ("calhousing_dense.xarff", 20640, 4, 4),
    "lr-cold": ("cold_dense.xarff", 2465, 24, 4),
    "lr-cpu-small": ("cpu-small_dense.xarff", 8192, 6, 5),
    "lr-diau": ("diau_dense.xarff", 2465, 24, 7),
    "lr-dtt": ("dtt_dense.xarff", 2465, 24, 4),
    "lr-elevators": ("elevators_dense.xarff", 16599, 9, 9),
    "lr-fried": ("fried_dense_noheader.csv", 40768, 9, 5),
    "lr-glass": ("glass_dense.xarff", 214, 9, 6),
    "lr-heat": ("heat_dense.xarff", 2465, 24, 6),
    "lr-housing": ("housing_dense.xarff", 506, 6, 6),
    "lr-iris": ("iris_dense.xarff", 150, 4, 3),
    "lr-pendigits": ("pendigits_dense.xarff", 10992, 16, 10),
    "lr-segment": ("segment_dense.xarff", 2310, 18, 7),
    "lr-spo": ("spo_dense.xarff", 2465, 24, 11),
    "lr-stock": ("stock_dense.xarff", 950, 5, 5),
    "lr-sushi": ("sushi.xarff", 5000, 122, 10),
    "lr-vehicle": ("vehicle_dense.xarff", 846, 18, 4),
    "lr-vowel": ("vowel_dense.xarff", 528, 10, 11),
    "lr-wine": ("wine_dense.xarff", 178, 13, 3),
}


def builtin_tasks() -> list[Task]:
    tasks: list[Task] = []
    for name, (folder, train, test, xml, d, n_train, n_test, k, what) in _MULAN.items():
        tasks.append(MulanTask(
            name=name, kind="multilabel", k=k, primary_metric=PRIMARY_METRIC["multilabel"],
            description=f"Mulan {name}: {what}; official train/test split",
            n_features=d, n_train=n_train, n_test=n_test, folder=folder, train=train, test=test, xml=xml))
        if name == "birds":  # keep the listing in PROVENANCE order: cal500 after birds
            cal_train, cal_test = fold_sizes(502, 5)
            tasks.append(MulanTask(
                name="cal500", kind="multilabel", k=174, primary_metric=PRIMARY_METRIC["multilabel"],
                description="Mulan CAL500: song annotation; no official split, 5-fold CV",
                n_features=68, n_train=cal_train, n_test=cal_test, n_folds=5,
                folder="cal500", full="cal500.arff", xml="cal500.xml"))
    for name, (file, rows, d, k) in _RANKING.items():
        n_train, n_test = fold_sizes(rows, 10)
        tasks.append(LabelRankingTask(
            name=name, kind="ranking", k=k, primary_metric=PRIMARY_METRIC["ranking"],
            description=f"label ranking {file} ({rows} rows, Cheng et al. 2009); 10-fold CV",
            n_features=d, n_train=n_train, n_test=n_test, file=file,
            headerless_features=9 if file.endswith("noheader.csv") else None))
    return tasks
