"""The joint (min-min) EBM trained end to end, against exact references built here:
a planted Ising model on {0,1}^10 (exact NLL and log Z by enumeration) and a planted
Plackett–Luce ranking model (k = 4) against the best constant ranking."""

from __future__ import annotations

import itertools

import pytest
import math

import torch

from baselines.exact import ExactMLE
from ebm.method import Budget, Diverged, FitData
from ebm.minmin import VARIANTS, MinMinMethod
from ebm.spaces import Multilabel, PermutationMatrices, Permutations
from ebm.training import make_optimizer, minibatches, seed_everything

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: threads only add overhead
    yield
    torch.set_num_threads(threads)


def planted_ising(k: int = 10, d: int = 6, seed: int = 0):
    """p(y|x) ∝ exp(⟨Wᵀx + b, y⟩ + ½ yᵀUy) on {0,1}^k (uniform q), U symmetric with zero
    diagonal. Returns draw(n, seed) → (x, y, −log p_true(y|x)), sampled exactly by enumeration."""
    generator = torch.Generator().manual_seed(seed)
    weights, bias = 0.8 * torch.randn(d, k, generator=generator), 0.5 * torch.randn(k, generator=generator)
    coupling = torch.triu(0.6 * torch.randn(k, k, generator=generator), diagonal=1)
    coupling = coupling + coupling.T
    every_y = torch.tensor(list(itertools.product([0.0, 1.0], repeat=k)))

    def draw(n: int, draw_seed: int):
        g = torch.Generator().manual_seed(draw_seed)
        x = torch.randn(n, d, generator=g)
        logits = (x @ weights + bias) @ every_y.T + 0.5 * ((every_y @ coupling) * every_y).sum(-1)
        index = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=g).squeeze(1)
        true_nll = torch.logsumexp(logits, dim=1) - logits.gather(1, index[:, None]).squeeze(1)
        return x, every_y[index], true_nll

    return draw


def test_minmin_kl_matches_exact_mle_and_learns_the_log_partition():
    """Issue 2, acceptance 4: same data, same steps; NLL within 5% of exact MLE, and
    mean |τ(x) − log Z(x)| < 0.5 nats on unseen x (log Z of the learned g, by enumeration)."""
    draw = planted_ising()
    x_train, y_train, _ = draw(2000, 1)
    x_test, y_test, true_nll = draw(1000, 2)
    space = Multilabel(10)
    params = {"hidden": 32, "depth": 1, "rank": 0, "lr": 3e-3}
    budget = Budget(max_steps=1000, batch_size=64, eval_every=1000)
    data = FitData(x_train, y_train)
    exact = ExactMLE().fit(space, "pairwise", data, params, budget, seed=0, device=CPU)
    joint = VARIANTS["minmin-logistic"].fit(space, "pairwise", data, {**params, "n_samples": 16}, budget, seed=0, device=CPU)
    nll_exact = exact.nll(x_test, y_test)[0].mean().item()
    nll_joint = joint.nll(x_test, y_test)[0].mean().item()
    tau_error = (joint.tau_estimate(x_test) - joint.log_partition(x_test)[0]).abs().mean().item()
    print(f"\nplanted Ising k=10: test NLL true {true_nll.mean():.4f}, exact-mle {nll_exact:.4f}, "
          f"minmin-logistic {nll_joint:.4f} (ratio {nll_joint / nll_exact:.4f}); mean |τ − log Z| {tau_error:.4f} nats")
    assert nll_joint <= 1.05 * nll_exact
    assert tau_error < 0.5
    assert joint.info["energy_evals"] == 1000 * 64 * 17
    assert exact.info["energy_evals"] == 1000 * 64 * 2**10


