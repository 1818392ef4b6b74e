"""The shared training template: every method trained by steps derives from
:class:`StepMethod` and only writes its per-batch objective (:meth:`StepMethod.train_model`).

Everything else lives here, so budgets and model selection are identical for all: the
common hyperparameters and their search space, seeding, mini-batches, the energy, fused
Adam(W), the step loop (:class:`TrainLoop`: clock, energy-evaluation count, divergence
checks, monitor calls, validation-based model selection, patience, gradient clipping).

One way through a fit (:meth:`StepMethod.fit`): hyperparameters merged once
(:meth:`ebm.method.Method.params`) → :meth:`~ebm.method.Method.check` once → :func:`setup_fit`
→ :class:`FitContext` → ``train_model`` → :func:`train`. This module imports the contracts
(:mod:`ebm.method`); they never import it.
"""

from __future__ import annotations

import math
import random
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ebm.energies import Energy
from ebm.method import Budget, Diverged, Evaluation, FitData, Fitted, Method, Monitor, Progress
from ebm.spaces import PRIORS, OutputSpace

#: hyperparameters every method shares (optimiser and energy architecture)
COMMON_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "weight_decay": 0.0,
    "hidden": 128,
    "depth": 1,
    "dropout": 0.0,
    "rank": 4,
    #: the prior q of the model (ebm.spaces.PRIORS): the harness builds the space from it
    #: (harness.fitdata); ``fit`` takes the space it is given as the model's space
    "prior": "uniform",
    #: clip the global gradient norm of every step at this value (None: no clipping)
    "max_grad_norm": None,
}

#: what a method's per-batch objective returns: (scalar objective, energy evaluations spent)
BatchObjective = Callable[[Tensor], tuple[Tensor, int]]


@dataclass(frozen=True)
class PreSteps:
    """``count`` optimiser steps on ``objective(index)`` (a scalar loss of the batch) before every
    step of the batch objective, on the same batch, each from gradients set to None: a parameter
    the loss does not reach keeps no gradient, and Adam(W) leaves it (and its state) as it is.
    (``minmax-reinforce``'s extra ascent steps of its sampler alone.) A method hands them to
    :meth:`FitContext.train` rather than stepping the optimiser inside its batch objective, so
    that a stacked group (``ebm.stacking``) can take the same steps for every member at once."""

    objective: Callable[[Tensor], Tensor]
    count: int


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


def suggest_common(trial: Any, required_prior: str | None = None) -> dict[str, Any]:
    """Optuna suggestions for :data:`COMMON_DEFAULTS` (learning rate and decay log-uniform; the
    prior q a categorical unless the method requires one; no gradient clipping: a variance
    control, set per suite)."""
    return {
        "prior": required_prior or trial.suggest_categorical("prior", list(PRIORS)),
        "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-2, log=True),
        "hidden": trial.suggest_categorical("hidden", [64, 128, 256]),
        "depth": trial.suggest_int("depth", 1, 3),
        "dropout": trial.suggest_float("dropout", 0.0, 0.3),
        "rank": trial.suggest_int("rank", 0, 8),
    }


def build_model(space: OutputSpace, model: str, in_features: int, params: dict[str, Any]) -> Energy:
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


def score_data_and_samples(energy: Energy, x: Tensor, y: Tensor, samples: Tensor) -> tuple[Tensor, Tensor]:
    """g(x, y) (n,) and g(x, y'_j) (n, m), the trunk h(x) computed once
    (:meth:`ebm.energies.Energy.score_data_and_samples`)."""
    return energy.score_data_and_samples(x, y, samples)


