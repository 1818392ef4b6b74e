"""The min-min objective: exact dual values (acceptance 1), unbiased gradients (acceptance 2), weights, τ modules."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.optimize import minimize_scalar

from ebm.divergences import entmax15, get_divergence, kl, sparsemax
from ebm.energies import build_energy
from ebm.objective import expected_dual, minmin_loss, optimal_distribution, optimal_tau, variational_log_partition
from ebm.spaces import Multilabel, PermutationMatrices, Permutations
from ebm.tau import FiniteTau, NeuralTau, ScalarTau, build_tau

CASES = [(Multilabel(8), "pairwise"), (Multilabel(8, torch.linspace(0.1, 0.9, 8)), "mlp"), (Permutations(5), "permutahedron"), (PermutationMatrices(4), "birkhoff")]


def random_scores(space, model, n=3, scale=3.0, seed=0):
    """Scores g(x, y) of a randomly initialised energy on every y (n, |Y|), float64, and log q (|Y|,)."""
    torch.manual_seed(seed)
    energy = build_energy(space, model, 5, hidden=16, depth=1, rank=2)
    if model == "pairwise":
        with torch.no_grad():
            energy.coupling.normal_()
    everything = space.enumerate_all()
    with torch.no_grad():
        g = energy(torch.randn(n, 5), everything).double()
    g = scale * (g - g.mean(1, keepdim=True)) / g.std(1, keepdim=True)
    log_q = space.log_prior(everything).double()
    return g, log_q - torch.logsumexp(log_q, 0)  # float32 priors sum to 1 only to ~1e-7


def scipy_dual(g_row: torch.Tensor, log_q: torch.Tensor, divergence) -> tuple[float, float]:
    """(min value, argmin) of τ + Σ q f*(g − τ) by Brent's method: independent of ebm.objective's bisection."""
    q = log_q.exp()
    objective = lambda tau: tau + float((q * divergence.conjugate(g_row - tau)).sum())  # noqa: E731
    result = minimize_scalar(objective, bracket=(float(g_row.min()), float(g_row.max())), tol=1e-12)
    return result.fun, result.x


def sparsemax_projection(z: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto the simplex by sorting (Michelot / Held et al.)."""
    z_sorted, _ = z.sort(descending=True)
    cumulative = z_sorted.cumsum(0)
    j = torch.arange(1, z.numel() + 1, dtype=z.dtype)
    support = int((1 + j * z_sorted > cumulative).sum())
    threshold = (cumulative[support - 1] - 1) / support
    return (z - threshold).clamp(min=0)


def sparsemax_fenchel_young_conjugate(g_row: torch.Tensor) -> float:
    """Ω*(g) for Ω(p) = Σ q ½(p/q − 1)² with uniform q = 1/N: N·[⟨p, g/N⟩ − ½‖p‖²] + ½, p = sparsemax(g/N)."""
    n = g_row.numel()
    p = sparsemax_projection(g_row / n)
    return n * float(p @ (g_row / n) - 0.5 * p @ p) + 0.5


@pytest.mark.parametrize("space,model", CASES, ids=lambda c: repr(c) if not isinstance(c, str) else c)
def test_kl_dual_is_the_log_partition(space, model):
    """Acceptance 1 (kl): min_τ τ + E_q(eᵍ⁻ᵗ − 1) = log E_q eᵍ, and p = q·e^{g − τ*} sums to 1."""
    g, log_q = random_scores(space, model)
    exact = torch.logsumexp(g + log_q, dim=1)
    for row in range(g.shape[0]):
        value, tau = scipy_dual(g[row], log_q, kl)
        assert value == pytest.approx(exact[row].item(), abs=1e-8)
        assert tau == pytest.approx(exact[row].item(), abs=1e-5)  # τ* = A for kl
    assert torch.allclose(variational_log_partition(g, log_q, kl), exact, atol=1e-10)
    p = optimal_distribution(g, log_q, optimal_tau(g, log_q, kl), kl)
    assert torch.allclose(p.sum(1), torch.ones(g.shape[0], dtype=g.dtype), atol=1e-10)


