"""Task registry, listing metadata and the tasks/ import boundary."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.base import log10_space_size, resolve_data_dir
from tasks.registry import get_task, list_tasks

REQUIRED_NAMES = {
    "yeast", "scene", "emotions", "birds", "cal500", "enron", "bibtex", "corel5k", "delicious",
    "lr-authorship", "lr-glass", "lr-iris", "lr-vehicle", "lr-vowel", "lr-wine", "lr-fried", "lr-sushi", "lr-cold",
    "syn-ising-k8", "syn-ising-k12", "syn-ising-k16", "syn-pl-k6", "syn-pl-k10",
    "sk-iris-ranking", "sk-wine-ranking", "sk-digits-ranking",
}


def test_every_named_task_is_registered():
    names = [task.name for task in list_tasks()]
    assert REQUIRED_NAMES <= set(names)
    assert len(names) == len(set(names))
    # one lr-* task per label-ranking file listed in PROVENANCE.md (20 XARFF + the fried CSV)
    assert sum(name.startswith("lr-") for name in names) == 21


def test_unknown_task_did_you_mean():
    with pytest.raises(ValueError, match="did you mean 'yeast'"):
        get_task("yaest")
    with pytest.raises(ValueError, match="unknown task 'zzzzzz'"):
        get_task("zzzzzz")


def test_log10_space_size_closed_forms():
    assert log10_space_size("multilabel", 10) == pytest.approx(math.log10(1024))
    assert log10_space_size("ranking", 5) == pytest.approx(math.log10(120))
    assert get_task("delicious").log10_size == pytest.approx(983 * math.log10(2))
    with pytest.raises(ValueError, match="unknown task kind"):
        log10_space_size("graph", 3)


def test_info_without_data_dir(monkeypatch):
    monkeypatch.delenv("EBM_BENCH_DATA", raising=False)
    for task in list_tasks():
        info = task.info(None)
        assert info.name == task.name and info.primary_metric == task.primary_metric
        assert info.n_train and info.n_test and info.n_features, task.name  # known without loading
        bundled = task.name.startswith(("syn-", "sk-"))
        assert info.available == bundled, task.name
        assert (info.unavailable is None) == bundled
    assert get_task("yeast").primary_metric == "f1_example" and get_task("lr-iris").primary_metric == "kendall"


def test_sklearn_ranking_tasks_follow_naive_bayes_posterior():
    from sklearn.datasets import load_iris
    from sklearn.naive_bayes import GaussianNB

    data = get_task("sk-iris-ranking").load(None, seed=0, val_fraction=0.0)
    assert data.k == 3 and data.label_names == ["setosa", "versicolor", "virginica"]
    iris = load_iris()
    posterior = GaussianNB().fit(iris.data, iris.target).predict_proba(iris.data)
    # the class ranked first is the naive-Bayes prediction, for every row of the full data set
    from tasks.prepare import fold_indices

    _, test_rows = fold_indices(150, 10, 0)
    assert (data.y_test.argmin(axis=1) == posterior[test_rows].argmax(axis=1)).all()


def test_resolve_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("EBM_BENCH_DATA", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    assert resolve_data_dir("/elsewhere") == Path("/elsewhere")
    monkeypatch.delenv("EBM_BENCH_DATA")
    assert resolve_data_dir(None) is None


def test_tasks_package_imports_no_torch_or_other_packages():
    code = ("import sys, tasks.registry as r; r.list_tasks(); r.get_task('syn-pl-k6').load(None, seed=0); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'ebm', 'baselines', 'harness')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_task_listing_names_the_missing_file_per_row_and_the_remedy_once(tmp_path):
    """``ebm-bench tasks`` with a data folder that lacks the real files: one short cell per row
    (the file's name), the shared remedy once on stderr, and every row on one line of a
    120-column terminal."""
    import os

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "COLUMNS": "120", "PYTHONPATH": str(root)}
    env.pop("EBM_BENCH_DATA", None)
    out = subprocess.run([sys.executable, "-m", "harness", "tasks", "--data-dir", str(tmp_path)], cwd=root, env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    names = [task.name for task in list_tasks()]
    rows = [line for line in lines if line.split()[:1] and line.split()[0] in names]
    assert [row.split()[0] for row in rows] == names and len(lines) == len(names) + 3  # title, header, rule
    assert max(len(line) for line in lines) <= 120
    assert next(row for row in rows if row.startswith("yeast ")).split()[-2:] == ["no", "yeast-train.arff"]
    assert next(row for row in rows if row.startswith("syn-ising-k8 ")).split()[-1] == "yes"
    assert out.stderr.count("get the public files") == 1 and f"looked in data dir {tmp_path}" in out.stderr
