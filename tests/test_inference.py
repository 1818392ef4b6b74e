"""Energies and inference: log Z, NLL, modes (acceptance 3, incl. the ICM agreement rate), sampling."""

from __future__ import annotations

import itertools

import pytest
import torch
from scipy.stats import chisquare

from ebm import inference
from ebm.energies import build_energy
from ebm.spaces import Multilabel, PermutationMatrices, Permutations

PRIOR6 = torch.tensor([0.1, 0.3, 0.5, 0.6, 0.8, 0.95])
CASES = [
    (Multilabel(6, PRIOR6), "unary"),
    (Multilabel(6, PRIOR6), "pairwise"),
    (Multilabel(6), "mlp"),
    (Permutations(5), "permutahedron"),
    (PermutationMatrices(4), "birkhoff"),
]
IDS = [f"{model}" for _, model in CASES]


def random_energy(space, model, seed=0, std=0.7, **kwargs):
    torch.manual_seed(seed)
    energy = build_energy(space, model, 4, **{"hidden": 8, "rank": 2, **kwargs})
    with torch.no_grad():
        for parameter in energy.parameters():
            parameter.normal_(std=std)
    return energy.eval()


def brute_force(space, model_energy, x):
    """(Y, log q(y) + g(x, y)) by itertools over every element, scored per example (not the shared GEMM path)."""
    if isinstance(space, Multilabel):
        ys = torch.tensor(list(itertools.product((0.0, 1.0), repeat=space.k)))
    else:
        positions = torch.tensor(list(itertools.permutations(range(space.k))))
        ys = (space.k - 1 - positions).float() if isinstance(space, Permutations) else torch.nn.functional.one_hot(positions, space.k).float()
    with torch.no_grad():
        scores = model_energy(x, ys.expand(x.shape[0], *ys.shape)) + space.log_prior(ys)
    return ys, scores


def exact_probabilities(space, energy, x):
    """p(y|x) over Y in enumeration order (n, |Y|), float64, from the brute-force scores."""
    ys, scores = brute_force(space, energy, x)
    probs = torch.zeros(x.shape[0], space.size, dtype=torch.float64)
    probs[:, space.enumeration_index(ys)] = torch.softmax(scores.double(), 1)
    return probs


@pytest.mark.parametrize("space,model", CASES, ids=IDS)
def test_shared_candidates_equal_per_example_candidates(space, model):
    energy = random_energy(space, model)
    x = torch.randn(3, 4)
    candidates = space.sample_prior(7)
    with torch.no_grad():
        shared = energy(x, candidates)
        per_example = energy(x, candidates.expand(3, *candidates.shape))
    assert shared.shape == (3, 7)
    assert torch.allclose(shared, per_example, atol=1e-5)
    theta = energy.linear_scores(x)
    if theta is not None:
        dims = tuple(range(-len(space.event_shape), 0))
        assert torch.allclose((theta.unsqueeze(1) * candidates).sum(dims), shared, atol=1e-5)


