"""The ``constant`` floor: predictions and NLL against brute force, numpy and scipy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import rankdata
from sklearn.metrics import f1_score

from baselines import registry
from baselines.constant import borda_positions
from ebm import inference
from ebm.method import Budget, FitData
from ebm.spaces import Multilabel, PermutationMatrices, Permutations

# k = 4 labels: training frequencies 0.75, 0.5, 0.25, 0.0 (label 3 never occurs)
Y_TRAIN = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
Y_VAL = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 0, 0], [1, 1, 0, 1], [1, 0, 0, 0]])


def _fit(space, y_train, y_val, model="unary", monitor=None):
    x = lambda n: torch.randn(n, 3, generator=torch.Generator().manual_seed(n))
    data = FitData(x(len(y_train)), space.from_labels(y_train), x(len(y_val)), space.from_labels(y_val))
    return registry.get_method("constant").fit(space, model, data, {}, Budget(), seed=0, device=torch.device("cpu"),
                                               monitor=monitor)


def _brute_force_set(y_train: np.ndarray, y_val: np.ndarray) -> np.ndarray:
    """Best validation example-F1 (sklearn) over 'labels with training frequency > t' for a fine
    grid of t; ties go to the smallest t."""
    frequency = y_train.mean(0)
    best, best_f1 = None, -1.0
    for t in np.linspace(-0.01, 1.0, 2021):
        guess = (frequency > t).astype(int)
        f1 = f1_score(y_val, np.tile(guess, (len(y_val), 1)), average="samples", zero_division=1.0)
        if f1 > best_f1 + 1e-12:
            best, best_f1 = guess, f1
    return best


@pytest.mark.parametrize("prior", ["uniform", "frequency"])
def test_multilabel_prediction_is_the_validation_best_frequent_set(prior):
    space = Multilabel(4) if prior == "uniform" else Multilabel.with_label_frequencies(4, Y_TRAIN)
    fitted = _fit(space, Y_TRAIN, Y_VAL)
    predicted = space.to_labels(fitted.predict(torch.zeros(7, 3)))
    expected = _brute_force_set(Y_TRAIN, Y_VAL)
    assert (predicted == expected).all()
    # the answer is not trivial: neither every label nor the most frequent one alone
    assert 0 < expected.sum() < 4 and expected.tolist() == [1, 1, 0, 0]


def test_random_datasets_match_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(20):
        k = int(rng.integers(2, 7))
        p = rng.uniform(0.05, 0.9, k)
        y_train = (rng.random((int(rng.integers(3, 30)), k)) < p).astype(int)
        y_val = (rng.random((int(rng.integers(2, 30)), k)) < p).astype(int)
        fitted = _fit(Multilabel(k), y_train, y_val)
        predicted = fitted.predict(torch.zeros(1, 3))[0].numpy().astype(int)
        assert (predicted == _brute_force_set(y_train, y_val)).all(), trial


def test_multilabel_nll_is_the_clipped_frequency_prior():
    fitted = _fit(Multilabel(4), Y_TRAIN, Y_VAL)
    y = torch.as_tensor(Y_VAL, dtype=torch.float32)
    values, stderr = fitted.nll(torch.zeros(len(Y_VAL), 3), y)
    pi = np.clip(Y_TRAIN.mean(0), 0.01, 0.99)
    expected = -(Y_VAL * np.log(pi) + (1 - Y_VAL) * np.log(1 - pi)).sum(1)
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-5)
    assert (stderr == 0).all()
    # and the general inference code on the fitted (zero) energy agrees: the model is q itself
    general, _ = inference.nll(fitted.energy, fitted.space, torch.zeros(len(Y_VAL), 3), y)
    np.testing.assert_allclose(general.numpy(), expected, rtol=1e-5)
    assert fitted.info["best_step"] >= 1 and fitted.info["steps"] == 0


def test_borda_consensus_matches_scipy_rankdata():
    rng = np.random.default_rng(1)
    for k in (2, 3, 5, 7):
        positions = np.stack([rng.permutation(k) for _ in range(int(rng.integers(1, 12)))])
        scores = (k - 1 - positions).sum(0)
        # scipy: the highest score first; ordinal ties break by appearance, i.e. by label index
        expected = rankdata(-scores, method="ordinal") - 1
        assert (borda_positions(positions) == expected).all()


@pytest.mark.parametrize("space_type,model", [(Permutations, "permutahedron"), (PermutationMatrices, "birkhoff")])
def test_ranking_predicts_the_borda_consensus_with_uniform_nll(space_type, model):
    k = 4
    rng = np.random.default_rng(2)
    y_train = np.stack([rng.permutation(k) for _ in range(9)])
    y_val = np.stack([rng.permutation(k) for _ in range(5)])
    space = space_type(k)
    fitted = _fit(space, y_train, y_val, model=model)
    predicted = space.to_labels(fitted.predict(torch.zeros(3, 3)))
    assert (predicted == borda_positions(y_train)).all()
    values, _ = fitted.nll(torch.zeros(5, 3), space.from_labels(y_val))
    np.testing.assert_allclose(values.numpy(), np.log(24.0), rtol=1e-6)
    general, _ = inference.nll(fitted.energy, space, torch.zeros(5, 3), space.from_labels(y_val))
    np.testing.assert_allclose(general.numpy(), np.log(24.0), rtol=1e-5)


def test_monitor_decides_the_threshold():
    """With a monitor that prefers the empty set (e.g. a primary metric rewarding few labels),
    the set the monitor scores best is chosen, not example-F1's."""
    from ebm.method import Fitted

    class Evaluation:  # the shape of ebm.method.Evaluation: value + direction
        def __init__(self, value):
            self.value, self.maximize, self.stop = value, False, False

    seen = []

    def monitor(progress, model: Fitted):
        size = float(model.predict(torch.zeros(1, 3)).sum())
        seen.append((progress.step, size))
        return Evaluation(size)  # minimise the number of predicted labels

    fitted = _fit(Multilabel(4), Y_TRAIN, Y_VAL, monitor=monitor)
    assert fitted.predict(torch.zeros(1, 3)).sum() == 0
    assert [s for _, s in seen] == [4.0, 3.0, 2.0, 1.0, 0.0][: len(seen)] and len(seen) == 5
    assert fitted.info["best_step"] == 5 and fitted.info["best_value"] == 0.0


