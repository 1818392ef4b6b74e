"""Planning: run ids, seeds from identity, filters, did-you-mean, suite files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from harness.plan import Filters, RunSpec, plan_runs
from harness.suites import SuiteError, load_suite, parse_suite
from harness_fixtures import write_suite


def _spec(**changes) -> RunSpec:
    base = dict(task="syn-ising-k8", model="unary", method="bce", seed=0, fold=0, params={"lr": 0.001, "hidden": 8},
                budget={"max_steps": 10, "batch_size": 8, "eval_every": 5}, data={"val_fraction": 0.2, "prior": "uniform"})
    return RunSpec(**{**base, **changes})


def test_run_id_is_sha256_of_canonical_identity():
    spec = _spec()
    identity = {"task": "syn-ising-k8", "model": "unary", "method": "bce", "seed": 0, "fold": 0,
                "params": {"hidden": 8, "lr": 0.001}, "budget": {"batch_size": 8, "eval_every": 5, "max_steps": 10},
                "data": {"prior": "uniform", "val_fraction": 0.2}}
    expected = hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert spec.run_id == expected
    # key order of the dicts does not matter; the suite label is not part of the identity
    assert _spec(params={"hidden": 8, "lr": 0.001}, suite="other").run_id == expected


@pytest.mark.parametrize("change", [{"seed": 1}, {"fold": 1}, {"params": {"lr": 0.01, "hidden": 8}},
                                    {"budget": {"max_steps": 11, "batch_size": 8, "eval_every": 5}},
                                    {"method": "exact-mle"}, {"task": "syn-ising-k12"}])
def test_any_identity_change_changes_id_and_seed(change):
    assert _spec(**change).run_id != _spec().run_id
    assert _spec(**change).torch_seed != _spec().torch_seed


def test_config_hash_groups_seeds_and_folds():
    assert _spec(seed=3, fold=2).config_hash == _spec().config_hash
    assert _spec(params={"lr": 0.5, "hidden": 8}).config_hash != _spec().config_hash


def test_seeds_independent_of_run_order(tmp_path):
    forward = write_suite(tmp_path, methods=("test-constant", "test-raises"), seeds=2, name="a.toml")
    backward = write_suite(tmp_path, methods=("test-raises", "test-constant"), seeds=2, name="b.toml")
    a, b = plan_runs(load_suite(forward)), plan_runs(load_suite(backward))
    assert [p.spec.method for p in a] != [p.spec.method for p in b]
    assert {p.run_id: p.spec.torch_seed for p in a} == {p.run_id: p.spec.torch_seed for p in b}
    assert len({p.spec.torch_seed for p in a}) == len(a) == 4


def test_plan_applies_method_check_as_rows():
    suite = parse_suite("""
[[grid]]
tasks = ["syn-pl-k6"]
models = ["permutahedron"]
methods = ["bce", "minmin-logistic"]
""")
    plan = plan_runs(suite)
    by_method = {p.spec.method: p for p in plan}
    assert by_method["bce"].status == "unsupported" and by_method["bce"].reason
    assert by_method["minmin-logistic"].status is None
    assert len(plan) == 2 * 2  # two seeds by default


def test_missing_data_skipped_or_left_out(tmp_path):
    text = """