@pytest.mark.parametrize("rank", [3, 1], ids=["rank3", "rank1-elementwise"])
def test_pairwise_terms_define_the_energy(rank):
    space = Multilabel(7)
    energy = random_energy(space, "pairwise", rank=rank)
    x, y = torch.randn(4, 4), space.sample_prior((4, 5))
    u, coupling = energy.pairwise_terms(x)
    # exactly symmetric (ICM and Gibbs read U's rows as its columns), zero diagonal
    assert torch.equal(coupling, coupling.transpose(1, 2)) and coupling.diagonal(dim1=1, dim2=2).abs().max() == 0
    # the docstring's U(x) = sym(U₀) + sym(A(x)B(x)ᵀ) off the diagonal, built here in float64
    h = energy.features(x).double()
    a, b = (h @ energy.low_rank.weight.double().T + energy.low_rank.bias.double()).reshape(4, 2, 7, rank).unbind(1)
    u0 = energy.coupling.double()
    dense = 0.5 * (u0 + u0.T) + 0.5 * (a @ b.transpose(1, 2) + b @ a.transpose(1, 2))
    dense = dense * (1 - torch.eye(7, dtype=torch.float64))
    torch.testing.assert_close(coupling.double(), dense, rtol=1e-6, atol=1e-6)
    expected = torch.einsum("nk,nmk->nm", u, y) + 0.5 * torch.einsum("nmk,nkl,nml->nm", y, coupling, y)
    assert torch.allclose(energy(x, y), expected, atol=1e-5)
    assert energy.rank == rank and build_energy(space, "pairwise", 4, rank=0)(x, y).shape == (4, 5)  # rank 0 allowed


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_factor_products_are_the_batched_gemm_to_the_bit(dtype):
    """factor_product is torch.bmm, bit for bit: at rank 1 as elementwise outer products (one
    product per entry, nothing summed), at rank 3 the GEMM itself."""
    from ebm.energies import factor_product

    generator = torch.Generator().manual_seed(3)
    for rank in (1, 3):
        left = torch.randn(5, 4, rank, generator=generator, dtype=dtype)
        right = torch.randn(5, rank, 9, generator=generator, dtype=dtype)
        assert torch.equal(factor_product(left, right), torch.bmm(left, right))


@pytest.mark.parametrize("rank", [0, 1, 3])
def test_training_mean_field_is_the_dense_mean_field(rank):
    """pairwise_mean_field (the min-min training proposal's fields, from the energy's factors,
    no (n, k, k) tensor) equals mean_field_logits on the dense U(x) of pairwise_terms, float64."""
    from ebm.importance import mean_field_logits, pairwise_mean_field

    space = Multilabel(7, prior_probs=torch.tensor([0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.9]))
    energy = random_energy(space, "pairwise", rank=rank).double()
    with torch.no_grad():  # a non-zero static coupling (it starts at zero)
        energy.coupling.normal_(generator=torch.Generator().manual_seed(1))
    x = torch.randn(4, 4, dtype=torch.float64)
    means = torch.rand(4, 2, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    prior_logits = space.prior_logits().double()
    with torch.no_grad():
        u, coupling = energy.pairwise_terms(x)
        expected = mean_field_logits(u + prior_logits, coupling, means, iterations=10)
        got = pairwise_mean_field(energy, x, means, prior_logits, iterations=10)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)



@pytest.mark.parametrize("space, model, rank", [(Multilabel(7), "pairwise", 3), (Multilabel(5), "pairwise", 0),
                                              (Multilabel(6), "unary", 0), (Permutations(5), "permutahedron", 0),
                                              (PermutationMatrices(4), "birkhoff", 0)])
