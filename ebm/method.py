"""The one interface every training method implements: the joint EBM and each baseline.

A *method* trains an energy model g(x, y) on one output space from tensors; it never
sees files, tasks or the harness. The harness builds the space, hands over tensors in
the space's encoding, and gets back a :class:`Fitted` model it can query (mode,
log-partition, NLL, learned τ). Budgets are counted identically for every method:
optimiser steps, wall seconds and energy evaluations (one g(x, y) for one pair).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Protocol

import torch
from torch import Tensor

from ebm.spaces import OutputSpace

if TYPE_CHECKING:  # ebm.training imports this module; the names are for annotations only
    from ebm.training import BatchObjective, Setup


class Diverged(RuntimeError):
    """Training produced a non-finite loss or parameter; the harness records status ``diverged``."""


@dataclass(frozen=True)
class FitData:
    """Training and validation tensors, labels already in the space's encoding."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor | None = None
    y_val: Tensor | None = None

    def to(self, device: torch.device | str) -> "FitData":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return FitData(move(self.x_train), move(self.y_train), move(self.x_val), move(self.y_val))


#: model-selection rules: ``best_val`` returns the parameters of the best validation
#: evaluation, ``last`` those of the last step (for convergence studies)
SELECTIONS: tuple[str, ...] = ("best_val", "last")


@dataclass(frozen=True)
class Budget:
    """What every method may spend, and which of its models it returns.

    ``max_steps`` optimiser steps of ``batch_size`` examples; the monitor is called every
    ``eval_every`` steps and after the last. ``selection`` picks the returned parameters
    (see :data:`SELECTIONS`); ``patience`` stops training after that many evaluations in a
    row without a better validation value (None: never)."""

    max_steps: int = 2000
    batch_size: int = 64
    eval_every: int = 200
    max_seconds: float | None = None
    selection: str = "best_val"
    patience: int | None = None

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"Budget: selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.patience is not None and (isinstance(self.patience, bool) or int(self.patience) < 1):
            raise ValueError(f"Budget: patience must be a positive number of evaluations or None, got {self.patience!r}")


@dataclass(frozen=True)
class Progress:
    """A point on a training curve, reported to the monitor every ``Budget.eval_every`` steps."""

    step: int
    seconds: float
    energy_evals: int
    train_objective: float


@dataclass(frozen=True)
class Evaluation:
    """What a monitor says about the model at one evaluation point: its validation
    ``value`` (None when it has none; higher is better when ``maximize``) and whether
    training must ``stop`` now (pruned by the tuner, or out of time)."""

    value: float | None
    maximize: bool
    stop: bool = False

    def improves_on(self, best: float | None) -> bool:
        """True when ``value`` is finite and strictly better than ``best`` (None: nothing yet)."""
        if self.value is None or not math.isfinite(self.value):
            return False
        return best is None or (self.value > best if self.maximize else self.value < best)


class Monitor(Protocol):
    """Called by ``Method.fit`` at each evaluation point with the model as it is now.

    Returns an :class:`Evaluation`; a plain bool is read as ``Evaluation(None, True, stop)``.
    """

    def __call__(self, progress: Progress, model: "Fitted") -> "Evaluation | bool": ...


