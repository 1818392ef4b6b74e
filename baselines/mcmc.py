"""Persistent contrastive divergence (Tieleman, ICML 2008) for conditional EBMs.

The NLL gradient of p(y|x) ∝ q(y)·exp(g(x, y)) is E_{p(·|x)}[∇g(x, y')] − ∇g(x, y). PCD
replaces the model expectation by the states of Markov chains that are *not* restarted
between updates: each update advances them a few steps under the current g and then
descends the surrogate

    L(x, y) = (1/c) Σ_j g(x, y'_j) − g(x, y),   y'_j the chains' states (no gradient through them).

Chains: the model is conditional, so a chain for x cannot be reused for another x. We keep
``chains`` persistent chains *per training example* (state tensor (n_train, chains, *event)),
initialised from the prior q (``init="prior"``) or at the example's own label
(``init="data"``), and advance those of the mini-batch at each step. (A fixed pool shared
across inputs would sample the wrong conditional; the price of per-example chains is that each
chain moves only when its example is in the batch, once per epoch, while g keeps changing.)

Kernels (from :mod:`ebm.samplers`), ``sweeps`` per update:
multilabel: systematic-scan Gibbs sweeps (k site updates each); ranking (permutahedron and
Birkhoff): ``sweeps · k`` Metropolis–Hastings steps with uniformly random transpositions of two
labels (about the cost of a Gibbs sweep: one energy evaluation per proposal).

Stacked seeds (:mod:`ebm.stacking`): the template's chains cover the members' concatenated
rows, so member s's chains are the rows at its offset, its own; the kernel's draws (and, under
``init="prior"``, the starting states) come from the group's generator, so a stacked member is
distributed like its single run without equalling it.

``energy_evals`` counts every evaluation the kernels report (a single-site difference or a
full g counts one) plus the 1 + chains scores of the surrogate. Sampling runs with the energy
in eval mode (dropout off), since a randomised energy would break detailed balance.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ebm.method import Fitted
from ebm.samplers import mcmc_steps
from ebm.spaces import OutputSpace
from ebm.stacking import write_rows
from ebm.training import COMMON_DEFAULTS, FitContext, StepMethod, score_data_and_samples, suggest_common


class PersistentChains:
    """Per-example persistent chain states, (n_train, chains, *event), advanced in place."""

    def __init__(self, states: Tensor) -> None:
        self.states = states

    @classmethod
    def start(cls, space: OutputSpace, y_train: Tensor, chains: int, init: str,
              generator: torch.Generator) -> PersistentChains:
        n = y_train.shape[0]
        if init == "prior":
            states = space.sample_prior((n, chains), generator=generator, device=y_train.device)
        elif init == "data":
            states = y_train.unsqueeze(1).repeat(1, chains, *([1] * (y_train.dim() - 1))).float()
        else:
            raise ValueError(f"unknown chain init {init!r}; use 'prior' or 'data'")
        return cls(states)

    def advance(self, kernel: Kernel, energy: nn.Module, space: OutputSpace, x: Tensor, index: Tensor) -> tuple[Tensor,
                                                                                                                int]:
        """Run ``kernel`` on the chains of examples ``index`` (inputs x), store and return the
        new states (len(index), chains, *event) and the energy evaluations spent."""
        was_training = energy.training
        energy.eval()
        try:
            states, evals = kernel(energy, space, x, self.states[index])
        finally:
            energy.train(was_training)
        # in place in a single run; under stacking deferred to the end of the vmapped step
        write_rows(self.states, index, states.detach())
        return states.detach(), evals


class Kernel:
    """A Markov kernel leaving q·exp(g) invariant: (energy, space, x, y) → (y', evaluations)."""

    def __call__(self, energy: nn.Module, space: OutputSpace, x: Tensor, y: Tensor) -> tuple[Tensor, int]:
        raise NotImplementedError


class SweepKernel(Kernel):
    """``sweeps`` Gibbs sweeps (multilabel) or ``sweeps · k`` random-transposition MH steps (ranking)."""

    def __init__(self, sweeps: int, generator: torch.Generator) -> None:
        self.sweeps, self.generator = int(sweeps), generator

    def __call__(self, energy, space, x, y):
        return mcmc_steps(energy, space, x, y, self.sweeps, generator=self.generator)


def contrastive_surrogate(g_data: Tensor, g_chains: Tensor) -> Tensor:
    """(1/c) Σ_j g(x, y'_j) − g(x, y), per example (n,): its gradient is the PCD estimate of ∇NLL."""
    return g_chains.mean(-1) - g_data


class PersistentContrastiveDivergence(StepMethod):
    name = "mcmc-pcd"
    description = "persistent contrastive divergence: per-example persistent chains (Gibbs sweeps / MH transpositions)"
    defaults = {**COMMON_DEFAULTS, "sweeps": 1, "chains": 4, "init": "prior"}
    #: seeds train stacked (ebm.stacking): the kernels are vmap-safe (a fixed number of sweeps,
    #: site updates and MH steps; acceptance by torch.where, never a Python branch on a state),
    #: draw from setup.sampler, and the chains are one tensor over the members' concatenated
    #: rows written back by ebm.stacking.write_rows (member s's chains are its own rows)
    stackable = True
    #: labels above which a multilabel model with a Gibbs site loop (pairwise, mlp) trains alone:
    #: under vmap each of the loop's k · sweeps site updates costs several plain ones. A stacked
    #: member-step over a lone one (5 members, pairwise, 4 chains, 3 sweeps; ``ebm-bench perf
    #: --benchmarks stacking``, 2026-12-02): k = 16 0.57, 64 0.75, 100 0.96, 174 (cal500) 1.46.
    MAX_STACKED_SITES: ClassVar[int] = 100

    def can_stack(self, space: OutputSpace, model: str, params: dict[str, Any]) -> bool:
        """Not a Gibbs site loop over more than :attr:`MAX_STACKED_SITES` labels (see there)."""
        site_loop = space.kind.mcmc == "gibbs" and model != "unary"
        return self.stackable and not (site_loop and space.k > self.MAX_STACKED_SITES)

    def search_space(self, trial: Any) -> dict[str, Any]:
        return {
            **suggest_common(trial, self.required_prior),
            "sweeps": trial.suggest_int("sweeps", 1, 5),
            "init": trial.suggest_categorical("init", ["prior", "data"]),
        }

    def check(self, space: OutputSpace, model: str, params: dict[str, Any]) -> tuple[str, str] | None:
        if int(params.get("sweeps", 1)) < 1 or int(params.get("chains", 1)) < 1:
            return ("unsupported", f"{self.name} needs sweeps >= 1 and chains >= 1")
        if params.get("init", "prior") not in ("prior", "data"):
            return ("unsupported", f"{self.name}: init must be 'prior' or 'data', got {params.get('init')!r}")
        return None

    def make_kernel(self, space: OutputSpace, params: dict[str, Any], generator: torch.Generator) -> Kernel:
        return SweepKernel(int(params["sweeps"]), generator)

    def train_model(self, ctx: FitContext) -> Fitted:
        space, params, setup = ctx.space, ctx.params, ctx.setup
        energy, x_train, y_train = ctx.energy, ctx.x_train, ctx.y_train
        chains = PersistentChains.start(space, y_train, int(params["chains"]), params["init"], setup.sampler)
        kernel = self.make_kernel(space, params, setup.sampler)

        def batch_objective(index: Tensor) -> tuple[Tensor, int]:
            x, y = x_train[index], y_train[index]
            samples, kernel_evals = chains.advance(kernel, energy, space, x, index)
            g_data, g_chains = score_data_and_samples(energy, x, y, samples)
            return contrastive_surrogate(g_data, g_chains).mean(), kernel_evals + g_data.numel() + g_chains.numel()

        snapshot = lambda: Fitted(space, energy, info={"method": self.name})  # noqa: E731
        return ctx.train(snapshot, batch_objective, [energy], chains_per_example=int(params["chains"]),
                         sweeps=int(params["sweeps"]))