class TrainLoop:
    """Shared bookkeeping for a step-based training loop: clock, energy-evaluation
    counter, divergence check, and calls to the monitor. Methods write only their step.

    Model selection: at every evaluation with a validation value better than all before,
    the state of ``modules`` (every trained module: energy, τ, a learned sampler) is copied
    in memory; :meth:`restore_selected` puts it back when ``budget.selection`` is
    ``best_val``. ``budget.patience`` evaluations in a row without improvement stop the loop
    (``stopped_early``).

    Usage::

        loop = TrainLoop(budget, monitor, make_fitted, [energy, tau])
        while loop.running():
            loss = ...; loss.backward(); opt.step()
            loop.step(loss.item(), energy_evals=batch * (1 + n_samples))
        loop.restore_selected()
        return make_fitted()
    """

    def __init__(
        self,
        budget: Budget,
        monitor: Monitor | None,
        snapshot: Callable[[], Fitted],
        modules: Iterable[torch.nn.Module] = (),
    ) -> None:
        self.budget = budget
        self.monitor = monitor
        self.snapshot = snapshot
        self.modules = list(modules)
        self.best_step: int | None = None
        self.best_value: float | None = None
        self.stopped_early = False
        self._best_state: list[dict[str, Tensor]] | None = None
        self._evaluations_since_best = 0
        self.steps = 0
        self.energy_evals = 0
        self.started = time.perf_counter()
        self._stopped = False
        self._running_objective = 0.0
        self._n_since_eval = 0

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def running(self) -> bool:
        if self._stopped or self.steps >= self.budget.max_steps:
            return False
        if self.budget.max_seconds is not None and self.seconds >= self.budget.max_seconds:
            return False
        return True

    def step(self, objective: float, energy_evals: int) -> bool:
        """Count one step; at an evaluation step call the monitor. Returns whether it did (its
        snapshot evaluation leaves the modules in eval mode)."""
        if not math.isfinite(objective):
            raise Diverged(f"non-finite training objective ({objective}) at step {self.steps + 1}")
        self.steps += 1
        self.energy_evals += int(energy_evals)
        self._running_objective += objective
        self._n_since_eval += 1
        if self.steps % self.budget.eval_every == 0 or self.steps == self.budget.max_steps:
            self.report()
            return True
        return False

    def report(self) -> None:
        mean_objective = self._running_objective / max(self._n_since_eval, 1)
        self._running_objective, self._n_since_eval = 0.0, 0
        if self.monitor is not None:
            progress = Progress(self.steps, self.seconds, self.energy_evals, mean_objective)
            verdict = self.monitor(progress, self.snapshot())
            evaluation = verdict if isinstance(verdict, Evaluation) else Evaluation(None, True, bool(verdict))
            self._select(evaluation)
            if evaluation.stop:
                self._stopped = True

    def _select(self, evaluation: Evaluation) -> None:
        if evaluation.value is None:
            return
        if evaluation.improves_on(self.best_value):
            self.best_step, self.best_value = self.steps, float(evaluation.value)
            self._evaluations_since_best = 0
            if self.budget.selection == "best_val":
                self._best_state = [{name: t.detach().clone() for name,
                                     t in m.state_dict().items()} for m in self.modules]
            return
        self._evaluations_since_best += 1
        if self.budget.patience is not None and self._evaluations_since_best >= self.budget.patience:
            self.stopped_early = self._stopped = True

    def restore_selected(self) -> None:
        """Under ``best_val``, load the modules' state of the best evaluation (if any)."""
        if self.budget.selection == "best_val" and self._best_state is not None and self.best_step != self.steps:
            for module, state in zip(self.modules, self._best_state):
                module.load_state_dict(state)

    def selection_info(self) -> dict[str, Any]:
        """``Fitted.info`` entries: ``best_step`` (step of the best validation value; the last
        step when there was none), ``selection``, ``best_value`` and ``stopped_early``."""
        return {
            "best_step": self.steps if self.best_step is None else self.best_step,
            "selection": self.budget.selection,
            "best_value": self.best_value,
            "stopped_early": self.stopped_early,
        }


