"""The typed vocabulary: Status, RunRecord (and the runs schema derived from it), Metric objects."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import store
from harness.records import RunRecord, Status
from tasks.metrics import ALL_METRICS, METRIC_BY_NAME, METRICS, get_metric, multilabel_metrics, ranking_metrics


def test_status_is_a_string_with_its_properties():
    assert Status.OK == "ok" and f"{Status.TIMEOUT}" == "timeout" and str(Status.PRUNED) == "pruned"
    assert Counter([Status.OK, "ok", Status.FAILED]) == {"ok": 2, "failed": 1}  # hashes like its value
    assert {s.value for s in Status} == {"ok", "failed", "timeout", "diverged", "skipped", "unsupported", "pruned"}
    assert {s for s in Status if s.is_failure} == {Status.FAILED, Status.TIMEOUT, Status.DIVERGED}
    assert {s for s in Status if s.retryable} == {Status.FAILED, Status.TIMEOUT}
    assert {s for s in Status if s.decided_at_plan} == {Status.SKIPPED, Status.UNSUPPORTED}
    assert not Status.OK.is_failure and not Status.PRUNED.is_failure
    with pytest.raises(ValueError):
        Status("done")


def test_runs_schema_is_derived_from_the_record():
    names = store.RUNS_SCHEMA.names
    record_fields = [n for n in RunRecord.__dataclass_fields__ if n != "metrics"]
    assert [n for n in names if n in record_fields] == record_fields  # the record's order
    assert set(names) - set(record_fields) == {m.column for m in ALL_METRICS} | {
        m.val_column for m in ALL_METRICS if m.val_column}
    types = dict(zip(names, store.RUNS_SCHEMA.types))
    assert types["status"] == pa.string() and types["best_step"] == pa.int64()
    assert types["stopped_early"] == pa.bool_() and types["finished_at"] == pa.timestamp("us", tz="UTC")
    assert all(types[m.column] == pa.float64() for m in ALL_METRICS)
    assert [f.name for f in store.RUNS_SCHEMA if not f.nullable] == ["run_id"]


def test_record_round_trips_through_the_store(tmp_path):
    record = RunRecord(run_id="a", task="t", status=Status.TIMEOUT, n_steps=3, best_step=2, stopped_early=True,
                       selection="best_val", prior="frequency", config="m[x=1]", attempt=1,
                       finished_at=datetime(2025, 1, 1, tzinfo=UTC))
    record.set_metrics("val", {"f1_example": 0.25, "nll": 1.5})
    record.set_metrics("test", {"f1_example": 0.5, "tau_mae": 0.125, "new_metric": 2.0})
    row = record.to_row()
    assert row["status"] == "timeout" and type(row["status"]) is str
    assert row["val_f1_example"] == 0.25 and row["test_f1_example"] == 0.5 and row["tau_mae"] == 0.125
    assert row["val_nll"] == 1.5 and row["test_new_metric"] == 2.0
    store.append_rows(tmp_path, "runs", [row])
    back = store.read_table(tmp_path, "runs").iloc[0].to_dict()
    again = RunRecord.from_row({k: v for k, v in back.items() if not (isinstance(v, float) and np.isnan(v))
                                and v is not None})
    assert again.status is Status.TIMEOUT and again.best_step == 2 and again.stopped_early
    assert again.metrics == {"val_f1_example": 0.25, "val_nll": 1.5, "test_f1_example": 0.5,
                             "tau_mae": 0.125, "test_new_metric": 2.0}


def test_a_version_1_file_reads_with_nulls_in_the_new_columns(tmp_path):
    """Files written before the record grew (schema v1: no config/selection/... columns) still read."""
    old = pa.schema([f for f in store.RUNS_SCHEMA if f.name not in
                     ("config", "selection", "best_step", "stopped_early", "attempt", "prior")])
    (tmp_path / "runs").mkdir()
    pq.write_table(pa.Table.from_pylist([{"run_id": "old", "status": "ok", "test_f1_example": 0.5}], schema=old),
                   tmp_path / "runs" / "part-old.parquet")
    store.append_rows(tmp_path, "runs", [RunRecord(run_id="new", status=Status.OK, best_step=4).to_row()])
    runs = store.read_table(tmp_path, "runs").set_index("run_id")
    assert runs.loc["old", "test_f1_example"] == 0.5 and pd.isna(runs.loc["old", "best_step"])
    assert runs.loc["new", "best_step"] == 4


def test_metric_objects_are_the_one_source():
    assert METRICS == {m.name: m.direction for m in ALL_METRICS if m.ranked}
    assert "nll_stderr" not in METRICS and METRIC_BY_NAME["nll_stderr"].val_column == "val_nll_stderr"
    for name, kind in (("f1_macro", "multilabel"), ("kendall", "ranking"), ("nll", "any")):
        assert get_metric(name).kind == kind
    # the metric functions return exactly their kind's metrics
    multilabel = set(multilabel_metrics(np.eye(2, dtype=int), np.eye(2, dtype=int)))
    ranking = set(ranking_metrics(np.array([[0, 1]]), np.array([[0, 1]])))
    assert multilabel == {m.name for m in ALL_METRICS if m.kind == "multilabel"}
    assert ranking == {m.name for m in ALL_METRICS if m.kind == "ranking"}
    assert get_metric("tau_mae").column == "tau_mae" and get_metric("hamming").column_for("val") == "val_hamming"
    with pytest.raises(ValueError, match="did you mean 'kendall'"):
        get_metric("kendal")
    with pytest.raises(ValueError, match="no 'val' column"):
        get_metric("kl_to_truth").column_for("val")


def test_leaderboard_columns_come_from_the_metrics():
    from harness.leaderboard import metric_column

    assert {metric_column(name) for name in METRICS} <= set(store.RUNS_SCHEMA.names)
    assert metric_column("kl_to_truth") == "kl_to_truth" and metric_column("f1_micro") == "test_f1_micro"
    assert metric_column("brand_new") == "test_brand_new"


def test_a_run_records_its_selection_and_prior(tmp_path):
    """The contract-2 columns a real training run fills: the model-selection rule, the step whose
    parameters were kept (one of the evaluation steps), early stopping, and the prior q used."""
    from harness_fixtures import serial_options, write_suite

    from harness.commands.run import run_suite

    run_suite(write_suite(tmp_path, methods=("minmin-logistic",), steps=4, eval_every=2),
              options=serial_options(tmp_path / "r"))
    row = store.read_table(tmp_path / "r", "runs").iloc[0]
    assert row["status"] == "ok" and row["selection"] == "best_val" and row["best_step"] in (2, 4)
    assert row["stopped_early"] == False and row["prior"] == "uniform"  # noqa: E712 - numpy bool
