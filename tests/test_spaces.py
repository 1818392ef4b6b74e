"""Output spaces: sizes, enumeration, encodings, priors (acceptance 5: chi-square), linear mode oracles."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, chisquare

from ebm.spaces import (
    MODELS,
    PERMUTATION_PLACEMENT_MAX_K,
    PERMUTATION_TABLE_MAX_K,
    RANKING,
    Multilabel,
    OutputSpace,
    PermutationMatrices,
    Permutations,
    PermutationSpace,
    _permutation_table,
    _placement_table,
    is_binary,
    is_ranking,
    make_space,
    place_labels,
    random_permutations,
)

SPACES = [Multilabel(5), Multilabel(5, torch.tensor([0.1, 0.3, 0.5, 0.7, 0.95])), Permutations(4), PermutationMatrices(4)]


def chi_square_pvalue(space, samples: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson chi-square of the samples' histogram over Y against probabilities in enumeration order."""
    counts = torch.bincount(space.enumeration_index(samples).reshape(-1), minlength=space.size).double()
    probs = probs.double() / probs.double().sum()  # float32 priors sum to 1 only to ~1e-7
    return float(chisquare(counts.numpy(), (probs * counts.sum()).numpy()).pvalue)


@pytest.mark.parametrize("space", SPACES, ids=repr)
def test_enumeration_lists_every_element_once(space):
    chunks = list(space.enumerate(chunk_size=7))
    assert all(c.shape[1:] == space.event_shape and c.shape[0] <= 7 for c in chunks)
    everything = torch.cat(chunks)
    assert everything.shape[0] == space.size
    assert torch.unique(everything.reshape(space.size, -1), dim=0).shape[0] == space.size
    assert torch.equal(space.enumeration_index(everything), torch.arange(space.size))


def test_sizes_against_closed_forms():
    assert Multilabel(174).size == 2**174 and math.isclose(Multilabel(174).log10_size, 174 * math.log10(2))
    assert Permutations(16).size == math.factorial(16) == PermutationMatrices(16).size
    assert math.isclose(Permutations(16).log10_size, math.log10(math.factorial(16)))
    with pytest.raises(ValueError, match="enumeration"):
        Multilabel(25).enumerate()
    with pytest.raises(ValueError, match="enumeration"):
        Permutations(11).enumerate()


@pytest.mark.parametrize("space", SPACES, ids=repr)
def test_log_prior_is_a_distribution(space):
    everything = space.enumerate_all()
    assert space.log_prior(everything).shape == (space.size,)
    assert abs(torch.logsumexp(space.log_prior(everything).double(), 0).item()) < 1e-6
    batch = space.sample_prior((3, 2))
    assert batch.shape == (3, 2, *space.event_shape) and batch.dtype == torch.float32
    assert space.log_prior(batch).shape == (3, 2)


def test_multilabel_log_prior_against_bernoulli_product():
    probs = torch.tensor([0.2, 0.9, 0.5])
    space = Multilabel(3, probs)
    for bits in itertools.product((0, 1), repeat=3):
        expected = math.log(np.prod([p if b else 1 - p for p, b in zip(probs.tolist(), bits)]))
        assert math.isclose(space.log_prior(torch.tensor(bits, dtype=torch.float32)).item(), expected, rel_tol=1e-5)


@pytest.mark.parametrize("space", [Multilabel(4), Multilabel(4, torch.tensor([0.1, 0.4, 0.6, 0.85])), Permutations(4), PermutationMatrices(4)], ids=repr)
def test_prior_samples_follow_the_prior_chi_square(space):
    """Acceptance 5: histogram of 40 000 prior draws vs q on every element (k = 4)."""
    samples = space.sample_prior(40_000, generator=torch.Generator().manual_seed(0))
    probs = space.log_prior(space.enumerate_all()).exp()
    assert chi_square_pvalue(space, samples, probs) > 0.01


@pytest.mark.parametrize("k", [PERMUTATION_TABLE_MAX_K, PERMUTATION_TABLE_MAX_K + 1, PERMUTATION_PLACEMENT_MAX_K,
                               PERMUTATION_PLACEMENT_MAX_K + 1], ids=["table", "placement", "placement-max", "argsort"])
