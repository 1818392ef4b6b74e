"""Benchmark ``step_cost``: milliseconds per training step (batch 64) against |Y|.

Methods expose no step function, so a step is timed *inside one fit*: a monitor called every
``n`` steps (``Budget(max_steps=2n, eval_every=n)``) notes the clock when it returns at step n
and when it is next called at step 2n; the steps n+1..2n lie between, so setup (seeding,
building the model, enumerating Y for exact, starting chains) and one-off costs (Adam state,
lazy allocations, the first n steps) are outside the interval and a timing can never be
negative. (Subtracting a short fit from a long one, as this benchmark once did, gave negative
times when the two fits' setup costs differed by more than the steps' cost.) The interval also
holds one model snapshot (the loop builds it before calling the monitor): a constant, small.

``n`` is calibrated per contender so that the interval spans about ``seconds_per_sample`` (a
pilot fit), and the median over interleaved repetitions is kept, with the spread of the
repetitions (max / min) beside it.

Contenders: ``minmin-logistic`` (n′ = 16), ``exact-mle``, ``bce``, ``mcmc-pcd`` (one sweep),
``nce`` (K = 16), on the pairwise model at k ∈ {8, 12, 16, 20} (exact only where it accepts
|Y|) and the unary model at k = 174 (exact there is the closed form). Ratios are to ``bce``;
at k = 16 exact-mle is also reported against minmin-logistic.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.perf.common import PerfConfig, Threads, interleaved, perf_rows, random_fit_data

METHODS = ("bce", "minmin-logistic", "nce", "mcmc-pcd", "exact-mle")
PARAMS: dict[str, dict[str, Any]] = {"minmin-logistic": {"n_samples": 16}, "nce": {"n_samples": 16},
                                     "mcmc-pcd": {"sweeps": 1}}
CONFIGS = (("pairwise", 8), ("pairwise", 12), ("pairwise", 16), ("pairwise", 20), ("unary", 174))
REFERENCE = "bce"
WARMUP_STEPS = 2
BATCH = 64


class StepClock:
    """A monitor that notes the clock when it returns at the first evaluation and when it is
    called at the second: the seconds of the steps in between (see the module doc)."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def __call__(self, progress, model) -> bool:
        import time

        now = time.perf_counter()
        if self.marks:  # called at step 2n: the interval ends here
            self.marks.append(now)
            return True
        self.marks.append(time.perf_counter())  # returns at step n: the interval starts now
        return False


def step_seconds(method, space, model: str, data, params: dict[str, Any], steps: int, device: torch.device) -> float:
    """Wall seconds per step of ``method`` over ``steps`` steps of batch 64, timed inside one fit
    after ``steps`` warm-up steps (accelerator work included)."""
    from ebm.method import Budget
    from harness.perf.common import synchronize

    clock = StepClock()

    def monitor(progress, fitted) -> bool:
        synchronize(device)
        return clock(progress, fitted)

    method.fit(space, model, data, params, Budget(max_steps=2 * steps, batch_size=BATCH, eval_every=steps),
               seed=0, device=device, monitor=monitor)
    if len(clock.marks) != 2:
        raise RuntimeError(f"step_cost: {method.name} stopped before step {2 * steps}")
    return (clock.marks[1] - clock.marks[0]) / steps


class StepTimer:
    """Times one contender (method × model × k) inside fits (see the module doc)."""

    def __init__(self, name: str, model: str, k: int, config: PerfConfig, seconds_per_sample: float) -> None:
        from baselines.registry import get_method
        from ebm.spaces import make_space

        self.name, self.model, self.k, self.device = name, model, k, config.torch_device
        self.method = get_method(name)
        self.space = make_space("multilabel", k, model)
        self.params = self.method.params(PARAMS.get(name, {}))
        self.data = random_fit_data(k, seed=config.seed).to(self.device)
        self.skip_reason = None
        verdict = self.method.check(self.space, model, self.params)
        if verdict is not None:
            self.skip_reason = verdict[1]
            return
        per_step = max(self._per_step(WARMUP_STEPS), 1e-5)
        self.steps = int(min(400, max(3, round(seconds_per_sample / per_step))))

    def _per_step(self, steps: int) -> float:
        return step_seconds(self.method, self.space, self.model, self.data, self.params, steps, self.device)

    def sample(self) -> float:
        """One measurement of milliseconds per step."""
        return 1000.0 * self._per_step(self.steps)


def run(config: PerfConfig, *, configs: tuple[tuple[str, int], ...] = CONFIGS,
        methods: tuple[str, ...] = METHODS) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows ``ms_per_step`` for every (model, k) in ``configs`` × ``methods`` (the reference, bce, included)."""
    if REFERENCE not in methods:
        raise ValueError(f"step_cost: the reference method {REFERENCE!r} must be among the methods")
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    seconds_per_sample = 0.15 if config.quick else 0.5
    with Threads(config.threads):
        for model, k in configs:
            timers = {name: StepTimer(name, model, k, config, seconds_per_sample) for name in methods}
            notes += [f"step_cost {name} {model} k={k} skipped: {t.skip_reason}"
                      for name, t in timers.items() if t.skip_reason is not None]
            runnable = {name: t.sample for name, t in timers.items() if t.skip_reason is None}
            samples = interleaved(runnable, config.reps)
            rows += perf_rows(config, "step_cost", "ms_per_step", "ms", samples, reference=REFERENCE,
                              task="random-d64", model=model, k=k)
            if model == "pairwise" and "exact-mle" in samples and "minmin-logistic" in samples:
                # the exact/min-min cost ratio
                rows += perf_rows(config, "step_cost", "ms_per_step", "ms",
                                  {"exact-mle": samples["exact-mle"], "minmin-logistic": samples["minmin-logistic"]},
                                  reference="minmin-logistic", task="random-d64", model=model, k=k)[:1]
    return rows, notes
