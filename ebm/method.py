"""The contracts every training method fulfils: the joint EBM and each baseline.

This module holds only the contracts (:class:`Method`, :class:`Fitted`, :class:`FitData`,
:class:`Budget`, :class:`Monitor` with its :class:`Progress` and :class:`Evaluation`,
:class:`Diverged`); the shared training template (setup, the step loop, model selection)
is :mod:`ebm.training`, which imports this module and never the other way round.

A *method* trains an energy model g(x, y) on one output space from tensors; it never
sees files, tasks or the harness. The harness builds the space, hands over tensors in
the space's encoding, and gets back a :class:`Fitted` model it can query (mode,
log-partition, NLL, learned τ). Budgets are counted identically for every method:
optimiser steps, wall seconds and energy evaluations (one g(x, y) for one pair).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import Tensor

from ebm.spaces import OutputSpace

if TYPE_CHECKING:  # annotations only: the contracts import no model code at run time
    from ebm.energies import Energy


class Diverged(RuntimeError):
    """Training produced a non-finite loss or parameter; the harness records status ``diverged``."""


@dataclass(frozen=True)
class FitData:
    """Training and validation tensors, labels already in the space's encoding."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor | None = None
    y_val: Tensor | None = None

    def to(self, device: torch.device | str) -> FitData:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return FitData(self.x_train.to(device), self.y_train.to(device), move(self.x_val), move(self.y_val))


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
            raise ValueError(f"Budget: patience must be a positive number of evaluations or None, got "
                             f"{self.patience!r}")


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

    def __call__(self, progress: Progress, model: Fitted) -> Evaluation | bool: ...


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
    energy: Energy
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
    def nll(self, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None,
            log_z: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Per-example −log p(y|x) = log Z(x) − g(x, y) − log q(y), and per-example stderr;
        ``log_z``: :meth:`log_partition` of these x when it is already computed."""
        from ebm import inference

        self.energy.eval()
        return inference.nll(self.energy, self.space, x, y, generator=generator, log_z=log_z)


class Method(ABC):
    """Base class of every training method (see ``baselines/`` and :mod:`ebm.minmin`).

    A method has a ``name``, a ``description`` and ``defaults`` (its hyperparameters),
    asks an Optuna trial for them in :meth:`search_space`, says which (space, model) it
    cannot do in :meth:`check`, and trains in :meth:`fit`. Methods trained by the shared
    step loop (every method here but the fixtures and the constant floor) derive from
    :class:`ebm.training.StepMethod`, which implements ``fit`` as a template.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: default hyperparameters; ``fit`` receives ``{**defaults, **overrides}``
    defaults: ClassVar[dict[str, Any]] = {}
    #: the prior q this method's model needs (e.g. ``"uniform"`` for sparsemax-type models, whose
    #: mode is argmax g only under a uniform q); None: the run's hyperparameter ``prior`` decides.
    #: The harness decides a run's q once, at plan time, and builds the space from it.
    required_prior: ClassVar[str | None] = None

    def check(self, space: OutputSpace, model: str, params: dict[str, Any]) -> tuple[str, str] | None:
        """None when the run can go ahead, else ``(status, reason)`` with status
        ``"unsupported"`` (this method cannot train this model on this space) or
        ``"skipped"`` (it could, but not at this size, e.g. |Y| past the exact limit).
        ``params`` are the full hyperparameters (:meth:`params`); a malformed value raises
        ``ValueError``."""
        return None

    @abstractmethod
    def search_space(self, trial: Any) -> dict[str, Any]:
        """Ask an Optuna trial for this method's hyperparameters (``trial.suggest_*``)."""

    @abstractmethod
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
        """Train and return the fitted model (the one ``budget.selection`` picks); raise
        :class:`Diverged` on a non-finite loss and ``ValueError`` for what :meth:`check` refuses."""

    def params(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The full hyperparameters: :attr:`defaults` updated with ``overrides`` (unknown names refused)."""
        unknown = set(overrides or {}) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.name}: unknown hyperparameter(s) {sorted(unknown)}; known: "
                             f"{sorted(self.defaults)}")
        return {**self.defaults, **(overrides or {})}
