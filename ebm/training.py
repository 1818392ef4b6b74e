"""Training scaffolding shared by every method: seeding, mini-batches, optimisers,
common hyperparameters, the energy model, and the step loop itself.

A method's ``fit`` only writes its per-batch objective; everything else (budget,
monitor calls, divergence checks, train/eval mode, optimiser bookkeeping) lives here
and in :class:`ebm.method.TrainLoop`, so budgets are counted identically for all.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from ebm.method import Budget, Diverged, FitData, Fitted, Method, Monitor, TrainLoop
from ebm.spaces import OutputSpace

#: hyperparameters every method shares (optimiser and energy architecture)
COMMON_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "weight_decay": 0.0,
    "hidden": 128,
    "depth": 1,
    "dropout": 0.0,
    "rank": 4,
    #: clip the global gradient norm of every step at this value (None: no clipping)
    "max_grad_norm": None,
}

#: what a method's per-batch objective returns: (scalar objective, energy evaluations spent)
BatchObjective = Callable[[Tensor], tuple[Tensor, int]]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's and torch's global generators and return a fresh CPU generator
    seeded with ``seed`` (used for mini-batch order, so runs are reproducible)."""
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def device_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A generator that lives on ``device`` (sampling on an accelerator needs one there)."""
    return torch.Generator(device=torch.device(device)).manual_seed(seed)


def minibatches(
    n: int, batch_size: int, *, generator: torch.Generator, device: torch.device | str
) -> Iterator[Tensor]:
    """Endless stream of index tensors of ``min(batch_size, n)`` training examples.

    Each epoch is a fresh permutation drawn from ``generator`` (CPU); the incomplete
    batch at the end of an epoch is dropped, so every step sees the same batch size
    and the energy-evaluation count per step is constant.
    """
    if n < 1:
        raise ValueError(f"minibatches: need at least one training example, got n={n}")
    if batch_size < 1:
        raise ValueError(f"minibatches: batch_size must be >= 1, got {batch_size}")
    size = min(batch_size, n)
    while True:
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n - size + 1, size):
            yield order[start : start + size]


def _unique_parameters(modules_or_params: nn.Module | Iterable[nn.Module | Tensor]) -> list[Tensor]:
    """Trainable parameters, each once (τ may share its trunk with the energy)."""
    items = [modules_or_params] if isinstance(modules_or_params, nn.Module) else list(modules_or_params)
    seen: set[int] = set()
    params: list[Tensor] = []
    for item in items:
        for p in item.parameters() if isinstance(item, nn.Module) else [item]:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def make_optimizer(
    modules_or_params: nn.Module | Iterable[nn.Module | Tensor], lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """Adam (AdamW, i.e. decoupled decay, when ``weight_decay > 0``) over the unique
    trainable parameters of the given modules/tensors."""
    params = _unique_parameters(modules_or_params)
    if not params:
        raise ValueError("make_optimizer: no trainable parameters")
    if lr <= 0 or weight_decay < 0:
        raise ValueError(f"make_optimizer: need lr > 0 and weight_decay >= 0, got lr={lr}, weight_decay={weight_decay}")
    optimizer_class = torch.optim.AdamW if weight_decay > 0 else torch.optim.Adam
    # The fused kernel updates every tensor in one call: at batch 64 a step is bound by
    # per-operation overhead, and `ebm-bench perf` measured ~25% off a min-min step on CPU.
    # Older torch builds (or devices) without it fall back to the per-tensor loop.
    try:
        return optimizer_class(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return optimizer_class(params, lr=lr, weight_decay=weight_decay)


def suggest_common(trial: Any) -> dict[str, Any]:
    """Optuna suggestions for :data:`COMMON_DEFAULTS` (learning rate and decay log-uniform)."""
    return {
        "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-2, log=True),
        "hidden": trial.suggest_categorical("hidden", [64, 128, 256]),
        "depth": trial.suggest_int("depth", 1, 3),
        "dropout": trial.suggest_float("dropout", 0.0, 0.3),
        "rank": trial.suggest_int("rank", 0, 8),
    }


def build_model(space: OutputSpace, model: str, in_features: int, params: dict[str, Any]) -> nn.Module:
    """The energy g(x, y) named ``model`` on ``space``, sized by the common hyperparameters."""
    from ebm.energies import build_energy

    return build_energy(
        space,
        model,
        in_features,
        hidden=int(params["hidden"]),
        depth=int(params["depth"]),
        dropout=float(params["dropout"]),
        rank=int(params["rank"]),
    )


def check_fit_data(space: OutputSpace, data: FitData) -> None:
    """Raise a clear ``ValueError`` unless x is (n, d) and y is (n, *space.event_shape)."""
    x, y = data.x_train, data.y_train
    if x.ndim != 2:
        raise ValueError(f"x_train must be (n, d), got shape {tuple(x.shape)}")
    expected = (x.shape[0], *space.event_shape)
    if tuple(y.shape) != expected:
        raise ValueError(f"y_train for {space.name} must have shape {expected}, got {tuple(y.shape)}")


def score_data_and_samples(energy: nn.Module, x: Tensor, y: Tensor, samples: Tensor) -> tuple[Tensor, Tensor]:
    """g(x, y) (n,) and g(x, y'_j) (n, m) from one vectorised call on the (n, 1 + m) candidates."""
    g = energy(x, torch.cat([y.unsqueeze(1), samples], dim=1))
    return g[:, 0], g[:, 1:]


def run_steps(
    loop: TrainLoop,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[Tensor],
    batch_objective: BatchObjective,
    modules: Iterable[nn.Module],
    *,
    max_grad_norm: float | None = None,
) -> None:
    """Run optimiser steps until the loop's budget (or the monitor) says stop.

    ``modules`` are put back in train mode before every step because the monitor's
    snapshot evaluation (``Fitted.predict`` etc.) switches them to eval mode.
    A non-finite objective raises :class:`Diverged` before any update is applied.
    """
    modules = list(modules)
    params = _unique_parameters(modules) if max_grad_norm is not None else []
    while loop.running():
        index = next(batches)
        for module in modules:
            module.train()
        optimizer.zero_grad(set_to_none=True)
        objective, energy_evals = batch_objective(index)
        value = float(objective.detach())
        if math.isfinite(value):
            objective.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
        loop.step(value, energy_evals)  # raises Diverged on a non-finite value
    for module in modules:
        if any(not torch.isfinite(p).all() for p in module.parameters()):
            raise Diverged(f"non-finite parameter in {type(module).__name__} after {loop.steps} steps")


def loop_info(loop: TrainLoop, **extra: Any) -> dict[str, Any]:
    """What every ``Fitted.info`` records about the run's spending."""
    return {"steps": loop.steps, "energy_evals": loop.energy_evals, "train_seconds": loop.seconds,
            **loop.selection_info(), **extra}


@dataclass
class Setup:
    """What every ``fit`` builds before its first step (all on the run's device)."""

    data: FitData
    energy: nn.Module
    #: on ``device``: for sampling y' (the CPU generator behind ``batches`` is separate)
    sampler: torch.Generator
    batches: Iterator[Tensor]


def setup_fit(
    space: OutputSpace,
    model: str,
    data: FitData,
    params: dict[str, Any],
    budget: Budget,
    *,
    seed: int,
    device: torch.device | str,
) -> Setup:
    """Seed, validate and move the data, build the energy, and start the batch stream."""
    check_fit_data(space, data)
    generator = seed_everything(seed)
    data = data.to(device)
    energy = build_model(space, model, data.x_train.shape[1], params).to(device)
    batches = minibatches(data.x_train.shape[0], budget.batch_size, generator=generator, device=device)
    return Setup(data, energy, device_generator(seed + 1, device), batches)


def start_fit(
    method: Method,
    space: OutputSpace,
    model: str,
    data: FitData,
    params: dict[str, Any],
    budget: Budget,
    *,
    seed: int,
    device: torch.device | str,
    energy_model: str | None = None,
) -> tuple[dict[str, Any], Setup, torch.optim.Optimizer]:
    """The opening of every ``fit``: hyperparameters (defaults + overrides), a clear
    ``ValueError`` for what ``method.check`` refuses, :func:`setup_fit`, and Adam(W) over the
    energy. ``energy_model`` builds a different energy than ``model`` (bce trains the unary part)."""
    params = method.params(params)
    status = method.check(space, model, params)
    if status is not None:
        raise ValueError(f"{method.name} on {space!r} with model {model!r}: {status[0]}: {status[1]}")
    setup = setup_fit(space, energy_model or model, data, params, budget, seed=seed, device=device)
    optimizer = make_optimizer(setup.energy, float(params["lr"]), float(params["weight_decay"]))
    return params, setup, optimizer


def train(
    budget: Budget,
    monitor: Monitor | None,
    snapshot: Callable[[], Fitted],
    optimizer: torch.optim.Optimizer,
    batches: Iterator[Tensor],
    batch_objective: BatchObjective,
    modules: Iterable[nn.Module],
    *,
    max_grad_norm: float | None = None,
    **extra_info: Any,
) -> Fitted:
    """Train to the budget and return the selected model (``budget.selection``: the best
    validation evaluation's parameters, or the last step's), its ``info`` completed with
    :func:`loop_info` (steps, energy evaluations, seconds, selection) and ``extra_info``.
    ``max_grad_norm`` clips every step's gradient norm (:func:`run_steps`)."""
    modules = list(modules)
    loop = TrainLoop(budget, monitor, snapshot, modules)
    run_steps(loop, optimizer, batches, batch_objective, modules, max_grad_norm=max_grad_norm)
    loop.restore_selected()
    fitted = snapshot()
    fitted.info.update(loop_info(loop, **extra_info))
    return fitted
