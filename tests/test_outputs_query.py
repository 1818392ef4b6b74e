"""DuckDB views over a results directory: the issue's example query, dedupe, empty tables,
corrupt files (skipped with a warning naming them), SQL errors (exit code 2, no traceback)."""

from __future__ import annotations

import argparse
import json
import shutil
import warnings

import numpy as np
import pytest
from test_outputs_fixtures import OK_RESULTS, run_rows, results_dir  # noqa: F401 (fixture)

from harness import query, store

ISSUE_SQL = "select method, avg(test_f1_example) from runs where task = 'yeast' group by 1 order by 1"


def _expected_yeast_means() -> dict[str, float]:
    """avg over all ok yeast runs (both models) of test_f1_example, per method."""
    values: dict[str, list[float]] = {}
    for (task, _model, method), metrics in OK_RESULTS.items():
        if task == "yeast":
            values.setdefault(method, []).extend(metrics["f1_example"])
    values.setdefault("exact-mle", [])
    return {m: (np.mean(v) if v else np.nan) for m, v in values.items()}


def test_issue_example_query(results_dir):
    frame = query.run_query(results_dir, ISSUE_SQL)
    got = dict(zip(frame.iloc[:, 0], frame.iloc[:, 1]))
    expected = _expected_yeast_means()
    assert sorted(got) == sorted(expected)
    for method, mean in expected.items():
        assert got[method] == pytest.approx(mean, nan_ok=True)


def test_runs_view_is_deduped_latest_wins(results_dir):
    n_rows = len(run_rows())
    assert len(store.read_arrow(results_dir, "runs")) == n_rows  # the stale attempt is stored
    frame = query.run_query(results_dir, "select run_id, status from runs")
    assert len(frame) == n_rows - 1 == frame["run_id"].nunique()
    assert frame.set_index("run_id").at["yeast-unary-bce-s1", "status"] == "ok"


def test_views_exist_when_tables_are_empty(results_dir):
    assert query.run_query(results_dir, "select count(*) as n from perf")["n"].iloc[0] == 0
    columns = query.run_query(results_dir, "select * from perf limit 0").columns
    assert list(columns) == store.PERF_SCHEMA.names
    assert query.run_query(results_dir, "select count(*) as n from trials")["n"].iloc[0] == 4
    curves = query.run_query(results_dir, "select count(distinct run_id) as n from curves where split = 'tau'")
    n_minmin = sum(len(m[next(iter(m))]) for (_, _, method), m in OK_RESULTS.items() if method.startswith("minmin"))
    assert curves["n"].iloc[0] == n_minmin == 7  # every ok min-min run has τ points


def test_leaderboard_view_without_a_written_file(results_dir):
    frame = query.run_query(results_dir, "select mean, n_failed from leaderboard where task = 'yeast' and "
                                         "model = 'unary' and method = 'minmin-logistic' and metric = 'f1_example'")
    assert frame["mean"].iloc[0] == pytest.approx(0.62)


def _corrupt(results_dir, how: str):
    """Add a bad part file next to the good ones; returns its path."""
    good = sorted((results_dir / "runs").glob("part-*.parquet"))[-1]
    bad = good.with_name("part-zzzz-bad.parquet")
    if how == "truncated":
        data = good.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        bad.write_bytes(b"PAR1 this is not parquet at all PAR1")
    return bad


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_corrupt_file_is_skipped_with_a_warning_naming_it(results_dir, how):
    bad = _corrupt(results_dir, how)
    with pytest.warns(RuntimeWarning, match=bad.name):
        frame = query.run_query(results_dir, ISSUE_SQL)
    assert dict(zip(frame.iloc[:, 0], frame.iloc[:, 1]))["bce"] == pytest.approx(_expected_yeast_means()["bce"])
    with pytest.raises(store.CorruptFileError, match=bad.name):
        query.run_query(results_dir, ISSUE_SQL, on_corrupt="raise")


def test_sql_error_is_a_query_error(results_dir):
    with pytest.raises(query.QueryError, match="no_such_table"):
        query.run_query(results_dir, "select * from no_such_table")


def _cli(results_dir, sql, fmt="table", strict=False):
    from harness.commands import query as command

    return command.run(argparse.Namespace(results_dir=str(results_dir), sql=sql, format=fmt, strict=strict))


