"""Real tasks: counts from PROVENANCE.md and each parsing caveat, checked against independent readers.

Needs the shared data folder: set EBM_BENCH_DATA (CI: ../shared/datasets; here /work/shared/datasets).
"""

import os
import re
from pathlib import Path

import numpy as np
import pytest

from tasks.mulan import read_label_names, read_multilabel
from tasks.prepare import carve_validation, fold_indices
from tasks.registry import get_task
from tasks.xarff import read_headerless_ranking, read_xarff

pytestmark = pytest.mark.data

DATA = Path(os.environ["EBM_BENCH_DATA"]) if os.environ.get("EBM_BENCH_DATA") else None
ML = DATA / "multilabel" if DATA else None
LR = DATA / "label_ranking" if DATA else None


@pytest.fixture(scope="module")
def data_dir() -> Path:
    if DATA is None:
        pytest.skip("EBM_BENCH_DATA is not set (point it at the shared datasets folder, e.g. ../shared/datasets)")
    if not DATA.is_dir():
        pytest.skip(f"EBM_BENCH_DATA={DATA} is not a directory")
    return DATA


# PROVENANCE.md: (train rows, test rows, feature attributes, labels); cal500 has one file
MULTILABEL_COUNTS = {
    "yeast": (1500, 917, 103, 14), "scene": (1211, 1196, 294, 6), "emotions": (391, 202, 72, 6),
    "birds": (322, 323, 260, 19), "enron": (1123, 579, 1001, 53), "corel5k": (4500, 500, 499, 374),
    "bibtex": (4880, 2515, 1836, 159), "delicious": (12920, 3185, 500, 983),
}
# PROVENANCE.md: file -> (rows, feature attributes, k, distinct rankings)
RANKING_COUNTS = {
    "analcatdata-authorship_dense.xarff": (841, 70, 4, 17), "bodyfat_dense.xarff": (252, 7, 7, 236),
    "calhousing_dense.xarff": (20640, 4, 4, 24), "cold_dense.xarff": (2465, 24, 4, 24),
    "cpu-small_dense.xarff": (8192, 6, 5, 119), "diau_dense.xarff": (2465, 24, 7, 967),
    "dtt_dense.xarff": (2465, 24, 4, 24), "elevators_dense.xarff": (16599, 9, 9, 131),
    "glass_dense.xarff": (214, 9, 6, 30), "heat_dense.xarff": (2465, 24, 6, 622),
    "housing_dense.xarff": (506, 6, 6, 112), "iris_dense.xarff": (150, 4, 3, 5),
    "pendigits_dense.xarff": (10992, 16, 10, 2081), "segment_dense.xarff": (2310, 18, 7, 135),
    "spo_dense.xarff": (2465, 24, 11, 2361), "stock_dense.xarff": (950, 5, 5, 51),
    "sushi.xarff": (5000, 10, 10, 4926), "vehicle_dense.xarff": (846, 18, 4, 18),
    "vowel_dense.xarff": (528, 10, 11, 294), "wine_dense.xarff": (178, 13, 3, 5),
}


def _files(name):
    folder = ML / name
    stem = "Corel5k" if name == "corel5k" else name
    suffix = "-sparse" if name == "corel5k" else ""
    return folder / f"{stem}-train{suffix}.arff", folder / f"{stem}-test{suffix}.arff", folder / f"{stem}.xml"


def _check_multilabel_counts(name):
    n_train, n_test, n_features, k = MULTILABEL_COUNTS[name]
    train_path, test_path, xml = _files(name)
    labels = read_label_names(xml)
    train = read_multilabel(train_path, label_names=labels)
    test = read_multilabel(test_path, label_names=labels)
    assert (train.y.shape, test.y.shape) == ((n_train, k), (n_test, k))
    assert len(train.source_features) == len(test.source_features) == n_features
    data = get_task(name).load(DATA, seed=0)
    assert (len(data.x_train) + len(data.x_val), len(data.x_test), data.k) == (n_train, n_test, k)
    assert data.label_names == labels
    task = get_task(name)
    assert (task.n_train, task.n_test, task.n_features, task.k) == (n_train, n_test, data.n_features, k)
    return train


@pytest.mark.parametrize("name", ["yeast", "scene", "emotions", "birds"])
def test_multilabel_counts(data_dir, name):
    _check_multilabel_counts(name)


