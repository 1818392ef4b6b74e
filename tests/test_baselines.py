"""Baselines against independent references: MCMC kernels (as the baselines drive them) reproduce
brute-force distributions; every baseline learns planted problems better than the best constant
predictor; NCE approaches exact MLE; unsupported combinations are reported, never raised."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import chisquare, kendalltau
from sklearn.metrics import f1_score

from baselines import registry
from baselines.gwg import GWGKernel
from baselines.mcmc import PersistentChains, SweepKernel
from baselines.minmax import PlackettLuceSampler
from baselines.perceptron import loss_augmented_mode, margin_distance
from ebm.energies import build_energy
from ebm.method import Budget, FitData
from ebm.spaces import Multilabel, PermutationMatrices, Permutations

MINE = ["mcmc-pcd", "mcmc-gwg", "perceptron", "minmax-reinforce", "nce"]
RANKING_METHODS = ["mcmc-pcd", "perceptron", "minmax-reinforce", "nce"]
SMALL = {"hidden": 32, "depth": 1, "lr": 1e-2}
BUDGET = Budget(max_steps=300, batch_size=64, eval_every=300)


# ---------------------------------------------------------------- planted problems (built here)

def _all_subsets(k: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=k)))


def planted_ising(seed: int, n: int, d: int = 10, k: int = 8):
    """y|x ∝ exp(⟨Wx + b, y⟩ + ½ yᵀUy) on {0,1}^k, sampled exactly from the enumerated law."""
    gen = torch.Generator().manual_seed(seed)
    weights, bias = 0.8 * torch.randn(d, k, generator=gen), 0.5 * torch.randn(k, generator=gen)
    coupling = torch.randn(k, k, generator=gen)
    coupling = (coupling + coupling.T) / 2 * (1 - torch.eye(k))
    x = torch.randn(n, d, generator=gen)
    subsets = _all_subsets(k)
    logits = (x @ weights + bias) @ subsets.T + 0.5 * ((subsets @ coupling) * subsets).sum(-1)
    y = subsets[torch.multinomial(torch.softmax(logits, 1), 1, generator=gen).squeeze(1)]
    return x, y


def planted_plackett_luce(seed: int, n: int, d: int = 10, k: int = 5) -> tuple[torch.Tensor, np.ndarray]:
    """Rankings from Plackett–Luce with scores 1.5·Vx (Gumbel-argsort); ranks[i, j] = position of label j."""
    rng = np.random.default_rng(seed)
    weights = 1.5 * rng.standard_normal((d, k)) / np.sqrt(d) * 2
    x = rng.standard_normal((n, d))
    order = np.argsort(-(x @ weights + rng.gumbel(size=(n, k))), axis=1)
    return torch.tensor(x, dtype=torch.float32), np.argsort(order, axis=1)


@pytest.fixture(scope="module")
def ising():
    x, y = planted_ising(0, 1400)
    return FitData(x[:800], y[:800]), x[1000:], y[1000:]


@pytest.fixture(scope="module")
def plackett_luce():
    x, ranks = planted_plackett_luce(1, 1200)
    return x[:800], ranks[:800], x[800:], ranks[800:]


def example_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return f1_score(y_true, y_pred, average="samples", zero_division=1.0)


def best_constant_f1(y_true: np.ndarray) -> float:
    k = y_true.shape[1]
    return max(example_f1(y_true, np.tile(np.array(c, dtype=np.int8), (len(y_true), 1))) for c in itertools.product([0, 1], repeat=k))


def mean_kendall(ranks_true: np.ndarray, ranks_pred: np.ndarray) -> float:
    return float(np.mean([kendalltau(a, b).statistic for a, b in zip(ranks_true, ranks_pred)]))


def best_constant_kendall(ranks_true: np.ndarray) -> float:
    """max over the k! constant rankings of the mean Kendall τ, with τ = 1 − 4·discordant/(k(k−1))."""
    k = ranks_true.shape[1]
    i, j = np.triu_indices(k, 1)
    true_sign = np.sign(ranks_true[:, i] - ranks_true[:, j])
    best = -1.0
    for perm in itertools.permutations(range(k)):
        perm = np.asarray(perm)
        discordant = (true_sign != np.sign(perm[i] - perm[j])).sum(1)
        best = max(best, float(np.mean(1 - 4 * discordant / (k * (k - 1)))))
    return best


def _fit(name: str, space, model: str, data: FitData, **overrides):
    method = registry.get_method(name)
    params = method.params({**SMALL, **overrides})
    assert method.check(space, model, params) is None
    return method.fit(space, model, data, params, BUDGET, seed=0, device=torch.device("cpu"))


# ---------------------------------------------------------------- samplers as the baselines use them

def _random_energy(space, model: str, seed: int, scale: float = 1.0):
    torch.manual_seed(seed)
    energy = build_energy(space, model, 3, hidden=8, depth=1, rank=2)
    with torch.no_grad():
        for p in energy.parameters():
            p.normal_(0.0, scale)
    return energy.eval()


def _chi_square_against_enumeration(space, energy, states: torch.Tensor, x: torch.Tensor) -> float:
    """p-value of the states' empirical law (all for input x) against q·exp(g) by brute force."""
    candidates = space.enumerate_all()
    with torch.no_grad():
        probs = torch.softmax(energy(x[:1], candidates)[0] + space.log_prior(candidates), 0).double()
    flat_states, flat_candidates = states.reshape(len(states), -1), candidates.reshape(len(candidates), -1)
    index = (flat_states[:, None, :] == flat_candidates[None]).all(-1).float().argmax(1)
    counts = np.bincount(index.numpy(), minlength=len(candidates))
    expected = probs.numpy() / probs.numpy().sum() * len(states)
    # pool the cells expected fewer than 5 times (the chi-square approximation needs it)
    rare = expected < 5
    assert (~rare).sum() >= 4, "degenerate test distribution"
    if rare.any():
        counts = np.append(counts[~rare], counts[rare].sum())
        expected = np.append(expected[~rare], expected[rare].sum())
    return float(chisquare(counts, expected).pvalue)


