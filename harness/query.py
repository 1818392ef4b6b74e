"""SQL over a results directory with DuckDB.

Views (each exists even when its table has no files yet: then it is empty, with the schema's
columns):

* ``runs`` — ``DIR/runs/part-*.parquet``, deduped by ``run_id`` (the latest ``finished_at``
  wins, as in :func:`harness.store.read_table`);
* ``curves``, ``trials``, ``perf`` — their part files, as stored;
* ``leaderboard`` — ``DIR/leaderboard.parquet`` if present, else computed from the runs.

Files are read with ``read_parquet([...], union_by_name = true)``, so files written before a
column was added read with nulls in it.

Corrupt or truncated files: **skipped with a warning naming the file** (a ``RuntimeWarning``;
the CLI prints it on stderr), and the query runs over the remaining files. Each file is checked
with pyarrow before the view is created (footer and a full read of its row groups: results
tables are small, and a file that passes the footer check can still hold a damaged page).
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


class QueryError(RuntimeError):
    """The SQL did not parse or run; the message is DuckDB's, without a traceback."""


def readable_files(results_dir: str | os.PathLike, table: str, *, on_corrupt: str = "warn") -> list[Path]:
    """The part files of ``table`` that pyarrow can read completely (see the module doc)."""
    import pyarrow.parquet as pq

    from harness import store

    good = []
    for path in store.table_files(results_dir, table, on_corrupt=on_corrupt):
        try:
            pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - a damaged page is reported like a bad footer
            message = f"corrupt results file {path} ({type(exc).__name__}: {exc})"
            if on_corrupt == "raise":
                raise store.CorruptFileError(message) from exc
            warnings.warn(message + "; skipped", RuntimeWarning, stacklevel=2)
            continue
        good.append(path)
    return good


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def _create_table_view(con: Any, results_dir: Path, table: str, on_corrupt: str) -> None:
    from harness import store

    files = readable_files(results_dir, table, on_corrupt=on_corrupt)
    if not files:
        con.register(f"_empty_{table}", store.SCHEMAS[table].empty_table())
        con.execute(f"create or replace view {table} as select * from _empty_{table}")
    elif table == "runs":
        # one row per run: the latest finished_at; ties go to the later part file (names sort by
        # write time), as in store.read_table
        con.execute(f"create or replace view runs as select * exclude (filename) from "
                    f"read_parquet({_sql_list(files)}, union_by_name = true, filename = true) "
                    "qualify row_number() over (partition by run_id "
                    "order by finished_at desc nulls last, filename desc) = 1")
    else:
        con.execute(f"create or replace view {table} as select * from "
                    f"read_parquet({_sql_list(files)}, union_by_name = true)")


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
    con.execute("create or replace view leaderboard as select * from _leaderboard_table")


def connect(results_dir: str | os.PathLike, *, on_corrupt: str = "warn") -> Any:
    """An in-memory DuckDB connection with the views of the module doc over ``results_dir``."""
    import duckdb

    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results dir {results_dir} does not exist (run `ebm-bench run` first, "
                                "or pass --results-dir)")
    con = duckdb.connect(":memory:")
    for table in ("runs", "curves", "trials", "perf"):
        _create_table_view(con, results_dir, table, on_corrupt)
    _create_leaderboard_view(con, results_dir, on_corrupt)
    return con


def run_query(results_dir: str | os.PathLike, sql: str, *, on_corrupt: str = "warn") -> pd.DataFrame:
    """Run ``sql`` over the views; DuckDB errors become :class:`QueryError` (message only)."""
    import duckdb

    con = connect(results_dir, on_corrupt=on_corrupt)
    try:
        return con.execute(sql).df()
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