@pytest.mark.parametrize("space,model", [c for c in CASES if c[0].name == "ranking" or c[0].uniform], ids=lambda c: repr(c) if not isinstance(c, str) else c)
def test_sparsemax_dual_is_the_sort_based_conjugate(space, model):
    """Acceptance 1 (sparsemax): the dual value equals the sort-based Fenchel–Young conjugate,
    and p = q·[1 + g − τ*]₊ sums to 1, is sparse, and is the sparsemax projection of g/N."""
    g, log_q = random_scores(space, model)
    for row in range(g.shape[0]):
        reference = sparsemax_fenchel_young_conjugate(g[row])
        value, _ = scipy_dual(g[row], log_q, sparsemax)
        assert value == pytest.approx(reference, abs=1e-8)
    assert torch.allclose(variational_log_partition(g, log_q, sparsemax), torch.tensor([sparsemax_fenchel_young_conjugate(r) for r in g], dtype=g.dtype), atol=1e-10)
    p = optimal_distribution(g, log_q, optimal_tau(g, log_q, sparsemax), sparsemax)
    assert torch.allclose(p.sum(1), torch.ones(g.shape[0], dtype=g.dtype), atol=1e-10)
    assert ((p == 0).sum(1) > 0).all(), "sparsemax p should have zeros"
    assert torch.allclose(p, torch.stack([sparsemax_projection(r / r.numel()) for r in g]), atol=1e-10)


def test_entmax15_dual_matches_brent_and_normalises():
    g, log_q = random_scores(Multilabel(7, torch.linspace(0.2, 0.8, 7)), "pairwise")
    values = variational_log_partition(g, log_q, entmax15)
    for row in range(g.shape[0]):
        assert values[row].item() == pytest.approx(scipy_dual(g[row], log_q, entmax15)[0], abs=1e-8)
    p = optimal_distribution(g, log_q, optimal_tau(g, log_q, entmax15), entmax15)
    assert torch.allclose(p.sum(1), torch.ones(3, dtype=g.dtype), atol=1e-10)


def test_variational_log_partition_gradient_is_the_optimal_distribution():
    """Envelope theorem: ∇_g Ω*(g) = p*, for kl the softmax of g + log q."""
    g, log_q = random_scores(Permutations(4), "permutahedron")
    for divergence in (kl, sparsemax):
        g_var = g.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(variational_log_partition(g_var, log_q, divergence).sum(), g_var)
        assert torch.allclose(grad, optimal_distribution(g, log_q, optimal_tau(g, log_q, divergence), divergence), atol=1e-8)


@pytest.mark.parametrize("divergence", [kl, sparsemax], ids=lambda d: d.name)
def test_stochastic_gradient_is_unbiased(divergence):
    """Acceptance 2: the gradient of L averaged over 4000 draws of 16 prior samples matches the
    gradient of the exact-expectation objective τ + E_q f*(g − τ) − g(x, y) (relative error < 5%)."""
    torch.manual_seed(0)
    space = Multilabel(6)
    energy = build_energy(space, "pairwise", 5, hidden=8, rank=2)
    tau = NeuralTau(5, hidden=8, init=0.5)
    with torch.no_grad():
        energy.coupling.normal_(std=0.5)
    parameters = [*energy.parameters(), *tau.parameters()]
    x, y = torch.randn(4, 5), space.sample_prior(4)
    everything, log_q = space.enumerate_all(), space.log_prior(space.enumerate_all())

    def gradient(loss):
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, parameters)])

    g_data = energy(x, y.unsqueeze(1)).squeeze(1)
    exact = (expected_dual(tau(x), energy(x, everything), log_q, divergence) - g_data).mean()
    draws, per_draw = 4000, 16
    samples = space.sample_prior((4, draws * per_draw), generator=torch.Generator().manual_seed(1))
    # the mean over draws × per_draw samples is the average of the per-draw losses, hence of their gradients
    stochastic = minmin_loss(energy(x, y.unsqueeze(1)).squeeze(1), energy(x, samples), tau(x), divergence).mean()
    exact_grad, stochastic_grad = gradient(exact), gradient(stochastic)
    relative_error = (stochastic_grad - exact_grad).norm() / exact_grad.norm()
    print(f"{divergence.name}: relative gradient error {relative_error:.4f}")
    assert relative_error < 0.05, f"relative gradient error {relative_error:.3f}"