CHAINS = 4000


@pytest.mark.parametrize(
    "space, model",
    [
        (Multilabel(4, prior_probs=torch.tensor([0.2, 0.5, 0.7, 0.9])), "pairwise"),
        (Multilabel(4), "mlp"),
        (Permutations(4), "permutahedron"),
        (PermutationMatrices(4), "birkhoff"),
    ],
    ids=["gibbs-ising-prior", "gibbs-mlp", "mh-permutahedron", "mh-birkhoff"],
)
def test_pcd_chains_reach_the_exact_distribution(space, model):
    """Per-example persistent chains (all sharing one x) advanced by the PCD kernel, from the prior."""
    energy = _random_energy(space, model, seed=3, scale=0.5)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, generator=gen).expand(CHAINS, 3)
    chains = PersistentChains.start(space, torch.zeros(CHAINS, *space.event_shape), 1, "prior", gen)
    kernel = SweepKernel(sweeps=5, generator=gen)
    index = torch.arange(CHAINS)
    for _ in range(3):  # persistence: three updates of 5 sweeps each
        states, evals = chains.advance(kernel, energy, space, x, index)
    assert evals > 0 and torch.equal(chains.states, states)
    assert _chi_square_against_enumeration(space, energy, states[:, 0], x) > 0.01


@pytest.mark.parametrize("model", ["pairwise", "mlp"])
def test_gwg_reaches_the_exact_distribution(model):
    space = Multilabel(4, prior_probs=torch.tensor([0.3, 0.5, 0.6, 0.8]))
    energy = _random_energy(space, model, seed=5, scale=0.5)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, generator=gen).expand(CHAINS, 3)
    kernel = GWGKernel(sweeps=10, generator=gen)
    states, evals = kernel(energy, space, x, space.sample_prior((CHAINS, 1), generator=gen))
    assert evals == CHAINS * (10 * 4 + 1)
    assert 0.05 < kernel.acceptance[-1] <= 1.0
    assert _chi_square_against_enumeration(space, energy, states[:, 0], x) > 0.01


