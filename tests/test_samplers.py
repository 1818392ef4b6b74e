"""MCMC kernels: stationary distributions vs exact enumeration (chi-square, k = 4)."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from ebm.energies import build_energy
from ebm.samplers import gibbs_sweep, mh_transpositions, transpose_labels
from ebm.spaces import Multilabel, PermutationMatrices, Permutations

CHAINS = 20_000


def random_energy(space, model, seed=0, rank=2):
    torch.manual_seed(seed)
    energy = build_energy(space, model, 3, hidden=8, rank=rank)
    with torch.no_grad():
        for parameter in energy.parameters():
            parameter.normal_(std=0.8)  # a clearly non-uniform target
    return energy.eval()


def exact_probabilities(energy, space, x):
    """p(y|x) ∝ q(y) e^{g(x, y)} on every y, enumeration order, float64 (1, |Y|)."""
    everything = space.enumerate_all()
    with torch.no_grad():
        return torch.softmax((energy(x, everything) + space.log_prior(everything)).double(), dim=1)


def chi_square_pvalue(space, states, probs):
    counts = torch.bincount(space.enumeration_index(states).reshape(-1), minlength=space.size).double()
    return float(chisquare(counts.numpy(), (probs.reshape(-1) / probs.sum() * counts.sum()).numpy()).pvalue)


class ForwardOnly(torch.nn.Module):
    """Hides ``pairwise_terms`` so the sampler takes its generic two-evaluation path."""

    def __init__(self, energy):
        super().__init__()
        self.energy = energy

    def forward(self, x, y):
        return self.energy(x, y)


@pytest.mark.parametrize("model,generic", [("pairwise", False), ("pairwise", True), ("mlp", False), ("unary", False),
                                           ("unary", True)])
def test_gibbs_targets_prior_times_exp_energy(model, generic):
    space = Multilabel(4, torch.tensor([0.2, 0.5, 0.7, 0.9]))
    energy = random_energy(space, model)
    x = torch.randn(1, 3, generator=torch.Generator().manual_seed(5))
    probs = exact_probabilities(energy, space, x)
    assert probs.max() > 3 * probs.min()  # the target is far from uniform
    sampler_energy = ForwardOnly(energy) if generic else energy
    generator = torch.Generator().manual_seed(0)
    states = space.sample_prior((1, CHAINS), generator=generator)
    for _ in range(20):
        states, evals = gibbs_sweep(sampler_energy, space, x, states, generator=generator)
    per_site = 1 if (model in ("pairwise", "unary") and not generic) else 2
    assert evals == CHAINS * 4 * per_site
    assert chi_square_pvalue(space, states, probs) > 0.01


def test_unary_gibbs_sweep_is_the_site_loop_in_one_draw():
    """Linear in y, the sites are independent: the one-draw sweep uses the site loop's noise in
    the site loop's order, so from the same generator it makes the same states."""
    space = Multilabel(6, torch.tensor([0.1, 0.3, 0.5, 0.5, 0.7, 0.9]))
    energy = random_energy(space, "unary")
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    start = space.sample_prior((5, 400), generator=torch.Generator().manual_seed(2))
    fast, _ = gibbs_sweep(energy, space, x, start, generator=torch.Generator().manual_seed(3))
    loop, _ = gibbs_sweep(ForwardOnly(energy), space, x, start, generator=torch.Generator().manual_seed(3))
    assert torch.equal(fast, loop) and fast.float().std() > 0


@pytest.mark.parametrize("model,rank", [("pairwise", 2), ("pairwise", 1), ("pairwise", 0), ("unary", 2), ("mlp", 2)],
                         ids=["pairwise", "pairwise-rank1", "pairwise-rank0", "unary", "mlp"])
def test_gibbs_sweeps_are_the_textbook_site_loop(model, rank):
    """Several sweeps in one call (terms computed once, each sweep's noise in one draw) make the
    states of the textbook loop written here: per sweep, per site i, a fresh U(0, 1) draw for every
    chain and y_i = [ν < σ(g(y^{i←1}) − g(y^{i←0}) + logit π_i)], with g scored by the energy's own
    forward. On CPU one (k, n, c) draw is the k draws of (n, c) in order, so the states are equal;
    a pairwise Δ_i from the energy's terms rather than two forwards differs in the last bits only
    (no decision here lies that close). Rank 1 builds U from elementwise outer products, rank 0
    hands the compiled loop one U for every input (``ebm.compiled.shared_rows``)."""
    space = Multilabel(7, torch.tensor([0.1, 0.3, 0.5, 0.5, 0.7, 0.9, 0.4]))
    energy = random_energy(space, model, rank=rank)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    start = space.sample_prior((5, 30), generator=torch.Generator().manual_seed(2)).float()
    sweeps = 3
    fast, evals = gibbs_sweep(energy, space, x, start, generator=torch.Generator().manual_seed(3), sweeps=sweeps)
    generator, states = torch.Generator().manual_seed(3), start.clone()
    logits = space.prior_logits()
    with torch.no_grad():
        for _ in range(sweeps):
            for i in range(space.k):
                on, off = states.clone(), states.clone()
                on[..., i], off[..., i] = 1.0, 0.0
                delta = energy(x, on) - energy(x, off) + logits[i]
                states[..., i] = (torch.rand(states.shape[:2], generator=generator) < torch.sigmoid(delta)).float()
    assert torch.equal(fast, states) and not torch.equal(fast, start)
    assert evals == 5 * 30 * space.k * sweeps * (2 if model == "mlp" else 1)


