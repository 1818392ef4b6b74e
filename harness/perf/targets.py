"""ebm-bench's performance goals, checked against perf rows (reported, never asserted),
and the table ``ebm-bench perf`` prints."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Target:
    """``column`` (``ratio`` or ``value``) of the row matching ``where`` must satisfy ``op threshold``."""

    where: dict[str, Any]
    column: str
    op: str  # "<=" | ">="
    threshold: float
    text: str

    def matches(self, row: dict[str, Any]) -> bool:
        return all(row.get(key) == value for key, value in self.where.items())

    def met(self, row: dict[str, Any]) -> bool | None:
        value = row.get(self.column)
        if value is None or value != value:
            return None
        return {"<=": operator.le, ">=": operator.ge}[self.op](value, self.threshold)


# the goals of the issues that own them (step cost and throughput: issue 15)
TARGETS = (
    Target({"benchmark": "step_cost", "model": "pairwise", "k": 16, "method": "exact-mle",
            "reference_method": "minmin-logistic"}, "ratio", ">=", 200.0, "exact ≥ 200× min-min"),
    Target({"benchmark": "step_cost", "model": "pairwise", "k": 16, "method": "minmin-logistic",
            "reference_method": "bce"}, "ratio", "<=", 2.0, "≤ 2× bce"),
    Target({"benchmark": "step_cost", "model": "unary", "k": 174, "method": "minmin-logistic",
            "reference_method": "bce"}, "ratio", "<=", 2.0, "≤ 2× bce"),
    Target({"benchmark": "time_to_quality", "task": "syn-ising-k12", "method": "minmin-logistic",
            "metric": "seconds_to_2pct"}, "ratio", "<=", 0.2, "≤ 0.2× exact"),
    Target({"benchmark": "harness", "method": "ray-1", "metric": "wall_seconds", "reference_method": "serial"},
           "ratio", "<=", 1.10, "overhead ≤ 10%"),
    Target({"benchmark": "harness", "method": "ray-2", "metric": "wall_seconds", "reference_method": "ray-1"},
           "ratio", "<=", 1 / 1.6, "speedup ≥ 1.6×"),
    Target({"benchmark": "throughput", "method": "stacked", "metric": "runs_per_hour",
            "reference_method": "unstacked"}, "ratio", ">=", 3.0, "≥ 3× runs/h"),
    Target({"benchmark": "memory", "method": "exact-mle", "metric": "peak_memory"}, "value", "<=", 2.0, "< 2 GiB"),
    # judged on a measured protocol (the stored one's wall time), never on the estimate, which leaves out
    # Ray, Optuna, the store and idle workers (harness.perf.protocol)
    Target({"benchmark": "protocol", "task": "all", "method": "measured", "metric": "protocol_seconds"}, "value",
           "<=", 3 * 3600.0, "≤ 3 h"),
)


def assess(row: dict[str, Any]) -> tuple[str | None, bool | None]:
    """(goal text, met?) for a row that has a goal, else (None, None)."""
    for target in TARGETS:
        if target.matches(row):
            return target.text, target.met(row)
    return None, None


def with_targets(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus columns ``target`` and ``meets_target``."""
    frame = frame.copy()
    verdicts = [assess(row) for row in frame.to_dict("records")]
    frame["target"] = [text for text, _ in verdicts]
    frame["meets_target"] = [met for _, met in verdicts]
    return frame


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def render(frame: pd.DataFrame, *, title: str = "ebm-bench perf", width: int | None = None) -> str:
    """The perf rows as a table: value (median of the repetitions) and its spread (max / min),
    ratio = value / the reference's value measured beside it, the goal and whether it is met;
    ``note`` flags a ratio whose repetitions disagree by more than 2× ("unstable")."""
    from harness.perf.common import is_unstable
    from harness.tables import render_table

    columns = ("benchmark", "task", "model", "k", "method", "metric", "value", "unit", "spread", "reference",
               "ratio", "goal", "met", "note")
    rows = []
    for row in with_targets(frame).to_dict("records"):
        met = row["meets_target"]
        ratio_spread = row.get("ratio_spread")
        unstable = is_unstable(ratio_spread)
        value_spread = row.get("spread")
        rows.append([_fmt(row.get("benchmark")), _fmt(row.get("task")), _fmt(row.get("model")), _fmt(row.get("k")),
                     _fmt(row.get("method")), _fmt(row.get("metric")), _fmt(row.get("value")), _fmt(row.get("unit")),
                     f"×{value_spread:.2f}" if value_spread is not None and value_spread == value_spread else "",
                     _fmt(row.get("reference_method")), _fmt(row.get("ratio")), _fmt(row.get("target")),
                     "" if met is None or met != met else ("yes" if met else "NO"),
                     f"unstable: repeats ×{ratio_spread:.1f} apart" if unstable else ""])
    return render_table(columns, rows, title=title, right=("k", "value", "spread", "ratio"), max_width=width,
                        caption="value: median of the repetitions; spread: max / min of them; ratio: value / the "
                                "reference's, measured beside it")