def planted_rankings(n: int, seed: int, k: int = 4, d: int = 5):
    """Plackett–Luce rankings with scores θ(x) = 2·Wᵀx (fixed W): argsort of θ + Gumbel noise.
    Returns x and dataset ranks (position of each label, 0 = best)."""
    weights = 2 * torch.randn(d, k, generator=torch.Generator().manual_seed(100))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    gumbel = -torch.log(-torch.log(torch.rand(n, k, generator=g)))
    order = (x @ weights + gumbel).argsort(dim=1, descending=True)  # labels, best first
    return x, order.argsort(dim=1).numpy()  # position of each label


def spearman(pred_positions, true_positions, k: int) -> torch.Tensor:
    """Spearman's ρ = 1 − 6 Σ d² / (k (k² − 1)) per row."""
    d2 = ((torch.as_tensor(pred_positions) - torch.as_tensor(true_positions)).double() ** 2).sum(-1)
    return 1 - 6 * d2 / (k * (k * k - 1))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_beats_the_best_constant_ranking(name):
    k = 4
    space = Permutations(k)
    x_train, ranks_train = planted_rankings(600, seed=1)
    x_test, ranks_test = planted_rankings(500, seed=2)
    fitted = VARIANTS[name].fit(space, "permutahedron", FitData(x_train, space.from_labels(ranks_train)),
                                {"hidden": 16, "lr": 1e-2}, Budget(max_steps=200, batch_size=64, eval_every=200), seed=0, device=CPU)
    model_rho = spearman(space.to_labels(fitted.predict(x_test)), ranks_test, k).mean().item()
    # the best constant ranking, chosen with hindsight on the test set itself
    constant_rho = max(spearman(torch.tensor(p).expand(len(ranks_test), k), ranks_test, k).mean().item() for p in itertools.permutations(range(k)))
    print(f"\n{name}: test Spearman {model_rho:.3f} vs best constant {constant_rho:.3f}")
    assert model_rho > constant_rho + 0.2


def test_the_model_lives_on_the_given_space_and_sparsemax_refuses_a_non_uniform_q():
    """The prior q is decided by the caller (the harness, from the run's ``prior``): fit keeps
    the space it is given; the sparsemax-type variants require a uniform q and say so."""
    y = (torch.rand(200, 5, generator=torch.Generator().manual_seed(0)) < torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])).float()
    x = torch.randn(200, 3)
    frequency_space = Multilabel.with_label_frequencies(5, y)
    kept = VARIANTS["minmin-logistic"].fit(frequency_space, "unary", FitData(x, y), {"hidden": 8, "prior": "frequency"},
                                           Budget(max_steps=2, batch_size=32), seed=0, device=CPU)
    assert kept.space is frequency_space and kept.divergence == "kl"
    assert VARIANTS["minmin-sparsemax"].required_prior == VARIANTS["minmin-entmax15"].required_prior == "uniform"
    assert VARIANTS["minmin-logistic"].required_prior is None
    with pytest.raises(ValueError, match="uniform prior"):
        VARIANTS["minmin-sparsemax"].fit(frequency_space, "unary", FitData(x, y), {"hidden": 8},
                                         Budget(max_steps=2, batch_size=32), seed=0, device=CPU)
    with pytest.raises(ValueError, match="unknown prior"):
        VARIANTS["minmin-logistic"].fit(Multilabel(5), "unary", FitData(x, y), {"hidden": 8, "prior": "bernoulli"},
                                        Budget(max_steps=2, batch_size=32), seed=0, device=CPU)


def test_shared_trunk_tau_uses_the_energy_trunk_and_monitor_can_stop():
    x = torch.randn(128, 4)
    y = (torch.rand(128, 6) < 0.5).float()
    calls = []

    def monitor(progress, model):
        calls.append(progress.step)
        return progress.step >= 10  # stop at the second evaluation

    fitted = VARIANTS["minmin-logistic"].fit(Multilabel(6), "pairwise", FitData(x, y), {"hidden": 8, "tau_shares_trunk": True},
                                             Budget(max_steps=100, batch_size=32, eval_every=5), seed=0, device=CPU, monitor=monitor)
    assert fitted.tau.shared_trunk is fitted.energy.trunk
    assert calls == [5, 10] and fitted.info["steps"] == 10
    assert torch.isfinite(fitted.tau_estimate(x)).all()