def test_importance_weights_correct_a_non_uniform_proposal():
    """With y' ~ r ≠ q, weights q/r make the sampled objective unbiased for the q-expectation; without them it is biased."""
    space, proposal = Multilabel(5), Multilabel(5, torch.full((5,), 0.8))
    torch.manual_seed(0)
    energy = build_energy(space, "unary", 3, hidden=4)
    x = torch.randn(2, 3)
    with torch.no_grad():
        everything = space.enumerate_all()
        exact = expected_dual(torch.zeros(2), energy(x, everything), space.log_prior(everything), kl)
        samples = proposal.sample_prior((2, 200_000), generator=torch.Generator().manual_seed(2))
        g = energy(x, samples)
        log_weights = space.log_prior(samples) - proposal.log_prior(samples)
        weighted = minmin_loss(torch.zeros(2), g, torch.zeros(2), kl, log_weights)
        unweighted = minmin_loss(torch.zeros(2), g, torch.zeros(2), kl)
    assert torch.allclose(weighted, exact, atol=0.02)
    assert (unweighted - exact).abs().max() > 0.05


def test_minmin_loss_values_and_shape_errors():
    g_samples = torch.tensor([[0.0, math.log(3.0)]])
    loss = minmin_loss(torch.tensor([1.0]), g_samples, torch.tensor([0.5]), kl)
    expected = 0.5 + 0.5 * (math.exp(-0.5) - 1 + 3 * math.exp(-0.5) - 1) - 1.0
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="g_samples"):
        minmin_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3), kl)
    with pytest.raises(ValueError, match="log_weights"):
        minmin_loss(torch.zeros(2), torch.zeros(2, 4), torch.zeros(2), kl, torch.zeros(2, 3))
    assert minmin_loss(torch.zeros(1), torch.tensor([[200.0]]), torch.zeros(1), "kl").isfinite().all()  # guarded