def test_constant_runs_through_the_harness(tmp_path):
    from harness_fixtures import write_suite

    from harness import store
    from harness.commands.run import RunOptions, run_suite
    from tasks.registry import get_task

    suite = write_suite(tmp_path, methods=("constant",))
    run_suite(suite, options=RunOptions(results_dir=tmp_path / "r", executor="serial", progress=False))
    row = store.read_table(tmp_path / "r", "runs").iloc[0]
    assert row["status"] == "ok", row.get("error")
    data = get_task("syn-ising-k8").load(None, seed=0, fold=0, val_fraction=0.2)
    pi = np.clip(data.y_train.mean(0), 0.01, 0.99)
    expected = -(data.y_test * np.log(pi) + (1 - data.y_test) * np.log(1 - pi)).sum(1).mean()
    assert row["test_nll"] == pytest.approx(expected, rel=1e-5)
    assert row["n_steps"] == 0


def test_exhaustive_small_case_every_subset_is_no_better_than_brute_force_choice():
    """Sanity of the candidate family: the chosen set is one of the nested frequency sets."""
    fitted = _fit(Multilabel(4), Y_TRAIN, Y_VAL)
    chosen = tuple(fitted.predict(torch.zeros(1, 3))[0].int().tolist())
    frequency = Y_TRAIN.mean(0)
    nested = {tuple((frequency > t).astype(int)) for t in itertools.chain([-1.0], frequency)}
    assert chosen in nested