def test_label_features_and_their_weights_give_the_energy(space, model, rank):
    """g(x, y) = ⟨w(h(x)), φ(y)⟩ (exact enumeration scores all of Y as one GEMM against φ(Y)) equals
    the model's own scoring, per example and shared, in float64; for the pairwise model also on
    real-valued y (½ yᵀUy = Σ_{i<j} U_ij y_i y_j needs only U's zero diagonal, not y ∈ {0, 1})."""
    energy = build_energy(space, model, 4, hidden=8, rank=rank).double()
    if model == "pairwise":
        with torch.no_grad():  # a non-zero static coupling (it starts at zero; at rank 0 it is all of U)
            energy.coupling.normal_(generator=torch.Generator().manual_seed(1))
    x = torch.randn(3, 4, dtype=torch.float64)
    y = space.sample_prior((3, 6), generator=torch.Generator().manual_seed(2)).double()
    weights = energy.feature_weights(energy.features(x))
    features = energy.label_features(y)
    assert features.shape == (3, 6, weights.shape[1])
    torch.testing.assert_close((weights[:, None, :] * features).sum(-1), energy(x, y), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(weights @ energy.label_features(y[0]).T, energy(x, y[0]), rtol=1e-12, atol=1e-12)
    if model == "pairwise":
        real = torch.randn(3, 6, space.k, dtype=torch.float64)
        torch.testing.assert_close((weights[:, None, :] * energy.label_features(real)).sum(-1), energy(x, real),
                                   rtol=1e-12, atol=1e-12)
    assert build_energy(Multilabel(4), "mlp", 4).label_features(torch.zeros(2, 4)) is None  # not linear in φ(y)


@pytest.mark.parametrize("n,m,e", [(64, 17, 16), (64, 17, 174), (3, 1, 2), (1, 5, 36), (5, 4, 1)])
def test_batched_dot_is_einsums_product_bit_for_bit(n, m, e):
    """energies.batched_dot(θ, y) replaced ``einsum("ne,nme->nm", θ, y)`` in the energies' training
    path: the same bits forward and in both gradients (runs must not change), and ⟨θ_i, y_ij⟩ in float64."""
    from ebm.energies import batched_dot

    generator = torch.Generator().manual_seed(n + m + e)
    theta = torch.randn(n, e, generator=generator, requires_grad=True)
    y = (torch.rand(n, m, e, generator=generator) < 0.5).float().requires_grad_()
    upstream = torch.randn(n, m, generator=generator)
    ours = batched_dot(theta, y)
    grads = torch.autograd.grad(ours, (theta, y), upstream)
    reference = torch.einsum("ne,nme->nm", theta, y)
    reference_grads = torch.autograd.grad(reference, (theta, y), upstream)
    assert ours.shape == (n, m) and torch.equal(ours, reference)
    assert all(torch.equal(a, b) for a, b in zip(grads, reference_grads))
    assert torch.allclose(ours.double(), (theta.double()[:, None, :] * y.double()).sum(-1), atol=1e-5)


def test_off_diagonal_mask_is_shared_and_usable_in_training():
    """The pairwise energy's 1 − I is built once per (k, device, dtype), even inside inference mode
    (it must still be usable where autograd saves it)."""
    from ebm.energies import off_diagonal_mask

    with torch.inference_mode():
        first = off_diagonal_mask(13, torch.device("cpu"), torch.float64)
    assert torch.equal(first, 1 - torch.eye(13, dtype=torch.float64))
    assert off_diagonal_mask(13, torch.device("cpu"), torch.float64) is first
    coupling = torch.randn(13, 13, dtype=torch.float64, requires_grad=True)
    (coupling * first).sum().backward()
    assert torch.equal(coupling.grad, first)

def test_energy_input_errors_are_clear():
    energy = build_energy(Multilabel(3), "unary", 4, depth=0)
    with pytest.raises(ValueError, match=r"expected \(n, 4\)"):
        energy(torch.zeros(2, 5), torch.zeros(2, 1, 3))
    with pytest.raises(ValueError, match="y has shape"):
        energy(torch.zeros(2, 4), torch.zeros(2, 1, 4))
    with pytest.raises(ValueError, match="does not apply"):
        build_energy(Permutations(3), "pairwise", 4)
    with pytest.raises(ValueError, match="did you mean 'birkhoff'"):
        build_energy(PermutationMatrices(3), "birkof", 4)


@pytest.mark.parametrize("space,model", CASES, ids=IDS)
def test_log_partition_and_nll_against_brute_force(space, model):
    energy = random_energy(space, model)
    x = torch.randn(5, 4)
    ys, scores = brute_force(space, energy, x)
    estimate, stderr = inference.log_partition(energy, space, x, chunk_size=17)
    assert torch.allclose(estimate, torch.logsumexp(scores.double(), 1).float(), atol=1e-4)
    assert (stderr == 0).all()
    # −log p sums to a distribution over every y: Σ_y exp(−nll(x, y)) = 1
    for row in range(2):
        values, _ = inference.nll(energy, space, x[row].expand(len(ys), 4), ys)
        assert torch.logsumexp(-values.double(), 0).abs().item() < 1e-4


def test_unary_closed_form_uniform_prior():
    """Σ_i softplus(θ_i) − k log 2 (the formula of the issue), against enumeration."""
    space = Multilabel(6)
    energy = random_energy(space, "unary")
    x = torch.randn(3, 4)
    theta = energy.linear_scores(x)
    closed, _ = inference.log_partition(energy, space, x)
    assert torch.allclose(closed, torch.nn.functional.softplus(theta).sum(1) - 6 * torch.log(torch.tensor(2.0)))
    assert torch.allclose(closed, torch.logsumexp(brute_force(space, energy, x)[1], 1), atol=1e-5)


def test_importance_sampling_estimate_and_stderr_are_calibrated():
    """Beyond ``limit``: IS from q; the z-scores (estimate − exact)/stderr over 40 inputs look standard."""
    space = Multilabel(10)
    energy = random_energy(space, "pairwise", std=0.3)
    x = torch.randn(40, 4)
    exact, _ = inference.log_partition(energy, space, x)
    estimate, stderr = inference.log_partition(energy, space, x, limit=0, n_samples=4000, generator=torch.Generator().manual_seed(0))
    z = (estimate - exact) / stderr
    assert (stderr > 0).all() and z.abs().max() < 4.5
    assert abs(z.mean().item()) < 0.6 and 0.6 < z.std().item() < 1.5
    values, nll_stderr = inference.nll(energy, space, x, space.sample_prior(40), limit=0, n_samples=64)
    assert values.shape == (40,) and (nll_stderr > 0).all()


@pytest.mark.parametrize("space,model", CASES, ids=IDS)
def test_mode_is_the_brute_force_argmax(space, model):
    """Acceptance 3: every mode oracle (threshold, enumeration, argsort, Hungarian) vs brute force."""
    energy = random_energy(space, model)
    x = torch.randn(20, 4)
    ys, scores = brute_force(space, energy, x)
    assert torch.equal(inference.mode(energy, space, x), ys[scores.argmax(1)])


def agreement_with_enumeration(model, k=12, n=200):
    space = Multilabel(k, torch.linspace(0.2, 0.8, k))
    energy = random_energy(space, model, std=0.5)
    x = torch.randn(n, 4)
    exact = inference.mode(energy, space, x)
    approximate = inference.mode(energy, space, x, enumeration_limit=0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        objective = lambda y: (energy(x, y.unsqueeze(1)).squeeze(1) + space.log_prior(y))  # noqa: E731
        gap = objective(exact) - objective(approximate)
    return (approximate == exact).all(1).float().mean().item(), gap


@pytest.mark.parametrize("model", ["pairwise", "mlp"])
def test_approximate_modes_agree_with_enumeration_at_k12(model):
    """Acceptance 3: ICM (pairwise) / greedy local search (mlp) vs exact enumeration at k = 12."""
    rate, gap = agreement_with_enumeration(model)
    name = "ICM" if model == "pairwise" else "greedy local search"
    message = f"{name} agrees with enumeration on {rate:.1%} of 200 inputs at k = 12 (mean objective gap {gap.mean():.4f})"
    print("\n" + message)
    assert (gap >= -1e-4).all(), "the approximate mode scored above the exact maximum: " + message
    assert rate >= 0.7, message


def test_icm_reaches_a_coordinatewise_optimum_at_k174():
    space = Multilabel(174)
    energy = build_energy(space, "pairwise", 4, hidden=16, rank=4)
    x = torch.randn(3, 4)
    y = inference.mode(energy, space, x)
    u, coupling = energy.pairwise_terms(x)
    field = u + torch.einsum("nkl,nl->nk", coupling, y)
    assert ((field > 0).float() == y).all()  # no single flip improves


@pytest.mark.parametrize("shared", [False, True], ids=["own-U", "one-U"])
@pytest.mark.parametrize("skip_unflipped", [None, True, False],
                         ids=["cpu-compiled", "cpu-skips", "accelerator-updates-all"])
def test_icm_follows_the_textbook_site_loop(skip_unflipped, shared):
    """The same local optima as the textbook loop (a fresh u_i + Σ_j U_ij y_j at every site, sweeps
    until nothing changes), from the same starts, in float64 so no field lies within rounding of 0;
    every way of running the loop (compiled, chain by chain on CPU, the default there; torch with a
    flip test per site; torch updating every site, as on an accelerator); ``shared``: one U expanded
    over the inputs (the pairwise energy at rank 0), which the compiled loop reads as one matrix."""
    generator = torch.Generator().manual_seed(5)
    n, c, k = 6, 4, 60
    a = torch.randn(1 if shared else n, k, k, generator=generator, dtype=torch.float64)
    coupling = (a + a.transpose(1, 2)) * (1 - torch.eye(k, dtype=torch.float64))
    coupling = coupling.expand(n, k, k) if shared else coupling
    u = torch.randn(n, k, generator=generator, dtype=torch.float64)
    init = (torch.rand(n, c, k, generator=generator) < 0.5).double()
    expected = init.clone()
    for _ in range(100):
        before = expected.clone()
        for i in range(k):
            expected[..., i] = (u[:, None, i] + (expected * coupling[:, None, i, :]).sum(-1) > 0).double()
        if torch.equal(before, expected):
            break
    assert torch.equal(inference.icm(u, coupling, init, skip_unflipped=skip_unflipped), expected)


def test_compiled_icm_makes_the_tensor_loops_states_in_float32():
    """In float32, at cal500's size, where fields do come within rounding of 0: the compiled
    loop (CPU's default) adds the same ±U_ij to each field in the same order as the tensor loop,
    so the states are the same bits, not merely the same local optima."""
    generator = torch.Generator().manual_seed(7)
    n, c, k = 8, 5, 174
    a = torch.randn(n, k, k, generator=generator) / k**0.5
    coupling = (a + a.transpose(1, 2)) * (1 - torch.eye(k))
    u = torch.randn(n, k, generator=generator)
    init = (torch.rand(n, c, k, generator=generator) < 0.5).float()
    compiled = inference.icm(u, coupling, init)
    assert torch.equal(compiled, inference.icm(u, coupling, init, skip_unflipped=True))
    assert not torch.equal(compiled, init)


def test_exact_sampling_matches_the_distribution():
    space = Multilabel(4, torch.tensor([0.2, 0.5, 0.7, 0.9]))
    energy = random_energy(space, "pairwise")
    x = torch.randn(2, 4)
    samples = inference.sample(energy, space, x, 20_000, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 20_000, 4)
    probs = exact_probabilities(space, energy, x)
    for row in range(2):
        counts = torch.bincount(space.enumeration_index(samples[row]), minlength=16).double()
        assert chisquare(counts.numpy(), (probs[row] / probs[row].sum() * 20_000).numpy()).pvalue > 0.01


@pytest.mark.parametrize("space,model", [(Multilabel(6), "mlp"), (Permutations(4), "permutahedron")], ids=["gibbs", "mh"])
def test_mcmc_sampling_beyond_the_limit(space, model):
    """With limit=0, sample() runs MCMC; its histogram still matches the exact distribution roughly."""
    energy = random_energy(space, model)
    x = torch.randn(1, 4)
    samples = inference.sample(energy, space, x, 5000, limit=0, n_sweeps=10, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (1, 5000, *space.event_shape)
    probs = exact_probabilities(space, energy, x)[0]
    frequencies = torch.bincount(space.enumeration_index(samples[0]), minlength=space.size).double() / 5000
    assert 0.5 * (frequencies - probs).abs().sum() < 0.05  # total variation