@pytest.mark.parametrize("model", ["pairwise", "mlp"])
def test_gwg_gradient_inside_a_stacked_step_is_the_lone_one(model):
    """Inside vmap (a stacked step) GWG's gradient in y goes through torch.func.vjp, alone
    through torch.autograd.grad: the same values and flip logits for each member's states."""
    from baselines.gwg import value_and_flip_logits

    space = Multilabel(5)
    energy = _random_energy(space, model, seed=6, scale=0.5)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, generator=gen)
    members = space.sample_prior((3, 4, 2), generator=gen)  # 3 members × 4 inputs × 2 chains

    def log_density(states):
        return energy(x, states) + space.log_prior(states)

    stacked = torch.func.vmap(lambda states: value_and_flip_logits(log_density, states))(members)
    for member, (value, logits) in zip(members, zip(*stacked)):
        alone_value, alone_logits = value_and_flip_logits(log_density, member)
        torch.testing.assert_close(value, alone_value, atol=1e-6, rtol=0)
        torch.testing.assert_close(logits, alone_logits, atol=1e-6, rtol=0)
    assert float(stacked[1].abs().max()) > 0  # the logits are not trivially zero


def test_chi_square_detects_a_wrong_distribution():
    """Guard that the chains test can fail: prior draws are not samples of q·exp(g)."""
    space = Multilabel(4)
    energy = _random_energy(space, "pairwise", seed=3, scale=0.5)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, generator=gen).expand(CHAINS, 3)
    assert _chi_square_against_enumeration(space, energy, space.sample_prior(CHAINS, generator=gen), x) < 1e-6


def test_plackett_luce_sampler_log_probabilities_are_a_distribution():
    """Exact PL probabilities: the sampler's log p sums to one over the k! orders (via frequencies)."""
    space = Permutations(3)
    sampler = PlackettLuceSampler(2, space, hidden=4)
    x = torch.randn(1, 2)
    gen = torch.Generator().manual_seed(0)
    y, log_prob = sampler.sample(x, 6000, gen)
    keys = [tuple(v) for v in y[0].long().tolist()]
    probs = {key: float(lp) for key, lp in zip(keys, log_prob[0].detach().double().exp())}
    assert len(probs) == 6 and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    counts = np.array([keys.count(key) for key in probs])
    expected = np.array(list(probs.values()))
    assert chisquare(counts, expected / expected.sum() * len(keys)).pvalue > 0.01


def _textbook_plackett_luce_log_prob(scores, order):
    """Σ_i s_{o_i} − log Σ_{j≥i} e^{s_{o_j}}, one position at a time (torch.logsumexp per suffix)."""
    ordered = scores[:, None, :].expand(-1, order.shape[1], -1).gather(-1, order)
    return sum(ordered[..., i] - torch.logsumexp(ordered[..., i:], dim=-1) for i in range(order.shape[-1]))


@pytest.mark.parametrize("spread", [3.0, 2000.0], ids=["moderate", "beyond-float64-exp"])
def test_plackett_luce_log_prob_is_the_textbook_product(spread):
    """plackett_luce_log_prob (the suffix log-sum-exps by their recurrence, all draws at once) equals
    the textbook suffix log-sum-exp in float64, values and gradients, also when scores lie thousands of
    nats apart (where suffix sums of e^{s − max s} underflow); over all k! orders it sums to one."""
    from baselines.minmax import plackett_luce_log_prob

    k, generator = 6, torch.Generator().manual_seed(4)
    scores = (spread * torch.randn(3, k, generator=generator, dtype=torch.float64)).requires_grad_()
    orders = torch.tensor(list(itertools.permutations(range(k))))  # all 720 orders, for every input
    orders = orders.expand(3, *orders.shape)
    got, expected = plackett_luce_log_prob(scores, orders), _textbook_plackett_luce_log_prob(scores, orders)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(torch.logsumexp(got, dim=1), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)
    weights = torch.randn(got.shape, generator=generator, dtype=torch.float64)
    grad, = torch.autograd.grad((got * weights).sum(), scores)
    expected_grad, = torch.autograd.grad((expected * weights).sum(), scores)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-9)