[[grid]]
tasks = ["emotions", "syn-ising-k8"]
models = ["unary"]
methods = ["bce"]
optional = {optional}
"""
    empty = tmp_path / "nodata"
    empty.mkdir()
    strict = plan_runs(parse_suite(text.format(optional="false")), data_dir=empty)
    emotions = [p for p in strict if p.spec.task == "emotions"]
    assert emotions and all(p.status == "skipped" and "data not available" in p.reason for p in emotions)
    optional = plan_runs(parse_suite(text.format(optional="true")), data_dir=empty)
    assert {p.spec.task for p in optional} == {"syn-ising-k8"}
    assert any("emotions" in note for note in optional.notes)


def test_glob_filters_and_seed_override():
    plan = plan_runs(load_suite("quick"), Filters(tasks=("syn-*",), methods=("minmin-*",), models=("unary",), seeds=1))
    assert plan and {p.spec.task for p in plan} == {"syn-ising-k8"}
    assert {p.spec.method for p in plan} == {"minmin-logistic", "minmin-sparsemax"}
    assert {p.spec.seed for p in plan} == {0}


@pytest.mark.parametrize("filters, message", [
    (Filters(tasks=("syn-isin-k8",)), "did you mean 'syn-ising-k8'"),
    (Filters(methods=("minmin-logistc",)), "did you mean 'minmin-logistic'"),
    (Filters(models=("pairwse",)), "did you mean 'pairwise'"),
])
def test_unknown_names_get_did_you_mean(filters, message):
    with pytest.raises(ValueError, match=message):
        plan_runs(load_suite("quick"), filters)


def test_known_name_outside_suite_is_explained():
    with pytest.raises(SuiteError, match="--tasks 'yeast' matches no task of suite 'quick'"):
        plan_runs(load_suite("quick"), Filters(tasks=("yeast",)))


def test_malformed_toml_names_the_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[suite]\nname = "x"\nseeds = = 2\n')
    with pytest.raises(SuiteError, match=r"bad\.toml.*line 3"):
        load_suite(path)


@pytest.mark.parametrize("text, message", [
    ('[suite]\nseed = 2\n[[grid]]\ntasks=["a"]\nmethods=["b"]\n', "did you mean 'seeds'"),
    ('[suite]\nname = "x"\n', "at least one \\[\\[grid\\]\\]"),
    ('[[grid]]\ntasks = ["syn-ising-k8"]\n', "missing 'methods'"),
    ('[budget]\nmax_steps = 0\n[[grid]]\ntasks=["a"]\nmethods=["b"]\n', "positive integer"),
    ('[budget]\nselection = "best"\n[[grid]]\ntasks=["a"]\nmethods=["b"]\n', "selection must be"),
    ('[budget]\npatience = 0\n[[grid]]\ntasks=["a"]\nmethods=["b"]\n', "patience must be a positive integer"),
    ('[suite]\nstack = 0\n[[grid]]\ntasks=["a"]\nmethods=["b"]\n', "stack must be a positive integer"),
])
def test_suite_validation_messages(text, message):
    with pytest.raises(SuiteError, match=message):
        parse_suite(text)


def test_selection_and_patience_flow_into_the_run_budget():
    """best_val by default; a suite or a grid block may ask for "last" and a patience (run identity)."""
    text = ('[budget]\npatience = 4\n[[grid]]\ntasks=["syn-ising-k8"]\nmodels=["unary"]\nmethods=["bce"]\n'
            '[[grid]]\ntasks=["syn-ising-k8"]\nmodels=["unary"]\nmethods=["bce"]\nbudget={selection="last"}\n')
    runs = plan_runs(parse_suite(text))
    assert [(r.spec.budget["selection"], r.spec.budget["patience"]) for r in runs if r.spec.seed == 0] == [
        ("best_val", 4), ("last", 4)]
    assert len({r.run_id for r in runs}) == len(runs)


def test_the_prior_is_decided_once_at_plan_time_into_the_run_params():
    """Block params > the method's required q > the suite's prior (multilabel only)."""
    text = ('[suite]\nprior = "frequency"\nseeds = 1\n'
            '[[grid]]\ntasks=["syn-ising-k8", "syn-pl-k6"]\nmodels=["unary", "permutahedron"]\n'
            'methods=["minmin-logistic", "minmin-sparsemax", "bce", "constant"]\n'
            '[[grid]]\ntasks=["syn-ising-k8", "syn-pl-k6"]\nmodels=["unary", "permutahedron"]\n'
            'methods=["minmin-logistic", "minmin-sparsemax"]\nparams={minmin-logistic={prior="uniform"}, '
            'minmin-sparsemax={prior="frequency"}}\n')
    got = {(r.spec.task, r.spec.method, r.spec.params.get("prior"), r.status, "prior" in r.overrides) for r in plan_runs(parse_suite(text))}
    assert got == {
        ("syn-ising-k8", "minmin-logistic", "frequency", None, False),  # the suite's default, tunable
        ("syn-ising-k8", "minmin-sparsemax", "uniform", None, True),    # required by the method
        ("syn-ising-k8", "bce", "frequency", None, False),
        ("syn-ising-k8", "constant", None, None, False),                # no prior hyperparameter
        ("syn-pl-k6", "minmin-logistic", "uniform", None, True),        # rankings: uniform only
        ("syn-pl-k6", "minmin-sparsemax", "uniform", None, True),
        ("syn-pl-k6", "bce", "uniform", "unsupported", True),
        ("syn-pl-k6", "constant", None, None, False),
        ("syn-ising-k8", "minmin-logistic", "uniform", None, True),     # asked for in the block
        ("syn-ising-k8", "minmin-sparsemax", "frequency", "unsupported", True),
        ("syn-pl-k6", "minmin-logistic", "uniform", None, True),
        ("syn-pl-k6", "minmin-sparsemax", "frequency", "unsupported", True),
    }
    ranking = parse_suite('[[grid]]\ntasks=["syn-pl-k6"]\nmodels=["permutahedron"]\nmethods=["nce"]\n'
                          'params={nce={prior="frequency"}}\n')
    assert {(r.status, r.reason) for r in plan_runs(ranking)} == {
        ("unsupported", "prior 'frequency' is a multilabel prior; rankings have only the uniform prior")}


def test_prepare_fit_builds_the_space_from_the_run_prior():
    from harness.fitdata import prepare_fit
    from tasks.registry import get_task

    data = get_task("syn-ising-k8").load(None, seed=0)
    frequency_space, fit_data = prepare_fit(data, "multilabel", "unary", "frequency", val_limit=10)
    expected = np.clip(np.asarray(data.y_train, dtype=np.float64).mean(0), 0.01, 0.99)
    np.testing.assert_allclose(frequency_space.prior_probs.numpy(), expected, rtol=1e-6)
    assert not frequency_space.uniform_prior and tuple(fit_data.y_val.shape) == (10, 8)
    assert prepare_fit(data, "multilabel", "unary", None)[0].uniform_prior


def test_unknown_suite_name():
    with pytest.raises(SuiteError, match="did you mean 'quick'"):
        load_suite("quik")


def test_unknown_hyperparameter_in_suite_names_the_block():
    suite = parse_suite('[[grid]]\ntasks=["syn-ising-k8"]\nmodels=["unary"]\nmethods=["bce"]\nparams={bce={lrate=1}}\n')
    with pytest.raises(SuiteError, match="grid block 1.*lrate"):
        plan_runs(suite)


def test_builtin_suites_plan(tmp_path):
    for name in ("quick", "paper", "full"):
        plan = plan_runs(load_suite(name), data_dir=tmp_path)
        assert plan, name
        assert len({p.run_id for p in plan}) == len(plan)
    assert Path(load_suite("quick").source).name == "quick.toml"


def test_builtin_suites_run_the_constant_floor_and_every_label_ranking_fold(tmp_path):
    from tasks.registry import get_task

    for name in ("quick", "paper", "full", "paper-convergence", "minmin-scale"):
        plan = plan_runs(load_suite(name), data_dir=tmp_path)
        cells = {(p.spec.task, p.spec.model) for p in plan}
        floors = {(p.spec.task, p.spec.model) for p in plan if p.spec.method == "constant"}
        assert floors == cells, (name, cells - floors)
    for name in ("paper", "full"):
        plan = plan_runs(load_suite(name), data_dir=tmp_path)
        lr_tasks = {p.spec.task for p in plan if p.spec.task.startswith("lr-")}
        assert lr_tasks
        for task in lr_tasks:
            folds = {p.spec.fold for p in plan if p.spec.task == task}
            assert folds == set(range(get_task(task).n_folds)) and len(folds) == 10, (name, task)


def test_config_labels_name_non_default_hyperparameters_in_sorted_order(tmp_path):
    from harness.plan import config_label, with_params

    defaults = {"lr": 0.001, "n_samples": 10, "hidden": 128}
    assert config_label("m", dict(defaults), defaults) == "m"
    assert config_label("m", {**defaults, "n_samples": 100, "lr": 0.01}, defaults) == "m[lr=0.01,n_samples=100]"
    assert config_label("m", {**defaults, "lr": 0.5}, defaults, tuned=True) == "m[tuned]"
    assert config_label("m", {**defaults, "lr": 0.5}, defaults, tuned=True, fixed={"n_samples": 1}) == "m[n_samples=1,tuned]"
    suite = write_suite(tmp_path, methods=("test-constant",), params="{ test-constant = { noise = 0.25 } }")
    run = plan_runs(load_suite(suite))[0]
    assert run.config == "test-constant[noise=0.25]"
    tuned = with_params(run, {"noise": 0.1}, tuned=True)
    assert tuned.config == "test-constant[noise=0.25,tuned]"
