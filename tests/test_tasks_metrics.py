"""tasks.metrics against hand-computed values and scipy references."""

import numpy as np
import pytest
from scipy.stats import kendalltau, spearmanr

from tasks.metrics import METRICS, kendall_tau_rows, multilabel_metrics, ranking_metrics


def test_multilabel_metrics_hand_computed():
    y_true = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    y_pred = np.array([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    m = multilabel_metrics(y_true, y_pred)
    # rows: TP/FP/FN = (1,1,1) -> F1 1/2; (1,0,0) -> 1; empty vs empty -> 1 (zero_division=1)
    assert m["f1_example"] == pytest.approx((0.5 + 1 + 1) / 3)
    # pooled: TP=2, FP=1, FN=1 -> 4/6
    assert m["f1_micro"] == pytest.approx(4 / 6)
    # labels: col0 (1,0,0) ->1; col1 (1,1,0) -> 2/3; col2 (0,0,1) -> 0; col3 empty/empty -> 1
    assert m["f1_macro"] == pytest.approx((1 + 2 / 3 + 0 + 1) / 4)
    assert m["hamming"] == pytest.approx(2 / 12)
    assert m["subset_acc"] == pytest.approx(2 / 3)


def test_multilabel_zero_division_only_affects_empty_rows():
    # truth non-empty, prediction empty: F1 is a well-defined 0, not the zero_division value
    m = multilabel_metrics(np.array([[1, 0]]), np.array([[0, 0]]))
    assert m["f1_example"] == 0.0 and m["f1_micro"] == 0.0
    assert m["f1_macro"] == pytest.approx(0.5)  # label 1 empty/empty -> 1, label 0 -> 0


def test_ranking_metrics_hand_computed():
    ranks_true = np.array([[0, 1, 2], [0, 1, 2]])
    ranks_pred = np.array([[1, 0, 2], [0, 1, 2]])
    m = ranking_metrics(ranks_true, ranks_pred)
    # row 0: pairs (0,1) discordant, (0,2),(1,2) concordant -> tau 1/3; rho = 1 - 6*2/(3*8) = 1/2
    assert m["kendall"] == pytest.approx((1 / 3 + 1) / 2)
    assert m["spearman"] == pytest.approx((0.5 + 1) / 2)
    assert m["exact_match"] == pytest.approx(0.5)
    reversed_ = ranking_metrics(np.array([[0, 1, 2, 3]]), np.array([[3, 2, 1, 0]]))
    assert reversed_["kendall"] == pytest.approx(-1) and reversed_["spearman"] == pytest.approx(-1)


def test_ranking_metrics_match_scipy_per_row():
    rng = np.random.default_rng(0)
    k = 7
    ranks_true = np.argsort(rng.random((200, k)), axis=1)
    ranks_pred = np.argsort(rng.random((200, k)), axis=1)
    tau = [kendalltau(t, p).statistic for t, p in zip(ranks_true, ranks_pred)]
    rho = [spearmanr(t, p).statistic for t, p in zip(ranks_true, ranks_pred)]
    np.testing.assert_allclose(kendall_tau_rows(ranks_true, ranks_pred), tau, atol=1e-12)
    m = ranking_metrics(ranks_true, ranks_pred)
    assert m["kendall"] == pytest.approx(np.mean(tau))
    assert m["spearman"] == pytest.approx(np.mean(rho))


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="permutation"):
        ranking_metrics(np.array([[0, 0, 1]]), np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="shape"):
        multilabel_metrics(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="0/1"):
        multilabel_metrics(np.array([[2, 0]]), np.array([[1, 0]]))


def test_metric_directions():
    assert METRICS["f1_example"] == "max" and METRICS["kendall"] == "max"
    for name in ("hamming", "nll", "tau_mae", "kl_to_truth"):
        assert METRICS[name] == "min"
    assert set(METRICS.values()) == {"max", "min"}
    # every metric the functions return has a direction
    keys = set(multilabel_metrics(np.eye(2, dtype=int), np.eye(2, dtype=int)))
    keys |= set(ranking_metrics(np.array([[0, 1]]), np.array([[0, 1]])))
    assert keys <= set(METRICS)


@pytest.mark.parametrize("seed", range(6))
def test_multilabel_metrics_equal_scikit_learn(seed):
    """The numpy counts give scikit-learn's numbers exactly (zero_division=1), on random 0/1
    matrices with empty rows, empty label columns and all-empty predictions mixed in."""
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss

    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 300)), int(rng.integers(1, 20))
    y_true = (rng.random((n, k)) < rng.uniform(0.05, 0.6)).astype(int)
    y_pred = (rng.random((n, k)) < rng.uniform(0.0, 0.6)).astype(int)
    y_true[rng.random(n) < 0.2] = 0          # empty truth rows
    y_pred[:, rng.random(k) < 0.3] = 0       # labels never predicted
    if seed == 0:
        y_pred[:] = 0
    if seed == 1:
        y_true[:] = y_pred
    got = multilabel_metrics(y_true, y_pred)
    want = {"f1_example": f1_score(y_true, y_pred, average="samples", zero_division=1.0),
            "f1_micro": f1_score(y_true, y_pred, average="micro", zero_division=1.0),
            "f1_macro": f1_score(y_true, y_pred, average="macro", zero_division=1.0),
            "hamming": hamming_loss(y_true, y_pred), "subset_acc": accuracy_score(y_true, y_pred)}
    assert got == {name: float(value) for name, value in want.items()}
