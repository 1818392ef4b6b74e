"""Bundled synthetic tasks: exact likelihoods vs brute force, samplers vs truth (chi-square)."""

import itertools

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import chisquare

from tasks.registry import get_task
from tasks.synthetic import IsingTruth, PlackettLuceTruth, all_label_sets


def _brute_force_ising_log_probs(truth: IsingTruth, x_row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every y in {0,1}^k (itertools order) and log p(y|x) from the explicit u, U (Python loops)."""
    u, big_u = truth.pairwise_terms(x_row[None])
    ys = np.array(list(itertools.product((0, 1), repeat=truth.k)))
    energies = np.array([
        sum(u[0, i] * y[i] for i in range(truth.k))
        + sum(big_u[0, i, j] * y[i] * y[j] for i in range(truth.k) for j in range(i + 1, truth.k))
        for y in ys
    ])
    return ys, energies - logsumexp(energies)


def test_ising_log_prob_matches_brute_force_enumeration():
    truth = IsingTruth(k=5, d=4, seed=7)
    x = np.random.default_rng(1).normal(size=(3, 4))
    for row in x:
        ys, expected = _brute_force_ising_log_probs(truth, row)
        got = truth.log_prob(np.repeat(row[None], len(ys), axis=0), ys)
        np.testing.assert_allclose(got, expected, atol=1e-10)
    _, big_u = truth.pairwise_terms(x)
    np.testing.assert_allclose(big_u, np.transpose(big_u, (0, 2, 1)))
    assert np.all(np.diagonal(big_u, axis1=1, axis2=2) == 0)


def test_ising_sampler_chi_square():
    truth = IsingTruth(k=4, d=3, seed=11)
    x_row = np.array([0.3, -1.2, 0.8])
    n = 40_000
    samples = truth.sample(x_row[None], n, np.random.default_rng(5))[0]
    assert samples.dtype == np.int8 and samples.shape == (n, 4)
    ys, log_p = _brute_force_ising_log_probs(truth, x_row)
    index = {tuple(y): i for i, y in enumerate(ys)}
    counts = np.bincount([index[tuple(s)] for s in samples], minlength=len(ys))
    assert chisquare(counts, n * np.exp(log_p)).pvalue > 1e-3


def test_all_label_sets_enumerates_each_subset_once():
    labels = all_label_sets(6)
    assert labels.shape == (64, 6)
    assert len({tuple(row) for row in labels}) == 64


def _sequential_pl_prob(scores: np.ndarray, ranks: np.ndarray) -> float:
    """Plackett-Luce by the textbook product: pick the label at each position among those left."""
    order = sorted(range(len(ranks)), key=lambda j: ranks[j])
    prob, left = 1.0, list(order)
    for label in order:
        prob *= np.exp(scores[label]) / sum(np.exp(scores[j]) for j in left)
        left.remove(label)
    return prob


def test_plackett_luce_log_prob_matches_product_formula_and_normalises():
    truth = PlackettLuceTruth(k=4, d=3, seed=2)
    x_row = np.array([[0.5, -0.1, 1.0]])
    scores = truth.scores(x_row)[0]
    perms = np.array(list(itertools.permutations(range(4))))  # each row: positions of labels 0..3
    got = truth.log_prob(np.repeat(x_row, len(perms), axis=0), perms)
    expected = np.log([_sequential_pl_prob(scores, p) for p in perms])
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert logsumexp(got) == pytest.approx(0.0, abs=1e-12)


def test_plackett_luce_sampler_chi_square():
    truth = PlackettLuceTruth(k=4, d=3, seed=2)
    x_row = np.array([[0.5, -0.1, 1.0]])
    n = 40_000
    samples = truth.sample(x_row, n, np.random.default_rng(9))[0]
    assert samples.dtype == np.int64 and samples.shape == (n, 4)
    perms = np.array(list(itertools.permutations(range(4))))
    index = {tuple(p): i for i, p in enumerate(perms)}
    counts = np.bincount([index[tuple(s)] for s in samples], minlength=len(perms))
    expected = n * np.exp(truth.log_prob(np.repeat(x_row, len(perms), axis=0), perms))
    assert chisquare(counts, expected).pvalue > 1e-3


@pytest.mark.parametrize("name", ["syn-ising-k8", "syn-pl-k6"])
def test_synthetic_task_is_fixed_across_run_seeds(name):
    task = get_task(name)
    assert task.available(None) is None and task.primary_metric == "nll"
    a, b = task.load(None, seed=0), task.load(None, seed=1)
    assert a.truth is b.truth
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    # the run seed only moves the validation carve-out; train + val is the same set of rows
    assert not np.array_equal(a.x_val, b.x_val)
    rows = lambda d: sorted(map(tuple, np.concatenate([d.x_train, d.x_val]).round(6)))  # noqa: E731
    assert rows(a) == rows(b)
    assert (len(a.x_train) + len(a.x_val), len(a.x_test), a.n_features) == (task.n_train, task.n_test, task.n_features)
    # features are the raw N(0, I) draws (not re-standardised), so the truth applies to them directly
    assert abs(float(a.x_train.mean())) < 0.05 and abs(float(a.x_train.std()) - 1) < 0.05
    log_p = a.truth.log_prob(a.x_test, a.y_test)
    assert log_p.shape == (len(a.x_test),) and np.all(log_p < 0)
    # the data are informative: the truth beats the uniform distribution over Y by a clear margin
    assert -log_p.mean() < 0.8 * task.log10_size * np.log(10)


def test_ising_task_label_marginals_match_truth():
    data = get_task("syn-ising-k8").load(None, seed=0)
    x = data.x_test[:200]
    draws = data.truth.sample(x, 200, np.random.default_rng(0))  # (200, 200, 8)
    ys = all_label_sets(8)
    log_p = np.stack([data.truth.log_prob(np.repeat(row[None], len(ys), axis=0), ys) for row in x])
    exact_marginals = (np.exp(log_p) @ ys).mean(axis=0)
    np.testing.assert_allclose(draws.mean(axis=(0, 1)), exact_marginals, atol=0.01)
    # and the data set's own labels were drawn from the same law
    np.testing.assert_allclose(data.y_test[:200].mean(axis=0), exact_marginals, atol=0.12)
