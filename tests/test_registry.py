"""The method registry: every CLI name resolves, unknown names get a "did you mean", fixtures register."""

from __future__ import annotations

import pytest

from baselines import registry
from ebm.method import Method

EXPECTED = [
    "minmin-logistic", "minmin-logistic-is", "minmin-sparsemax", "minmin-entmax15", "minmin-finite", "minmin-scalar",
    "exact-mle", "exact-sparsemax", "bce", "mcmc-pcd", "mcmc-gwg", "perceptron", "minmax-reinforce", "nce", "constant",
]
MINE = ["mcmc-pcd", "mcmc-gwg", "perceptron", "minmax-reinforce", "nce"]


class _Fixture(Method):
    name = "fixture-method"
    defaults = {"lr": 1.0}

    def search_space(self, trial):
        return {"lr": trial.suggest_float("lr", 0.1, 1.0)}

    def fit(self, space, model, data, params, budget, *, seed, device, monitor=None):
        raise NotImplementedError


def test_every_cli_name_is_registered_in_order():
    assert registry.method_names()[: len(EXPECTED)] == EXPECTED


@pytest.mark.parametrize("name", MINE)
def test_own_methods_resolve_with_their_names(name):
    method = registry.get_method(name)
    assert isinstance(method, Method) and method.name == name
    assert registry.get_method(name) is method  # resolved once, then cached
    assert method.description


def test_listed_methods_have_unique_names_and_include_the_baselines():
    names = [m.name for m in registry.list_methods()]
    assert len(names) == len(set(names))
    assert names[: len(EXPECTED)] == EXPECTED  # every module of the CLI names imports


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ValueError, match="did you mean 'mcmc-pcd'"):
        registry.get_method("mcmc-pdc")
    with pytest.raises(ValueError, match="unknown method"):
        registry.get_method("definitely-not-a-method")


def test_register_fixture_and_refuse_duplicates():
    fixture = _Fixture()
    registry.register_method(fixture)
    try:
        assert registry.get_method("fixture-method") is fixture
        assert fixture in registry.list_methods()
        with pytest.raises(ValueError, match="already registered"):
            registry.register_method(_Fixture())
        with pytest.raises(ValueError, match="already registered"):
            registry.register_method(type("Shadow", (_Fixture,), {"name": "nce"})())
    finally:
        registry.unregister_method("fixture-method")
    with pytest.raises(ValueError):
        registry.get_method("fixture-method")


@pytest.mark.parametrize("name", MINE)
def test_search_space_suggests_known_hyperparameters(name):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    method = registry.get_method(name)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    suggested = method.search_space(trial)
    assert suggested and set(suggested) <= set(method.defaults)
    assert method.params(suggested).keys() == method.defaults.keys()
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        method.params({"no_such_knob": 1})
