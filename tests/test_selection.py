"""Model selection in the shared training loop (issue 11) and gradient clipping (issue 12).

The overfitting case is exact MLE (the exact log-partition: no sampling noise) on 40 draws
of a planted Ising model over {0,1}^6: with a wide pairwise energy the validation NLL (exact, by
enumeration) bottoms out after some 50 steps and then climbs. The references
are a ``selection="last"`` run with the same seed (today's behaviour) and the validation
values the monitor saw."""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from baselines.exact import ExactMLE
from baselines.registry import list_methods
from ebm.method import Budget, Evaluation, FitData, Progress
from ebm.spaces import Multilabel, Permutations
from ebm.training import StepMethod
from tests.test_minmin import planted_ising

CPU = torch.device("cpu")
PARAMS = {"hidden": 64, "depth": 1, "rank": 6, "lr": 1e-3}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def overfit_data():
    draw = planted_ising(k=6, d=6, seed=3)
    x_train, y_train, _ = draw(40, 1)
    x_val, y_val, _ = draw(300, 2)
    x_test, y_test, _ = draw(2000, 3)
    return FitData(x_train, y_train, x_val, y_val), (x_test, y_test)


class ValNLL:
    """A monitor: exact validation NLL (lower is better), every value kept."""

    def __init__(self, data: FitData):
        self.data, self.values = data, []

    def __call__(self, progress: Progress, model) -> Evaluation:
        value = float(model.nll(self.data.x_val, self.data.y_val)[0].mean())
        self.values.append((progress.step, value))
        return Evaluation(value, maximize=False)


def fit(data, budget, monitor=None, params=PARAMS):
    return ExactMLE().fit(Multilabel(6), "pairwise", data, dict(params), budget, seed=0, device=CPU, monitor=monitor)


def test_best_validation_checkpoint_beats_the_overfitted_last_step(overfit_data):
    """Issue 11, done-when 1: last-step test NLL measurably worse than the best-validation one."""
    data, (x_test, y_test) = overfit_data
    steps = dict(max_steps=400, batch_size=40, eval_every=10)
    best_monitor, last_monitor = ValNLL(data), ValNLL(data)
    best = fit(data, Budget(**steps, selection="best_val"), best_monitor)
    last = fit(data, Budget(**steps, selection="last"), last_monitor)
    assert best_monitor.values == last_monitor.values  # same seed, same trajectory
    values = dict(best_monitor.values)
    best_step = min(values, key=values.get)
    assert best.info["best_step"] == last.info["best_step"] == best_step
    assert 10 < best_step < 400  # not the first evaluation: the model first learns, then overfits
    assert best.info["selection"] == "best_val" and last.info["selection"] == "last"
    assert best.info["best_value"] == pytest.approx(values[best_step])
    assert best.info["stopped_early"] is False and best.info["steps"] == 400
    # the returned parameters are those of the best evaluation (recomputed, not recorded)
    assert float(best.nll(data.x_val, data.y_val)[0].mean()) == pytest.approx(values[best_step], rel=1e-6)
    assert float(last.nll(data.x_val, data.y_val)[0].mean()) == pytest.approx(values[400], rel=1e-6)
    test_best = float(best.nll(x_test, y_test)[0].mean())
    test_last = float(last.nll(x_test, y_test)[0].mean())
    assert values[400] > values[best_step] + 0.1  # it does overfit on validation ...
    assert test_last > test_best + 0.1, (test_best, test_last)  # ... and the test split agrees


def test_selection_last_and_no_monitor_reproduce_the_plain_loop(overfit_data):
    """selection="last" returns the last step's parameters: the same as a run without a
    monitor (today's behaviour), and as best_val when there is no validation value."""
    data, _ = overfit_data
    budget = dict(max_steps=60, batch_size=16, eval_every=20)
    plain = fit(data, Budget(**budget))
    last = fit(data, Budget(**budget, selection="last"), ValNLL(data))
    bool_monitor = fit(data, Budget(**budget), lambda progress, model: False)  # the old contract
    for other in (last, bool_monitor):
        for p, q in zip(plain.energy.parameters(), other.energy.parameters(), strict=True):
            assert torch.equal(p, q)
    assert plain.info["best_step"] == bool_monitor.info["best_step"] == 60
    assert plain.info["best_value"] is None


