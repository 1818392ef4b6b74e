"""exact-mle, exact-sparsemax and bce against independent references: brute-force enumeration
with itertools, the textbook sort-based sparsemax (Martins & Astudillo 2016), and the
per-label Bernoulli likelihood."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from baselines.bce import BCE, bce_nll
from baselines.exact import Enumeration, ExactMLE, ExactSparsemax, exact_nll, exact_sparsemax_loss, sparsemax_conjugate
from ebm.energies import build_energy
from ebm.method import Budget, FitData
from ebm.objective import variational_log_partition
from ebm.spaces import Multilabel, PermutationMatrices, Permutations


def _grads(energy, loss):
    energy.zero_grad()
    loss.backward()
    return [p.grad.detach().clone() for p in energy.parameters()]


def _random_multilabel(n, k, d, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator), (torch.rand(n, k, generator=generator) < 0.3).float()


def _double_enumeration(space, chunk_size, energy=None):
    """Enumeration in float64; with ``energy``, built by ``Enumeration.of`` (φ(Y) where it has one)."""
    if energy is not None:
        enumeration = Enumeration.of(space, chunk_size, energy=energy)
        chunks = tuple(c.double() for c in enumeration.chunks)
        features = None if enumeration.features is None else enumeration.features.double()
        return Enumeration(chunks, torch.cat([space.log_prior(c) for c in chunks]), features)
    chunks = tuple(c.double() for c in space.enumerate(chunk_size))
    return Enumeration(chunks, torch.cat([space.log_prior(c) for c in chunks]))


def _frequency_space(k, seed):
    return Multilabel(k, torch.rand(k, generator=torch.Generator().manual_seed(seed)) * 0.8 + 0.1)


@pytest.mark.parametrize("space", [Multilabel(6), _frequency_space(6, 3)], ids=["uniform", "frequency"])
def test_unary_exact_mle_equals_bce_in_value_and_gradient(space):
    torch.manual_seed(0)
    x, y = _random_multilabel(32, space.k, 5, seed=1)
    energy = build_energy(space, "unary", 5, hidden=16).double()
    x, y = x.double(), y.double()
    exact, bce = exact_nll(energy, space, x, y), bce_nll(energy, space, x, y)
    torch.testing.assert_close(exact, bce, atol=1e-5, rtol=0)
    for a, b in zip(_grads(energy, exact.mean()), _grads(energy, bce.mean())):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_unary_closed_form_equals_brute_force_enumeration():
    """−log p(y|x) from the closed form vs. a log-sum-exp over all 2^k subsets written out here."""
    space = _frequency_space(5, 7)
    x, y = _random_multilabel(8, 5, 4, seed=2)
    energy = build_energy(space, "unary", 4, hidden=8)
    with torch.no_grad():
        theta = energy.linear_scores(x).double()
        pi = space.prior_probs.double()
        subsets = torch.tensor(list(itertools.product([0.0, 1.0], repeat=5)), dtype=torch.float64)
        log_q = (subsets * pi.log() + (1 - subsets) * (1 - pi).log()).sum(-1)
        log_z = torch.logsumexp(theta @ subsets.T + log_q, dim=1)
        log_q_y = (y.double() * pi.log() + (1 - y.double()) * (1 - pi).log()).sum(-1)
        reference = log_z - (theta * y.double()).sum(-1) - log_q_y
        torch.testing.assert_close(exact_nll(energy, space, x, y).double(), reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("space, model", [(Multilabel(8), "pairwise"), (Multilabel(6), "mlp"), (Permutations(5), "permutahedron"), (PermutationMatrices(4), "birkhoff")])
def test_enumerated_nll_matches_brute_force_and_chunking_keeps_gradients(space, model):
    """Enumerated NLL = per-candidate reference loop; checkpointed chunks and the one GEMM against
    φ(Y) (every model but mlp) give the same values and gradients."""
    torch.manual_seed(3)
    d, n = 4, 6
    x = torch.randn(n, d, dtype=torch.float64)
    y = space.sample_prior(n, generator=torch.Generator().manual_seed(4)).double()
    energy = build_energy(space, model, d, hidden=8, rank=2).double()
    whole, chunked = _double_enumeration(space, space.size), _double_enumeration(space, 7)
    by_features = _double_enumeration(space, 7, energy)
    assert (by_features.features is None) == (model == "mlp") and whole.features is None
    nll_whole, nll_chunked = exact_nll(energy, space, x, y, whole), exact_nll(energy, space, x, y, chunked)
    nll_by_features = exact_nll(energy, space, x, y, by_features)
    with torch.no_grad():
        every_y = torch.cat(whole.chunks)
        per_candidate = torch.stack([energy(x, candidate.expand(n, 1, *space.event_shape)).squeeze(1) for candidate in every_y], dim=1)
        reference = torch.logsumexp(per_candidate + whole.log_prior, dim=1)
        reference = reference - energy(x, y.unsqueeze(1)).squeeze(1) - space.log_prior(y)
    torch.testing.assert_close(nll_whole.detach(), reference, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(nll_chunked.detach(), reference, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(nll_by_features.detach(), reference, atol=1e-9, rtol=1e-9)
    reference_grads = _grads(energy, nll_whole.sum())
    for nll in (nll_chunked, nll_by_features):
        for a, b in zip(reference_grads, _grads(energy, nll.sum())):
            torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)


def test_enumeration_keeps_the_label_features_within_its_memory_bound(monkeypatch):
    """φ(Y) = [y, (y_i y_j)_{i<j}] of every label set, in enumeration order (built here with
    itertools), while it fits MAX_FEATURE_BYTES; past it the enumeration scores chunk by chunk."""
    import baselines.exact as exact

    space = Multilabel(8)
    energy = build_energy(space, "pairwise", 4, hidden=8, rank=2)
    enumeration = Enumeration.of(space, 64, energy=energy)
    every_y = torch.cat(enumeration.chunks)
    pairs = list(itertools.combinations(range(8), 2))
    expected = torch.tensor([[*y, *(y[i] * y[j] for i, j in pairs)] for y in every_y.tolist()])
    assert enumeration.features is not None and torch.equal(enumeration.features, expected)
    monkeypatch.setattr(exact, "MAX_FEATURE_BYTES", expected.numel() * 4 - 1)
    assert Enumeration.of(space, 64, energy=energy).features is None


def _sparsemax_reference(z: np.ndarray) -> np.ndarray:
    """Euclidean projection of z onto the simplex (Martins & Astudillo 2016, Algorithm 1)."""
    z_sorted = np.sort(z)[::-1]
    cumulative = np.cumsum(z_sorted)
    ks = np.arange(1, len(z) + 1)
    support = ks[1 + ks * z_sorted > cumulative].max()
    threshold = (cumulative[support - 1] - 1) / support
    return np.maximum(z - threshold, 0.0)


def test_sparsemax_conjugate_matches_sort_based_sparsemax_under_uniform_q():
    """With q uniform on N points, p = q·[1 + g − τ]₊ = sparsemax((1 + g)/N) and
    Ω*(g) = ⟨p, g⟩ − (N/2)‖p‖² + ½ (D_f with f(t) = ½(t − 1)²)."""
    generator = torch.Generator().manual_seed(5)
    n_points = 24
    g = 30 * torch.randn(16, n_points, generator=generator, dtype=torch.float64)  # large scale → sparse p
    log_q = torch.full((n_points,), -math.log(n_points), dtype=torch.float64)
    g.requires_grad_(True)
    value, _ = sparsemax_conjugate(g, log_q)
    (gradient,) = torch.autograd.grad(value.sum(), g)
    sparse_rows = 0
    for row in range(g.shape[0]):
        scores = g[row].detach().numpy()
        p = _sparsemax_reference((1 + scores) / n_points)
        reference = p @ scores - n_points / 2 * (p @ p) + 0.5
        assert value[row].item() == pytest.approx(reference, abs=1e-9)
        np.testing.assert_allclose(gradient[row].numpy(), p, atol=1e-12)  # ∂Ω*/∂g = p
        sparse_rows += int((p == 0).any())
    assert sparse_rows > 0


def test_sparsemax_conjugate_with_weighted_q_matches_the_variational_form():
    """Non-uniform q: the sort/threshold solution equals min_τ τ + E_q f*(g − τ) by bisection."""
    generator = torch.Generator().manual_seed(6)
    g = 3 * torch.randn(10, 32, generator=generator, dtype=torch.float64)
    log_q = torch.log_softmax(torch.randn(32, generator=generator, dtype=torch.float64), dim=0)
    value, tau = sparsemax_conjugate(g, log_q)
    torch.testing.assert_close(value, variational_log_partition(g, log_q, "sparsemax"), atol=1e-9, rtol=0)
    p = log_q.exp() * torch.relu(1 + g - tau[:, None])
    torch.testing.assert_close(p.sum(1), torch.ones(10, dtype=torch.float64), atol=1e-9, rtol=0)


def test_exact_sparsemax_loss_on_a_ranking_space_matches_the_reference():
    space = Permutations(4)
    torch.manual_seed(8)
    x = torch.randn(5, 3, dtype=torch.float64)
    y = space.sample_prior(5, generator=torch.Generator().manual_seed(9)).double()
    energy = build_energy(space, "permutahedron", 3, hidden=8).double()
    with torch.no_grad():
        energy.head.weight.mul_(20)  # scale up so the sparsemax distribution is sparse
    enumeration = _double_enumeration(space, 4096)
    loss = exact_sparsemax_loss(energy, space, x, y, enumeration)
    every_y = torch.cat(enumeration.chunks)
    with torch.no_grad():
        scores = energy(x, every_y).numpy()
        g_y = energy(x, y.unsqueeze(1)).squeeze(1).numpy()
    for row in range(5):
        p = _sparsemax_reference((1 + scores[row]) / space.size)
        reference = p @ scores[row] - space.size / 2 * (p @ p) + 0.5 - g_y[row]
        assert loss[row].item() == pytest.approx(reference, abs=1e-9)


def test_exact_methods_report_skipped_and_bce_unsupported():
    assert ExactMLE().check(Multilabel(17), "pairwise", ExactMLE().params({}))[0] == "skipped"
    assert ExactMLE().check(Multilabel(200), "unary", ExactMLE().params({})) is None  # closed form at any k
    assert ExactMLE().check(Permutations(9), "permutahedron", ExactMLE().params({}))[0] == "skipped"
    assert ExactMLE().check(Permutations(9), "permutahedron", ExactMLE().params({"max_permutations": 10**6})) is None
    assert ExactSparsemax().check(Multilabel(200), "unary", ExactSparsemax().params({}))[0] == "skipped"
    assert BCE().check(Permutations(4), "permutahedron", BCE().params({}))[0] == "unsupported"
    assert BCE().check(Multilabel(4), "pairwise", BCE().params({})) is None


def test_bce_on_pairwise_trains_the_unary_model_and_says_so():
    x, y = _random_multilabel(64, 4, 3, seed=10)
    fitted = BCE().fit(Multilabel(4), "pairwise", FitData(x, y), {"hidden": 8}, Budget(max_steps=20, batch_size=16), seed=0, device=torch.device("cpu"))
    assert "unary part only" in fitted.info["note"]
    assert fitted.info["steps"] == 20 and fitted.info["energy_evals"] == 20 * 16
    exact = ExactMLE().fit(Multilabel(4), "pairwise", FitData(x, y), {"hidden": 8}, Budget(max_steps=5, batch_size=16), seed=0, device=torch.device("cpu"))
    assert exact.info["energy_evals"] == 5 * 16 * 2**4


def test_exact_sparsemax_requires_a_uniform_prior_and_exact_mle_keeps_the_callers():
    """The sparse distribution q·[1 + g − τ]₊ has mode argmax g only under a uniform q, so
    exact-sparsemax requires it (refusing another); exact-mle keeps the prior it is given."""
    x, y = _random_multilabel(64, 4, 3, seed=5)
    frequency = Multilabel.with_label_frequencies(4, y)
    budget = Budget(max_steps=2, batch_size=16)
    assert ExactSparsemax.required_prior == "uniform" and ExactMLE.required_prior is None
    with pytest.raises(ValueError, match="uniform prior"):
        ExactSparsemax().fit(frequency, "unary", FitData(x, y), {"hidden": 4}, budget, seed=0, device=torch.device("cpu"))
    sparse = ExactSparsemax().fit(Multilabel(4), "unary", FitData(x, y), {"hidden": 4}, budget, seed=0, device=torch.device("cpu"))
    mle = ExactMLE().fit(frequency, "unary", FitData(x, y), {"hidden": 4}, budget, seed=0, device=torch.device("cpu"))
    assert mle.space is frequency
    assert (sparse.divergence, mle.divergence) == ("sparsemax", "kl")


@pytest.mark.parametrize("scale", [30.0, 0.5, 0.002])  # supports: a few entries, hundreds, nearly all
def test_sparsemax_threshold_by_fixed_point_equals_the_full_sort(scale):
    """Michelot's fixed point gives the full-sort τ (to rounding), whether the support is a few
    entries, hundreds or nearly all of Y; q weighted; and its p sums to one."""
    generator = torch.Generator().manual_seed(11)
    n_points = 5000
    g = scale * n_points * torch.randn(6, n_points, generator=generator, dtype=torch.float64) / 100
    log_q = torch.log_softmax(0.3 * torch.randn(n_points, generator=generator, dtype=torch.float64), dim=0)
    q = log_q.exp().expand_as(g)
    s = 1 + g
    s_sorted, order = s.sort(dim=1, descending=True)  # the textbook full sort
    q_sorted = q.gather(1, order)
    thresholds = ((q_sorted * s_sorted).cumsum(1) - 1) / q_sorted.cumsum(1)
    support = (s_sorted > thresholds).sum(1, keepdim=True)
    expected = thresholds.gather(1, support - 1).squeeze(1)
    _, tau = sparsemax_conjugate(g, log_q)
    torch.testing.assert_close(tau, expected, atol=1e-10, rtol=1e-10)
    assert torch.allclose((q * torch.relu(s - tau[:, None])).sum(1), torch.ones(6, dtype=torch.float64))
    sizes = support.squeeze(1)
    regime = {30.0: (1, 100), 0.5: (101, n_points - 1), 0.002: (n_points, n_points)}[scale]
    assert regime[0] <= int(sizes.min()) and int(sizes.max()) <= regime[1]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("scale", [30.0, 0.5, 0.0002])
def test_uniform_sparsemax_threshold_equals_the_full_sort(scale, dtype):
    """Under a uniform q (every exact-sparsemax fit) the threshold takes its own rounds
    (Newton steps from one clamped difference): the textbook sort's τ, in float64 to 1e-10 and in
    float32 (training's dtype, on yeast's 2^14 label sets) to its rounding, for supports of a
    few entries, hundreds, and all of Y; and p sums to one."""
    from ebm.objective import sparsemax_threshold

    generator = torch.Generator().manual_seed(12)
    n_points = 2**14
    g = (scale * n_points * torch.randn(6, n_points, generator=generator, dtype=torch.float64) / 100).to(dtype)
    q = torch.full((n_points,), 2.0**-14, dtype=dtype)
    s = 1 + g
    s_sorted = s.double().sort(dim=1, descending=True).values  # the textbook full sort, in float64
    thresholds = (s_sorted.cumsum(1) * 2.0**-14 - 1) / (2.0**-14 * torch.arange(1, n_points + 1))
    support = (s_sorted > thresholds).sum(1, keepdim=True)
    expected = thresholds.gather(1, support - 1).squeeze(1)
    tau = sparsemax_threshold(s, q)
    tolerance = 1e-10 if dtype == torch.float64 else 1e-6 * float(s.abs().max())
    torch.testing.assert_close(tau.double(), expected, atol=tolerance, rtol=0)
    mass = (q.double() * torch.relu(s.double() - tau.double()[:, None])).sum(1)
    torch.testing.assert_close(mass, torch.ones(6, dtype=torch.float64), atol=1e3 * tolerance, rtol=0)
    regime = {30.0: (1, 300), 0.5: (301, n_points - 1), 0.0002: (n_points, n_points)}[scale]
    assert regime[0] <= int(support.min()) and int(support.max()) <= regime[1]


def test_uniform_sparsemax_threshold_ends_its_rounds_in_training(monkeypatch):
    """The uniform threshold's rounds end at the fixed point in real training steps: on this fit
    (yeast's k = 14, random data) a τ stepping back by rounding once sent a size back and forth
    by one until the 64 rounds ran out and the full sort took over (step 11–20 here)."""
    import ebm.objective as objective
    from ebm.method import Budget
    from harness.perf.common import random_fit_data

    sorts = []
    sort = objective._sorted_sparsemax_threshold
    monkeypatch.setattr(objective, "_sorted_sparsemax_threshold", lambda s, q: (sorts.append(s.shape), sort(s, q))[1])
    space = Multilabel(14)
    method = ExactSparsemax()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread, as a harness run trains: the sums' order, hence their rounding
    try:
        fitted = method.fit(space, "unary", random_fit_data(14, seed=0), method.params({}),
                            Budget(max_steps=20, batch_size=64), seed=0, device=torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert fitted.info["steps"] == 20 and sorts == []