def test_non_finite_loss_raises_diverged():
    x = torch.randn(64, 3)
    x[5, 0] = float("nan")
    y = (torch.rand(64, 4) < 0.5).float()
    with pytest.raises(Diverged):
        VARIANTS["minmin-logistic"].fit(Multilabel(4), "unary", FitData(x, y), {"hidden": 8}, Budget(max_steps=5, batch_size=64), seed=0, device=CPU)


def test_variants_are_named_and_configured_as_registered():
    expected = {"minmin-logistic": ("kl", "neural"), "minmin-logistic-is": ("kl", "neural"), "minmin-sparsemax": ("sparsemax", "neural"), "minmin-entmax15": ("entmax15", "neural"),
                "minmin-finite": ("kl", "finite"), "minmin-scalar": ("kl", "scalar")}
    assert {name: (m.defaults["divergence"], m.defaults["tau"]) for name, m in VARIANTS.items()} == expected
    assert all(isinstance(m, MinMinMethod) and m.name == name for name, m in VARIANTS.items())
    with pytest.raises(ValueError, match="did you mean"):
        VARIANTS["minmin-logistic"].check(Multilabel(3), "unary", VARIANTS["minmin-logistic"].params({"divergence": "sparsemx"}))


@pytest.mark.parametrize("space, model", [(Multilabel(5), "unary"), (Multilabel(5), "pairwise"), (Multilabel(5), "mlp"),
                                          (Permutations(3), "permutahedron"), (PermutationMatrices(3), "birkhoff")])
def test_minmin_runs_on_every_space_and_model(space, model):
    x = torch.randn(40, 3)
    y = space.sample_prior(40, generator=torch.Generator().manual_seed(0))
    for name in ("minmin-sparsemax", "minmin-finite"):
        fitted = VARIANTS[name].fit(space, model, FitData(x, y), {"hidden": 8, "n_samples": 4}, Budget(max_steps=6, batch_size=16), seed=0, device=CPU)
        assert fitted.info["energy_evals"] == 6 * 16 * (1 + 4)
        assert fitted.predict(x[:3]).shape == (3, *space.event_shape)
        assert torch.isfinite(fitted.tau_estimate(x)).all()


def test_minibatches_reshuffle_every_epoch_and_optimizer_dedupes_shared_parameters():
    stream = minibatches(10, 4, generator=seed_everything(0), device=CPU)
    epochs = [torch.cat([next(stream), next(stream)]) for _ in range(3)]  # 2 full batches per epoch, remainder dropped
    assert all(len(set(e.tolist())) == 8 for e in epochs)
    assert not all(torch.equal(epochs[0], e) for e in epochs[1:])
    shared = torch.nn.Linear(2, 2)
    optimizer = make_optimizer([shared, torch.nn.Sequential(shared)], lr=1e-3, weight_decay=0.0)
    assert sum(len(group["params"]) for group in optimizer.param_groups) == 2
    assert isinstance(make_optimizer(shared, 1e-3, 1e-4), torch.optim.AdamW)


IS_CASES = [(Multilabel(6), "unary", "kl"), (Multilabel(6), "pairwise", "kl"),
            (Multilabel(6, torch.linspace(0.2, 0.8, 6)), "pairwise", "sparsemax"),
            (Multilabel(6), "mlp", "kl"), (Permutations(4), "permutahedron", "kl")]


@pytest.mark.parametrize("space, model, divergence", IS_CASES,
                         ids=lambda c: c if isinstance(c, str) else repr(c))