def test_tau_modules():
    x_train = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    finite = FiniteTau(x_train)
    with torch.no_grad():
        finite.values.copy_(torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(finite(x_train[[2, 0]], index=torch.tensor([2, 0])), torch.tensor([3.0, 1.0]))
    assert torch.equal(finite(torch.tensor([[9.0, 1.0], [0.5, 8.0], [0.1, 0.1]])), torch.tensor([2.0, 3.0, 1.0]))  # nearest training x
    scalar = ScalarTau(init=1.5)
    assert torch.equal(scalar(torch.zeros(4, 2)), torch.full((4,), 1.5))
    energy = build_energy(Multilabel(3), "unary", 2, hidden=6)
    shared = NeuralTau(energy.feature_dim, trunk=energy.trunk, init=-2.0)
    assert shared(torch.zeros(5, 2)).shape == (5,)
    assert {id(p) for p in energy.trunk.parameters()} <= {id(p) for p in shared.parameters()}
    assert build_tau("neural", in_features=2, hidden=4)(torch.zeros(3, 2)).shape == (3,)
    assert isinstance(build_tau("finite", x_train=x_train), FiniteTau)
    with pytest.raises(ValueError, match="did you mean 'scalar'"):
        build_tau("scalr")
    with pytest.raises(ValueError, match="x_train"):
        build_tau("finite")


@pytest.mark.parametrize("divergence", ["kl", "sparsemax", "entmax15", "entmax:1.2"])
@pytest.mark.parametrize("scale", [40.0, 1.0, 0.01])  # sparse support / hundreds / nearly all of Y
def test_optimal_tau_by_newton_equals_bisection(divergence, scale):
    """Newton's root of Σ q (f*)'(g − τ) = 1 equals plain bisection's to 1e-9 and makes p sum
    to one, from sparse to dense supports (and kl's log Σ q e^g in closed form)."""
    from ebm.objective import bisect_tau

    generator = torch.Generator().manual_seed(12)
    n_points = 9000  # > 2 × the largest candidate set: the sparse paths are tried
    g = scale * torch.randn(5, n_points, generator=generator, dtype=torch.float64)
    log_q = torch.log_softmax(0.5 * torch.randn(n_points, generator=generator, dtype=torch.float64), dim=0)
    div = get_divergence(divergence)
    tau = optimal_tau(g, log_q, div)
    torch.testing.assert_close(tau, bisect_tau(g, log_q, div), atol=1e-9, rtol=0)
    p = optimal_distribution(g, log_q, tau, div)
    torch.testing.assert_close(p.sum(1), torch.ones(5, dtype=torch.float64), atol=1e-9, rtol=0)
    if divergence == "kl":
        torch.testing.assert_close(tau, torch.logsumexp(g + log_q, dim=1), atol=1e-9, rtol=0)
    elif scale == 40.0:  # the supports fit the first candidate set: its shortcut was the one taken
        assert int((p > 0).sum(1).max()) < 1024


@pytest.mark.parametrize("divergence", ["sparsemax", "entmax15"])
def test_optimal_tau_solves_each_row_at_its_own_support_size(divergence):
    """Rows whose supports fit the first candidate set, the second, or neither, in one (2, 3, N)
    batch: each row's τ is bisection's, whichever set solved it (a row is sent on to the next size
    by its own support alone, and the leading axes come back as they were)."""
    from ebm.objective import SPARSE_CANDIDATES, bisect_tau

    generator = torch.Generator().manual_seed(13)
    n_points = 9000
    scales = torch.tensor([40.0, 5.0, 0.01, 1.0, 40.0, 5.0], dtype=torch.float64)[:, None]
    g = (scales * torch.randn(6, n_points, generator=generator, dtype=torch.float64)).reshape(2, 3, n_points)
    log_q = torch.log_softmax(0.5 * torch.randn(n_points, generator=generator, dtype=torch.float64), dim=0)
    div = get_divergence(divergence)
    tau = optimal_tau(g, log_q, div)
    assert tau.shape == (2, 3)
    torch.testing.assert_close(tau, bisect_tau(g, log_q, div), atol=1e-9, rtol=0)
    sizes = (optimal_distribution(g, log_q, tau, div) > 0).sum(-1).flatten()
    # the batch mixes the three cases: within the first set, within the second, the whole row
    assert int(sizes.min()) < SPARSE_CANDIDATES[0] and int(sizes.max()) > SPARSE_CANDIDATES[-1]
    assert any(SPARSE_CANDIDATES[0] < int(v) <= SPARSE_CANDIDATES[-1] for v in sizes)


def test_sparsemax_tau_is_the_threshold_unless_a_margin_reaches_the_guard():
    """sparsemax's τ* comes from the threshold s = 1 + g directly (uniform q over 2^14 label sets, as
    yeast's τ check): bisection's root; a row with a margin past the guard's tangent (~2e17), where
    the guarded equation is another one, goes to Newton and is still bisection's root."""
    from ebm.objective import _sparsemax_tau, bisect_tau

    generator = torch.Generator().manual_seed(14)
    n_points = 2**14
    g = torch.cat([s * torch.randn(1, n_points, generator=generator, dtype=torch.float64) for s in (40.0, 1.0, 0.01)])
    log_q = torch.full((n_points,), -n_points.bit_length() + 1.0, dtype=torch.float64) * math.log(2.0)
    direct = _sparsemax_tau(g, log_q.exp())
    assert direct is not None
    torch.testing.assert_close(direct, bisect_tau(g, log_q, sparsemax), atol=1e-9, rtol=0)
    torch.testing.assert_close(optimal_tau(g, log_q, sparsemax), direct, atol=0, rtol=0)
    # at the root every margin is below 1/q(y) − 1, so only a label set of tiny q can reach the
    # guard: q = 1e-20 and a score of 1e30 (unguarded, τ would be ≈ 1e30 − 1e20)
    rare = torch.cat([torch.tensor([1e-20], dtype=torch.float64), torch.full((n_points - 1,), (1 - 1e-20) / (n_points - 1),
                                                                              dtype=torch.float64)])
    huge = g[1:2].clone()
    huge[0, 0] = 1e30
    assert _sparsemax_tau(huge, rare) is None
    guarded = optimal_tau(huge, rare.log(), sparsemax)
    torch.testing.assert_close(guarded, bisect_tau(huge, rare.log(), sparsemax), atol=1e-9, rtol=0)
    assert abs(float(guarded)) < 10  # the others carry the mass: the guard caps the rare one's slope at e^40