def run_steps(
    loop: TrainLoop,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[Tensor],
    batch_objective: BatchObjective,
    modules: Iterable[nn.Module],
    *,
    max_grad_norm: float | None = None,
    pre_steps: PreSteps | None = None,
) -> None:
    """Run optimiser steps until the loop's budget (or the monitor) says stop.

    ``modules`` are put in train mode before the first step and after every evaluation, whose
    snapshot evaluation (``Fitted.predict`` etc.) switches them to eval mode; nothing else does
    (the MCMC chains' kernel puts the energy back as it found it: ``baselines.mcmc``). Not before
    every step: ``Module.train`` walks every submodule, ~30 µs a step at pairwise k = 16 (1.5 % of
    a min-min step, 5 % of bce's).
    ``pre_steps`` run before each step's objective, on its batch (:class:`PreSteps`; not clipped).
    A non-finite objective raises :class:`Diverged` before any update is applied.
    """
    modules = list(modules)
    params = _unique_parameters(modules) if max_grad_norm is not None else []
    for module in modules:
        module.train()
    while loop.running():
        index = next(batches)
        optimizer.zero_grad(set_to_none=True)
        if pre_steps is not None:
            for _ in range(pre_steps.count):
                pre_steps.objective(index).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        objective, energy_evals = batch_objective(index)
        value = float(objective.detach())
        if math.isfinite(value):
            objective.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
        if loop.step(value, energy_evals):  # raises Diverged on a non-finite value
            for module in modules:
                module.train()
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
    energy: Energy
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


@dataclass(frozen=True)
class FitContext:
    """Everything :meth:`StepMethod.train_model` needs, built by :meth:`StepMethod.fit`: the
    model's space (with its prior q), the requested model name, the full
    hyperparameters (defaults + overrides), the :class:`Setup` (data on the device, energy,
    sampling generator, batch stream) and Adam(W) over the energy."""

    space: OutputSpace
    model: str
    params: dict[str, Any]
    setup: Setup
    optimizer: torch.optim.Optimizer
    budget: Budget
    monitor: Monitor | None
    seed: int
    device: torch.device
    #: stacked training (:mod:`ebm.stacking`): :meth:`train` hands its arguments to this
    #: callable (which raises) instead of training; None: a single run
    capture: Callable[..., Any] | None = None

    @property
    def energy(self) -> Energy:
        return self.setup.energy

    @property
    def x_train(self) -> Tensor:
        return self.setup.data.x_train

    @property
    def y_train(self) -> Tensor:
        return self.setup.data.y_train

    def train(
        self,
        snapshot: Callable[[], Fitted],
        batch_objective: BatchObjective,
        modules: list[torch.nn.Module],
        pre_steps: PreSteps | None = None,
        **extra_info: Any,
    ) -> Fitted:
        """:func:`train` with this run's budget, monitor, optimiser, batches and gradient
        clipping (the common hyperparameter ``max_grad_norm``), and ``pre_steps`` before each
        step (:class:`PreSteps`). Under stacking the pieces go to ``capture`` instead, which
        trains them with the other members' (``ebm.stacking``)."""
        if self.capture is not None:
            self.capture(snapshot, batch_objective, modules, extra_info, pre_steps)
        clip = self.params.get("max_grad_norm")
        return train(self.budget, self.monitor, snapshot, self.optimizer, self.setup.batches, batch_objective, modules,
                     max_grad_norm=None if clip is None else float(clip), pre_steps=pre_steps, **extra_info)



