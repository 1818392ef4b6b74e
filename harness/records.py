"""The harness's typed vocabulary: how a run ended (:class:`Status`) and what is recorded about
it (:class:`RunRecord`). The runs table's Parquet schema (``store.RUNS_SCHEMA``) is derived
from :class:`RunRecord` (:func:`runs_fields`), so a column is declared once, here.

Rows are built as ``RunRecord`` objects (harness/worker.py) and become dicts only at the store
boundary (:meth:`RunRecord.to_row`); the metric columns come from :mod:`tasks.metrics`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any


class Status(StrEnum):
    """How a run ended; every row of the runs table has exactly one. A ``str`` (``StrEnum``) so
    that ``Status.OK == "ok"``, ``f"{Status.OK}" == "ok"`` and the value is what Parquet stores."""

    OK = "ok"
    FAILED = "failed"            # an exception, or the worker process died
    TIMEOUT = "timeout"          # stopped by --timeout-per-run (soft) or killed past its grace (hard)
    DIVERGED = "diverged"        # training produced non-finite values (ebm.method.Diverged)
    SKIPPED = "skipped"          # the method could, but not here (data missing, |Y| past a limit)
    UNSUPPORTED = "unsupported"  # the method cannot train this model on this space
    PRUNED = "pruned"            # a tuning trial stopped early by the pruner (never in the runs table)

    @property
    def is_failure(self) -> bool:
        """Counted as a failure of the method (leaderboard ``n_failed``)."""
        return self in _FAILURES

    @property
    def retryable(self) -> bool:
        """Run again by ``--retry-failed``."""
        return self in _RETRYABLE

    @property
    def decided_at_plan(self) -> bool:
        """Decided by the planner without running; re-decided on every invocation."""
        return self in _AT_PLAN

    @classmethod
    def failures(cls) -> tuple[str, ...]:
        """The failure values, for ``DataFrame.isin``."""
        return tuple(s.value for s in cls if s.is_failure)


_FAILURES = frozenset({Status.FAILED, Status.TIMEOUT, Status.DIVERGED})
_RETRYABLE = frozenset({Status.FAILED, Status.TIMEOUT})
_AT_PLAN = frozenset({Status.SKIPPED, Status.UNSUPPORTED})


@dataclass
class RunRecord:
    """One row of the runs table. Every column is nullable except ``run_id``; ``metrics``
    holds the metric columns (``val_*``, ``test_*``, ``tau_mae``, ``kl_to_truth``: see
    :func:`tasks.metrics.run_columns`) and is flattened into them by :meth:`to_row`.

    Columns keep this order in the schema: new ones are added at the end (schemas only grow)."""

    run_id: str
    suite: str | None = None
    task: str | None = None
    space: str | None = None
    k: int | None = None
    model: str | None = None
    method: str | None = None
    seed: int | None = None                # seed index 0..n-1 of the suite
    torch_seed: int | None = None          # derived from run_id (never from run order)
    fold: int | None = None
    params_json: str | None = None
    budget_json: str | None = None
    tuned: bool | None = None              # params came from an Optuna study
    status: Status | None = None
    error: str | None = None
    traceback: str | None = None
    primary_metric: str | None = None
    train_seconds: float | None = None
    eval_seconds: float | None = None
    n_steps: int | None = None
    energy_evals: int | None = None
    device: str | None = None
    host: str | None = None
    threads: int | None = None
    attempts: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    versions_json: str | None = None
    config_hash: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    # added in this session (contract 2); null in older files
    config: str | None = None              # the run's configuration label, e.g. minmin-logistic[n_samples=100]
    selection: str | None = None           # model-selection rule: "best_val" | "last"
    best_step: int | None = None           # the step whose parameters were kept
    stopped_early: bool | None = None      # training stopped by patience
    attempt: int | None = None             # which attempt of this run the row records (reliability)
    prior: str | None = None               # the prior q the model used
    # contract 3
    stacked: int | None = None             # trained stacked with this many seeds in one step (null: alone)

    def set_metrics(self, split: str, values: Mapping[str, float | None]) -> None:
        """Store metric name → value measured on ``split`` ("val" or "test") in their columns.
        A name :mod:`tasks.metrics` does not know gets ``<split>_<name>`` (stored as float64)."""
        from tasks.metrics import METRIC_BY_NAME

        for name, value in values.items():
            metric = METRIC_BY_NAME.get(name)
            self.metrics[metric.column_for(split) if metric else f"{split}_{name}"] = value

    def metric(self, column: str) -> float | None:
        return self.metrics.get(column)

    def to_row(self) -> dict[str, Any]:
        """The store's row dict: enum values as strings, metrics flattened into their columns."""
        row: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "metrics":
                row.update(value)
            elif isinstance(value, Enum):
                row[f.name] = value.value
            else:
                row[f.name] = value
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RunRecord:
        """The inverse of :meth:`to_row` (unknown keys become metric columns)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"metrics"}
        known = {k: v for k, v in row.items() if k in names}
        if known.get("status") is not None:
            known["status"] = Status(known["status"])
        return cls(**known, metrics={k: v for k, v in row.items() if k not in names})


#: Python type of a RunRecord field → Arrow type (timestamps in UTC, microseconds)
def _arrow_type(hint: Any):
    import pyarrow as pa

    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, type) and issubclass(hint, Enum):
        return pa.string()
    by_type = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(),
               datetime: pa.timestamp("us", tz="UTC")}
    if hint not in by_type:
        raise TypeError(f"RunRecord field type {hint!r} has no Arrow type")
    return by_type[hint]


def runs_fields() -> list:
    """The runs table's Arrow fields, derived from :class:`RunRecord` (``metrics`` expands to
    :func:`tasks.metrics.run_columns`, float64)."""
    import pyarrow as pa

    from tasks.metrics import run_columns

    hints = typing.get_type_hints(RunRecord)
    fields = []
    for f in dataclasses.fields(RunRecord):
        if f.name == "metrics":
            fields += [pa.field(column, pa.float64()) for column in run_columns()]
        else:
            fields.append(pa.field(f.name, _arrow_type(hints[f.name]), nullable=f.name != "run_id"))
    return fields
