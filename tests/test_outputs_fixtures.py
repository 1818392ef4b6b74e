"""A tiny hand-made results directory shared by the tests of leaderboard, query, plots, report
and merge. Every number the tests expect is computed from the lists below, by hand or numpy."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)

#: (task, model, method) -> per-seed test metric values of the ok runs
OK_RESULTS = {
    ("yeast", "unary", "minmin-logistic"): {"f1_example": [0.60, 0.62, 0.64], "hamming": [0.20, 0.19, 0.18]},
    ("yeast", "unary", "bce"): {"f1_example": [0.50, 0.54], "hamming": [0.25, 0.23]},
    ("yeast", "pairwise", "minmin-logistic"): {"f1_example": [0.55, 0.57], "hamming": [0.21, 0.21]},
    ("yeast", "pairwise", "bce"): {"f1_example": [0.58, 0.60], "hamming": [0.22, 0.20]},
    ("lr-iris", "permutahedron", "minmin-logistic"): {"kendall": [0.80, 0.90]},
    ("lr-iris", "permutahedron", "bce"): {"kendall": [0.70, 0.74]},
}
#: (task, model, method) -> number of failed-like runs (status, message)
FAILED = {
    ("yeast", "unary", "bce"): [("timeout", "run exceeded 60 s")],
    ("yeast", "unary", "exact-mle"): [("failed", "boom: exact-mle exploded"), ("diverged", "nan loss"),
                                      ("failed", "boom again")],
}
UNSUPPORTED = [("lr-iris", "permutahedron", "exact-mle")]
PRIMARY = {"yeast": "f1_example", "lr-iris": "kendall"}
CURVE_STEPS = (10, 20, 30)
N_TAU_POINTS = 5


def run_rows() -> list[dict]:
    """Run rows; one run (``yeast/unary/bce/seed1``) is stored twice: a failed attempt first,
    then the ok rerun with a later ``finished_at`` (the one readers must keep)."""
    rows = []
    clock = 0
    for (task, model, method), metrics in OK_RESULTS.items():
        n = len(next(iter(metrics.values())))
        for seed in range(n):
            clock += 1
            row = dict(run_id=f"{task}-{model}-{method}-s{seed}", suite="test", task=task, model=model,
                       method=method, seed=seed, fold=0, status="ok", primary_metric=PRIMARY[task],
                       k=14 if task == "yeast" else 3, space="multilabel" if task == "yeast" else "ranking",
                       train_seconds=1.0 + seed, n_steps=30, started_at=T0 + timedelta(minutes=clock),
                       finished_at=T0 + timedelta(minutes=clock, seconds=30))
            row.update({f"test_{m}": values[seed] for m, values in metrics.items()})
            rows.append(row)
    for (task, model, method), failures in FAILED.items():
        for index, (status, message) in enumerate(failures):
            rows.append(dict(run_id=f"{task}-{model}-{method}-f{index}", suite="test", task=task, model=model,
                             method=method, seed=10 + index, fold=0, status=status, error=message,
                             primary_metric=PRIMARY[task], finished_at=T0 + timedelta(hours=1)))
    for task, model, method in UNSUPPORTED:
        rows.append(dict(run_id=f"{task}-{model}-{method}-u", suite="test", task=task, model=model, method=method,
                         seed=0, fold=0, status="unsupported", error="k too large", finished_at=T0))
    superseded = dict(next(r for r in rows if r["run_id"] == "yeast-unary-bce-s1"))
    superseded.update(status="failed", error="stale attempt", test_f1_example=None, test_hamming=None,
                      finished_at=T0)
    return [superseded] + rows


def curve_rows(runs: list[dict]) -> list[dict]:
    """Train objective and validation primary metric at CURVE_STEPS for every ok run, plus
    τ/log Z points for the min-min runs (split "tau", see harness.plots)."""
    rows = []
    for run in runs:
        if run["status"] != "ok":
            continue
        for step in CURVE_STEPS:
            base = dict(run_id=run["run_id"], step=step, seconds=step / 10 * (1 + run["seed"]), energy_evals=64 * step)
            rows.append(base | dict(split="train", metric="objective", value=1.0 / step))
            rows.append(base | dict(split="val", metric=run["primary_metric"], value=0.5 + step / 100))
        if run["method"].startswith("minmin"):
            for i in range(N_TAU_POINTS):
                rows.append(dict(run_id=run["run_id"], step=i, split="tau", metric="logz", value=float(i)))
                rows.append(dict(run_id=run["run_id"], step=i, split="tau", metric="tau", value=i + 0.1))
    return rows


def trial_rows() -> list[dict]:
    return [dict(study=f"yeast-unary-{m}", trial_number=t, task="yeast", model="unary", method=m,
                 params_json='{"lr": 0.01}', value=0.5 + t / 10, state="COMPLETE", n_steps=30,
                 started_at=T0, finished_at=T0 + timedelta(seconds=t))
            for m in ("bce", "minmin-logistic") for t in range(2)]


def write_results(directory: Path) -> Path:
    """Write the fixture through the store (two part files for runs, as two appends would)."""
    from harness import store

    runs = run_rows()
    store.append_rows(directory, "runs", runs[:1])  # the stale attempt, in its own (earlier) file
    store.append_rows(directory, "runs", runs[1:])
    store.append_rows(directory, "curves", curve_rows(runs))
    store.append_rows(directory, "trials", trial_rows())
    return directory


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    return write_results(tmp_path / "results")


def test_fixture_round_trips_through_the_store(results_dir: Path) -> None:
    from harness import store

    runs = store.read_table(results_dir, "runs")
    assert len(runs) == len({r["run_id"] for r in run_rows()})
    assert runs.set_index("run_id").at["yeast-unary-bce-s1", "status"] == "ok"