@pytest.mark.parametrize("space,model", [(Permutations(4), "permutahedron"), (PermutationMatrices(4), "birkhoff")], ids=["perm", "birkhoff"])
def test_transposition_mh_targets_exp_energy(space, model):
    energy = random_energy(space, model)
    x = torch.randn(1, 3, generator=torch.Generator().manual_seed(5))
    probs = exact_probabilities(energy, space, x)
    assert probs.max() > 3 * probs.min()
    generator = torch.Generator().manual_seed(0)
    states = space.sample_prior((1, CHAINS), generator=generator)
    states, evals = mh_transpositions(energy, space, x, states, 60, generator=generator)
    assert evals == CHAINS * 61
    assert chi_square_pvalue(space, states, probs) > 0.01
    # and the test has power: the starting (prior) draws are rejected
    assert chi_square_pvalue(space, space.sample_prior((1, CHAINS), generator=generator), probs) < 1e-6


@pytest.mark.parametrize("space,model", [(Multilabel(5), "mlp"), (Permutations(5), "permutahedron"),
                                         (PermutationMatrices(4), "birkhoff")], ids=["mlp-gibbs", "perm-mh", "birkhoff-mh"])
def test_kernels_score_with_the_trunk_once_and_make_the_same_states(space, model):
    """The kernels compute h(x) once per call (``candidate_scorer``); through ``ForwardOnly``
    every candidate set is scored by ``energy(x, ·)`` from scratch, as before: from the same
    generator both make the same states (bit for bit, except that Birkhoff's chains are scored
    from their positions, the same terms summed in another order:
    test_birkhoff_chains_moved_as_positions_are_the_textbook_matrix_chains)."""
    energy = random_energy(space, model)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    start = space.sample_prior((6, 50), generator=torch.Generator().manual_seed(2))
    if model == "mlp":
        kernel = lambda e, g: gibbs_sweep(e, space, x, start, generator=g)[0]  # noqa: E731
    else:
        kernel = lambda e, g: mh_transpositions(e, space, x, start, 30, generator=g)[0]  # noqa: E731
    first_layer = energy.from_features if model == "mlp" else energy.head  # the head's per-input terms
    calls = []
    first_layer.register_forward_hook(lambda *_: calls.append(1))
    once = kernel(energy, torch.Generator().manual_seed(3))
    assert len(calls) == 1  # θ(x) (W_h h(x) for the mlp) once per kernel call, not once per step
    every_call = kernel(ForwardOnly(energy), torch.Generator().manual_seed(3))
    assert len(calls) > 2  # through ForwardOnly: once per scored candidate set
    assert torch.equal(once, every_call) and not torch.equal(once, start)


@pytest.mark.parametrize("space,model", [(Multilabel(5), "unary"), (Multilabel(5), "pairwise"), (Multilabel(5), "mlp"),
                                         (Permutations(5), "permutahedron"), (PermutationMatrices(4), "birkhoff")])
def test_candidate_scorer_is_the_score_bit_for_bit(space, model):
    """``Energy.candidate_scorer(h)`` (the head's per-input terms computed once) scores per-input
    candidates with the same bits as ``score(h, y, False)``, call after call."""
    energy = random_energy(space, model)
    h = energy.features(torch.randn(6, 3, generator=torch.Generator().manual_seed(1)))
    scorer = energy.candidate_scorer(h)
    for seed in range(3):
        y = space.sample_prior((6, 7), generator=torch.Generator().manual_seed(seed)).float()
        assert torch.equal(scorer(y), energy.score(h, y, False))


