"""``ebm-bench perf``: measure step cost vs |Y|, stacked vs lone steps, dropout's cost, a compiled
stacked step's, time to quality, harness overhead and scaling, FLOP/s, peak memory, runs per hour
and the paper protocol's wall time (estimated from every configuration timed now), side by side in
one process; write ``DIR/perf.parquet`` (the ``perf`` view of ``ebm-bench query``) and print a
table: each figure with the spread of its repetitions, its ratio to the reference measured beside
it, and the goal ebm-bench holds itself to (reported, not enforced). A ratio whose repetitions
disagree by more than 2x is flagged "unstable": the machine was busy; run it again when it is idle.
"""

from __future__ import annotations

import argparse
import sys

#: what ``perf --quick`` takes on an idle 2-core machine, at most (its help says so; measured)
QUICK_MINUTES = 5


def register(subparsers) -> None:
    parser = subparsers.add_parser("perf", help="measure costs side by side (step cost vs |Y|, time to quality, "
                                                "Ray overhead, FLOP/s, memory, throughput, the paper protocol)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default="results", help="results directory (default: ./results)")
    parser.add_argument("--quick", action="store_true",
                        help=f"fewer repetitions, shorter runs (under {QUICK_MINUTES} min on an idle 2-core machine)")
    parser.add_argument("--data-dir", help="dataset directory: yeast and lr-glass, and every task of the paper "
                                           "suite for protocol (default: $EBM_BENCH_DATA)")
    parser.add_argument("--benchmarks", help="comma list of: step_cost, stacking, dropout, compile, time_to_quality, "
                                             "flops, memory, harness, throughput, protocol, group_size "
                                             "(default: all)")
    parser.add_argument("--tasks", help="comma list of tasks for protocol and group_size (default: every task of "
                                        "the stored protocol; --quick: lr-iris), e.g. cal500 to time one task's "
                                        "configurations again")
    parser.add_argument("--device", default="cpu", help="torch device for the timed work (default: cpu)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads while timing (default 1, what a harness run gets per CPU)")
    parser.set_defaults(func=main)


def main(args) -> int:
    import time

    import pandas as pd

    from harness.allocator import keep_freed_memory
    from harness.perf import PerfConfig, run_perf, select_benchmarks
    from harness.perf.targets import render
    from harness.plan import Filters
    from tasks.registry import get_task, resolve_data_dir

    if args.threads < 1:
        raise ValueError("--threads must be at least 1")
    benchmarks = select_benchmarks(Filters.parse_list(args.benchmarks))
    tasks = Filters.parse_list(args.tasks)
    for name in tasks:
        get_task(name)  # an unknown name raises with "did you mean"
    _check_device(args.device)
    config = PerfConfig(quick=args.quick, device=args.device, data_dir=resolve_data_dir(args.data_dir),
                        threads=args.threads, tasks=tasks or None)
    keep_freed_memory()  # timed in the heap a run's worker has (harness.allocator)
    started = time.monotonic()

    def progress(name, result):
        print(f"perf: {name} done ({len(result.rows)} rows, {time.monotonic() - started:.0f} s)", file=sys.stderr)

    result = run_perf(args.results_dir, config, benchmarks, on_done=progress)
    sys.stdout.write(render(pd.DataFrame(result.rows), title=f"ebm-bench perf ({'quick, ' if args.quick else ''}"
                                                              f"{config.device}, {config.threads} thread(s))"))
    for note in result.notes:
        print(f"note: {note}")
    print(f"{len(result.rows)} rows appended to {args.results_dir}/perf (mirror: {args.results_dir}/perf.parquet) "
          f"in {time.monotonic() - started:.0f} s")
    return 0


def _check_device(device: str) -> None:
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"--device {device!r} is not a torch device ({exc})") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r}: no CUDA device is visible")