def test_cli_formats_and_exit_codes(results_dir, capsys):
    assert _cli(results_dir, ISSUE_SQL) == 0
    out = capsys.readouterr().out
    assert "minmin-logistic" in out and "(3 rows)" in out
    assert _cli(results_dir, ISSUE_SQL, "json") == 0
    records = json.loads(capsys.readouterr().out)
    assert {r["method"] for r in records} == {"bce", "exact-mle", "minmin-logistic"}
    assert _cli(results_dir, "select count(*) as n from runs", "csv") == 0
    assert capsys.readouterr().out.splitlines() == ["n", str(len(run_rows()) - 1)]

    assert _cli(results_dir, "selec nonsense") == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error:") and "Traceback" not in captured.err and captured.out == ""
    assert _cli(results_dir / "missing", ISSUE_SQL) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_warns_on_stderr_and_strict_stops(results_dir, capsys):
    bad = _corrupt(results_dir, "truncated")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert _cli(results_dir, ISSUE_SQL) == 0
    captured = capsys.readouterr()
    assert bad.name in captured.err and "bce" in captured.out
    assert _cli(results_dir, ISSUE_SQL, strict=True) == 2
    assert bad.name in capsys.readouterr().err


def test_schema_growth_reads_old_files_with_nulls(results_dir, tmp_path):
    """A newer part file with an extra metric column: union_by_name gives nulls to older rows."""
    copy = tmp_path / "grown"
    shutil.copytree(results_dir, copy)
    row = dict(run_rows()[1], run_id="new-run", test_new_metric=0.5)
    store.append_rows(copy, "runs", [row])
    frame = query.run_query(copy, "select count(*) as n, count(test_new_metric) as m from runs")
    assert (frame["n"].iloc[0], frame["m"].iloc[0]) == (len(run_rows()), 1)


def _snapshot(*roots) -> dict:
    """Every file under ``roots`` with its size and mtime (ns)."""
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            stat = path.stat()
            out[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return out


def _refused_statements(results_dir, outside):
    forged = results_dir / "runs" / "part-99999999T000000000000Z-forged.parquet"
    return [
        ("copy-outside", f"copy (select * from runs) to '{outside / 'stolen.csv'}'", outside / "stolen.csv"),
        ("attach-create", f"attach '{outside / 'new.db'}' as other; create table other.t as select 1 as x",
         outside / "new.db"),
        ("read-outside", "select * from read_text('/etc/hostname')", None),
        ("install", "install httpfs", None),
        ("copy-into-runs", f"copy (select * replace (0.999 as test_f1_example) from runs) to '{forged}' "
                           "(format parquet)", forged),
        ("read-parquet", f"select * from read_parquet('{results_dir}/runs/*.parquet')", None),
        ("unlock", "set enable_external_access = true", None),
        ("create", "create table t as select 1 as x", None),
    ]


@pytest.mark.parametrize("case", range(8))
def test_query_is_read_only(results_dir, tmp_path, case, capsys):
    """Each statement that would write, read outside the views, install an extension or change
    settings is refused with one line saying query is read-only; no file inside the results dir
    or in the outside folder changes, and the views still give the stored numbers."""
    outside = tmp_path / "outside"
    outside.mkdir()
    name, sql, target = _refused_statements(results_dir, outside)[case]
    before = _snapshot(results_dir, outside)
    with pytest.raises(query.QueryRefused, match="^query is read-only"):
        query.run_query(results_dir, sql)
    assert _cli(results_dir, sql) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: query is read-only") and len(err.strip().splitlines()) == 1, (name, err)
    assert _snapshot(results_dir, outside) == before, name
    assert target is None or not target.exists()
    frame = query.run_query(results_dir, ISSUE_SQL)
    assert dict(zip(frame.iloc[:, 0], frame.iloc[:, 1]))["bce"] == pytest.approx(_expected_yeast_means()["bce"])


def test_read_only_query_still_answers_describe_and_explain(results_dir):
    assert "run_id" in set(query.run_query(results_dir, "describe runs")["column_name"])
    assert len(query.run_query(results_dir, "explain select count(*) from runs"))