@pytest.mark.parametrize("space,model", [(Permutations(5), "permutahedron"), (PermutationMatrices(4), "birkhoff")])
def test_linear_energies_score_rankings_from_their_positions(space, model):
    """``positions_score`` of a linear energy's profits (Σ_j profit[j, position_j], no encoded
    samples) is ⟨θ(x), y⟩ of the encoded samples, ``energy(x, y)``'s values and gradient in θ within
    float rounding (the same terms in another order)."""
    from ebm.energies import positions_score

    energy = random_energy(space, model)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    positions = space._to_positions(space.sample_prior((6, 7), generator=torch.Generator().manual_seed(3)))
    weights = torch.randn(6, 7, generator=torch.Generator().manual_seed(4))
    theta = energy.linear_scores(x).detach().requires_grad_()
    got = positions_score(space.assignment_scores(theta), positions)
    (grad,) = torch.autograd.grad((got * weights).sum(), theta)
    encoded = space._from_positions(positions).float()
    expected = (theta.unsqueeze(1) * encoded).flatten(2).sum(-1)  # ⟨θ, y⟩ of each encoded sample
    (grad_ref,) = torch.autograd.grad((expected * weights).sum(), theta)
    assert got.shape == (6, 7) and got.std() > 0.1
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got, energy(x, encoded).detach())
    torch.testing.assert_close(grad, grad_ref)


def test_transpositions_swap_exactly_two_labels():
    y = Permutations(5).sample_prior((3, 4), generator=torch.Generator().manual_seed(0))
    a = torch.tensor([[0, 1, 2, 3]] * 3)
    b = torch.tensor([[4, 0, 3, 2]] * 3)
    swapped = transpose_labels(y, a, b, event_dims=1)
    assert ((swapped != y).sum(-1) == 2).all()
    assert torch.equal(swapped.gather(-1, a[..., None]), y.gather(-1, b[..., None]))
    matrices = PermutationMatrices(5).sample_prior((3, 4), generator=torch.Generator().manual_seed(0))
    swapped = transpose_labels(matrices, a, b, event_dims=2)
    assert torch.equal(swapped.sum(-1), torch.ones(3, 4, 5)) and torch.equal(swapped.sum(-2), torch.ones(3, 4, 5))
    assert torch.equal(swapped[0, 0, 0], matrices[0, 0, 4]) and torch.equal(swapped[0, 0, 4], matrices[0, 0, 0])


def test_samplers_accept_single_chains_and_refuse_the_wrong_space():
    space = Multilabel(5)
    energy = random_energy(space, "unary")
    x = torch.randn(2, 3)
    y, _ = gibbs_sweep(energy, space, x, space.sample_prior(2))
    assert y.shape == (2, 5)
    ranking = Permutations(4)
    y, _ = mh_transpositions(random_energy(ranking, "permutahedron"), ranking, x, ranking.sample_prior(2), 3)
    assert y.shape == (2, 4) and torch.equal(y.sort(-1).values, torch.arange(4.0).expand(2, 4))
    with pytest.raises(ValueError, match="mh_transpositions"):
        gibbs_sweep(energy, ranking, x, ranking.sample_prior(2))
    with pytest.raises(ValueError, match="gibbs_sweep"):
        mh_transpositions(energy, space, x, space.sample_prior(2), 1)


def test_birkhoff_chains_moved_as_positions_are_the_textbook_matrix_chains(monkeypatch):
    """mh_transpositions moves permutation-matrix chains as positions and scores the linear energy
    from them (Σ_j Θ[j, position of j]): no proposal becomes a matrix, only the final states. The
    textbook kernel on the k × k matrices themselves (swap two rows, score ⟨Θ, P⟩, accept with
    min(1, e^{Δg}), select the matrices) makes the same states from the same random numbers (drawn
    a block of steps at once, ``MH_NOISE_BLOCK``): Δg's terms are summed in another order, which
    could flip only a decision whose log u lies within rounding of Δg (none of these 2,400)."""
    from ebm.samplers import MH_NOISE_BLOCK, random_label_pairs
    from ebm.spaces import uniform_noise

    space = PermutationMatrices(5)
    energy = random_energy(space, "birkhoff")
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    start = space.sample_prior((4, 6), generator=torch.Generator().manual_seed(2))
    encoded = []
    from_positions = space._from_positions
    monkeypatch.setattr(space, "_from_positions", lambda positions: encoded.append(1) or from_positions(positions))
    steps = MH_NOISE_BLOCK + 36  # two blocks of randomness
    got, _ = mh_transpositions(energy, space, x, start, steps, generator=torch.Generator().manual_seed(3))
    assert len(encoded) == 1  # the final states only
    generator, states = torch.Generator().manual_seed(3), start.clone()
    with torch.no_grad():
        log_target = energy(x, states) + space.log_prior(states)
        for block in (MH_NOISE_BLOCK, 36):  # a block's pairs, then its acceptance noise, step-major
            firsts, seconds = random_label_pairs((block, 4, 6), 5, generator, None)
            log_noise = torch.log(uniform_noise((block, 4, 6), generator, None))
            for t in range(block):
                proposal = transpose_labels(states, firsts[t], seconds[t], event_dims=2)
                log_proposal = energy(x, proposal) + space.log_prior(proposal)
                accept = log_noise[t] < (log_proposal - log_target)
                states = torch.where(accept[..., None, None], proposal, states)
                log_target = torch.where(accept, log_proposal, log_target)
    assert torch.equal(got, states) and not torch.equal(states, start)
