"""Results storage: Parquet tables with explicit, versioned schemas and atomic writes.

Layout of a results directory ``DIR``::

    DIR/runs/part-<timestamp>-<uuid>.parquet     one row per run (any status)
    DIR/curves/part-...parquet                   training curves (run_id, step, ...)
    DIR/trials/part-...parquet                   Optuna trials (driver-side record)
    DIR/perf/part-...parquet                     perf measurements; mirrored to DIR/perf.parquet
    DIR/leaderboard.parquet                      written by harness.leaderboard
    DIR/manifest.json                            git sha, versions, hardware, command line
    DIR/studies/optuna.journal                   every Optuna study of the dir (harness.tuning)

Why part files: every append creates a *new* file (unique name, written to a hidden temp
file in the same directory, fsynced, then ``os.replace``d), so two drivers writing into one
directory never touch the same file, and a reader never sees half a file. Readers dedupe
runs by ``run_id`` (latest ``finished_at`` wins).

Schema evolution: ``SCHEMA_VERSION`` is stored in each file's metadata. Later versions
may only *add nullable columns*; readers unify file schemas permissively against the
current schema, so old files read with nulls in the new columns.

Corrupt or truncated part files (a crash outside our atomic write, a bad copy) are
skipped with a warning naming the file (``on_corrupt="warn"``, the default everywhere
results are read for display) or raise :class:`CorruptFileError` naming it
(``on_corrupt="raise"``).
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from harness.records import runs_fields

#: 2: the runs table gained config, selection, best_step, stopped_early, attempt, prior
SCHEMA_VERSION = 2

_TS = pa.timestamp("us", tz="UTC")


def _schema(table: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields, metadata={"ebm_bench_table": table, "ebm_bench_schema_version": str(SCHEMA_VERSION)})


#: one row per run, any status: the columns of :class:`harness.records.RunRecord`, metric
#: columns from :mod:`tasks.metrics`
RUNS_SCHEMA = _schema("runs", runs_fields())

CURVES_SCHEMA = _schema("curves", [
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("step", pa.int64()),
    pa.field("seconds", pa.float64()),
    pa.field("energy_evals", pa.int64()),
    pa.field("split", pa.string()),        # "train" (metric "objective") or "val"
    pa.field("metric", pa.string()),
    pa.field("value", pa.float64()),
])

TRIALS_SCHEMA = _schema("trials", [
    pa.field("study", pa.string(), nullable=False),
    pa.field("trial_number", pa.int64()),
    pa.field("task", pa.string()),
    pa.field("model", pa.string()),
    pa.field("method", pa.string()),
    pa.field("params_json", pa.string()),
    pa.field("value", pa.float64()),       # validation primary metric (last reported when pruned)
    pa.field("state", pa.string()),        # COMPLETE | PRUNED | FAIL
    pa.field("n_steps", pa.int64()),
    pa.field("error", pa.string()),
    pa.field("started_at", _TS),
    pa.field("finished_at", _TS),
])

PERF_SCHEMA = _schema("perf", [
    pa.field("benchmark", pa.string(), nullable=False),
    pa.field("task", pa.string()),
    pa.field("model", pa.string()),
    pa.field("method", pa.string()),
    pa.field("k", pa.int64()),
    pa.field("metric", pa.string()),
    pa.field("value", pa.float64()),
    pa.field("unit", pa.string()),
    pa.field("reference_method", pa.string()),
    pa.field("ratio", pa.float64()),
    pa.field("spread", pa.float64()),        # max / min of the repetitions (null: one measurement)
    pa.field("ratio_spread", pa.float64()),  # max / min of the per-repetition ratios
    pa.field("n_repeats", pa.int64()),
    pa.field("host", pa.string()),
    pa.field("started_at", _TS),
])

SCHEMAS: dict[str, pa.Schema] = {"runs": RUNS_SCHEMA, "curves": CURVES_SCHEMA, "trials": TRIALS_SCHEMA,
                                 "perf": PERF_SCHEMA}
#: columns of the runs table a caller may add beyond the schema (new metrics), typed float64
EXTRA_RUN_PREFIXES = ("val_", "test_")


class StoreError(RuntimeError):
    """A results directory cannot be used (not writable, unknown table, bad rows)."""


class CorruptFileError(StoreError):
    """A Parquet file in a results directory cannot be read; the message names it."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def _schema_for(table: str) -> pa.Schema:
    try:
        return SCHEMAS[table]
    except KeyError:
        raise StoreError(f"unknown results table {table!r}; known: {sorted(SCHEMAS)}") from None


def table_dir(results_dir: str | os.PathLike, table: str) -> Path:
    _schema_for(table)
    return Path(results_dir) / table


