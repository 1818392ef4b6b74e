"""Benchmark ``time_to_quality``: wall seconds of training until the validation NLL is within
2% of exact-mle's, for the sampling methods, as a ratio to exact-mle's own time.

Per task (``syn-ising-k12`` always; ``yeast`` when its files are found), pairwise model, default
hyperparameters, one seed per repetition shared by all methods. A monitor evaluates the exact
validation NLL (|Y| ≤ 2^14, enumerated); evaluation is *not* charged: the recorded time is the
training loop's clock minus the monitor's own time.

* exact-mle trains ``max_steps`` (evaluated at 40 points). Quality target: NLL ≤ best + 2%·|best|,
  best = exact-mle's *best* validation NLL. (Not its *final* NLL: with default hyperparameters
  exact-mle overfits these tasks — its validation NLL rises after a few hundred steps — so its
  final value would be reached by every method almost at once. Best = final when it does not
  overfit.) exact-mle's own time to that target is the reference.
* each sampling method then trains from the same seed, evaluated every ``RESOLUTION`` of exact's
  training time, and stops as soon as it reaches the target, or when it has trained
  ``TIME_FACTOR`` × exact's time to target (then it gets no value and a note: ratio > factor).

Exact runs first in each repetition (its result sets the others' target and time limit); the
sampling methods follow in rotating order; medians over repetitions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.perf.common import PerfConfig, RowIds, Threads, median, perf_rows

TASKS = ("syn-ising-k12", "yeast")
MODEL = "pairwise"
REFERENCE = "exact-mle"
METHODS = (REFERENCE, "minmin-logistic", "nce", "mcmc-pcd")
TOLERANCE = 0.02
VAL_LIMIT = 512


#: (quick, full): evaluations of exact-mle's run; a sampling method's evaluation spacing as a
#: fraction of exact's training time; how many times exact's time to target it may train
EXACT_EVALS = (25, 40)
RESOLUTION = (1 / 40, 1 / 100)
TIME_FACTOR = (1.0, 3.0)


@dataclass
class Curve:
    """Validation NLL against training seconds (monitor time excluded)."""

    seconds: list[float] = field(default_factory=list)
    nll: list[float] = field(default_factory=list)

    def best(self) -> float:
        return min(self.nll) if self.nll else float("nan")

    def first_within(self, target: float) -> float | None:
        """Training seconds at the first evaluation with NLL ≤ target (None: never)."""
        return next((s for s, v in zip(self.seconds, self.nll) if v <= target), None)


class NLLMonitor:
    """Records the exact validation NLL, at most once per ``resolution`` training seconds.
    Stops training once the NLL is ≤ ``target`` or training time passes ``time_limit``."""

    def __init__(self, x_val: torch.Tensor, y_val: torch.Tensor, *, resolution: float = 0.0,
                 target: float | None = None, time_limit: float | None = None) -> None:
        self.x_val, self.y_val = x_val, y_val
        self.resolution, self.target, self.time_limit = resolution, target, time_limit
        self.curve = Curve()
        self.monitor_seconds = 0.0

    def __call__(self, progress, model) -> bool:
        start = time.perf_counter()
        seconds = progress.seconds - self.monitor_seconds
        last = self.curve.seconds[-1] if self.curve.seconds else float("-inf")
        stop = False
        if seconds - last >= self.resolution:
            value = float(model.nll(self.x_val, self.y_val)[0].mean())
            self.curve.seconds.append(seconds)
            self.curve.nll.append(value)
            stop = self.target is not None and value <= self.target
        stop = stop or (self.time_limit is not None and seconds >= self.time_limit)
        self.monitor_seconds += time.perf_counter() - start
        return stop

def load_fit_data(task_name: str, config: PerfConfig):
    """(space, FitData) of a task's first split, validation capped at ``VAL_LIMIT`` examples;
    the prior q is the methods' default (uniform), built as a run's is (:func:`harness.fitdata.prepare_fit`)."""
    from baselines.registry import get_method
    from harness.fitdata import prepare_fit
    from tasks.registry import get_task

    task = get_task(task_name)
    data = task.load(config.data_dir, seed=0, fold=0, val_fraction=0.2)
    priors = {get_method(name).params().get("prior") for name in METHODS}
    assert len(priors) == 1, f"time_to_quality compares methods on one q, got {priors}"
    space, fit_data = prepare_fit(data, task.kind, MODEL, priors.pop(), val_limit=VAL_LIMIT)
    return space, fit_data.to(config.device)


def exact_steps(task_name: str, config: PerfConfig) -> int:
    return {"syn-ising-k12": (400, 1000), "yeast": (100, 500)}[task_name][0 if config.quick else 1]


def train_curve(method_name: str, space, data, budget, monitor: NLLMonitor, seed: int, device: torch.device) -> Curve:
    from baselines.registry import get_method

    method = get_method(method_name)
    method.fit(space, MODEL, data, method.params({}), budget, seed=seed, device=device, monitor=monitor)
    return monitor.curve


def one_repetition(space, data, steps: int, seed: int, order: list[str], config: PerfConfig) -> dict[str, Any]:
    """exact-mle, then every sampling method (in ``order``) against its target; see the module doc."""
    from ebm.method import Budget

    mode = 0 if config.quick else 1
    device = config.torch_device
    exact = train_curve(REFERENCE, space, data, Budget(max_steps=steps, eval_every=max(steps // EXACT_EVALS[mode], 1)),
                        NLLMonitor(data.x_val, data.y_val), seed, device)
    best = exact.best()
    target = best + TOLERANCE * abs(best)
    reference_seconds = exact.first_within(target)
    if reference_seconds is None:  # its curve holds its own best: only an empty or NaN curve gets here
        raise RuntimeError(f"time_to_quality: {REFERENCE} recorded no finite validation NLL")
    seconds: dict[str, float | None] = {REFERENCE: reference_seconds}
    best_nll: dict[str, float] = {REFERENCE: best}
    out = {"target": target, "seconds": seconds, "best": best_nll}
    for name in order:
        monitor = NLLMonitor(data.x_val, data.y_val, resolution=RESOLUTION[mode] * exact.seconds[-1], target=target,
                             time_limit=TIME_FACTOR[mode] * reference_seconds)
        curve = train_curve(name, space, data, Budget(max_steps=10**7, eval_every=5), monitor, seed, device)
        seconds[name] = curve.first_within(target)
        best_nll[name] = curve.best()
    return out


def run(config: PerfConfig) -> tuple[list[dict[str, Any]], list[str]]:
    from tasks.registry import get_task

    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    reps = 1 if config.quick else 3
    factor = TIME_FACTOR[0 if config.quick else 1]
    others = [name for name in METHODS if name != REFERENCE]
    with Threads(config.threads):
        for task_name in TASKS:
            missing = get_task(task_name).available(config.data_dir)
            if missing is not None:
                notes.append(f"time_to_quality {task_name} skipped: data not available ({missing})")
                continue
            space, data = load_fit_data(task_name, config)
            steps = exact_steps(task_name, config)
            results = [one_repetition(space, data, steps, rep, others[rep % len(others):] + others[:rep % len(others)],
                                      config) for rep in range(reps)]
            seconds = {name: median(r["seconds"][name] for r in results) for name in METHODS}
            reached = {name: value for name, value in seconds.items() if value == value}
            for name in METHODS:
                if name not in reached:
                    notes.append(f"time_to_quality {task_name}: {name} did not reach validation NLL ≤ "
                                 f"{median(r['target'] for r in results):.4f} within {factor:g}× exact-mle's time "
                                 f"(ratio > {factor:g})")
            ids: RowIds = {"task": task_name, "model": MODEL, "k": space.k}
            rows += perf_rows(config, "time_to_quality", "seconds_to_2pct", "s", reached,
                              reference=REFERENCE if REFERENCE in reached else None, **ids)
            rows += perf_rows(config, "time_to_quality", "best_val_nll", "nats",
                              {name: median(r["best"][name] for r in results) for name in METHODS},
                              reference=REFERENCE, **ids)
    notes.append(f"time_to_quality: exact-mle trains {', '.join(f'{t} {exact_steps(t, config)}' for t in TASKS)} "
                 f"steps; best_val_nll of the others is within their time limit; {reps} repetition(s)")
    return rows, notes
