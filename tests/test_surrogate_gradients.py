"""The baselines' stochastic gradients against exact gradients by enumeration, like the
min-min unbiasedness test (tests/test_minmin.py): with many draws, the estimate's mean must
match the exact gradient (relative error < 5%), and a wrong estimator must not (> 10%).

* PCD/GWG: with y′ drawn exactly from the model p = q·e^g/Z, E ∇[mean_j g(x, y′_j) − g(x, y)]
  = E_p ∇g − ∇g(x, y) = ∇(log Z − g(x, y)) = ∇NLL (``baselines.mcmc.contrastive_surrogate``).
* minmax-reinforce: the sampler ascends J(φ) = E_{p_φ}[g + log q − log p_φ]; since
  E_{p_φ} ∇ log p_φ = 0, ∇J = E[R ∇ log p_φ] with R detached, and the leave-one-out baseline
  keeps it unbiased (``baselines.minmax.reinforce_surrogate`` is −that)."""

from __future__ import annotations

import pytest
import torch

from baselines.mcmc import contrastive_surrogate
from baselines.minmax import BernoulliSampler, reinforce_surrogate
from ebm import inference
from ebm.energies import build_energy
from ebm.spaces import Multilabel, Permutations


def flat_gradient(loss, parameters):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, parameters, retain_graph=True)])


def relative_error(estimate, exact) -> float:
    return float((estimate - exact).norm() / exact.norm())


FREQUENCY_Q = Multilabel.with_label_frequencies(4, torch.tensor([[1.0, 0, 0, 1], [1, 1, 0, 0], [1, 0, 0, 0]]))


@pytest.mark.parametrize("space, model",
                         [(Multilabel(5), "pairwise"), (FREQUENCY_Q, "mlp"), (Permutations(4), "permutahedron")],
                         ids=["pairwise-uniform-q", "mlp-frequency-q", "permutahedron"])
def test_contrastive_surrogate_with_exact_model_samples_is_the_nll_gradient(space, model):
    torch.manual_seed(0)
    energy = build_energy(space, model, 3, hidden=8, rank=2)
    with torch.no_grad():  # a model far from q, so that samples from q would be visibly wrong
        for p in energy.parameters():
            p.mul_(2.0)
    parameters = list(energy.parameters())
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 3, generator=generator), space.sample_prior(3, generator=generator)
    everything = space.enumerate_all()
    g_data = energy(x, y.unsqueeze(1)).squeeze(1)
    exact_nll = (torch.logsumexp(energy(x, everything) + space.log_prior(everything),
                                 dim=1) - g_data - space.log_prior(y)).mean()
    exact = flat_gradient(exact_nll, parameters)
    torch.testing.assert_close(exact_nll.detach(), inference.nll(energy, space, x, y)[0].mean())  # same NLL
    model_samples = inference.sample(energy, space, x, 40_000, generator=generator)  # exact: |Y| is small
    prior_samples = space.sample_prior((3, 40_000), generator=generator)
    estimate = lambda samples: flat_gradient(contrastive_surrogate(g_data, energy(x, samples)).mean(),
                                             parameters)  # noqa: E731
    assert relative_error(estimate(model_samples), exact) < 0.05
    assert relative_error(estimate(prior_samples), exact) > 0.1


def test_reinforce_surrogate_is_minus_the_gradient_of_the_sampler_objective():
    torch.manual_seed(0)
    space = FREQUENCY_Q
    energy = build_energy(space, "pairwise", 3, hidden=8, rank=2)
    sampler = BernoulliSampler(3, space.k, hidden=8)
    with torch.no_grad():  # a peaked sampler: its entropy term weighs in J
        for p in sampler.parameters():
            p.mul_(3.0)
    parameters = list(sampler.parameters())
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, generator=generator)
    everything = space.enumerate_all()
    with torch.no_grad():
        g_all = energy(x, everything)
    logits = sampler.logits(x)
    log_p_all = (everything[None] * logits[:, None] - torch.nn.functional.softplus(logits)[:, None]).sum(-1)  # (n, |Y|)
    objective = (log_p_all.exp() * (g_all + space.log_prior(everything) - log_p_all)).sum(1).mean()  # J(φ), exact
    exact = flat_gradient(objective, parameters)

    samples, log_prob = sampler.sample(x, 40_000, generator)
    with torch.no_grad():
        g_samples = energy(x, samples)
    reward = g_samples + space.log_prior(samples) - log_prob
    estimate = -flat_gradient(reinforce_surrogate(reward, log_prob).mean(), parameters)
    assert relative_error(estimate, exact) < 0.05
    without_entropy = -flat_gradient(reinforce_surrogate(g_samples + space.log_prior(samples), log_prob).mean(),
                                     parameters)
    assert relative_error(without_entropy, exact) > 0.1  # the test can tell a different objective apart