def test_random_permutations_are_uniform_on_every_side_of_the_limits(k):
    """Past k = 6 the k! cells outnumber what 30,000 draws can fill, so the uniform law is checked
    on what it implies: every draw is a permutation, each value lies at each place with
    probability 1/k (χ² on the k × k counts), and the first place holds the smaller value of the
    first two half the time (binomial); from the table (k ≤ 8), the two tables and the argsort."""
    draws = random_permutations((30_000,), k, torch.Generator().manual_seed(4), None)
    assert draws.shape == (30_000, k) and draws.dtype == torch.int64
    assert torch.equal(draws.sort(dim=1).values, torch.arange(k).expand(30_000, k))
    counts = torch.zeros(k, k, dtype=torch.float64).index_put_(
        (torch.arange(k).expand(30_000, k).reshape(-1), draws.reshape(-1)), torch.ones(30_000 * k, dtype=torch.float64),
        accumulate=True)
    assert chisquare(counts.reshape(-1).numpy()).pvalue > 0.01
    assert binomtest(int((draws[:, 0] < draws[:, 1]).sum()), 30_000, 0.5).pvalue > 0.01


@pytest.mark.parametrize("k", [9, 10])
def test_every_permutation_of_8_in_every_placement_gives_every_permutation_once(k):
    """(permutation of labels 0..7, placement of the others) → permutation is a bijection, so uniform rows
    of both tables give uniform permutations: all 8! × k!/8! pairs give the k! distinct permutations,
    with labels 8..k−1 where the placement puts them and labels 0..7 in the relative places the first row gives."""
    firsts = _permutation_table(8, torch.device("cpu"))
    placements = _placement_table(k, torch.device("cpu"))
    assert len(placements) == math.factorial(k) // math.factorial(8)
    # placement by placement, kept as int8: 10! permutations of 10 labels are 290 MB in int64
    permutations = torch.cat([place_labels(firsts, row.expand(len(firsts), k)).to(torch.int8) for row in placements])
    assert permutations.shape == (math.factorial(k), k)
    # each row a permutation: k powers of two sum to 2^k − 1 (k bits set) only when no two are equal
    assert torch.all((1 << permutations.to(torch.int16)).sum(1) == 2**k - 1)
    codes = sum(permutations[:, i].long() * k**i for i in range(k))  # base-k digits: distinct codes, distinct rows
    assert len(torch.unique(codes)) == math.factorial(k)
    assert torch.equal(permutations[:, 8:], placements[:, 8:].repeat_interleave(len(firsts), dim=0).to(torch.int8))
    first = firsts.to(torch.int8).repeat(len(placements), 1)
    for i, j in itertools.combinations(range(8), 2):  # labels 0..7 keep their relative places
        assert torch.equal(permutations[:, i] < permutations[:, j], first[:, i] < first[:, j])


def test_chi_square_detects_a_wrong_prior():
    """The acceptance test above can fail: draws from Bernoulli(0.55) are rejected as uniform."""
    space = Multilabel(4)
    samples = Multilabel(4, torch.full((4,), 0.55)).sample_prior(40_000, generator=torch.Generator().manual_seed(0))
    assert chi_square_pvalue(space, samples, space.log_prior(space.enumerate_all()).exp()) < 1e-6


def test_sampling_is_reproducible_with_a_generator():
    a = Permutations(6).sample_prior(5, generator=torch.Generator().manual_seed(3))
    b = Permutations(6).sample_prior(5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_label_frequency_prior_is_clipped():
    y = np.array([[1, 0, 1], [1, 0, 0], [1, 0, 1], [1, 0, 0]], dtype=np.int8)
    space = Multilabel.with_label_frequencies(3, y)
    assert torch.allclose(space.prior_probs, torch.tensor([0.99, 0.01, 0.5]))


def test_ranking_encodings_match_the_architecture():
    ranks = np.array([[2, 0, 1]])  # label 1 is best, then label 2, then label 0
    y = Permutations(3).from_labels(ranks)
    assert torch.equal(y, torch.tensor([[0.0, 2.0, 1.0]]))  # y_j = k − 1 − position_j
    p = PermutationMatrices(3).from_labels(ranks)
    assert torch.equal(p, torch.tensor([[[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]]))  # P[j, position_j] = 1


@pytest.mark.parametrize("space", SPACES, ids=repr)
def test_labels_round_trip(space):
    y = space.sample_prior(20, generator=torch.Generator().manual_seed(1))
    labels = space.to_labels(y)
    assert torch.equal(space.from_labels(labels), y)


def test_bad_labels_are_rejected_clearly():
    with pytest.raises(ValueError, match="0/1"):
        Multilabel(2).from_labels(np.array([[0, 2]]))
    with pytest.raises(ValueError, match="permutation"):
        Permutations(3).from_labels(np.array([[0, 0, 1]]))
    with pytest.raises(ValueError, match=r"expected \(n, 3\)"):
        PermutationMatrices(3).from_labels(np.array([[0, 1]]))


@pytest.mark.parametrize("space", [Multilabel(6, torch.linspace(0.05, 0.95, 6)), Permutations(5), PermutationMatrices(4)], ids=repr)
def test_mode_linear_is_the_brute_force_argmax(space):
    """Acceptance 3 (linear models): threshold / argsort / Hungarian vs argmax over all of Y."""
    generator = torch.Generator().manual_seed(0)
    theta = torch.randn(30, *space.event_shape, generator=generator)
    everything = space.enumerate_all()
    dims = tuple(range(-len(space.event_shape), 0))
    scores = (theta.unsqueeze(1) * everything).sum(dims) + space.log_prior(everything)
    assert torch.equal(space.mode_linear(theta), everything[scores.argmax(1)])


def test_make_space_builds_each_model_and_suggests_names():
    for kind, models in MODELS.items():
        for model in models:
            assert make_space(kind, 4, model).k == 4
    assert isinstance(make_space("ranking", 4, "birkhoff"), PermutationMatrices)
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert not make_space("multilabel", 2, "unary", prior="frequency", y_train=y).uniform
    with pytest.raises(ValueError, match="did you mean 'pairwise'"):
        make_space("multilabel", 4, "pairwize")
    with pytest.raises(ValueError, match="did you mean 'ranking'"):
        make_space("rankin", 4, "birkhoff")
    with pytest.raises(ValueError, match="y_train"):
        make_space("multilabel", 4, "unary", prior="frequency")
    with pytest.raises(ValueError, match="uniform"):
        make_space("ranking", 4, "birkhoff", prior="frequency")


def _space_classes(cls: type = OutputSpace) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_space_classes(direct))]


