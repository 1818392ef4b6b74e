"""The paper-reproduction report and the scikit-learn references it compares against."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from harness.paper import PAPER_MULTILABEL, comparison_table, tau_table
from harness.references import fit_predict_multilabel, fit_predict_ranking, reference_rows


def _runs(rows):
    base = {"status": "ok", "suite": "paper", "k": 14, "params_json": json.dumps({}), "tau_mae": np.nan}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_comparison_table_picks_the_better_minmin_variant_and_computes_the_gap():
    logistic = [0.60, 0.62, 0.64]   # mean 62, sample std 2
    sparsemax = [0.66, 0.66, 0.66]  # mean 66, std 0
    runs = _runs([{"task": "yeast", "model": "unary", "method": "minmin-logistic", "seed": i,
                   "test_f1_example": v, "test_f1_micro": v} for i, v in enumerate(logistic)]
                 + [{"task": "yeast", "model": "unary", "method": "minmin-sparsemax", "seed": i,
                     "test_f1_example": v, "test_f1_micro": v} for i, v in enumerate(sparsemax)]
                 + [{"task": "yeast", "model": "unary", "method": "minmin-logistic", "seed": 9, "status": "failed",
                     "test_f1_example": 0.0, "test_f1_micro": 0.0}])
    refs = pd.DataFrame([{"task": "yeast", "method": "sk-ovr-logreg", "seed": s, "test_f1_example": v}
                         for s, v in enumerate([0.5, 0.7])])
    table = comparison_table(runs, refs, kind="multilabel").set_index("dataset")
    assert table.at["yeast", "minmin-logistic f1_example"].startswith("62.00 ± 2.00")  # the failed run is not averaged
    assert table.at["yeast", "ours (best min-min)"] == "66.00 ± 0.00 [sparsemax]"
    assert table.at["yeast", "gap vs paper"] == f"{66.0 - PAPER_MULTILABEL['yeast'][0]:+.2f}"
    assert table.at["yeast", "best sklearn reference"] == f"60.00 ± {np.std([50, 70], ddof=1):.2f} [sk-ovr-logreg]"
    assert table.at["scene", "ours (best min-min)"] == "–"  # no runs: shown as missing, not as zero


def test_tau_table_says_when_log_z_is_exact():
    runs = _runs([{"task": "birds", "model": "unary", "method": "minmin-logistic", "k": 19, "tau_mae": 1.0},
                  {"task": "birds", "model": "unary", "method": "minmin-logistic", "k": 19, "tau_mae": 3.0},
                  {"task": "birds", "model": "pairwise", "method": "minmin-logistic", "k": 19, "tau_mae": 5.0},
                  {"task": "yeast", "model": "pairwise", "method": "minmin-logistic", "k": 14, "tau_mae": 0.5},
                  {"task": "yeast", "model": "unary", "method": "minmin-sparsemax", "k": 14, "tau_mae": 9.0,
                   "params_json": json.dumps({"divergence": "sparsemax"})}])
    table = tau_table(runs).set_index(["dataset", "model"])
    assert table.loc[("birds", "unary"), "log Z"] == "exact"
    assert table.loc[("birds", "unary"), "mean |τ(x) − log Z(x)| (nats)"] == f"2.00 ± {np.std([1.0, 3.0], ddof=1):.2f}"
    assert table.loc[("birds", "pairwise"), "log Z"] == "importance sampling"  # 2^19 > 2^16
    assert table.loc[("yeast", "pairwise"), "log Z"] == "exact"                 # 2^14 enumerable
    assert ("yeast", "unary") not in table.index  # a sparsemax τ is a threshold, not log Z


def test_one_vs_rest_reference_is_independent_logistic_regressions_and_keeps_constant_labels():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4))
    y = np.stack([(x[:, 0] > 0), (x[:, 1] + x[:, 2] > 0), np.zeros(120, bool)], axis=1).astype(np.int8)
    x_test = rng.normal(size=(30, 4))
    pred = fit_predict_multilabel("sk-ovr-logreg", x, y, x_test, seed=0)
    for j in range(2):
        alone = LogisticRegression(max_iter=2000).fit(x, y[:, j]).predict(x_test)
        np.testing.assert_array_equal(pred[:, j], alone)
    assert (pred[:, 2] == 0).all()  # constant on training rows: predicted as that constant
    with pytest.raises(ValueError, match="unknown multilabel reference"):
        fit_predict_multilabel("sk-nope", x, y, x_test, seed=0)


def test_ranking_references_return_permutations_and_recover_a_linear_ranking():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    scores = x @ np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.5], [0.3, -0.2, 0.0]])  # (n, k=3)
    ranks = np.argsort(np.argsort(-scores, axis=1), axis=1)  # position 0 = highest score
    pred = fit_predict_ranking("sk-ridge-ranks", x[:250], ranks[:250], x[250:], seed=0)
    assert (np.sort(pred, axis=1) == np.arange(3)).all()
    assert (pred == ranks[250:]).all(axis=1).mean() > 0.6  # far above chance (1/6)


def test_reference_rows_on_a_bundled_task():
    rows = reference_rows("sk-iris-ranking", None, [0])
    assert {r["method"] for r in rows} == {"sk-ridge-ranks", "sk-knn-borda", "sk-mlp-ranks"}
    for r in rows:
        assert -1.0 <= r["test_kendall"] <= 1.0 and 0.0 <= r["test_exact_match"] <= 1.0