@dataclass
class Fitted:
    """A trained model: an energy over a space, plus (for joint methods) a learned τ(x).

    ``divergence`` names the model's distribution: ``"kl"`` is the Gibbs distribution
    p = q·exp(g − log Z), the one that :meth:`nll` and :meth:`log_partition` describe; a
    Fenchel–Young model (``"sparsemax"``, ``"entmax15"``) is p = q·(f*)′(g − τ*) instead, which
    may put zero mass on the observed y, so its Gibbs NLL says nothing about it and callers
    should not report one. Everything here is pure inference; see :mod:`ebm.inference`.
    """

    space: OutputSpace
    energy: torch.nn.Module
    tau: torch.nn.Module | None = None
    info: dict[str, Any] = field(default_factory=dict)
    divergence: str = "kl"

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Mode argmax_y g(x, y) (the prior is uniform on the support for ranking; for
        multilabel with a non-uniform prior the MAP of q·exp(g) is used)."""
        from ebm import inference

        self.energy.eval()
        return inference.mode(self.energy, self.space, x)

    @torch.no_grad()
    def log_partition(self, x: Tensor, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """log Z(x) = log E_q[exp g(x, ·)] and its standard error (0 where exact)."""
        from ebm import inference

        self.energy.eval()
        return inference.log_partition(self.energy, self.space, x, generator=generator)

    @torch.no_grad()
    def tau_estimate(self, x: Tensor) -> Tensor | None:
        """The learned τ(x), the method's own estimate of log Z(x); None if it learns none."""
        if self.tau is None:
            return None
        self.tau.eval()
        return self.tau(x)

    @torch.no_grad()
    def nll(self, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Per-example −log p(y|x) = log Z(x) − g(x, y) − log q(y), and per-example stderr."""
        from ebm import inference

        self.energy.eval()
        return inference.nll(self.energy, self.space, x, y, generator=generator)


@dataclass(frozen=True)
class FitContext:
    """Everything :meth:`Method.train_model` needs, built by :meth:`Method.fit`: the model's
    space (after :meth:`Method.model_space`), the requested model name, the full
    hyperparameters (defaults + overrides), the :class:`~ebm.training.Setup` (data on the
    device, energy, sampling generator, batch stream) and Adam(W) over the energy."""

    space: OutputSpace
    model: str
    params: dict[str, Any]
    setup: "Setup"
    optimizer: torch.optim.Optimizer
    budget: Budget
    monitor: Monitor | None
    seed: int
    device: torch.device

    @property
    def energy(self) -> torch.nn.Module:
        return self.setup.energy

    @property
    def x_train(self) -> Tensor:
        return self.setup.data.x_train

    @property
    def y_train(self) -> Tensor:
        return self.setup.data.y_train

    def train(
        self,
        snapshot: Callable[[], "Fitted"],
        batch_objective: "BatchObjective",
        modules: list[torch.nn.Module],
        **extra_info: Any,
    ) -> "Fitted":
        """:func:`ebm.training.train` with this run's budget, monitor, optimiser, batches and
        gradient clipping (the common hyperparameter ``max_grad_norm``)."""
        from ebm.training import train

        clip = self.params.get("max_grad_norm")
        return train(self.budget, self.monitor, snapshot, self.optimizer, self.setup.batches, batch_objective, modules,
                     max_grad_norm=None if clip is None else float(clip), **extra_info)


class Method(ABC):
    """Base class of every training method (see ``baselines/`` and :mod:`ebm.minmin`).

    To implement a method, set ``name``, ``description`` and ``defaults``, implement
    ``search_space`` and :meth:`train_model` (the per-method body: read the prepared
    :class:`FitContext`, write the per-batch objective, return ``ctx.train(...)``), and
    override ``check`` when the method does not support every space/model. Optional hooks:
    :meth:`model_space` (the space, with its prior q, the model lives on; default the
    given one) and :meth:`energy_model` (the energy actually built; default the requested
    model). :meth:`fit` is the template that ties these together; a method that needs no
    shared setup at all (the harness's test fixtures) may override ``fit`` instead.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: default hyperparameters; ``fit`` receives ``{**defaults, **overrides}``
    defaults: ClassVar[dict[str, Any]] = {}

    def check(self, space: OutputSpace, model: str, params: dict[str, Any]) -> tuple[str, str] | None:
        """None when the run can go ahead, else ``(status, reason)`` with status
        ``"unsupported"`` (this method cannot train this model on this space) or
        ``"skipped"`` (it could, but not at this size, e.g. |Y| past the exact limit)."""
        return None

    @abstractmethod
    def search_space(self, trial: Any) -> dict[str, Any]:
        """Ask an Optuna trial for this method's hyperparameters (``trial.suggest_*``)."""

    def model_space(self, space: OutputSpace, params: dict[str, Any], data: FitData) -> OutputSpace:
        """The space (with its prior q) the model is defined on, i.e. the returned
        ``Fitted.space``; ``params`` are the caller's overrides. Default: ``space`` itself."""
        return space

    def energy_model(self, model: str) -> str:
        """The energy model actually built and trained for a requested ``model`` (default: it)."""
        return model

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
        """Train and return the fitted model. Raise :class:`Diverged` on a non-finite loss.

        The template: :meth:`model_space`, then :func:`ebm.training.start_fit` (parameters,
        ``check``, seeding, data on the device, energy, optimiser), then :meth:`train_model`."""
        from ebm.training import start_fit  # ebm.training imports this module

        space = self.model_space(space, params, data)
        params, setup, optimizer = start_fit(
            self, space, model, data, params, budget, seed=seed, device=device, energy_model=self.energy_model(model)
        )
        ctx = FitContext(space, model, params, setup, optimizer, budget, monitor, seed, device)
        return self.train_model(ctx)

    def train_model(self, ctx: FitContext) -> Fitted:
        """The method's own training on the prepared context; return ``ctx.train(...)``'s Fitted.

        Not abstract only so that a method overriding :meth:`fit` need not define it."""
        raise NotImplementedError(f"{type(self).__name__} implements neither train_model nor fit")

    def params(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        unknown = set(overrides or {}) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.name}: unknown hyperparameter(s) {sorted(unknown)}; known: {sorted(self.defaults)}")
        return {**self.defaults, **(overrides or {})}


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

    def step(self, objective: float, energy_evals: int) -> None:
        if not math.isfinite(objective):
            raise Diverged(f"non-finite training objective ({objective}) at step {self.steps + 1}")
        self.steps += 1
        self.energy_evals += int(energy_evals)
        self._running_objective += objective
        self._n_since_eval += 1
        if self.steps % self.budget.eval_every == 0 or self.steps == self.budget.max_steps:
            self.report()

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
            self.best_step, self.best_value = self.steps, float(evaluation.value)  # type: ignore[arg-type]
            self._evaluations_since_best = 0
            if self.budget.selection == "best_val":
                self._best_state = [{name: t.detach().clone() for name, t in m.state_dict().items()} for m in self.modules]
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
