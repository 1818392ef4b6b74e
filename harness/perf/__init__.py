"""``ebm-bench perf``: the costs that decide between methods, measured side by side.

Benchmarks (each its own module; every figure is a ratio of things timed in the same
process, in interleaved repetitions, medians — see :mod:`harness.perf.common`):

* ``step_cost`` (:mod:`~harness.perf.steps`): ms per training step vs |Y|, ratio to bce;
* ``stacking`` (:mod:`~harness.perf.stacking`): ms per member-step, 5 runs stacked vs alone;
* ``group_size`` (:mod:`~harness.perf.group_size`): ms per member-step of the stored protocol's
  configurations in stacked groups of 25 vs 10 (the default stacking rule's two limits);
* ``dropout`` (:mod:`~harness.perf.dropout`): µs per forward + backward of ebm's dropout vs torch's;
* ``compile`` (:mod:`~harness.perf.compiled`): seconds of a stacked fit with its step through
  ``torch.compile`` (compile time included) vs eager;
* ``time_to_quality`` (:mod:`~harness.perf.quality`): seconds to within 2% of exact-mle's
  validation NLL, ratio to exact-mle;
* ``harness`` (:mod:`~harness.perf.scaling`): 16 short runs, serial vs Ray 1 vs Ray 2 workers;
* ``throughput`` (:mod:`~harness.perf.throughput`): finished runs per hour on a mini-grid of every
  method: unstacked, stacked, and stacked with the paper suite's patience;
* ``flops`` (:mod:`~harness.perf.hardware`): FLOP/s of the enumerated pairwise energy vs matmuls;
* ``memory`` (:mod:`~harness.perf.memory`): peak memory of exact-mle at its largest k;
* ``protocol`` (:mod:`~harness.perf.protocol`): the paper suite's protocol priced from every
  configuration timed now (an estimate, for comparing code versions in one sitting) beside the
  stored protocol's measured wall time, the figure its ≤ 3 h goal is judged on.

Rows go to the ``perf`` table of the results dir (``DIR/perf/part-*.parquet``, mirrored to
``DIR/perf.parquet``; the ``perf`` view of ``ebm-bench query``), one part file per benchmark,
written as soon as the benchmark finishes. The printed table sets each figure beside the
goal ebm-bench holds itself to (:mod:`~harness.perf.targets`; reported, never asserted) and
flags ratios whose repetitions disagree by more than 2× (then the machine was too busy for
that figure to mean much: run it again on an idle machine).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.perf.common import PerfConfig

#: benchmark name → module (each exposes ``run(config) -> (rows, notes)``), in run order
BENCHMARKS: dict[str, str] = {
    "step_cost": "harness.perf.steps",
    "stacking": "harness.perf.stacking",
    "group_size": "harness.perf.group_size",
    "dropout": "harness.perf.dropout",
    "compile": "harness.perf.compiled",
    "time_to_quality": "harness.perf.quality",
    "flops": "harness.perf.hardware",
    "memory": "harness.perf.memory",
    "harness": "harness.perf.scaling",
    "throughput": "harness.perf.throughput",
    "protocol": "harness.perf.protocol",
}

__all__ = ["BENCHMARKS", "PerfConfig", "PerfResult", "run_perf", "select_benchmarks"]


@dataclass
class PerfResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def select_benchmarks(names: list[str] | tuple[str, ...] | None) -> list[str]:
    """The benchmarks to run, in run order; unknown names raise with "did you mean"."""
    from ebm import unknown_name_error

    if not names:
        return list(BENCHMARKS)
    for name in names:
        if name not in BENCHMARKS:
            raise unknown_name_error("benchmark", name, list(BENCHMARKS))
    return [name for name in BENCHMARKS if name in names]


def run_perf(results_dir: str | os.PathLike, config: PerfConfig, benchmarks: list[str] | None = None, *,
             on_done: Callable[[str, PerfResult], None] | None = None) -> PerfResult:
    """Run ``benchmarks`` (default all) and append each one's rows to ``results_dir``'s perf table."""
    from harness import store

    store.check_writable(results_dir)
    total = PerfResult()
    for name in select_benchmarks(benchmarks):
        rows, notes = importlib.import_module(BENCHMARKS[name]).run(config)
        store.append_rows(results_dir, "perf", rows)
        result = PerfResult(rows, notes)
        total.rows += rows
        total.notes += notes
        if on_done is not None:
            on_done(name, result)
    return total
