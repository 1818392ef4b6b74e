"""Results storage: schemas, atomic part files, dedupe, corrupt files, concurrent writers."""

from __future__ import annotations

import multiprocessing
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import store


def _run(run_id: str, status: str = "ok", minute: int = 0, **extra) -> dict:
    finished = datetime(2025, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=minute)
    return {"run_id": run_id, "task": "t", "status": status, "finished_at": finished, **extra}


def test_runs_schema_has_the_documented_columns():
    required = ("run_id suite task space k model method seed fold params_json status error train_seconds n_steps "
                "energy_evals device host started_at finished_at versions_json config_hash tau_mae kl_to_truth").split()
    metrics = "f1_example f1_micro f1_macro hamming subset_acc kendall spearman exact_match nll nll_stderr".split()
    names = set(store.RUNS_SCHEMA.names)
    assert set(required) <= names
    assert {f"test_{m}" for m in metrics} <= names and {f"val_{m}" for m in metrics} <= names
    assert store.CURVES_SCHEMA.names == ["run_id", "step", "seconds", "energy_evals", "split", "metric", "value", "attempt"]
    assert {"benchmark", "ratio", "reference_method", "unit"} <= set(store.PERF_SCHEMA.names)
    assert store.RUNS_SCHEMA.metadata[b"ebm_bench_schema_version"] == str(store.SCHEMA_VERSION).encode()


def test_append_writes_one_part_file_with_the_schema(tmp_path):
    path = store.append_rows(tmp_path, "runs", [_run("a", test_f1_example=0.5), _run("b", status="failed")])
    assert path.parent == tmp_path / "runs" and path.name.startswith("part-")
    table = pq.read_table(path)
    assert table.schema.field("k").type == pa.int64() and table.schema.field("test_f1_example").type == pa.float64()
    assert table.num_rows == 2
    assert not list((tmp_path / "runs").glob(".tmp-*"))  # temp files renamed away
    frame = store.read_table(tmp_path, "runs")
    assert sorted(frame["run_id"]) == ["a", "b"]
    assert frame.set_index("run_id").loc["a", "test_f1_example"] == 0.5


def test_unknown_columns_rejected_but_new_metrics_allowed(tmp_path):
    with pytest.raises(store.StoreError, match="unknown column 'colour'"):
        store.append_rows(tmp_path, "runs", [_run("a", colour="red")])
    with pytest.raises(store.StoreError, match="unknown results table"):
        store.append_rows(tmp_path, "runz", [_run("a")])
    store.append_rows(tmp_path, "runs", [_run("a")])
    store.append_rows(tmp_path, "runs", [_run("b", test_brand_new=2.0)])  # a later, nullable column
    frame = store.read_table(tmp_path, "runs").set_index("run_id")
    assert frame.loc["b", "test_brand_new"] == 2.0 and frame["test_brand_new"].isna()["a"]


def test_old_files_without_new_columns_read_with_nulls(tmp_path):
    old = pa.table({"run_id": ["old"], "status": ["ok"]})  # a file from before most columns existed
    (tmp_path / "runs").mkdir()
    pq.write_table(old, tmp_path / "runs" / "part-0-old.parquet")
    store.append_rows(tmp_path, "runs", [_run("new", test_kendall=0.3)])
    frame = store.read_table(tmp_path, "runs").set_index("run_id")
    assert list(frame.columns) == [c for c in store.RUNS_SCHEMA.names if c != "run_id"]
    assert frame["test_kendall"].isna()["old"] and frame.loc["new", "test_kendall"] == 0.3


def test_runs_deduped_keeping_latest_finished(tmp_path):
    store.append_rows(tmp_path, "runs", [_run("a", "failed", minute=5)])
    store.append_rows(tmp_path, "runs", [_run("a", "ok", minute=9), _run("b", "ok", minute=1)])
    store.append_rows(tmp_path, "runs", [_run("a", "timeout", minute=7)])  # written later, finished earlier
    assert store.run_statuses(tmp_path) == {"a": "ok", "b": "ok"}
    assert store.completed_run_ids(tmp_path) == {"a", "b"}
    assert len(store.read_arrow(tmp_path, "runs")) == 4  # nothing is deleted


def test_corrupt_file_warns_with_name_or_raises(tmp_path):
    store.append_rows(tmp_path, "runs", [_run("a")])
    good = store.append_rows(tmp_path, "runs", [_run("b")])
    truncated = tmp_path / "runs" / "part-zz-truncated.parquet"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.warns(RuntimeWarning, match="part-zz-truncated.parquet"):
        frame = store.read_table(tmp_path, "runs")
    assert sorted(frame["run_id"]) == ["a", "b"]
    with pytest.raises(store.CorruptFileError, match="part-zz-truncated.parquet"):
        store.read_table(tmp_path, "runs", on_corrupt="raise")
    with pytest.warns(RuntimeWarning):
        assert truncated not in store.table_files(tmp_path, "runs")


def test_table_glob_reads_in_duckdb(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    store.append_rows(tmp_path, "runs", [_run("a", test_f1_example=0.25)])
    store.append_rows(tmp_path, "runs", [_run("b", test_new_metric=1.0)])
    rows = duckdb.sql(f"select run_id, test_new_metric from read_parquet('{store.table_glob(tmp_path, 'runs')}', "
                      "union_by_name=true) order by run_id").fetchall()
    assert rows == [("a", None), ("b", 1.0)]


def test_perf_mirrored_to_single_file(tmp_path):
    store.append_rows(tmp_path, "perf", [{"benchmark": "step", "value": 1.0}])
    store.append_rows(tmp_path, "perf", [{"benchmark": "step", "value": 2.0}])
    assert sorted(pq.read_table(tmp_path / "perf.parquet")["value"].to_pylist()) == [1.0, 2.0]


def test_not_writable_results_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(store.StoreError, match="not a directory"):
        store.check_writable(blocker)
    with pytest.raises(store.StoreError, match="not writable"):
        store.check_writable(blocker / "results")


def _writer(directory: str, prefix: str, n: int) -> None:
    for i in range(n):
        store.append_rows(directory, "runs", [_run(f"{prefix}{i}-{j}") for j in range(3)])


def test_two_concurrent_writers_lose_nothing(tmp_path):
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_writer, args=(str(tmp_path), p, 15)) for p in ("x", "y")]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
        assert w.exitcode == 0
    frame = store.read_table(tmp_path, "runs", on_corrupt="raise")
    assert len(frame) == 2 * 15 * 3 and frame["run_id"].is_unique