def test_plackett_luce_log_prob_in_float32_is_within_rounding_of_the_suffix_logcumsumexp():
    """In float32 (a sampler's scores) the vectorised recurrence agrees with the flipped
    logcumsumexp the sampler used before to float rounding, and stays in float32."""
    from baselines.minmax import plackett_luce_log_prob

    generator = torch.Generator().manual_seed(5)
    scores = 4 * torch.randn(8, 11, generator=generator)
    order = (scores[:, None, :] + torch.rand(8, 16, 11, generator=generator).log().neg().log().neg()).argsort(
        dim=-1, descending=True)
    ordered = scores[:, None, :].expand(-1, 16, -1).gather(-1, order)
    before = (ordered - ordered.flip(-1).logcumsumexp(-1).flip(-1)).sum(-1)
    got = plackett_luce_log_prob(scores, order)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("space, model", [(Multilabel(5), "pairwise"), (Multilabel(5), "mlp"), (Multilabel(5), "unary"), (Permutations(4), "permutahedron"), (PermutationMatrices(4), "birkhoff")])
def test_loss_augmented_mode_is_the_brute_force_argmax(space, model):
    energy = _random_energy(space, model, seed=7)
    x = torch.randn(6, 3)
    y = space.sample_prior(6, generator=torch.Generator().manual_seed(2))
    candidates = space.enumerate_all()
    with torch.no_grad():
        scores = energy(x, candidates) + space.log_prior(candidates)
        augmented = scores + 1.5 * margin_distance(space, y[:, None].expand(-1, len(candidates), *space.event_shape), candidates.expand(6, *candidates.shape))
        expected = augmented.max(1).values
        found = loss_augmented_mode(energy, space, x, y, 1.5)
        found_score = energy(x, found.unsqueeze(1))[:, 0] + space.log_prior(found) + 1.5 * margin_distance(space, y, found)
    torch.testing.assert_close(found_score, expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("model", ["pairwise", "unary", "mlp"])
def test_the_loss_augmented_energy_scores_by_label_features(model):
    """The perceptron's g(x, y) + ⟨c, y⟩ as ⟨[c, w(x)], [y, φ(y)]⟩ (what a mode by enumeration
    multiplies) equals the wrapper's own scoring, per example and shared; none for mlp."""
    from baselines.perceptron import LinearlyShiftedEnergy

    space = Multilabel(5)
    energy = _random_energy(space, model, seed=3).double()
    wrapped = LinearlyShiftedEnergy(energy)
    x = torch.randn(4, 3, dtype=torch.float64)
    x_aug = wrapped.pack(x, torch.randn(4, 5, dtype=torch.float64))
    y = space.sample_prior((4, 7), generator=torch.Generator().manual_seed(1)).double()
    features = wrapped.label_features(y)
    if model == "mlp":
        assert features is None
        return
    weights = wrapped.label_feature_weights(x_aug)
    with torch.no_grad():
        torch.testing.assert_close((weights[:, None] * features).sum(-1), wrapped(x_aug, y), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(weights @ wrapped.label_features(y[0]).T, wrapped(x_aug, y[0]), rtol=1e-12,
                                   atol=1e-12)


# ---------------------------------------------------------------- every baseline learns

@pytest.mark.parametrize("name", MINE)
def test_learns_planted_ising_beyond_the_best_constant(name, ising):
    data, x_test, y_test = ising
    space = Multilabel(8)
    fitted = _fit(name, space, "pairwise", data, **({"chains": 2} if name.startswith("mcmc") else {}))
    assert fitted.info["steps"] == BUDGET.max_steps and fitted.info["energy_evals"] > 0
    truth = space.to_labels(y_test)
    score = example_f1(truth, space.to_labels(fitted.predict(x_test)))
    constant = best_constant_f1(truth)
    print(f"{name}: example-F1 {score:.3f} vs best constant {constant:.3f}")
    assert score > constant + 0.02


@pytest.mark.parametrize("name", RANKING_METHODS)
@pytest.mark.parametrize("model", ["permutahedron", "birkhoff"])
def test_learns_planted_rankings_beyond_the_best_constant(name, model, plackett_luce):
    x_train, ranks_train, x_test, ranks_test = plackett_luce
    space = Permutations(5) if model == "permutahedron" else PermutationMatrices(5)
    fitted = _fit(name, space, model, FitData(x_train, space.from_labels(ranks_train)))
    predicted = space.to_labels(fitted.predict(x_test))
    score, constant = mean_kendall(ranks_test, predicted), best_constant_kendall(ranks_test)
    print(f"{name}/{model}: Kendall tau {score:.3f} vs best constant {constant:.3f}")
    assert score > constant + 0.05


def test_nce_nll_is_within_ten_percent_of_exact_mle(ising):
    data, x_test, y_test = ising
    space = Multilabel(8)
    # lr 3e-3: at 1e-2 exact MLE itself overfits these 800 examples (train NLL 2.0, test 4.2)
    nll = {name: float(_fit(name, space, "pairwise", data, lr=3e-3).nll(x_test, y_test)[0].mean()) for name in ("nce", "exact-mle")}
    print(f"test NLL: nce {nll['nce']:.4f}, exact-mle {nll['exact-mle']:.4f}")
    assert nll["nce"] <= 1.10 * nll["exact-mle"]


@pytest.mark.parametrize(
    "name, overrides, per_example",
    [
        # Gibbs on the Ising energy: one closed-form evaluation per site, k per sweep and chain, + data + chains
        ("mcmc-pcd", {"chains": 3, "sweeps": 2}, 3 * 2 * 6 + 1 + 3),
        # GWG: sweeps·k proposals + the start state, per chain, + data + chains
        ("mcmc-gwg", {"chains": 3, "sweeps": 2}, 3 * (2 * 6 + 1) + 1 + 3),
        ("nce", {"n_samples": 7}, 1 + 7),
        # two sampler steps of 5 samples each, + data
        ("minmax-reinforce", {"n_samples": 5, "sampler_steps": 2}, 1 + 2 * 5),
        # enumeration of 2^6 for the mode, + data and mode scores
        ("perceptron", {}, 2**6 + 2),
    ],
)
def test_energy_evaluations_are_counted(name, overrides, per_example):
    x, y = planted_ising(2, 40, k=6)
    method = registry.get_method(name)
    budget = Budget(max_steps=3, batch_size=8, eval_every=3)
    fitted = method.fit(Multilabel(6), "pairwise", FitData(x, y), method.params({**SMALL, **overrides}), budget, seed=0, device=torch.device("cpu"))
    assert fitted.info["energy_evals"] == 3 * 8 * per_example


# ---------------------------------------------------------------- unsupported is reported

SPACES = [
    (Multilabel(6), "unary"), (Multilabel(6), "pairwise"), (Multilabel(6), "mlp"),
    (Permutations(5), "permutahedron"), (PermutationMatrices(5), "birkhoff"),
]


@pytest.mark.parametrize("name", MINE)
def test_check_reports_instead_of_raising(name):
    method = registry.get_method(name)
    for space, model in SPACES:
        verdict = method.check(space, model, method.params())
        assert verdict is None or (verdict[0] in ("unsupported", "skipped") and verdict[1])
    gwg = registry.get_method("mcmc-gwg")
    status, reason = gwg.check(Permutations(5), "permutahedron", gwg.params())
    assert status == "unsupported" and "permutation" in reason
    assert registry.get_method("mcmc-pcd").check(Multilabel(4), "pairwise", {**SMALL, "sweeps": 0})[0] == "unsupported"