def test_kind_tests_match_the_classes_they_narrow_to():
    """``is_binary`` / ``is_ranking`` read ``space.kind`` but tell the type checker the class
    (Multilabel / PermutationSpace): every space class must agree with that."""
    classes = _space_classes()
    assert {Multilabel, Permutations, PermutationMatrices} <= set(classes)
    for cls in classes:
        if hasattr(cls, "kind"):
            assert cls.kind.binary == issubclass(cls, Multilabel), cls
            assert (cls.kind is RANKING) == issubclass(cls, PermutationSpace), cls
    for space in SPACES:
        assert is_binary(space) == isinstance(space, Multilabel)
        assert is_ranking(space) == isinstance(space, PermutationSpace)


@pytest.mark.parametrize("start", [0, 60, 122, 126])  # in the first word, across words 1|2 and 2|3, the last bits
def test_uniform_prior_bits_are_fair_and_independent_across_words(start):
    """The uniform multilabel prior unpacks 63 random bits per word: at k = 130 (three words), every
    4-label block — also those straddling a word boundary — is uniform on its 16 patterns."""
    space = Multilabel(130)
    samples = space.sample_prior(40_000, generator=torch.Generator().manual_seed(2))
    assert samples.shape == (40_000, 130) and set(samples.unique().tolist()) == {0.0, 1.0}
    block = Multilabel(4)
    uniform = block.log_prior(block.enumerate_all()).exp()
    assert chi_square_pvalue(block, samples[:, start:start + 4], uniform) > 0.01


@pytest.mark.parametrize("k", [1, 7, 14, 16, 31, 32, 33, 63, 64, 126, 130, 174])
def test_random_bits_are_the_words_bits_unpacked_one_by_one(k):
    """random_bits(shape, k) lays the bits 0..62 of each random word end to end (bit j of w is
    ⌊w / 2^j⌋ mod 2): checked against Python integers unpacked bit by bit from the same draws (the
    generator state is replayed), for k within one byte, one word, and across words. The
    unpacking goes through 7-bit groups of the words, so this pins their order too."""
    from ebm.spaces import random_bits

    shape, words = (3, 5), -(-k // 63)
    bits = random_bits(shape, k, torch.Generator().manual_seed(11), None)
    raw = torch.randint(0, 2**63 - 1, (*shape, words), generator=torch.Generator().manual_seed(11))
    expected = [[[(int(w) >> j) & 1 for w in row_words for j in range(63)][:k] for row_words in sample]
                for sample in raw.tolist()]
    assert bits.dtype == torch.float32 and bits.shape == (*shape, k)
    assert bits.tolist() == expected
    # the uniform prior draws exactly these bits
    prior = Multilabel(k).sample_prior(shape, generator=torch.Generator().manual_seed(11))
    assert torch.equal(prior, bits)


def test_inverse_permutations_are_the_argsort_of_the_orders():
    """positions[order[i]] = i: the argsort of every order, by a scatter, also on a stacked step's
    batched orders (torch.func.vmap)."""
    from torch.func import vmap

    from ebm.spaces import inverse_permutations

    orders = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(0)).argsort(dim=-1)
    positions = inverse_permutations(orders)
    assert torch.equal(positions, orders.argsort(dim=-1))
    assert torch.equal(orders.gather(-1, positions), torch.arange(7).expand(3, 5, 7))  # order[positions[l]] = l
    assert torch.equal(vmap(inverse_permutations)(orders), positions)