def test_importance_weighted_gradient_is_unbiased(space, model, divergence):
    """The expectation over y′ ~ r (the model-informed training proposal, 10% prior) of the
    weighted gradient equals the exact gradient of τ + E_q f*(g − τ) − g(x, y) computed by
    enumeration (relative error < 5% over 64,000 draws), while unweighted draws from r are biased."""
    from ebm.importance import draw_training_samples
    from ebm.inference import training_proposal
    from ebm.objective import expected_dual, minmin_loss

    energy, tau, parameters, x, y, everything, log_q = _peaked_model(space, model)

    def gradient(loss):
        grads = torch.autograd.grad(loss, parameters, allow_unused=True, retain_graph=True)
        return torch.cat([g.reshape(-1) for g in grads if g is not None])

    g_data = energy(x, y.unsqueeze(1)).squeeze(1)
    exact = (expected_dual(tau(x), energy(x, everything), log_q, divergence) - g_data).mean()
    generator = torch.Generator().manual_seed(1)
    proposal = training_proposal(energy, space, x, y, 0.1, generator)
    assert proposal.name != "prior"
    samples, log_weights = draw_training_samples(proposal, space, 64_000, generator, x.dtype)
    assert float(log_weights.max()) <= math.log(10.0) + 1e-4  # q / ((1 − α) r + α q) ≤ 1/α
    g_samples = energy(x, samples)
    weighted = minmin_loss(g_data, g_samples, tau(x), divergence, log_weights).mean()
    unweighted = minmin_loss(g_data, g_samples, tau(x), divergence).mean()
    exact_grad = gradient(exact)
    error = lambda loss: float((gradient(loss) - exact_grad).norm() / exact_grad.norm())  # noqa: E731
    print(f"\n{space!r} {model} {divergence}: relative gradient error weighted {error(weighted):.4f}, "
          f"unweighted {error(unweighted):.4f}")
    assert error(weighted) < 0.05
    assert error(unweighted) > 0.1


def test_importance_weighted_variant_is_registered_logs_ess_and_clips():
    from baselines.registry import get_method

    method = get_method("minmin-logistic-is")
    assert method is VARIANTS["minmin-logistic-is"] and method.defaults["proposal"] == "model"
    x, y = torch.randn(128, 4), (torch.rand(128, 12) < 0.3).float()
    seen = []
    params = {"hidden": 8, "max_grad_norm": 1e-3, "adam_beta2": 0.9}
    fitted = method.fit(Multilabel(12), "pairwise", FitData(x, y), params,
                        Budget(max_steps=200, batch_size=32, eval_every=100), seed=0, device=CPU,
                        monitor=lambda progress, model: seen.append(model.info["ess"]) or False)
    assert 0 < fitted.info["ess"] <= 1 and len(fitted.info["ess_curve"]) == 2 and len(seen) == 2
    assert fitted.info["proposal"] == "model" and VARIANTS["minmin-logistic"].defaults["proposal"] == "prior"
    for bad in ({"proposal": "modle"}, {"proposal_prior_weight": 0.0}, {"max_grad_norm": -1.0}, {"adam_beta2": 1.0}):
        with pytest.raises(ValueError):
            method.check(Multilabel(3), "unary", method.params(bad))


def test_beta2_is_set_on_every_group():
    from ebm.minmin import set_adam_beta2

    weight, bias = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    adam = make_optimizer([weight, bias], lr=1e-3, weight_decay=0.0)
    adam.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))]})
    set_adam_beta2(adam, 0.9)
    assert [group["betas"] for group in adam.param_groups] == [(0.9, 0.9), (0.9, 0.9)]


@pytest.mark.parametrize("space, model", [(Multilabel(6), "pairwise"), (Permutations(4), "permutahedron")],
                         ids=lambda c: c if isinstance(c, str) else repr(c))