def table_glob(results_dir: str | os.PathLike, table: str) -> str:
    """Glob of the table's part files, for ``read_parquet(glob, union_by_name=true)`` in DuckDB.

    Hidden temp files (``.tmp-*``) are excluded by the ``part-`` prefix. Prefer
    :func:`table_files` when a corrupt file must not abort the query."""
    return str(table_dir(results_dir, table) / "part-*.parquet")


def _part_paths(results_dir: str | os.PathLike, table: str) -> list[Path]:
    directory = table_dir(results_dir, table)
    return sorted(directory.glob("part-*.parquet")) if directory.is_dir() else []


def _corrupt(path: Path, exc: BaseException, on_corrupt: str) -> None:
    message = f"corrupt or truncated results file {path} ({type(exc).__name__}: {exc}); skipped"
    if on_corrupt == "raise":
        raise CorruptFileError(message.replace("; skipped", "")) from exc
    if on_corrupt != "warn":
        raise ValueError(f"on_corrupt must be 'warn' or 'raise', got {on_corrupt!r}")
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def table_files(results_dir: str | os.PathLike, table: str, *, on_corrupt: str = "warn") -> list[Path]:
    """The table's readable part files (footer checked); corrupt ones warned about or raised."""
    good = []
    for path in _part_paths(results_dir, table):
        try:
            pq.read_metadata(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
            _corrupt(path, exc, on_corrupt)
            continue
        good.append(path)
    return good


def check_writable(results_dir: str | os.PathLike) -> Path:
    """Create ``results_dir`` if needed and prove a file can be created in it; else StoreError."""
    path = Path(results_dir)
    if path.exists() and not path.is_dir():
        raise StoreError(f"results dir {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StoreError(f"results dir {path} is not writable ({exc.strerror or exc}); "
                         "choose another with --results-dir") from exc
    return path


# ----------------------------------------------------------------------------- writing

def _normalise_value(value: Any, field: pa.Field) -> Any:
    """Make a Python value fit its Arrow column: ISO strings → datetimes, NaN kept as NaN."""
    if value is None:
        return None
    if pa.types.is_timestamp(field.type):
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if isinstance(value, (int, float)):
            value = datetime.fromtimestamp(value, UTC)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value
    if pa.types.is_floating(field.type):
        return float(value)
    if pa.types.is_integer(field.type):
        return int(value)
    if pa.types.is_boolean(field.type):
        return bool(value)
    if pa.types.is_string(field.type) and not isinstance(value, str):
        return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
    return value


def rows_to_table(table: str, rows: list[dict[str, Any]]) -> pa.Table:
    """Build an Arrow table in the table's schema from row dicts; unknown keys are an error
    (except new ``val_*``/``test_*`` metrics in runs, stored as nullable float64)."""
    schema = _schema_for(table)
    known = set(schema.names)
    extra: list[str] = []
    for row in rows:
        for key in row:
            if key not in known and key not in extra:
                if table == "runs" and key.startswith(EXTRA_RUN_PREFIXES):
                    extra.append(key)
                else:
                    raise StoreError(f"{table}: unknown column {key!r}; schema v{SCHEMA_VERSION} has {schema.names}")
    if extra:
        schema = pa.schema(list(schema) + [pa.field(name, pa.float64()) for name in sorted(extra)],
                           metadata=schema.metadata)
    columns = {}
    for field in schema:
        values = [_normalise_value(row.get(field.name), field) for row in rows]
        if not field.nullable and any(v is None for v in values):
            raise StoreError(f"{table}: column {field.name!r} may not be null")
        columns[field.name] = pa.array(values, type=field.type)
    return pa.Table.from_pydict(columns, schema=schema)


def write_parquet_atomic(path: str | os.PathLike, data: pa.Table) -> Path:
    """Write ``data`` to ``path`` atomically: hidden temp file in the same directory,
    flush + fsync, ``os.replace`` (atomic on POSIX), then fsync the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{uuid.uuid4().hex}.parquet"
    try:
        with open(tmp, "wb") as handle:
            pq.write_table(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{uuid.uuid4().hex}.json"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def append_rows(results_dir: str | os.PathLike, table: str, rows: Iterable[dict[str, Any]]) -> Path | None:
    """Append ``rows`` to ``table`` as one new part file (batch rows per call: many tiny
    files make DuckDB slow). Returns the file written, or None for no rows."""
    rows = list(rows)
    if not rows:
        return None
    data = rows_to_table(table, rows)
    stamp = utc_now().strftime("%Y%m%dT%H%M%S%fZ")
    path = write_parquet_atomic(table_dir(results_dir, table) / f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet", data)
    if table == "perf":
        # A convenience copy for tools that want one file. It is rebuilt from the part files
        # each time, so with two concurrent writers the last rebuild may miss the other's
        # newest part until the next append; the part files (and the `perf` view) are the record.
        write_parquet_atomic(Path(results_dir) / "perf.parquet",
                             pa.Table.from_pandas(read_table(results_dir, "perf"), preserve_index=False))
    return path


# ----------------------------------------------------------------------------- reading

def _conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast ``data`` to ``schema``, adding missing columns as nulls (schemas only grow)."""
    columns = []
    for field in schema:
        if field.name in data.column_names:
            columns.append(data.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(data.num_rows, type=field.type))
    return pa.Table.from_arrays(columns, schema=schema.with_metadata(None))


def read_arrow(results_dir: str | os.PathLike, table: str, *, columns: list[str] | None = None,
               on_corrupt: str = "warn") -> pa.Table:
    """All part files of ``table`` as one Arrow table in the unified schema (not deduped)."""
    base = _schema_for(table)
    parts: list[pa.Table] = []
    for path in _part_paths(results_dir, table):
        try:
            parts.append(pq.read_table(path))
        except Exception as exc:  # noqa: BLE001
            _corrupt(path, exc, on_corrupt)
    nullable_base = pa.schema([f.with_nullable(True) for f in base])
    unified = pa.unify_schemas([nullable_base] + [p.schema.with_metadata(None) for p in parts],
                               promote_options="permissive")
    data = pa.concat_tables([_conform(p, unified) for p in parts]) if parts else unified.empty_table()
    if columns is not None:
        data = data.select([c for c in columns if c in data.column_names])
    return data


def dedupe_runs(frame):
    """Keep one row per run_id: the latest ``finished_at`` (ties: the file read last)."""
    if frame.empty:
        return frame
    order = frame.reset_index(drop=True)
    order["_pos"] = range(len(order))
    order = order.sort_values(["finished_at", "_pos"], na_position="first", kind="stable")
    return order.drop_duplicates("run_id", keep="last").drop(columns="_pos").sort_index().reset_index(drop=True)


def read_table(results_dir: str | os.PathLike, table: str, *, columns: list[str] | None = None,
               on_corrupt: str = "warn"):
    """``table`` as a pandas DataFrame (empty with the schema's columns when nothing is stored).
    Runs are deduped by run_id, keeping the latest ``finished_at``."""
    if table == "runs" and columns is not None:
        columns = list(dict.fromkeys([*columns, "run_id", "finished_at"]))
    frame = read_arrow(results_dir, table, columns=columns, on_corrupt=on_corrupt).to_pandas()
    return dedupe_runs(frame) if table == "runs" else frame


def run_statuses(results_dir: str | os.PathLike, *, on_corrupt: str = "warn") -> dict[str, str]:
    """run_id → status of every run stored (the latest row per run)."""
    frame = read_table(results_dir, "runs", columns=["run_id", "status", "finished_at"], on_corrupt=on_corrupt)
    return dict(zip(frame["run_id"], frame["status"]))


def completed_run_ids(results_dir: str | os.PathLike, *, on_corrupt: str = "warn") -> set[str]:
    """Every run_id with a row in ``DIR/runs`` (any status): what resume skips."""
    return set(run_statuses(results_dir, on_corrupt=on_corrupt))


class BatchWriter:
    """Buffers result rows and appends them in batches (one part file per table per flush):
    every ``batch`` runs or ``interval`` seconds, and on ``flush()``. Curves are written
    before their runs, so a stored run always has its curves (a crash in between only
    leaves curves of a run that will be re-run; readers keep the latest)."""

    def __init__(self, results_dir: str | os.PathLike, *, batch: int = 16, interval: float = 10.0) -> None:
        import time

        self._clock = time.monotonic
        self.results_dir, self.batch, self.interval = results_dir, batch, interval
        self.buffers: dict[str, list[dict[str, Any]]] = {"curves": [], "runs": [], "trials": []}
        self.last_flush = self._clock()
        self.written = 0

    def add(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        self.buffers[table].extend(rows)
        n_main = len(self.buffers["runs"]) + len(self.buffers["trials"])
        if n_main >= self.batch or self._clock() - self.last_flush >= self.interval:
            self.flush()

    def flush(self) -> None:
        for table in ("curves", "trials", "runs"):
            rows, self.buffers[table] = self.buffers[table], []
            if rows:
                append_rows(self.results_dir, table, rows)
                self.written += len(rows) if table == "runs" else 0
        self.last_flush = self._clock()