def test_enron_counts_and_constant_label_warning(data_dir):
    # two enron labels never occur in the official training split: warn and go on
    with pytest.warns(UserWarning, match="constant over the training part"):
        _check_multilabel_counts("enron")


def test_corel5k_sparse_counts(data_dir):
    with pytest.warns(UserWarning, match="constant"):  # some of its 374 labels never occur in train
        train = _check_multilabel_counts("corel5k")
    assert set(np.unique(train.x)) <= {0.0, 1.0}  # binary nominal features read as one 0/1 column each


def test_bibtex_counts(data_dir):
    train = _check_multilabel_counts("bibtex")
    assert "instance" in train.feature_names  # a word feature, kept despite its identifier-like name


def test_delicious_counts(data_dir):
    train = _check_multilabel_counts("delicious")
    assert {"form_id", "video_id"} <= set(train.feature_names)


def test_cal500_counts_and_fixed_cv_split(data_dir):
    table = read_multilabel(ML / "cal500" / "cal500.arff", label_names=read_label_names(ML / "cal500" / "cal500.xml"))
    assert table.y.shape == (502, 174) and len(table.source_features) == 68
    task = get_task("cal500")
    test_sets = [fold_indices(502, task.n_folds, fold)[1] for fold in range(task.n_folds)]
    assert sorted(np.concatenate(test_sets).tolist()) == list(range(502))  # folds partition the rows
    a, b = task.load(data_dir, seed=0, fold=2), task.load(data_dir, seed=5, fold=2)
    np.testing.assert_array_equal(a.y_test, b.y_test)  # the fold, not the run seed, picks the test set
    assert len(a.x_test) == len(test_sets[2]) and "fold 2" in a.split_info
    with pytest.raises(ValueError, match="fold"):
        task.load(data_dir, seed=0, fold=task.n_folds)


def test_yeast_labels_matched_by_name_not_position(data_dir):
    from scipy.io import arff as scipy_arff

    xml_order = read_label_names(ML / "yeast" / "yeast.xml")
    raw, meta = scipy_arff.loadarff(ML / "yeast" / "yeast-train.arff")
    assert xml_order != meta.names()[-14:]  # the trap: XML order differs from column order
    table = read_multilabel(ML / "yeast" / "yeast-train.arff", label_names=xml_order)
    for j, label in enumerate(xml_order):
        np.testing.assert_array_equal(table.y[:, j], raw[label].astype(int))
    np.testing.assert_allclose(table.x[:, 0], raw["Att1"])


def test_sparse_arff_matches_hand_parsed_row(data_dir):
    path = ML / "enron" / "enron-train.arff"
    lines = path.read_text().splitlines()
    names = [re.match(r"@attribute\s+('.*?'|\S+)", line, re.I).group(1).strip("'")
             for line in lines if line.lower().startswith("@attribute")]
    first_row = lines[[line.lower().startswith("@data") for line in lines].index(True) + 1]
    ones = {int(cell.split()[0]) for cell in first_row.strip("{} ").split(",")}
    labels = read_label_names(ML / "enron" / "enron.xml")
    table = read_multilabel(path, label_names=labels)
    assert set(np.flatnonzero(table.y[0])) == {labels.index(names[i]) for i in ones if names[i] in labels}
    assert {table.feature_names[i] for i in np.flatnonzero(table.x[0])} == {names[i] for i in ones
                                                                             if names[i] not in labels}


def test_birds_nominal_features_and_quoted_label_names(data_dir):
    from scipy.io import arff as scipy_arff

    labels = read_label_names(ML / "birds" / "birds.xml")
    assert "Brown Creeper" in labels and "Swainson's Thrush" in labels
    table = read_multilabel(ML / "birds" / "birds-train.arff", label_names=labels)
    raw, meta = scipy_arff.loadarff(ML / "birds" / "birds-train.arff")
    location_values = meta["location"][1]
    onehot = np.stack([table.x[:, table.feature_names.index(f"location={v}")] for v in location_values], axis=1)
    np.testing.assert_array_equal(onehot.sum(axis=1), 1)
    np.testing.assert_array_equal(np.array(location_values)[onehot.argmax(axis=1)], raw["location"].astype(str))
    np.testing.assert_array_equal(table.x[:, table.feature_names.index("hasSegments")], raw["hasSegments"].astype(int))
    assert table.x.shape[1] == 258 + 1 + len(location_values)
    np.testing.assert_array_equal(table.y[:, labels.index("Swainson's Thrush")],
                                  raw["Swainson\\'s Thrush"].astype(int))


