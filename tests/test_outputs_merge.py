"""merge: runs deduped by run_id (latest finished_at wins), curves of the kept rows only,
trials without exact duplicates, idempotent, into an existing directory without loss."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta

import pyarrow.parquet as pq
import pytest
from test_outputs_fixtures import T0, curve_rows, run_rows, trial_rows

from harness import merge, store


def _machine(directory, runs, marker: float):
    """A results dir holding ``runs``, their curves (train objective value offset by ``marker``
    so we can tell which machine a curve came from) and the shared trials."""
    curves = [dict(c, value=c["value"] + marker) if c["split"] == "train" else c for c in curve_rows(runs)]
    store.append_rows(directory, "runs", runs)
    store.append_rows(directory, "curves", curves)
    store.append_rows(directory, "trials", trial_rows())
    store.append_rows(directory, "perf", [_perf_row("shared", 1.0), _perf_row(directory.name, marker)])
    return directory


def _perf_row(benchmark: str, value: float) -> dict:
    return dict(benchmark=benchmark, task="syn", model="pairwise", method="bce", k=8, metric="ms_per_step",
                value=value, unit="ms", started_at=T0)


@pytest.fixture
def two_machines(tmp_path):
    rows = [r for r in run_rows()[1:] if r["status"] == "ok"]
    a_rows, b_rows = rows[:8], rows[5:]  # runs 5..7 ran on both machines
    # machine B re-ran run 5 later (B wins), machine A re-ran run 6 later (A wins); run 7 is a tie
    b_rows = [dict(r, finished_at=T0 + timedelta(days=1)) if i == 0 else r for i, r in enumerate(b_rows)]
    a_rows = [dict(r, finished_at=T0 + timedelta(days=2)) if i == 6 else r for i, r in enumerate(a_rows)]
    a = _machine(tmp_path / "a", a_rows, marker=1000.0)
    b = _machine(tmp_path / "b", b_rows, marker=2000.0)
    return a, b, rows


def _train_marker(curves, run_id) -> float:
    """Which machine wrote this run's train curve (1000 = A, 2000 = B); one machine only."""
    values = curves[(curves.run_id == run_id) & (curves.split == "train")]["value"]
    markers = set((values // 1000).astype(int) * 1000)
    assert len(markers) == 1, f"curves of {run_id} come from several sources: {markers}"
    return float(markers.pop())


def test_merge_dedupes_runs_and_keeps_matching_curves(two_machines, tmp_path):
    a, b, rows = two_machines
    summary = merge.merge_results([a, b], tmp_path / "c")
    c = tmp_path / "c"
    runs = store.read_table(c, "runs")
    assert len(store.read_arrow(c, "runs")) == len(rows) == summary.runs  # stored deduped, not just read so
    assert set(runs.run_id) == {r["run_id"] for r in rows}
    assert summary.runs_superseded == 3
    curves = store.read_table(c, "curves")
    ids = [r["run_id"] for r in rows]
    assert _train_marker(curves, ids[5]) == 2000.0  # B finished later
    assert _train_marker(curves, ids[6]) == 1000.0  # A finished later
    assert _train_marker(curves, ids[7]) == 2000.0  # tie: the source given last
    assert _train_marker(curves, ids[0]) == 1000.0 and _train_marker(curves, ids[-1]) == 2000.0
    assert len(curves) == len(curve_rows(rows)) == summary.curves
    assert len(store.read_table(c, "trials")) == len(trial_rows())  # exact duplicates dropped
    perf = store.read_table(c, "perf")
    assert sorted(perf["benchmark"]) == ["a", "b", "shared"] == sorted(pq.read_table(c / "perf.parquet")["benchmark"].to_pylist())
    assert (c / "leaderboard.parquet").is_file()
    invocations = json.loads((c / "manifest.json").read_text())["invocations"]
    assert [i["command"] for i in invocations] == ["merge"]
    assert [o["dir"] for o in invocations[0]["sources"]] == [str(a), str(b)]


def test_merge_into_a_source_is_idempotent_and_loses_nothing(two_machines):
    a, b, rows = two_machines
    merge.merge_results([b], a)
    first = store.read_table(a, "runs").sort_values("run_id").reset_index(drop=True)
    n_curves = len(store.read_table(a, "curves"))
    merge.merge_results([a, b], a)  # a again as a source: ignored, b's rows already present
    again = store.read_table(a, "runs").sort_values("run_id").reset_index(drop=True)
    assert len(first) == len(again) == len(rows)
    assert first["finished_at"].equals(again["finished_at"])
    assert len(store.read_table(a, "curves")) == n_curves == len(curve_rows(rows))
    assert len(list((a / "runs").glob("part-*.parquet"))) == 1  # old parts replaced


def test_cli_merge_and_missing_source(two_machines, tmp_path, capsys):
    from harness.commands import merge as command

    a, b, rows = two_machines
    assert command.run(argparse.Namespace(sources=[str(a), str(b)], into=str(tmp_path / "c"))) == 0
    assert f"{len(rows)} runs" in capsys.readouterr().out
    assert command.run(argparse.Namespace(sources=[str(tmp_path / "nope")], into=str(tmp_path / "c"))) == 2
    assert "nope" in capsys.readouterr().err


def test_merge_keeps_the_curves_of_the_kept_attempt_only(tmp_path):
    """One run stored twice in one directory (attempt 1, then attempt 2 after --force) plus
    orphan points of an attempt 3 that never got a row (driver killed between the writes) and a
    duplicated point: after merge, and in read_table and the curves view, only attempt 2's
    points remain, once each."""
    from harness import query

    row = dict(next(r for r in run_rows() if r["status"] == "ok"))
    source = tmp_path / "src"
    store.append_rows(source, "runs", [dict(row, attempt=1, attempts=1)])
    store.append_rows(source, "runs", [dict(row, attempt=2, attempts=2, finished_at=T0 + timedelta(days=1))])
    points = [{"run_id": row["run_id"], "step": s, "split": "val", "metric": "nll", "value": float(s)}
              for s in (1, 2)]
    store.append_rows(source, "curves", [dict(p, attempt=1, value=-1.0) for p in points])
    store.append_rows(source, "curves", [dict(p, attempt=2) for p in points] + [dict(points[0], attempt=2)])
    store.append_rows(source, "curves", [dict(p, attempt=3, value=99.0) for p in points])
    for directory in (source, merge.merge_results([source], tmp_path / "into").into):
        curves = store.read_table(directory, "curves")
        assert sorted(curves["value"]) == [1.0, 2.0] and set(curves["attempt"]) == {2}
        view = query.run_query(directory, "select attempt, value from curves order by value")
        assert view["value"].tolist() == [1.0, 2.0] and set(view["attempt"]) == {2}
        runs = store.read_table(directory, "runs")
        assert runs["attempt"].tolist() == [2] and runs["attempts"].tolist() == [2]