def test_leave_one_out_tau_offset_keeps_the_gradient_unbiased(space, model):
    """``tau_offset="estimate"``: draw j's τ_j = τ(x) + b_{−j}(x), b_{−j} the importance estimate of
    log Z from the other draws of its group. Given the others, term j is unbiased for the exact
    gradient at τ_j, and for kl that gradient is linear in e^{−τ_j}: so the mean weighted gradient over
    8,000 groups of 8 must equal the enumerated gradient of τ + E_q e^{g − τ} − g(x, y) at τ_eff,
    e^{−τ_eff} = e^{−τ(x)} · mean e^{−b_{−j}} (relative error < 5%), while offsetting every draw by
    the estimate from all draws of its group (self-normalised) is biased."""
    from ebm.importance import draw_training_samples, leave_one_out_log_mean
    from ebm.inference import training_proposal
    from ebm.objective import expected_dual, minmin_loss

    energy, tau, parameters, x, y, everything, log_q = _peaked_model(space, model)
    groups, m = 8_000, 8

    def gradient(loss):
        grads = torch.autograd.grad(loss, parameters, allow_unused=True, retain_graph=True)
        return torch.cat([g.reshape(-1) for g in grads if g is not None])

    generator = torch.Generator().manual_seed(1)
    proposal = training_proposal(energy, space, x, y, 0.1, generator)
    samples, log_weights = draw_training_samples(proposal, space, groups * m, generator, x.dtype)
    g_data = energy(x, y.unsqueeze(1)).squeeze(1)
    g_samples = energy(x, samples)
    rows = lambda t: t.reshape(4 * groups, m)  # noqa: E731  (input i's groups are rows i·G … (i+1)·G − 1)
    g_groups, w_groups = rows(g_samples), rows(log_weights)
    offsets = leave_one_out_log_mean(g_groups.detach() + w_groups)
    tau_rows = tau(x).repeat_interleave(groups)
    data_rows = g_data.repeat_interleave(groups)
    loo = minmin_loss(data_rows, g_groups, tau_rows[:, None] + offsets, "kl", w_groups).mean()
    pooled = torch.logsumexp(g_groups.detach() + w_groups, dim=1, keepdim=True) - math.log(m)
    self_normalised = minmin_loss(data_rows, g_groups, tau_rows[:, None] + pooled.expand(-1, m), "kl",
                                  w_groups).mean()
    mean_exp = (-offsets.double()).exp().reshape(4, groups * m).mean(1)
    tau_eff = tau(x) - mean_exp.log().to(x.dtype)
    exact_grad = gradient((expected_dual(tau_eff, energy(x, everything), log_q, "kl") - g_data).mean())
    error = lambda loss: float((gradient(loss) - exact_grad).norm() / exact_grad.norm())  # noqa: E731
    print(f"\n{space!r} {model}: relative gradient error leave-one-out {error(loo):.4f}, "
          f"self-normalised {error(self_normalised):.4f}")
    assert error(loo) < 0.05
    assert error(self_normalised) > 2 * error(loo)


def test_tau_offset_reports_tau_on_top_of_log_partition_and_is_checked():
    """A fitted ``tau_offset="estimate"`` model reports τ(x) = b(x) + τ_net(x), b the exact log Z for
    the unary model (closed form, checked by enumeration here), and trains on rankings (leave-one-out)."""
    from ebm.inference import enumerate_scores
    from ebm.tau import OffsetTau

    method = VARIANTS["minmin-logistic-is"]
    x, y = torch.randn(64, 4), (torch.rand(64, 5) < 0.3).float()
    fitted = method.fit(Multilabel(5), "unary", FitData(x, y), {"hidden": 8, "tau_offset": "estimate"},
                        Budget(max_steps=30, batch_size=32, eval_every=30), seed=0, device=CPU)
    assert isinstance(fitted.tau, OffsetTau)
    assert float(fitted.tau.net.output_bias.abs()) > 1e-4  # τ_net is trained (starts at 0)
    space = Multilabel(5)
    log_z = torch.logsumexp(enumerate_scores(fitted.energy, space, x[:8]) + space.log_prior(space.enumerate_all()),
                            dim=1)
    fitted.tau.eval()
    assert torch.allclose(fitted.tau_estimate(x[:8]), fitted.tau.net(x[:8]) + log_z, atol=1e-4)
    ranks = torch.stack([torch.randperm(4) for _ in range(64)]).float()
    fitted = method.fit(Permutations(4), "permutahedron", FitData(x, ranks), {"hidden": 8, "tau_offset": "estimate"},
                        Budget(max_steps=30, batch_size=32, eval_every=30), seed=0, device=CPU)
    assert torch.isfinite(fitted.tau_estimate(x[:8])).all() and float(fitted.tau.net.output_bias.abs()) > 1e-4
    for bad in ({"tau_offset": "estimat"}, {"tau_offset": "estimate", "n_samples": 1}):
        with pytest.raises(ValueError):
            method.check(Permutations(4), "permutahedron", method.params(bad))
    assert method.check(Multilabel(3), "unary", method.params({"tau_offset": "estimate", "n_samples": 1})) is None


