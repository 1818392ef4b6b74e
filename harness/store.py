"""Results storage: Parquet tables with explicit, versioned schemas and atomic writes.

Layout of a results directory ``DIR``::

    DIR/runs/part-<timestamp>-<uuid>.parquet     one row per run (any status)
    DIR/curves/part-...parquet                   training curves (run_id, step, ...)
    DIR/trials/part-...parquet                   Optuna trials (driver-side record)
    DIR/perf/part-...parquet                     perf measurements; mirrored to DIR/perf.parquet
    DIR/leaderboard.parquet                      written by harness.leaderboard
    DIR/manifest.json                            git sha, versions, hardware, command line
    DIR/studies/optuna.journal                   every Optuna study of the dir (harness.tuning; a cache
                                                 of the trials table, rebuilt from it when missing)

Why part files: every append creates a *new* file (unique name, written to a hidden temp
file in the same directory, fsynced, then ``os.replace``d), so two drivers writing into one
directory never touch the same file, and a reader never sees half a file. Readers dedupe
runs by ``run_id`` (latest ``finished_at`` wins) and keep the curves of each run's latest
``attempt``.

Durability (the choice): **one small part per finished run**, not a buffer and not a journal.
:class:`ResultWriter` writes a finished run's curves and then its row, each as its own part
file, fsynced (file and directory), *before* the driver counts the run as done; so whatever
kills the driver (SIGKILL, a lost node, a full disk), a run it reported finished is on disk,
and the next start re-runs only what has no row. The many small files are merged by
:func:`compact` (``ebm-bench compact``, and automatically when a ``run`` starts or ends with
more than ``COMPACT_AT`` parts in a table): it writes the merged part first and only then
removes the parts it merged, under a lock, so a crash in between leaves duplicates that readers drop,
never a lost row. A journal was not chosen because every reader (DuckDB, pyarrow, merge) would
need to replay it; part files are what they already read.

Temp files are named ``.tmp-<pid>@<host>-<hex>``; :func:`clean_stale_temp` (run on every
start) removes those of dead processes on this host (and any older than a day).

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
import re
import socket
import time
import uuid
import warnings
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from harness.records import runs_fields

#: 2: the runs table gained config, selection, best_step, stopped_early, attempt, prior; the
#: curves table gained attempt; 3: the runs table gained stacked; 4: the trials table gained
#: intermediate_json (what a study store is rebuilt from, see harness.tuning)
SCHEMA_VERSION = 4

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
    pa.field("attempt", pa.int64()),       # v2: the run's attempt these points belong to (runs.attempt)
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
    pa.field("intermediate_json", pa.string()),  # v4: [[step, validation value], ...] as reported
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


#: set by the CLI's ``--strict``: every read stops at the first damaged file, whatever its caller asked
STRICT = False


def set_strict(strict: bool = True) -> None:
    global STRICT
    STRICT = bool(strict)


def _corrupt(path: Path, exc: BaseException, on_corrupt: str) -> None:
    if STRICT:
        on_corrupt = "raise"
    if isinstance(exc, SchemaConflict):
        message = f"results file {path} does not fit the table's schema: {exc}; skipped"
    else:
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


HOST = socket.gethostname()
_TMP_NAME = re.compile(r"^\.tmp-(\d+)@(.+)-[0-9a-f]{32}(\.\w+)?$")
#: a temp file of an unknown owner older than this is removed by clean_stale_temp
TMP_MAX_AGE = 24 * 3600.0


def temp_path(directory: Path, suffix: str) -> Path:
    """A hidden temp file name in ``directory`` that says which process wrote it."""
    return directory / f".tmp-{os.getpid()}@{HOST}-{uuid.uuid4().hex}{suffix}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped by its parent is a zombie: dead for our purposes
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().split(b") ", 1)[1][:1] != b"Z"
    except (OSError, IndexError):
        return True


def clean_stale_temp(results_dir: str | os.PathLike) -> list[Path]:
    """Remove the temp files that dead writers left in ``results_dir`` and its table folders
    (a process on this host that no longer runs; another host's after ``TMP_MAX_AGE``)."""
    root = Path(results_dir)
    removed = []
    folders = [root, *(root / t for t in SCHEMAS), root / "claims", root / "studies"]
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.glob(".tmp-*"):
            match = _TMP_NAME.match(path.name)
            try:
                age = time.time() - path.stat().st_mtime
            except OSError:
                continue
            if match and match.group(2) == HOST:
                stale = not pid_alive(int(match.group(1)))
            else:
                stale = age > TMP_MAX_AGE
            if stale:
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def write_parquet_atomic(path: str | os.PathLike, data: pa.Table) -> Path:
    """Write ``data`` to ``path`` atomically: hidden temp file in the same directory,
    flush + fsync, ``os.replace`` (atomic on POSIX), then fsync the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path.parent, ".parquet")
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
    tmp = temp_path(path.parent, ".json")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(obj, handle, indent=2, sort_keys=True, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
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


def _conflicts(data: pa.Table, base: pa.Schema) -> str | None:
    """Why ``data`` (one part file) cannot be read in ``base``'s types, or None."""
    for field in base:
        if field.name in data.column_names:
            column = data.column(field.name)
            if column.type == field.type:
                continue
            try:
                column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                return f"column {field.name!r} is {column.type}, the schema says {field.type} ({exc})"
    return None


class _Vanished(Exception):
    """A part file listed a moment ago is gone (a compaction merged it into a newer one)."""


def read_arrow(results_dir: str | os.PathLike, table: str, *, columns: list[str] | None = None,
               on_corrupt: str = "warn") -> pa.Table:
    """All part files of ``table`` as one Arrow table in the unified schema (not deduped).

    A file that cannot be read, or whose columns conflict with the schema's types (``seed``
    stored as a string), is skipped with a warning naming it, or raises :class:`CorruptFileError`.
    A file that vanishes while being read (merged by a concurrent :func:`compact`) makes the
    read start again from a fresh listing."""
    for _ in range(5):
        try:
            return _read_arrow_once(results_dir, table, columns, on_corrupt)
        except _Vanished:
            continue
    return _read_arrow_once(results_dir, table, columns, on_corrupt)


def _read_arrow_once(results_dir, table: str, columns: list[str] | None, on_corrupt: str) -> pa.Table:
    base = _schema_for(table)
    parts: list[pa.Table] = []
    for path in _part_paths(results_dir, table):
        try:
            part = pq.read_table(path)
        except FileNotFoundError as exc:
            raise _Vanished(str(path)) from exc
        except Exception as exc:
            if not path.exists():
                raise _Vanished(str(path)) from exc
            _corrupt(path, exc, on_corrupt)
            continue
        conflict = _conflicts(part, base)
        if conflict is None:
            try:  # extra columns (new metrics) must unify with the other files' too
                pa.unify_schemas([pa.schema([f.with_nullable(True) for f in base])] +
                                 [p.schema.with_metadata(None) for p in parts] + [part.schema.with_metadata(None)],
                                 promote_options="permissive")
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                conflict = f"its columns conflict with other files ({exc})"
        if conflict is not None:
            _corrupt(path, SchemaConflict(conflict), on_corrupt)
            continue
        parts.append(part)
    nullable_base = pa.schema([f.with_nullable(True) for f in base])
    unified = pa.unify_schemas([nullable_base] + [p.schema.with_metadata(None) for p in parts],
                               promote_options="permissive")
    data = pa.concat_tables([_conform(p, unified) for p in parts]) if parts else unified.empty_table()
    if columns is not None:
        data = data.select([c for c in columns if c in data.column_names])
    return data


class SchemaConflict(ValueError):
    """A part file's column types disagree with the table's schema."""


def kept_attempt_curves(curves, runs):
    """The curve points of the attempt each kept run row is (``runs`` deduped: one row per
    run_id): joined on (run_id, attempt), a null attempt (files from before v2) matching a null
    one. Orphan points (of an attempt whose row was never written: a driver killed between the
    two writes) and exact duplicates (a compaction or merge interrupted between writing the new
    file and removing the old ones) are dropped. pandas in, pandas out."""
    if curves.empty:
        return curves
    if "attempt" not in curves:
        curves = curves.assign(attempt=None)
    key = runs[["run_id", "attempt"]] if "attempt" in runs else runs[["run_id"]].assign(attempt=None)
    key = key.assign(_attempt=key["attempt"].astype("Float64").fillna(-1)).drop(columns="attempt")
    out = curves.assign(_attempt=curves["attempt"].astype("Float64").fillna(-1))
    out = out.merge(key.drop_duplicates(), on=["run_id", "_attempt"], how="inner").drop(columns="_attempt")
    return out.drop_duplicates().reset_index(drop=True)


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
    Runs are deduped by run_id, keeping the latest ``finished_at``; curves are those of each
    kept run row's attempt."""
    if table == "runs" and columns is not None:
        columns = list(dict.fromkeys([*columns, "run_id", "finished_at"]))
    frame = read_arrow(results_dir, table, columns=columns, on_corrupt=on_corrupt).to_pandas()
    if table == "runs":
        return dedupe_runs(frame)
    if table == "curves":  # the points of each kept run row's attempt (see kept_attempt_curves)
        runs = read_table(results_dir, "runs", columns=["run_id", "attempt"], on_corrupt=on_corrupt)
        return kept_attempt_curves(frame, runs)
    return frame


def run_statuses(results_dir: str | os.PathLike, *, on_corrupt: str = "warn") -> dict[str, str]:
    """run_id → status of every run stored (the latest row per run)."""
    frame = read_table(results_dir, "runs", columns=["run_id", "status", "finished_at"], on_corrupt=on_corrupt)
    return dict(zip(frame["run_id"], frame["status"]))


def completed_run_ids(results_dir: str | os.PathLike, *, on_corrupt: str = "warn") -> set[str]:
    """Every run_id with a row in ``DIR/runs`` (any status): what resume skips."""
    return set(run_statuses(results_dir, on_corrupt=on_corrupt))


class ResultWriter:
    """Writes results as they come, durably (see the module doc): ``add("curves", rows)`` holds
    a run's curve points until its row comes; ``add("runs", rows)`` / ``add("trials", rows)``
    write the held curves and then the rows, each as one fsynced part file, and return only
    when they are on disk. Curves go first, so a stored run always has its curves (a crash in
    between only leaves curves of a run that will be re-run as a later attempt)."""

    def __init__(self, results_dir: str | os.PathLike, **_ignored: Any) -> None:
        self.results_dir = results_dir
        self.pending_curves: list[dict[str, Any]] = []
        self.written = 0

    def add(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if table == "curves":
            self.pending_curves.extend(rows)
            return
        self.flush()
        if rows:
            append_rows(self.results_dir, table, rows)
            self.written += len(rows) if table == "runs" else 0

    def flush(self) -> None:
        curves, self.pending_curves = self.pending_curves, []
        if curves:
            append_rows(self.results_dir, "curves", curves)


#: the old name (the writer used to buffer; it no longer does)
BatchWriter = ResultWriter


# ----------------------------------------------------------------------------- run index

class RunIndex:
    """run_id → (status, attempt) of every stored run, kept up to date cheaply: ``refresh()``
    reads only the runs part files that appeared since the last call (a driver calls it before
    starting a run, to see what another driver finished meanwhile)."""

    def __init__(self, results_dir: str | os.PathLike, *, on_corrupt: str = "warn") -> None:
        self.results_dir, self.on_corrupt = results_dir, on_corrupt
        self.seen: set[str] = set()
        self.status: dict[str, str] = {}
        self.attempts: dict[str, int] = {}
        self._finished: dict[str, Any] = {}
        self.seen_curves: set[str] = set()
        self.refresh()

    def refresh(self) -> None:
        self._refresh_runs()
        # curve points carry their attempt too: a driver killed between writing a run's curves
        # and its row leaves points of an attempt that has no row; the next attempt is numbered
        # past them, so they never mix with the points of the attempt that does get a row
        for path in _part_paths(self.results_dir, "curves"):
            if path.name in self.seen_curves:
                continue
            self.seen_curves.add(path.name)
            try:
                part = pq.read_table(path, columns=["run_id", "attempt"])
            except Exception:  # noqa: BLE001, S112 - missing column (old file), vanished or damaged: no attempts
                continue
            for run_id, attempt in zip(part.column("run_id").to_pylist(), part.column("attempt").to_pylist()):
                if attempt is not None and attempt > self.attempts.get(run_id, 0):
                    self.attempts[run_id] = attempt

    def _refresh_runs(self) -> None:
        for path in _part_paths(self.results_dir, "runs"):
            if path.name in self.seen:
                continue
            try:
                part = pq.read_table(path, columns=None)
            except FileNotFoundError:
                continue  # compacted away: its rows are in a newer part
            except Exception as exc:  # noqa: BLE001
                self.seen.add(path.name)
                _corrupt(path, exc, self.on_corrupt)
                continue
            self.seen.add(path.name)
            conflict = _conflicts(part, RUNS_SCHEMA)  # skipped as every reader skips it
            if conflict is not None:
                _corrupt(path, SchemaConflict(conflict), self.on_corrupt)
                continue
            self._add(part)

    def _add(self, part: pa.Table) -> None:
        names = part.column_names
        ids = part.column("run_id").to_pylist()
        statuses = part.column("status").to_pylist() if "status" in names else [None] * len(ids)
        attempts = part.column("attempt").to_pylist() if "attempt" in names else [None] * len(ids)
        finished = part.column("finished_at").to_pylist() if "finished_at" in names else [None] * len(ids)
        for run_id, status, attempt, when in zip(ids, statuses, attempts, finished):
            self.attempts[run_id] = max(self.attempts.get(run_id, 0) + (attempt is None), attempt or 0)
            previous = self._finished.get(run_id, _MISSING)
            if previous is _MISSING or when is None or previous is None or when >= previous:
                self.status[run_id], self._finished[run_id] = status, when

    def next_attempt(self, run_id: str) -> int:
        return self.attempts.get(run_id, 0) + 1


_MISSING = object()


# ----------------------------------------------------------------------------- compaction

#: a ``run`` start compacts a table holding more part files than this
COMPACT_AT = 64
#: rows per file written by :func:`compact` (about 1 MB of curve points)
COMPACT_MAX_ROWS = 100_000


def compact(results_dir: str | os.PathLike, tables: Iterable[str] = ("runs", "curves", "trials"), *,
            min_parts: int = 2) -> dict[str, int]:
    """Merge each table's readable part files into one (see the module doc); returns the number
    of files merged per table. Unreadable files are left where they are (and warned about).
    Runs under an exclusive lock (``DIR/.compact.lock``): one compaction at a time."""
    import fcntl

    root = Path(results_dir)
    merged: dict[str, int] = {}
    with open(root / ".compact.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for table in tables:
                paths = []
                parts = []
                for path in _part_paths(root, table):
                    try:
                        part = pq.read_table(path)
                    except FileNotFoundError:
                        continue
                    except Exception as exc:  # noqa: BLE001
                        _corrupt(path, exc, "warn")
                        continue
                    if _conflicts(part, _schema_for(table)) is not None:
                        continue  # left for read_arrow to name
                    paths.append(path)
                    parts.append(part)
                fits = all(p.num_rows <= COMPACT_MAX_ROWS for p in parts)
                merges = {_slice_of(path) for path in paths}
                if fits and (len(paths) < min_parts or (len(merges) == 1 and None not in merges)):
                    merged[table] = 0  # nothing new: one part, or the slices of one earlier compaction
                    continue
                unified = pa.unify_schemas([pa.schema([f.with_nullable(True) for f in _schema_for(table)])] +
                                           [p.schema.with_metadata(None) for p in parts],
                                           promote_options="permissive")
                data = pa.concat_tables([_conform(p, unified) for p in parts])
                data = data.replace_schema_metadata(_schema_for(table).metadata)
                # named after the newest merged part, so the order of rows between files (ties in
                # dedupe go to the later file) is kept for parts written after it
                # (a slice's own suffix dropped: names do not grow with every compaction)
                newest = _SLICE_SUFFIX.sub("", paths[-1].name.removeprefix("part-").removesuffix(".parquet"))
                # in slices of COMPACT_MAX_ROWS, named to sort in row order: merged files stay small
                # enough to commit (results/paper) however large the table grows
                merge_id = uuid.uuid4().hex[:8]
                for number, start in enumerate(range(0, max(data.num_rows, 1), COMPACT_MAX_ROWS)):
                    write_parquet_atomic(table_dir(root, table) / f"part-{newest}-c{merge_id}-{number:03d}.parquet",
                                         data.slice(start, COMPACT_MAX_ROWS))
                for path in paths:
                    path.unlink(missing_ok=True)
                _fsync_dir(table_dir(root, table))
                merged[table] = len(paths)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return merged


#: what :func:`compact` appends to a slice's name: ``-c<merge id>-<slice number>``
_SLICE_SUFFIX = re.compile(r"(?:-c[0-9a-f]{8}-\d{3})+$")


def _slice_of(path: Path) -> str | None:
    """The merge id of a slice written by :func:`compact`, None for a part a run wrote."""
    match = re.search(r"-c([0-9a-f]{8})-\d{3}\.parquet$", path.name)
    return match.group(1) if match else None


def part_counts(results_dir: str | os.PathLike) -> dict[str, int]:
    return {table: len(_part_paths(results_dir, table)) for table in SCHEMAS}
