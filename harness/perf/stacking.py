"""Benchmark ``stacking``: milliseconds per member-step of S runs trained as one stacked model
(:func:`ebm.stacking.fit_stacked`) against the same S runs trained one after the other.

Both contenders fit the same S = 5 seeds on the same data (random features, d = 103 like yeast;
multilabel unary k = 14, pairwise k = 16, rankings k = 6 on the permutahedron), with the
same budget and no monitor, in interleaved repetitions; the figure is wall time / (S × steps).
On rankings a group of ``harness.dispatch.STACK_LIMIT`` members is timed too: a ranking task's
runs (5 seeds × 10 folds of one configuration) stack in groups that large, where a member-step
costs less again (the fixed cost of a vmapped step is shared by more members).
Rows: ``ms_per_member_step`` of ``<method>[stacked=S]`` relative to ``<method>`` alone
(speed-up = 1 / ratio).

Also the measurement behind ``mcmc-pcd``'s ``MAX_STACKED_SITES`` (a Gibbs site loop over more
labels trains alone): ``mcmc-pcd`` on the pairwise model at ``GIBBS_SITES`` labels with 3 sweeps a
step, 40 steps, the limit lifted on the instance measured (``--quick``: the smallest and largest k
only, 20 steps).
"""

from __future__ import annotations

import copy
import dataclasses
from functools import partial
from typing import Any

import torch

from harness.perf.common import PerfConfig, Threads, interleaved, perf_rows

MEMBERS = 5
#: (kind, model, k) × the stackable methods measured on it
CASES: tuple[tuple[str, str, int, tuple[str, ...]], ...] = (
    ("multilabel", "unary", 14, ("bce", "minmin-logistic", "minmin-logistic-is", "exact-mle", "nce", "mcmc-pcd",
                                 "mcmc-gwg", "perceptron", "minmax-reinforce")),
    ("multilabel", "pairwise", 16, ("bce", "minmin-logistic", "minmin-logistic-is", "nce", "mcmc-pcd", "mcmc-gwg")),
    ("ranking", "permutahedron", 6, ("minmin-logistic", "minmin-logistic-is", "exact-mle", "nce", "mcmc-pcd",
                                     "perceptron", "minmax-reinforce")),
)
IN_FEATURES = 103
#: label counts of the Gibbs site-loop cases (mcmc-pcd, pairwise, GIBBS_PARAMS), and their steps
#: (a step at k = 174 costs 25-40 ms, a lone one of the cases above 1-15 ms)
GIBBS_SITES = (16, 64, 100, 174)
GIBBS_PARAMS = {"sweeps": 3}
GIBBS_STEPS, QUICK_GIBBS_STEPS = 40, 20


def member_data(kind: str, k: int, seed: int, n: int = 1024):
    """Random (x, y) of one member: standard-normal features, labels or rankings drawn from the prior."""
    from ebm.method import FitData
    from ebm.spaces import make_space

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, IN_FEATURES, generator=generator)
    space = make_space(kind, k, "unary" if kind == "multilabel" else "permutahedron")
    y = space.sample_prior(n, generator=generator)
    return FitData(x, y, x[:64], y[:64])


def ms_alone(method, space, model: str, data: list, budget, device, params: dict[str, Any]) -> float:
    """Milliseconds per member-step of the members fitted one after the other."""
    from harness.perf.common import timed

    def fit_each() -> None:
        for seed, member in enumerate(data):
            method.fit(space, model, member, params, budget, seed=seed, device=device)

    return 1e3 * timed(fit_each, device) / (len(data) * budget.max_steps)


def ms_stacked(method, space, model: str, data: list, budget, device, params: dict[str, Any]) -> float:
    """Milliseconds per member-step of the members fitted as one stacked group."""
    from ebm.stacking import Member, fit_stacked
    from harness.perf.common import timed

    members = [Member(member, seed) for seed, member in enumerate(data)]
    return 1e3 * timed(lambda: fit_stacked(method, space, model, members, params, budget, device=device),
                       device) / (len(data) * budget.max_steps)


def run(config: PerfConfig) -> tuple[list[dict[str, Any]], list[str]]:
    from baselines.registry import get_method
    from ebm.method import Budget
    from ebm.spaces import make_space
    from ebm.training import StepMethod
    from harness.dispatch import STACK_LIMIT

    steps = 60 if config.quick else 200
    budget = Budget(max_steps=steps, batch_size=64, eval_every=10**9)
    device = config.torch_device
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    with Threads(config.threads):
        cases: list[tuple[str, str, int, str, dict[str, Any]]] = [
            (kind, model, k, name, {}) for kind, model, k, methods in CASES for name in methods]
        sites = (GIBBS_SITES[0], GIBBS_SITES[-1]) if config.quick else GIBBS_SITES
        cases += [("multilabel", "pairwise", k, "mcmc-pcd", GIBBS_PARAMS) for k in sites]
        site_budget = dataclasses.replace(budget, max_steps=QUICK_GIBBS_STEPS if config.quick else GIBBS_STEPS)
        for kind, model, k, name, overrides in cases:
            space = make_space(kind, k, model)
            # a ranking task's runs (5 seeds x 10 folds) stack in groups of run's limit, larger than MEMBERS
            sizes = sorted({MEMBERS, STACK_LIMIT}) if kind == "ranking" and not overrides else [MEMBERS]
            data = [member_data(kind, k, seed).to(device) for seed in range(max(sizes))]
            method = get_method(name)
            if overrides:  # a site-loop case: measured at every k, past the stacking limit it measures
                method = copy.copy(method)  # the registry's instance keeps its limit
                method.MAX_STACKED_SITES = 10**9  # type: ignore[attr-defined]
            params = method.params(overrides)
            if not isinstance(method, StepMethod) or method.check(space, model, params) is not None \
                    or not method.can_stack(space, model, params):
                notes.append(f"stacking: {name} on {model} k={k} cannot be stacked; skipped")
                continue
            case_budget = site_budget if overrides else budget
            # benchopt-style names: name[setting=value,...]
            settings = [f"{key}={value}" for key, value in overrides.items()]
            lone = f"{name}[{','.join(settings)}]" if settings else name
            contenders = {lone: partial(ms_alone, method, space, model, data[:MEMBERS], case_budget, device,
                                        overrides)}
            for size in sizes:
                label = f"{name}[{','.join([f'stacked={size}', *settings])}]"
                contenders[label] = partial(ms_stacked, method, space, model, data[:size], case_budget, device,
                                            overrides)
            for contender in contenders.values():
                contender()  # warm-up (imports, allocator) outside the timings
            samples = interleaved(contenders, max(config.reps // 2, 2))
            rows += perf_rows(config, "stacking", "ms_per_member_step", "ms", samples, reference=lone,
                              task="random-d103", model=model, k=k)
    notes.append(f"stacking: {MEMBERS} members vs {MEMBERS} lone fits, {steps} steps of batch 64 each "
                 f"({site_budget.max_steps} in the Gibbs site-loop cases); on rankings also {STACK_LIMIT} members "
                 "(run's group size for a ranking task's 5 seeds x 10 folds)")
    return rows, notes