def _peaked_model(space, model):
    """A small energy made peaked (far from q, so a model proposal differs from q), a neural τ,
    their parameters, 4 inputs with prior-drawn targets, and the enumerated space with log q."""
    from ebm.energies import build_energy
    from ebm.tau import NeuralTau

    torch.manual_seed(0)
    energy = build_energy(space, model, 5, hidden=8, rank=2)
    tau = NeuralTau(5, hidden=8, init=0.5)
    with torch.no_grad():
        for p in energy.parameters():
            p.mul_(3.0)
        if model == "pairwise":
            energy.coupling.normal_(std=1.0)
    parameters = [*energy.parameters(), *tau.parameters()]
    x, y = torch.randn(4, 5), space.sample_prior(4, generator=torch.Generator().manual_seed(3))
    everything = space.enumerate_all()
    return energy, tau, parameters, x, y, everything, space.log_prior(everything)


@pytest.mark.parametrize("weighted", [False, True])
def test_ess_log_reduces_steps_together_to_the_per_step_values(weighted):
    """EssLog keeps the steps' scores and reduces them together (every 100 steps, and whenever its
    info is read): its mean and curve equal the ESS/n′ computed step by step from the definition,
    ω_j = w_j e^{g_j − τ} (kl), ESS/n′ = (Σ_j ω_j)² / (n′ Σ_j ω_j²) averaged over the rows — in numpy,
    with reads in between (as the monitor's snapshots do) and τ per row or per draw."""
    import numpy as np

    from ebm.divergences import get_divergence
    from ebm.minmin import EssLog

    generator = torch.Generator().manual_seed(5)
    log, kl, expected = EssLog(every=100), get_divergence("kl"), []
    for step in range(250):
        g = 3 * torch.randn(8, 6, generator=generator)
        tau = torch.randn(8, generator=generator) if step < 130 else torch.randn(8, 6, generator=generator)
        log_w = torch.randn(8, 6, generator=generator) if weighted else None
        log.add(g, tau, log_w, kl)
        omega = np.exp(g.double().numpy() - (tau.double().numpy()[:, None] if tau.dim() == 1 else tau.double().numpy()))
        if weighted:
            omega = omega * np.exp(log_w.double().numpy())
        expected.append(float(np.mean(omega.sum(1) ** 2 / (6 * (omega**2).sum(1)))))
        if step in (40, 130, 199):
            info = log.info()
            assert info["ess"] == pytest.approx(np.mean(expected), rel=1e-12, abs=0)
    info = log.info()
    assert info["ess"] == pytest.approx(np.mean(expected), rel=1e-12, abs=0)
    assert [s for s, _ in info["ess_curve"]] == [100, 200]
    assert [v for _, v in info["ess_curve"]] == pytest.approx([np.mean(expected[:100]), np.mean(expected[100:200])],
                                                              rel=1e-12, abs=0)