class StepMethod(Method):
    """A :class:`~ebm.method.Method` trained by the shared step loop; ``fit`` is the template.

    To implement one, set ``name``, ``description`` and ``defaults``, implement
    ``search_space`` and :meth:`train_model` (read the prepared :class:`FitContext`, write
    the per-batch objective, return ``ctx.train(...)``), and override ``check`` when the
    method does not support every space/model; set ``required_prior`` when the model needs a
    particular q. Optional hook: :meth:`energy_model` (the energy actually built; default the
    requested model).
    """

    #: opt in to stacked training (several seeds in one vmapped step, :func:`ebm.stacking.fit_stacked`):
    #: the method's batch objective must be vmap-safe (no ``.item()``/``float()`` on batch
    #: tensors, no data-dependent Python control flow, randomness only from ``setup.sampler``)
    stackable: ClassVar[bool] = False
    #: members with their own prior q (a frequency prior from each run's training rows) may train in
    #: one stacked group: q enters the method's training only through the space's methods called
    #: inside its batch objective (and pre-steps), never in tensors built from it before the first step
    #: (an enumeration's log q, chains started from q), so the template's space can hold each member's
    #: π inside the vmapped step (``ebm.stacking``)
    stacks_priors: ClassVar[bool] = False

    def energy_model(self, model: str) -> str:
        """The energy model actually built and trained for a requested ``model`` (default: it)."""
        return model

    def can_stack(self, space: OutputSpace, model: str, params: dict[str, Any]) -> bool:
        """Whether runs of these full hyperparameters may train stacked (default: :attr:`stackable`)."""
        return self.stackable

    def full_params(self, space: OutputSpace, model: str, params: dict[str, Any]) -> dict[str, Any]:
        """The full hyperparameters (defaults + overrides, once), checked against the space and
        :meth:`check`; a refusal is a clear ``ValueError``."""
        params = self.params(params)
        if params.get("prior", "uniform") not in PRIORS:
            raise ValueError(f"{self.name}: unknown prior {params['prior']!r}; known: {', '.join(PRIORS)}")
        if self.required_prior == "uniform" and not space.uniform_prior:
            raise ValueError(f"{self.name} models a uniform prior q; {space!r} has another (build the space with "
                             f"prior='uniform')")
        verdict = self.check(space, model, params)
        if verdict is not None:
            raise ValueError(f"{self.name} on {space!r} with model {model!r}: {verdict[0]}: {verdict[1]}")
        clip = params.get("max_grad_norm")
        if clip is not None and not float(clip) > 0:
            raise ValueError(f"{self.name}: max_grad_norm must be positive (or None: no clipping), got {clip!r}")
        return params

    def fit(
        self,
        space: OutputSpace,
        model: str,
        data: FitData,
        params: dict[str, Any],
        budget: Budget,
        *,
        seed: int,
        device: torch.device,
        monitor: Monitor | None = None,
    ) -> Fitted:
        """The template: hyperparameters (defaults + overrides, once), ``check`` (once; a
        refusal is a clear ``ValueError``), :func:`setup_fit`, Adam(W) over the energy, then
        :meth:`train_model` on the :class:`FitContext`. ``space`` is the model's space, prior
        q included (built by the caller from the ``prior`` hyperparameter)."""
        params = self.full_params(space, model, params)
        setup = setup_fit(space, self.energy_model(model), data, params, budget, seed=seed, device=device)
        optimizer = make_optimizer(setup.energy, float(params["lr"]), float(params["weight_decay"]))
        ctx = FitContext(space, model, params, setup, optimizer, budget, monitor, seed, torch.device(device))
        return self.train_model(ctx)

    @abstractmethod
    def train_model(self, ctx: FitContext) -> Fitted:
        """The method's own training on the prepared context; return ``ctx.train(...)``'s Fitted."""


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
    pre_steps: PreSteps | None = None,
    **extra_info: Any,
) -> Fitted:
    """Train to the budget and return the selected model (``budget.selection``: the best
    validation evaluation's parameters, or the last step's), its ``info`` completed with
    :func:`loop_info` (steps, energy evaluations, seconds, selection) and ``extra_info``.
    ``max_grad_norm`` clips every step's gradient norm; ``pre_steps`` run before each (:func:`run_steps`)."""
    modules = list(modules)
    loop = TrainLoop(budget, monitor, snapshot, modules)
    run_steps(loop, optimizer, batches, batch_objective, modules, max_grad_norm=max_grad_norm, pre_steps=pre_steps)
    loop.restore_selected()
    fitted = snapshot()
    fitted.info.update(loop_info(loop, **extra_info))
    return fitted
