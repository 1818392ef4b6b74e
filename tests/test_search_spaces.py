"""Every method's Optuna search space against its defaults: each suggested name is a
hyperparameter the method has, each default lies inside its suggested range (so the
untuned run is one of the tuner's candidates), and what is not tuned is so on purpose."""

from __future__ import annotations

import math
from typing import Any

import pytest

from baselines.registry import list_methods


def registered_methods():
    """The production methods (the harness's test fixtures may be registered too)."""
    return [m for m in list_methods() if type(m).__module__ != "baselines.testing"]

#: hyperparameters left out of tuning, and why: budget choices shared across methods (n′, chains,
#: sweeps), the model's definition (divergence, τ, proposal), limits, and variance controls set
#: per suite (max_grad_norm, adam_beta2)
NOT_TUNED = {"n_samples", "chains", "sweeps", "init", "divergence", "tau", "tau_shares_trunk", "tau_lr_mult",
             "tau_offset", "proposal", "proposal_prior_weight", "max_grad_norm", "adam_beta2", "max_subsets",
             "max_permutations", "chunk_size"}


class RecordingTrial:
    """Answers every suggestion with its lowest value and records the ranges asked for."""

    def __init__(self) -> None:
        self.ranges: dict[str, tuple[str, Any]] = {}

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False, step=None) -> float:
        self.ranges[name] = ("log-float" if log else "float", (low, high))
        return low

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False, step: int = 1) -> int:
        self.ranges[name] = ("int", (low, high))
        return low

    def suggest_categorical(self, name: str, choices) -> Any:
        self.ranges[name] = ("categorical", tuple(choices))
        return choices[0]


@pytest.mark.parametrize("method", registered_methods(), ids=lambda m: m.name)
def test_search_space_matches_the_defaults(method):
    trial = RecordingTrial()
    suggested = method.search_space(trial)
    unknown = set(suggested) - set(method.defaults)
    assert not unknown, f"{method.name} suggests unknown {unknown}"
    method.params(suggested)  # a suggestion is a valid set of overrides
    for name, (kind, spec) in trial.ranges.items():
        default = method.defaults[name]
        if kind == "categorical":
            assert default in spec, f"{method.name}: default {name}={default!r} is not among {spec}"
        else:
            low, high = spec
            if kind == "log-float" and default == 0:  # a log range cannot hold 0; its floor must be ~0
                assert low <= 1e-6, f"{method.name}: default {name}=0 but the log range starts at {low}"
                continue
            assert low <= default <= high and not (isinstance(default, float) and math.isnan(default)), \
                f"{method.name}: default {name}={default!r} outside [{low}, {high}]"
    untuned = set(method.defaults) - set(suggested)
    assert untuned <= NOT_TUNED, f"{method.name}: {sorted(untuned - NOT_TUNED)} neither tuned nor listed as untuned"


@pytest.mark.parametrize("method", [m for m in registered_methods() if m.required_prior is not None],
                         ids=lambda m: m.name)
def test_a_required_prior_is_not_tuned(method):
    trial = RecordingTrial()
    assert method.search_space(trial)["prior"] == method.required_prior and "prior" not in trial.ranges
