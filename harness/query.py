"""SQL over a results directory with DuckDB, read-only.

Views (each exists even when its table has no files yet: then it is empty, with the schema's
columns):

* ``runs`` — ``DIR/runs/part-*.parquet``, deduped by ``run_id`` (the latest ``finished_at``
  wins, as in :func:`harness.store.read_table`);
* ``curves`` — the curve points of the attempt each kept ``runs`` row is (joined on
  ``(run_id, attempt)``: one attempt per run, orphan and duplicate points left out);
* ``trials``, ``perf`` — their part files, as stored;
* ``leaderboard`` — ``DIR/leaderboard.parquet`` if present, else computed from the runs.

Read-only by construction: the tables are read by pyarrow (:func:`harness.store.read_arrow`,
which unifies schemas, so files written before a column was added read with nulls in it) and
registered in an in-memory DuckDB as Arrow tables; only then is the connection closed off:
``enable_external_access = false`` (no file, no network, no ``ATTACH``/``COPY``/``read_*``),
extensions neither installed nor loaded, and ``lock_configuration = true`` so no ``SET`` gives
any of it back. On top of that only ``SELECT`` / ``EXPLAIN`` statements are accepted. Anything
else is refused with :class:`QueryRefused`, one line saying that query is read-only.

Corrupt, truncated or schema-conflicting files: **skipped with a warning naming the file** (a
``RuntimeWarning``; the CLI prints it on stderr), and the query runs over the remaining files.
``on_corrupt="raise"`` (CLI ``--strict``) stops instead with
:class:`harness.store.CorruptFileError` naming the file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

VIEWS = ("runs", "curves", "trials", "perf", "leaderboard")
FORMATS = ("table", "csv", "json")
#: statement types a query may contain (DuckDB's ``StatementType`` names)
ALLOWED_STATEMENTS = ("SELECT", "EXPLAIN")
#: the connection's settings, fixed before any user SQL runs
LOCKED_CONFIG = {"enable_external_access": False, "autoinstall_known_extensions": False,
                 "autoload_known_extensions": False, "allow_community_extensions": False}


class QueryError(RuntimeError):
    """The SQL did not parse or run; the message is DuckDB's, without a traceback."""


class QueryRefused(QueryError):
    """The SQL tried to write, read outside the views, install/load an extension or change settings."""


def _refused(what: str) -> QueryRefused:
    return QueryRefused(f"query is read-only: {what} is refused (only SELECT over the views "
                        f"{', '.join(VIEWS)})")


def _register_table(con: Any, results_dir: Path, table: str, on_corrupt: str) -> None:
    import pyarrow as pa

    from harness import store

    data = store.read_arrow(results_dir, table, on_corrupt=on_corrupt)
    if table == "runs":
        # one row per run: the latest finished_at; ties go to the later part file (read_arrow
        # concatenates files in name order, names sort by write time), as in store.read_table
        data = data.append_column("_order", pa.array(range(data.num_rows), type=pa.int64()))
        con.register("_runs_table", data)
        con.execute("create view runs as select * exclude (_order) from _runs_table "
                    "qualify row_number() over (partition by run_id "
                    "order by finished_at desc nulls last, _order desc) = 1")
    elif table == "curves":
        # the points of the attempt each kept run row is (store.kept_attempt_curves); orphan
        # points of an attempt that has no row, and exact duplicates, are left out
        con.register("_curves_table", data)
        con.execute("create view curves as select distinct c.* from _curves_table c semi join runs r "
                    "on c.run_id = r.run_id and c.attempt is not distinct from r.attempt")
    else:
        con.register(f"_{table}_table", data)
        con.execute(f"create view {table} as select * from _{table}_table")


def _create_leaderboard_view(con: Any, results_dir: Path, on_corrupt: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from harness import leaderboard, store

    path = results_dir / "leaderboard.parquet"
    board = None
    if path.is_file():
        try:
            board = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001
            message = f"corrupt results file {path} ({type(exc).__name__}: {exc})"
            if on_corrupt == "raise":
                raise store.CorruptFileError(message) from exc
            warnings.warn(message + "; recomputing the leaderboard from the runs", RuntimeWarning, stacklevel=2)
    if board is None:
        board = pa.Table.from_pandas(leaderboard.leaderboard_for(results_dir, on_corrupt="warn"), preserve_index=False)
    con.register("_leaderboard_table", board)
    con.execute("create view leaderboard as select * from _leaderboard_table")


def connect(results_dir: str | os.PathLike, *, on_corrupt: str = "warn") -> Any:
    """An in-memory, locked-down DuckDB connection with the views of the module doc."""
    import duckdb

    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results dir {results_dir} does not exist (run `ebm-bench run` first, "
                                "or pass --results-dir)")
    con = duckdb.connect(":memory:", config=dict(LOCKED_CONFIG))
    try:
        for table in ("runs", "curves", "trials", "perf"):
            _register_table(con, results_dir, table, on_corrupt)
        _create_leaderboard_view(con, results_dir, on_corrupt)
        con.execute("set lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def check_read_only(con: Any, sql: str) -> None:
    """Refuse (:class:`QueryRefused`) any statement that is not a SELECT / EXPLAIN."""
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"{type(exc).__name__}: {exc}\n(views: {', '.join(VIEWS)})") from None
    if not statements:
        raise QueryError("empty query")
    for statement in statements:
        kind = statement.type.name
        if kind not in ALLOWED_STATEMENTS:
            raise _refused(f"{kind} (a statement that is not a SELECT)")


def run_query(results_dir: str | os.PathLike, sql: str, *, on_corrupt: str = "warn") -> pd.DataFrame:
    """Run ``sql`` (SELECT only) over the views; DuckDB errors become :class:`QueryError`
    (message only), refused statements :class:`QueryRefused`."""
    import duckdb

    con = connect(results_dir, on_corrupt=on_corrupt)
    try:
        check_read_only(con, sql)
        return con.execute(sql).df()
    except duckdb.PermissionException as exc:
        what = str(exc).split(" - ")[0].replace("Permission Error: ", "")
        raise _refused(f"access outside the views ({what})") from None
    except duckdb.Error as exc:
        raise QueryError(f"{type(exc).__name__}: {exc}\n(views: {', '.join(VIEWS)})") from None
    finally:
        con.close()


def render_frame(frame: pd.DataFrame, fmt: str = "table", *, title: str | None = None) -> str:
    """A DataFrame as a rich table, CSV, or JSON records (timestamps ISO 8601)."""
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return frame.to_json(orient="records", date_format="iso", indent=1) + "\n"
    if fmt != "table":
        raise ValueError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
    from harness.tables import render_table

    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    rows = [["" if _is_null(v) else f"{v:.6g}" if isinstance(v, float) else str(v) for v in row]
            for row in frame.itertuples(index=False)]
    text = render_table([str(c) for c in frame.columns], rows, title=title, right=map(str, numeric))
    return text + f"({len(frame)} row{'s' if len(frame) != 1 else ''})\n"


def _is_null(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