@pytest.mark.parametrize("name", ["exact-mle", "minmin-logistic"])
def test_steps_after_an_evaluation_train_with_dropout_again(overfit_data, name):
    """The monitor's evaluation puts the modules in eval mode (``Fitted.nll``); the loop puts them
    back in train mode before the next step, so dropout stays on: the same parameters as a run
    whose monitor evaluates nothing, and other ones than a run that trains on without dropout."""
    from baselines.registry import get_method

    data, _ = overfit_data
    method = get_method(name)
    params = method.params({**PARAMS, "dropout": 0.3})
    budget = Budget(max_steps=60, batch_size=16, eval_every=20, selection="last")

    def run(monitor, params=params):
        return method.fit(Multilabel(6), "pairwise", data, dict(params), budget, seed=0, device=CPU,
                          monitor=monitor).energy.parameters()

    evaluating = run(ValNLL(data))
    silent = run(lambda progress, model: False)
    for p, q in zip(evaluating, silent, strict=True):
        assert torch.equal(p, q)

    # the equality is no tautology: dropout changes the parameters (a step in eval mode would too)
    without = run(lambda progress, model: False, {**params, "dropout": 0.0})
    assert any(not torch.equal(p, q) for p, q in zip(run(ValNLL(data)), without, strict=True))


def test_patience_stops_after_that_many_evaluations_without_improvement(overfit_data):
    data, _ = overfit_data
    monitor = ValNLL(data)
    fitted = fit(data, Budget(max_steps=2000, batch_size=40, eval_every=10, patience=3), monitor)
    # the rule, replayed on the values the monitor saw
    best, since, stop = math.inf, 0, None
    for step, value in monitor.values:
        best, since = (value, 0) if value < best else (best, since + 1)
        if since == 3:
            stop = step
            break
    assert stop is not None and fitted.info["steps"] == stop == monitor.values[-1][0] < 2000
    assert fitted.info["stopped_early"] is True
    assert fitted.info["best_step"] == stop - 3 * 10


def test_a_stop_from_the_monitor_is_not_an_early_stop_by_patience(overfit_data):
    data, _ = overfit_data
    fitted = fit(data, Budget(max_steps=100, batch_size=16, eval_every=10),
                 lambda progress, model: Evaluation(1.0, True, stop=progress.step == 30))
    assert fitted.info["steps"] == 30 and fitted.info["stopped_early"] is False


def test_budget_refuses_unknown_selection_and_bad_patience():
    with pytest.raises(ValueError, match="selection"):
        Budget(selection="best")
    with pytest.raises(ValueError, match="patience"):
        Budget(patience=0)


def _space_for(method):
    """A small space and model each method supports (nce and the ranking-only baselines: rankings)."""
    for space, model in ((Multilabel(4), "pairwise"), (Permutations(4), "permutahedron")):
        if method.check(space, model, method.params({})) is None:
            return space, model
    raise AssertionError(f"{method.name} supports neither small test space")


def _data(space):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=generator)
    return FitData(x, space.sample_prior(64, generator=generator))


@pytest.mark.parametrize("name", [m.name for m in list_methods() if isinstance(m, StepMethod)])
def test_max_grad_norm_bounds_every_update_of_every_method(name):
    """The gradients the optimiser sees: with clipping at c, the first step's are exactly
    torch.nn.utils.clip_grad_norm_ applied to the unclipped run's, and no step's norm exceeds c."""
    method = next(m for m in list_methods() if m.name == name)
    space, model = _space_for(method)
    data, budget = _data(space), Budget(max_steps=5, batch_size=32, eval_every=5)
    extra = {"sampler_steps": 1} if "sampler_steps" in method.defaults else {}  # one optimiser step per batch

    def grads_seen(clip):
        seen = []
        hook = register_optimizer_step_pre_hook(
            lambda opt, args, kwargs: seen.append([p.grad.detach().clone() for group in opt.param_groups
                                                   for p in group["params"] if p.grad is not None]))
        try:
            method.fit(space, model, data, {"hidden": 8, "max_grad_norm": clip, **extra}, budget, seed=0, device=CPU)
        finally:
            hook.remove()
        return seen

    free, clipped = grads_seen(None), grads_seen(1e-3)
    assert len(free) == len(clipped) == 5
    # the reference: torch's own clipping applied to the unclipped run's first gradients
    reference = [torch.nn.Parameter(torch.zeros_like(g)) for g in free[0]]
    for parameter, g in zip(reference, free[0]):
        parameter.grad = g.clone()
    norm = torch.nn.utils.clip_grad_norm_(reference, 1e-3)
    assert norm > 1e-3  # clipping is active
    for got, want in zip(clipped[0], reference, strict=True):
        torch.testing.assert_close(got, want.grad)
    for step in clipped:
        total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in step]))
        assert total <= 1e-3 * (1 + 1e-5)
