"""Fixture methods for the harness's tests (not listed by ``ebm-bench methods``).

Tests register them with :func:`register_fixtures` (tests/conftest.py; tests/fixture_cli.py for
a CLI in a real process), so a suite file or ``--methods test-raises`` can use them, in-process
and in Ray workers alike (instances pickle by reference to this module). The production
registry never knows them.

* ``test-constant``: trains nothing. Its energy is linear, g(x, y) = ⟨θ, y⟩ with the same θ
  for every x: multilabel θ = SCALE·(2ŷ − 1) for the most frequent training label set ŷ (so
  the mode is ŷ); rankings θ = mean training encoding (Borda scores / marginal position
  frequencies, so the mode is the mean ranking). ``noise`` adds SCALE·noise·N(0, 1) to θ
  (a knob the tuner can learn to turn down); it walks ``max_steps`` no-op steps through
  :class:`~ebm.training.TrainLoop`, so curves, monitors and pruning behave as in real methods.
* ``test-raises``: raises ``ValueError("fixture failure")``.
* ``test-diverge``: raises :class:`~ebm.method.Diverged`.
* ``test-exit``: ends its process with ``os._exit(1)`` (a dying worker).
* ``test-sleep``: sleeps ``params["seconds"]``, then behaves as ``test-constant``.
"""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from ebm.energies import Energy
from ebm.method import Budget, Diverged, FitData, Fitted, Method, Monitor
from ebm.spaces import OutputSpace
from ebm.training import TrainLoop

SCALE = 5.0


class ConstantLinearEnergy(nn.Module):
    """g(x, y) = ⟨θ, y⟩, independent of x."""

    theta: Tensor  # a buffer (register_buffer), which the type checker cannot see

    def __init__(self, theta: Tensor) -> None:
        super().__init__()
        self.register_buffer("theta", theta)
        self.event_shape = tuple(theta.shape)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        scores = (y.to(self.theta.dtype) * self.theta).flatten(y.dim() - len(self.event_shape)).sum(-1)
        return scores.expand(x.shape[0], -1) if scores.dim() == 1 else scores

    def linear_scores(self, x: Tensor) -> Tensor:
        return self.theta.expand(x.shape[0], *self.event_shape)


def constant_theta(space: OutputSpace, y_train: Tensor) -> Tensor:
    if space.name == "multilabel":
        rows, counts = torch.unique(y_train, dim=0, return_counts=True)
        return SCALE * (2 * rows[counts.argmax()] - 1)
    return y_train.mean(dim=0)


class ConstantMethod(Method):
    name = "test-constant"
    description = "fixture: constant prediction (most frequent label set / mean ranking)"
    defaults: ClassVar[dict[str, Any]] = {"noise": 0.0}

    def search_space(self, trial: Any) -> dict[str, Any]:
        return {"noise": trial.suggest_float("noise", 0.0, 2.0)}

    def fit(self, space: OutputSpace, model: str, data: FitData, params: dict[str, Any], budget: Budget, *,
            seed: int, device: torch.device, monitor: Monitor | None = None) -> Fitted:
        generator = torch.Generator().manual_seed(seed)
        theta = constant_theta(space, data.y_train.cpu().float())
        theta = theta + SCALE * float(params["noise"]) * torch.randn(theta.shape, generator=generator)
        # not an Energy subclass (no trunk, x ignored) but it has all that Fitted's inference calls:
        # forward and linear_scores (an EnergyFunction), and nn.Module's eval
        fitted = Fitted(space, cast(Energy, ConstantLinearEnergy(theta.to(device))))
        loop = TrainLoop(budget, monitor, lambda: fitted)
        while loop.running():
            loop.step(float(params["noise"]), energy_evals=0)
        fitted.info.update(steps=loop.steps, energy_evals=0, train_seconds=loop.seconds)
        return fitted


class RaisingMethod(ConstantMethod):
    name = "test-raises"
    description = "fixture: raises ValueError"

    def fit(self, *args, **kwargs) -> Fitted:
        raise ValueError("fixture failure")


class DivergingMethod(ConstantMethod):
    name = "test-diverge"
    description = "fixture: raises Diverged"

    def fit(self, *args, **kwargs) -> Fitted:
        raise Diverged("fixture divergence")


class ExitingMethod(ConstantMethod):
    name = "test-exit"
    description = "fixture: kills its own process (os._exit(1))"

    def fit(self, *args, **kwargs) -> Fitted:
        os._exit(1)


class SleepingMethod(ConstantMethod):
    name = "test-sleep"
    description = "fixture: sleeps params['seconds'], then predicts a constant"
    defaults = {"noise": 0.0, "seconds": 1.0}

    def fit(self, space, model, data, params, budget, **kwargs) -> Fitted:
        time.sleep(float(params["seconds"]))
        return super().fit(space, model, data, params, budget, **kwargs)


FIXTURES: dict[str, Method] = {m.name: m for m in (ConstantMethod(), RaisingMethod(), DivergingMethod(),
                                                      ExitingMethod(), SleepingMethod())}


def register_fixtures() -> None:
    """Add the fixture methods to the method registry (idempotent)."""
    from baselines.registry import register_method

    for method in FIXTURES.values():
        register_method(method, replace=True)
