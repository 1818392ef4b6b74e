"""Gibbs-with-Gradients (Grathwohl, Swersky, Hashemi, Duvenaud, Maddison; ICML 2021) inside PCD.

Target on y ∈ {0,1}^k: f(y) = g(x, y) + log q(y) (p ∝ exp f). The exact change of f when
flipping bit i, f(y^{¬i}) − f(y), is approximated to first order through the relaxation of g
to real-valued y:

    d̃_i(y) = (1 − 2y_i)·∂f/∂y_i(y),

and the proposal flips one bit i ~ softmax(d̃(y)/2) (the locally balanced proposal with
weight √t). The Metropolis–Hastings correction with the reverse move's probability keeps
p invariant exactly:

    α = min(1, exp(f(y') − f(y)) · softmax(d̃(y')/2)_i / softmax(d̃(y)/2)_i).

One step costs one forward and one backward pass at the proposal (the current state's value
and gradient are cached); ``energy_evals`` counts each such forward as one evaluation (the
backward shows in wall seconds). ``sweeps`` in :class:`GibbsWithGradients` means k GWG steps
each, so a "sweep" has the same number of proposals as one Gibbs sweep. Binary y only: for
permutations there is no single-coordinate flip (the method reports ``unsupported``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from baselines.mcmc import Kernel, PersistentContrastiveDivergence
from ebm.batching import is_stacked
from ebm.samplers import candidate_scorer
from ebm.spaces import OutputSpace, uniform_noise

LogDensity = Callable[[Tensor], Tensor]


def value_and_flip_logits(log_density: LogDensity, y: Tensor) -> tuple[Tensor, Tensor]:
    """f(y) (…,) and the proposal logits d̃(y)/2 = (1 − 2y)·∇_y f(y)/2 (…, k).

    ∇_y f is the gradient of Σ f (each f(y_i) depends on its own y_i only): by
    ``torch.autograd.grad``, or inside a stacked step's ``vmap``, where that does not run, by
    ``torch.func.vjp`` with ones (the same numbers, bit for bit; the transform costs ~25% more of
    a lone GWG step, so it is kept for the stacked one)."""
    y = y.detach()
    if is_stacked(y):
        transformed = torch.func.vjp(log_density, y)  # (f(y), its pullback)
        value, pullback = transformed[0], transformed[1]
        (grad,) = pullback(torch.ones_like(value))
    else:
        with torch.enable_grad():
            tracked = y.detach().requires_grad_(True)
            value = log_density(tracked)
            (grad,) = torch.autograd.grad(value.sum(), tracked)
    return value.detach(), ((1.0 - 2.0 * y) * grad.detach() / 2.0)


def gwg_steps(log_density: LogDensity, y: Tensor, n_steps: int, *,
              generator: torch.Generator | None = None) -> tuple[Tensor, int, Tensor]:
    """``n_steps`` GWG steps from states y (…, k) under log-density f (vectorised over the leading
    axes). Returns the new states, the forward evaluations spent (states × (n_steps + 1)) and the
    mean acceptance rate (a 0-dim float64 tensor)."""
    y = y.detach().clone()
    value, logits = value_and_flip_logits(log_density, y)
    # the steps' acceptance rates, summed on the device: a Python float every step was a host
    # sync per step, and none can be taken inside a stacked step (float32 rates added in float64)
    accepted = torch.zeros((), dtype=torch.float64, device=y.device)
    for _ in range(int(n_steps)):
        log_forward = torch.log_softmax(logits, dim=-1)
        gumbel = -torch.log(-torch.log(uniform_noise(logits.shape, generator, y.device).clamp_min(1e-20)))
        site = (log_forward + gumbel).argmax(dim=-1, keepdim=True)  # i ~ softmax(d̃/2)
        proposal = y.scatter(-1, site, 1.0 - y.gather(-1, site))
        value_new, logits_new = value_and_flip_logits(log_density, proposal)
        log_reverse = torch.log_softmax(logits_new, dim=-1).gather(-1, site).squeeze(-1)
        log_alpha = value_new - value + log_reverse - log_forward.gather(-1, site).squeeze(-1)
        accept = torch.log(uniform_noise(value.shape, generator, y.device)) < log_alpha
        y = torch.where(accept.unsqueeze(-1), proposal, y)
        value = torch.where(accept, value_new, value)
        logits = torch.where(accept.unsqueeze(-1), logits_new, logits)
        accepted = accepted + accept.float().mean()
    return y, y.shape[:-1].numel() * (int(n_steps) + 1), accepted / max(int(n_steps), 1)


class GWGKernel(Kernel):
    """``sweeps · k`` GWG steps on the target q·exp(g) for each chain of each input."""

    def __init__(self, sweeps: int, generator: torch.Generator) -> None:
        self.sweeps, self.generator = int(sweeps), generator
        self.acceptance: list[float] = []

    def __call__(self, energy: nn.Module, space: OutputSpace, x: Tensor, y: Tensor) -> tuple[Tensor, int]:
        score = candidate_scorer(energy, x)  # the trunk h(x) once for the k GWG steps, not at each

        def log_density(states: Tensor) -> Tensor:  # states (n, c, k) → (n, c)
            return score(states) + space.log_prior(states)

        states, evals, acceptance = gwg_steps(log_density, y.to(x.dtype), self.sweeps * space.k,
                                              generator=self.generator)
        if not is_stacked(acceptance):  # a stacked step has no per-member float here
            self.acceptance.append(float(acceptance))
        return states, evals


class GibbsWithGradients(PersistentContrastiveDivergence):
    name = "mcmc-gwg"
    description = "PCD with Gibbs-with-Gradients proposals (gradient-informed single flips + MH), multilabel only"
    defaults = dict(PersistentContrastiveDivergence.defaults)
    #: seeds train stacked (ebm.stacking), as mcmc-pcd's (chains, draws from setup.sampler): the
    #: kernel's gradient in y is a torch.func transform, its MH test a torch.where, and the
    #: acceptance log skips a stacked step
    stackable = True

    def check(self, space: OutputSpace, model: str, params: dict[str, Any]) -> tuple[str, str] | None:
        if not space.kind.binary:
            return ("unsupported",
                    "Gibbs-with-Gradients proposes single-bit flips of binary y; permutations have no such move (use "
                    "mcmc-pcd)")
        return super().check(space, model, params)

    def make_kernel(self, space: OutputSpace, params: dict[str, Any], generator: torch.Generator) -> Kernel:
        return GWGKernel(int(params["sweeps"]), generator)