def test_label_ranking_file_counts(data_dir):
    for file, (rows, n_features, k, distinct) in RANKING_COUNTS.items():
        table = read_xarff(LR / file)
        assert table.ranks.shape == (rows, k), file
        assert len(table.source_features) == n_features, file
        assert len({tuple(r) for r in table.ranks}) == distinct, file


def test_xarff_order_strings_become_positions(data_dir):
    path = LR / "iris_dense.xarff"
    data_rows = path.read_text().split("@data", 1)[1].strip().splitlines()
    table = read_xarff(path)
    for order, positions in (("L2>L3>L1", [2, 0, 1]), ("L3>L2>L1", [2, 1, 0]), ("L1>L2>L3", [0, 1, 2])):
        row = next(i for i, line in enumerate(data_rows) if line.strip().endswith(order))
        assert table.ranks[row].tolist() == positions
    first = [float(v) for v in data_rows[0].split(",")[:-1]]
    np.testing.assert_allclose(table.x[0], first)


def test_sushi_nominal_features_one_hot(data_dir):
    table = read_xarff(LR / "sushi.xarff")
    assert table.label_names == list("abcdefghij")
    group = [i for i, name in enumerate(table.feature_names) if name.startswith("lives_in_region=")]
    assert len(group) == 11
    np.testing.assert_array_equal(table.x[:, group].sum(axis=1), 1)
    assert table.x[1, table.feature_names.index("lives_in_region=6:Kinki")] == 1  # row 1 lives in Osaka (Kinki)


def test_fried_headerless_csv(data_dir):
    table = read_headerless_ranking(LR / "fried_dense_noheader.csv", 9, ("L1", "L2", "L3", "L4", "L5"))
    assert table.x.shape == (40768, 9) and len({tuple(r) for r in table.ranks}) == 120
    first = (LR / "fried_dense_noheader.csv").open().readline().strip().split(",")
    np.testing.assert_allclose(table.x[0], [float(v) for v in first[:9]])
    order = first[9].split(">")
    assert [table.label_names[j] for j in np.argsort(table.ranks[0])] == order  # label at position p is order[p]
    assert table.ranks[0][int(order[0][1:]) - 1] == 0


def test_label_ranking_task_cv_and_standardisation(data_dir):
    task = get_task("lr-glass")
    assert task.n_folds == 10
    folds = [task.load(data_dir, seed=3, fold=f, val_fraction=0.0) for f in range(task.n_folds)]
    assert sum(len(d.x_test) for d in folds) == 214
    data = task.load(data_dir, seed=3)
    table = read_xarff(LR / "glass_dense.xarff")
    train_rows, test_rows = fold_indices(214, 10, 0)
    fit_rows = train_rows[carve_validation(len(train_rows), 3, 0.2)[0]]
    mean, std = table.x[fit_rows].mean(0), table.x[fit_rows].std(0)
    np.testing.assert_allclose(data.x_test, (table.x[test_rows] - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(data.y_test, table.ranks[test_rows])
    np.testing.assert_allclose(data.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(data.x_train.std(0), 1, atol=1e-4)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64


@pytest.mark.parametrize("name", ["lr-authorship", "lr-iris", "lr-vehicle", "lr-vowel", "lr-wine", "lr-sushi",
                                  "lr-cold", "lr-fried"])
def test_named_label_ranking_tasks_load(data_dir, name):
    task = get_task(name)
    assert task.available(data_dir) is None
    data = task.load(data_dir, seed=0)
    assert (len(data.x_train) + len(data.x_val), len(data.x_test), data.n_features, data.k) == \
        (task.n_train, task.n_test, task.n_features, task.k)


def test_missing_data_reports_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("EBM_BENCH_DATA", raising=False)
    task = get_task("yeast")
    assert "EBM_BENCH_DATA" in task.available(None)
    reason = task.available(tmp_path)
    assert "missing multilabel/yeast/yeast-train.arff" in reason and f"looked in data dir {tmp_path}" in reason
    with pytest.raises(FileNotFoundError, match="yeast-train.arff"):
        task.load(tmp_path, seed=0)
    info = get_task("lr-iris").info(tmp_path)
    assert not info.available and "iris_dense.xarff" in info.unavailable.problem
