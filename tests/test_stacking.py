"""Stacked training (ebm.stacking, harness.worker.execute_group): several seeds in one step.

References: each member's own single run. Where the objective draws nothing (bce, exact-mle,
perceptron; mcmc-pcd with a deterministic test kernel and chains started at the data) the
stacked arithmetic is the single run's up to float summation order, so parameters, model
selection and patience must match to float tolerance; where it samples (min-min, nce, mcmc-pcd)
the draws differ (one generator, ``randomness="different"``), so members are compared with single
runs as distributions (a paired t-test on the exact NLL of the fitted models)."""

from __future__ import annotations

import math

import pytest
import torch

from baselines.mcmc import Kernel, PersistentContrastiveDivergence
from baselines.registry import get_method
from ebm.method import Budget, Diverged, Evaluation, FitData, Fitted
from ebm.spaces import make_space
from ebm.stacking import Member, fit_stacked

CPU = torch.device("cpu")
N, D = 160, 8


def _data(space, seed: int, *, nan_row: int | None = None, rows: int = N) -> FitData:
    """Inputs and labels from a planted linear model (labels in the space's encoding)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, D, generator=g)
    w = torch.randn(D, space.k, generator=g)
    if space.kind.binary:
        y = (torch.rand(rows, space.k, generator=g) < torch.sigmoid(x @ w)).float()
    else:  # rankings: labels by decreasing noisy linear score (position 0: the highest)
        scores = x @ w + 0.5 * torch.randn(rows, space.k, generator=g)
        y = space.from_labels((-scores).argsort(-1).argsort(-1).numpy())
    if nan_row is not None:
        x[nan_row, 0] = float("nan")
    return FitData(x, y, x[:40], y[:40])


def _max_difference(a: Fitted, b: Fitted) -> float:
    return max(float((p - q).detach().abs().max()) for p, q in zip(a.energy.parameters(), b.energy.parameters()))


class _Scripted:
    """A monitor whose validation value is a fixed function of the step (the same in a single
    and a stacked run), so model selection and patience can be compared exactly."""

    def __init__(self, values: dict[int, float]) -> None:
        self.values, self.steps = values, []

    def __call__(self, progress, model) -> Evaluation:
        self.steps.append(progress.step)
        return Evaluation(self.values.get(progress.step, -1.0), maximize=True)


@pytest.mark.parametrize(("name", "kind", "k", "model", "params"), [
    ("exact-mle", "multilabel", 6, "unary", {"weight_decay": 1e-2}),
    ("bce", "multilabel", 6, "unary", {"max_grad_norm": 0.05, "lr": 1e-2}),
    ("exact-mle", "ranking", 5, "permutahedron", {"max_grad_norm": 0.05, "dropout": 0.0}),
    ("perceptron", "multilabel", 6, "unary", {"margin": 1.0, "lr": 1e-2}),
    ("perceptron", "ranking", 5, "permutahedron", {"max_grad_norm": 0.05}),
])
def test_members_without_sampling_equal_their_single_runs(name, kind, k, model, params, monkeypatch):
    """Same seeds → same initialisation, batch order, clipping (per member), Adam(W) state and
    model selection: equal to float tolerance. Member 0 is stopped by patience (its scripted
    validation peaks at step 10), member 1 runs to the end with its best at step 30; member 0
    has 7 more training rows (another fold), so the later members' rows start further on.
    Members 0 and 2 stop at step 30 and leave the stack (their slots freed): steps 31-40 are
    member 1's alone, with its slices of the parameters and of Adam's moments."""
    import torch.func

    space, method = make_space(kind, k, model), get_method(name)
    budget = Budget(max_steps=40, batch_size=16, eval_every=10, patience=2)
    scripts = [{10: 1.0, 20: 0.5, 30: 0.4}, {10: 0.1, 20: 0.2, 30: 0.9, 40: 0.3}, {}]
    seeds, rows = [11, 12, 13], [N + 7, N, N]
    singles = [method.fit(space, model, _data(space, s, rows=r), params, budget, seed=s, device=CPU,
                          monitor=_Scripted(v)) for s, r, v in zip(seeds, rows, scripts)]
    monitors = [_Scripted(v) for v in scripts]
    group_sizes: list[int] = []  # the members in each stacked step (the batch indices' leading axis)
    vmap = torch.func.vmap

    def counting_vmap(function, **options):
        step = vmap(function, **options)
        return lambda params, buffers, index: (group_sizes.append(index.shape[0]), step(params, buffers, index))[1]

    monkeypatch.setattr(torch.func, "vmap", counting_vmap)
    stacked = fit_stacked(method, space, model, [Member(_data(space, s, rows=r), s, m) for s, r, m in
                                                 zip(seeds, rows, monitors)], params, budget, device=CPU)
    assert group_sizes == [3] * 30 + [1] * 10
    assert [f.info["best_step"] for f in stacked] == [f.info["best_step"] for f in singles] == [10, 30, 10]
    assert [f.info["stopped_early"] for f in stacked] == [True, False, True]
    assert [f.info["steps"] for f in stacked] == [f.info["steps"] for f in singles] == [30, 40, 30]
    assert monitors[0].steps == [10, 20, 30] and monitors[1].steps == [10, 20, 30, 40]
    for single, member in zip(singles, stacked):
        assert member.info["stacked"] == 3
        assert _max_difference(single, member) < 1e-5
        x = _data(space, 99).x_train
        assert torch.equal(single.predict(x), member.predict(x))


def test_a_diverging_member_is_dropped_and_the_others_are_unchanged():
    """A NaN feature in member 1's rows makes its loss non-finite at the first batch that holds
    the row: it ends ``Diverged``; members 0 and 2 equal their single runs (exact-mle draws nothing)."""
    space, method, model = make_space("multilabel", 6, "unary"), get_method("exact-mle"), "unary"
    budget = Budget(max_steps=30, batch_size=16, eval_every=10)
    seeds = [1, 2, 3]
    data = [_data(space, s, nan_row=7 if i == 1 else None) for i, s in enumerate(seeds)]
    with pytest.raises(Diverged):
        method.fit(space, model, data[1], {}, budget, seed=seeds[1], device=CPU)
    stacked = fit_stacked(method, space, model, [Member(d, s) for d, s in zip(data, seeds)], {}, budget, device=CPU)
    assert isinstance(stacked[1], Diverged) and "non-finite" in str(stacked[1])
    for i in (0, 2):
        single = method.fit(space, model, data[i], {}, budget, seed=seeds[i], device=CPU)
        assert isinstance(stacked[i], Fitted) and stacked[i].info["steps"] == 30
        assert _max_difference(single, stacked[i]) < 1e-5


#: the models minmin-logistic-is trains stacked (its default: model proposal, τ offset), as (kind, k, model)
IS_MODELS = [("multilabel", 6, "unary"), ("multilabel", 6, "pairwise"), ("multilabel", 6, "mlp"),
             ("ranking", 5, "permutahedron"), ("ranking", 4, "birkhoff")]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: threads only add overhead (and the machine may be shared)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("kind", "k", "model"), IS_MODELS, ids=[case[2] for case in IS_MODELS])
def test_importance_weighted_members_compute_their_single_runs_objective(kind, k, model, monkeypatch):
    """minmin-logistic-is builds its proposal r(·|x) from the current energy, draws from it, weighs
    the draws by q/r and offsets τ by a log Z estimate (closed form for unary, leave-one-out from
    the draws otherwise), all inside the vmapped step. With the draws made equal, that step must be
    each member's own single-run step:

    * a group of one draws exactly what its single run draws (``randomness="different"`` with one
      member takes the same numbers from the same generator): equal to float tolerance;
    * three members of one seed (one initialisation, batch order and generator stream) on different
      training rows, under ``randomness="same"`` (every member gets the single run's draws), with
      their own scripted validation (member 0 stops by patience at step 30, its best at step 10)
      and a NaN feature in member 2's rows (its loss turns non-finite at the first batch holding
      it): members 0 and 1 equal their single runs, member 2 ends ``Diverged`` as its single run.

    A proposal, weight or offset computed from another member's energy or rows, or from the
    wrong slice of the draws, would break the equalities (members 0 and 1 differ by ≫ 1e-3)."""
    import torch.func

    space, method = make_space(kind, k, model), get_method("minmin-logistic-is")
    budget = Budget(max_steps=40, batch_size=16, eval_every=10, patience=2)
    scripts = [{10: 1.0, 20: 0.5, 30: 0.4}, {10: 0.1, 20: 0.2, 30: 0.9, 40: 0.3}, {}]
    data = [_data(space, 3), _data(space, 4), _data(space, 5, nan_row=7)]
    tolerance = 1e-4 if model == "mlp" else 1e-5  # its ReLU head sums in another order under vmap

    single = method.fit(space, model, data[0], {}, budget, seed=3, device=CPU, monitor=_Scripted(scripts[0]))
    (alone,) = fit_stacked(method, space, model, [Member(data[0], 3, _Scripted(scripts[0]))], {}, budget, device=CPU)
    assert isinstance(alone, Fitted) and alone.info["stacked"] == 1
    assert _max_difference(single, alone) < tolerance

    singles: list[Fitted | BaseException] = []
    for d, v in zip(data, scripts):
        try:
            singles.append(method.fit(space, model, d, {}, budget, seed=3, device=CPU, monitor=_Scripted(v)))
        except Diverged as exc:
            singles.append(exc)
    vmap = torch.func.vmap
    monkeypatch.setattr(torch.func, "vmap", lambda f, **kw: vmap(f, **{**kw, "randomness": "same"}))
    stacked = fit_stacked(method, space, model, [Member(d, 3, _Scripted(v)) for d, v in zip(data, scripts)], {},
                          budget, device=CPU)
    assert isinstance(singles[2], Diverged) and isinstance(stacked[2], Diverged)
    assert "non-finite" in str(stacked[2])
    for single, member in zip(singles[:2], stacked[:2]):
        assert isinstance(single, Fitted) and isinstance(member, Fitted)
        assert (member.info["best_step"], member.info["stopped_early"], member.info["steps"]) == (
            single.info["best_step"], single.info["stopped_early"], single.info["steps"])
        assert _max_difference(single, member) < tolerance
    assert [m.info["steps"] for m in stacked[:2]] == [30, 40]  # type: ignore[union-attr]
    assert _max_difference(singles[0], singles[1]) > 1e-3  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "k", "model"), [("multilabel", 6, "unary"), ("ranking", 5, "permutahedron"),
                                                  ("ranking", 4, "birkhoff")])
def test_minmax_members_take_their_own_sampler_steps(kind, k, model, monkeypatch):
    """minmax-reinforce takes ``sampler_steps`` − 1 ascent steps of its sampler alone before each
    joint step (ebm.training.PreSteps). Stacked, those steps run for every member at once, each
    through its own sampler, energy and rows. With the draws made equal the members must equal
    their single runs: a group of one (it draws what its single run draws), and three members of
    one seed on different rows under ``randomness="same"``. Pre-steps skipped, taken after the
    joint step, or taken with another member's sampler or rows would break the equalities (the
    members differ by ≫ 1e-3, and so do runs with one sampler step fewer)."""
    import torch.func

    space, method = make_space(kind, k, model), get_method("minmax-reinforce")
    params = {"sampler_steps": 3, "n_samples": 4, "hidden": 16, "sampler_hidden": 16}
    budget = Budget(max_steps=30, batch_size=16, eval_every=10)
    data = [_data(space, 3), _data(space, 4), _data(space, 5)]

    single = method.fit(space, model, data[0], params, budget, seed=3, device=CPU)
    (alone,) = fit_stacked(method, space, model, [Member(data[0], 3)], params, budget, device=CPU)
    assert isinstance(alone, Fitted) and alone.info["stacked"] == 1
    assert _max_difference(single, alone) < 1e-5
    fewer = method.fit(space, model, data[0], {**params, "sampler_steps": 2}, budget, seed=3, device=CPU)
    assert _max_difference(single, fewer) > 1e-3

    singles = [method.fit(space, model, d, params, budget, seed=3, device=CPU) for d in data]
    vmap = torch.func.vmap
    monkeypatch.setattr(torch.func, "vmap", lambda f, **kw: vmap(f, **{**kw, "randomness": "same"}))
    stacked = fit_stacked(method, space, model, [Member(d, 3) for d in data], params, budget, device=CPU)
    for one, member in zip(singles, stacked):
        assert isinstance(member, Fitted)
        assert _max_difference(one, member) < 1e-5
    assert _max_difference(singles[0], singles[1]) > 1e-3


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("kind", "k", "model"), [IS_MODELS[i] for i in (0, 1, 3, 4)],
                         ids=[IS_MODELS[i][2] for i in (0, 1, 3, 4)])
def test_stacked_importance_weighted_gradient_is_each_members_exact_gradient(kind, k, model):
    """Under ``randomness="different"`` every member draws its own y′ ~ r_s(·|x) (its own proposal,
    from its own energy) and weighs them by q/r_s: for each of two members with different peaked
    energies, the weighted gradient over 40,000 draws per input equals that member's exact gradient
    of τ + E_q e^{g − τ} − g(x, y), enumerated over Y (relative error < 5%), and is far (> 30%) from
    the other member's (the reference could tell members apart)."""
    from torch.func import functional_call, stack_module_state, vmap

    from ebm.energies import build_energy
    from ebm.importance import draw_training_samples
    from ebm.inference import training_proposal
    from ebm.objective import expected_dual, minmin_loss
    from ebm.tau import NeuralTau

    space = make_space(kind, k, model)
    x, y = torch.randn(4, 5, generator=torch.Generator().manual_seed(2)), space.sample_prior(
        4, generator=torch.Generator().manual_seed(3))
    everything, log_q = space.enumerate_all(), space.log_prior(space.enumerate_all())

    class Step(torch.nn.Module):
        def __init__(self, seed: int) -> None:
            super().__init__()
            torch.manual_seed(seed)
            self.energy, self.tau = build_energy(space, model, 5, hidden=8, rank=2), NeuralTau(5, hidden=8, init=0.5)
            with torch.no_grad():  # peaked: the model proposal is far from q
                for p in self.energy.parameters():
                    p.mul_(3.0)

        def forward(self, draws: int, generator: torch.Generator | None) -> torch.Tensor:
            g_data = self.energy(x, y.unsqueeze(1)).squeeze(1)
            if generator is None:  # exact: enumerate Y
                return (expected_dual(self.tau(x), self.energy(x, everything), log_q, "kl") - g_data).mean()
            proposal = training_proposal(self.energy, space, x, y, 0.1, generator)
            samples, log_weights = draw_training_samples(proposal, space, draws, generator, x.dtype)
            return minmin_loss(g_data, self.energy(x, samples), self.tau(x), "kl", log_weights).mean()

    members = [Step(0), Step(1)]
    params, buffers = stack_module_state(members)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(4)
    losses = vmap(lambda p, b: functional_call(members[0], (p, b), (40_000, generator)),
                  randomness="different")(params, buffers)
    names = list(params)
    stacked = torch.autograd.grad(losses.sum(), [params[n] for n in names], allow_unused=True)
    estimate = [torch.cat([g[s].reshape(-1) for g in stacked if g is not None]) for s in range(2)]
    exact = []
    for member in members:
        grads = torch.autograd.grad(member(0, None), [dict(member.named_parameters())[n] for n in names],
                                    allow_unused=True)
        exact.append(torch.cat([g.reshape(-1) for g, s in zip(grads, stacked) if s is not None]))
    error = [[float((estimate[s] - exact[t]).norm() / exact[t].norm()) for t in range(2)] for s in range(2)]
    print(f"\n{model}: relative gradient errors (member × reference) {error}")
    assert error[0][0] < 0.05 and error[1][1] < 0.05
    assert error[0][1] > 0.3 and error[1][0] > 0.3


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("kind", "k", "model"), [IS_MODELS[i] for i in (0, 1, 3)],
                         ids=[IS_MODELS[i][2] for i in (0, 1, 3)])
def test_importance_weighted_members_are_distributed_like_single_runs(kind, k, model):
    """minmin-logistic-is stacked in groups of 3 (its defaults: model proposal, τ offset): members
    draw other y′ than their single runs (one generator, ``randomness="different"``), so outcomes
    are compared as distributions: the exact test NLL (enumerated) of two groups of 3 and of the
    six single runs with the same seeds (same initialisation and batch order) must not differ by a
    paired t-test (α = 0.01)."""
    from scipy import stats

    space, method = make_space(kind, k, model), get_method("minmin-logistic-is")
    budget = Budget(max_steps=100, batch_size=32, eval_every=100)
    params = {"n_samples": 8, "hidden": 32}
    test = _data(space, 1234)

    def nll(fitted: Fitted | BaseException) -> float:
        assert isinstance(fitted, Fitted)
        return float(fitted.nll(test.x_train, test.y_train)[0].mean())

    seeds = list(range(20, 26))
    singles = [nll(method.fit(space, model, _data(space, 7), params, budget, seed=s, device=CPU)) for s in seeds]
    members = [nll(f) for group in (seeds[:3], seeds[3:]) for f in fit_stacked(
        method, space, model, [Member(_data(space, 7), s) for s in group], params, budget, device=CPU)]
    assert all(math.isfinite(v) for v in singles + members)
    print(f"\n{model}: test NLL single {[round(v, 3) for v in singles]}, stacked {[round(v, 3) for v in members]}")
    assert stats.ttest_rel(singles, members).pvalue > 0.01


@pytest.mark.parametrize(("name", "kind", "k", "model", "params"), [
    ("minmin-logistic", "multilabel", 6, "unary", {"n_samples": 8, "hidden": 32}),
    ("nce", "multilabel", 6, "unary", {"n_samples": 8, "hidden": 32}),
    ("mcmc-pcd", "multilabel", 6, "unary", {"hidden": 32}),
    ("mcmc-pcd", "ranking", 5, "permutahedron", {"hidden": 32, "init": "data", "sweeps": 2}),
    ("mcmc-gwg", "multilabel", 6, "pairwise", {"hidden": 32}),
    ("minmax-reinforce", "multilabel", 6, "unary", {"hidden": 32, "n_samples": 8, "sampler_steps": 2}),
    ("minmax-reinforce", "ranking", 5, "permutahedron", {"hidden": 32, "n_samples": 8, "sampler_steps": 3}),
])
def test_sampling_members_are_distributed_like_single_runs(name, kind, k, model, params):
    """min-min and NCE sample y′ ~ q, PCD (Gibbs / MH moves) and GWG (gradient-informed flips)
    advance their chains at random (and draws them from q under ``init="prior"``), minmax-reinforce
    draws from its learned sampler: stacked members draw other samples than their
    single runs (the group shares one generator), so compare outcomes. Six seeds each way,
    paired by seed (same initialisation and batch order): the exact test NLL (|Y| = 64 or 120,
    enumerated) of stacked members and single runs must not differ by a paired t-test
    (α = 0.01), and two members with the same seed and data must differ (their draws are
    their own)."""
    from scipy import stats

    space, method = make_space(kind, k, model), get_method(name)
    budget = Budget(max_steps=100, batch_size=32, eval_every=100)
    seeds = list(range(20, 26))
    test = _data(space, 1234)

    def nll(fitted: Fitted) -> float:
        return float(fitted.nll(test.x_train, test.y_train)[0].mean())

    singles = [nll(method.fit(space, model, _data(space, 7), params, budget, seed=s, device=CPU)) for s in seeds]
    stacked = fit_stacked(method, space, model, [Member(_data(space, 7), s) for s in seeds], params, budget,
                          device=CPU)
    members = [nll(f) for f in stacked]
    assert all(math.isfinite(v) for v in singles + members)
    assert stats.ttest_rel(singles, members).pvalue > 0.01
    twins = fit_stacked(method, space, model, [Member(_data(space, 7), 5), Member(_data(space, 7), 5)], params,
                        Budget(max_steps=20, batch_size=32, eval_every=20), device=CPU)
    assert _max_difference(*twins) > 0  # type: ignore[arg-type]


class _RollKernel(Kernel):
    """A deterministic test kernel: moves every label's value to the next label (a cyclic shift
    along the label axis; a permutation stays a permutation). A chain started at the data
    (``init="data"``) holds roll^m(y) after its example's m-th batch, so the objective depends
    on how often *this member's* example was visited: members that shared or mixed chains, or
    whose chains were not written back, would not equal their single runs."""

    def __call__(self, energy, space, x, y):
        return torch.roll(y, 1, dims=y.dim() - len(space.event_shape)), 0


class _RollPCD(PersistentContrastiveDivergence):
    def make_kernel(self, space, params, generator):
        return _RollKernel()


@pytest.mark.parametrize(("kind", "k", "model"), [("multilabel", 6, "unary"), ("ranking", 5, "permutahedron"),
                                                  ("ranking", 4, "birkhoff")])
def test_pcd_members_keep_their_own_chains(kind, k, model):
    """With the deterministic kernel and chains started at each member's own labels nothing is
    drawn, so stacked members equal their single runs (parameters to float tolerance, model
    selection and patience exactly). Each member has other data (and member 0 more rows: its
    chains start further on in the template's rows), so chains taken from another member, a
    pool shared by the members or chains never advanced would change the objective."""
    space, method = make_space(kind, k, model), _RollPCD()
    params = {"init": "data", "chains": 2, "lr": 1e-2, "hidden": 16}
    budget = Budget(max_steps=40, batch_size=16, eval_every=10, patience=2)
    scripts = [{10: 1.0, 20: 0.5, 30: 0.4}, {10: 0.1, 20: 0.2, 30: 0.9, 40: 0.3}, {}]
    seeds, rows = [11, 12, 13], [N + 7, N, N]
    singles = [method.fit(space, model, _data(space, s, rows=r), params, budget, seed=s, device=CPU,
                          monitor=_Scripted(v)) for s, r, v in zip(seeds, rows, scripts)]
    stacked = fit_stacked(method, space, model, [Member(_data(space, s, rows=r), s, _Scripted(v)) for s, r, v in
                                                 zip(seeds, rows, scripts)], params, budget, device=CPU)
    assert [f.info["best_step"] for f in stacked] == [f.info["best_step"] for f in singles] == [10, 30, 10]
    assert [f.info["steps"] for f in stacked] == [f.info["steps"] for f in singles] == [30, 40, 30]
    for single, member in zip(singles, stacked):
        assert isinstance(member, Fitted) and member.info["stacked"] == 3
        assert member.info["energy_evals"] == single.info["energy_evals"]
        assert _max_difference(single, member) < 1e-5


@pytest.mark.parametrize("kernel", ["roll", "gibbs"])
def test_a_diverging_pcd_member_is_dropped_and_the_others_go_on(kernel):
    """A NaN feature in member 1's rows: its surrogate (and its chains' Gibbs conditionals)
    turn non-finite at the first batch holding the row, it ends ``Diverged`` and the others
    train to the end; with the deterministic kernel they equal their single runs."""
    space, model = make_space("multilabel", 6, "unary"), "unary"
    method = _RollPCD() if kernel == "roll" else get_method("mcmc-pcd")
    params = {"init": "data", "hidden": 16}
    budget = Budget(max_steps=30, batch_size=16, eval_every=10)
    seeds = [1, 2, 3]
    data = [_data(space, s, nan_row=7 if i == 1 else None) for i, s in enumerate(seeds)]
    with pytest.raises(Diverged):
        method.fit(space, model, data[1], params, budget, seed=seeds[1], device=CPU)
    stacked = fit_stacked(method, space, model, [Member(d, s) for d, s in zip(data, seeds)], params, budget,
                          device=CPU)
    assert isinstance(stacked[1], Diverged) and "non-finite" in str(stacked[1])
    for i in (0, 2):
        member = stacked[i]
        assert isinstance(member, Fitted) and member.info["steps"] == 30
        assert all(torch.isfinite(p).all() for p in member.energy.parameters())
        if kernel == "roll":
            single = method.fit(space, model, data[i], params, budget, seed=seeds[i], device=CPU)
            assert _max_difference(single, member) < 1e-5


@pytest.mark.parametrize("name", ["bce", "roll-pcd"])
def test_a_compiled_step_trains_the_members_as_the_eager_step(name):
    """``compile_step`` (torch.compile of the vmapped objective, forward and backward; perf's
    ``compile`` benchmark) changes nothing but float rounding: with bce and the deterministic PCD
    kernel nothing is drawn, so each member's parameters equal the eager group's to float
    tolerance, and patience, model selection and a member leaving the stack (a smaller group: a
    recompilation) work as eager. PCD's step writes its chains' rows (write_rows), which must
    still reach the template's chains from a compiled step."""
    space, model = make_space("multilabel", 6, "unary"), "unary"
    method = _RollPCD() if name == "roll-pcd" else get_method(name)
    params = {"init": "data", "chains": 2, "lr": 1e-2, "hidden": 16} if name == "roll-pcd" else {"lr": 1e-2}
    budget = Budget(max_steps=40, batch_size=16, eval_every=10, patience=2)
    scripts = [{10: 1.0, 20: 0.5, 30: 0.4}, {10: 0.1, 20: 0.2, 30: 0.9, 40: 0.3}, {}]
    seeds, rows = [11, 12, 13], [N + 7, N, N]
    groups = {compiled: fit_stacked(method, space, model, [Member(_data(space, s, rows=r), s, _Scripted(v))
                                                           for s, r, v in zip(seeds, rows, scripts)],
                                    params, budget, device=CPU, compile_step=compiled)
              for compiled in (False, True)}
    for eager, compiled in zip(groups[False], groups[True]):
        assert isinstance(compiled, Fitted)
        assert (compiled.info["steps"], compiled.info["best_step"]) == (eager.info["steps"], eager.info["best_step"])
        assert _max_difference(eager, compiled) < 1e-5
    assert [f.info["steps"] for f in groups[True]] == [30, 40, 30]


def test_write_rows_writes_in_place_alone_and_refuses_a_batched_write_outside_a_step():
    from torch.func import vmap

    from ebm.stacking import write_rows

    target = torch.zeros(5, 2)
    write_rows(target, torch.tensor([3, 1]), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert torch.equal(target, torch.tensor([[0.0, 0], [3, 4], [0, 0], [1, 2], [0, 0]]))
    with pytest.raises(RuntimeError, match="outside a stacked step"):
        vmap(lambda i: write_rows(target, i, torch.ones(2, 2)) or i)(torch.tensor([[0, 1], [2, 3]]))


def test_methods_opt_in():
    space = make_space("multilabel", 6, "unary")
    finite = get_method("minmin-finite")
    assert not finite.can_stack(space, "unary", finite.params({}))
    logistic_is = get_method("minmin-logistic-is")
    for kind, k, model in IS_MODELS:
        assert logistic_is.can_stack(make_space(kind, k, model), model, logistic_is.params({})), model
    assert not logistic_is.can_stack(space, "unary", logistic_is.params({"tau": "finite"}))
    with pytest.raises(ValueError, match="stacked"):
        fit_stacked(finite, space, "unary", [Member(_data(space, 1), 1)] * 2, {}, Budget(max_steps=2), device=CPU)
    sparsemax = get_method("exact-sparsemax")  # its threshold's fixed point stops on a data-dependent test
    for kind, k, model in [("multilabel", 6, "unary"), ("ranking", 5, "permutahedron")]:
        assert not sparsemax.can_stack(make_space(kind, k, model), model, sparsemax.params({})), model
    for name in ("bce", "exact-mle", "minmin-logistic", "minmin-sparsemax", "minmin-entmax15", "minmin-scalar",
                 "nce", "mcmc-pcd", "mcmc-gwg", "perceptron", "minmax-reinforce"):
        method = get_method(name)
        assert method.can_stack(space, "unary", method.params({})), name
    pcd, perceptron = get_method("mcmc-pcd"), get_method("perceptron")
    for kind, k, model in [("multilabel", 6, "pairwise"), ("multilabel", 6, "mlp"), ("ranking", 5, "permutahedron"),
                           ("ranking", 5, "birkhoff")]:
        for overrides in ({}, {"init": "data", "sweeps": 3}):
            assert pcd.can_stack(make_space(kind, k, model), model, pcd.params(overrides)), (model, overrides)
    ranking = make_space("ranking", 5, "permutahedron")
    assert perceptron.can_stack(ranking, "permutahedron", perceptron.params({}))
    assert perceptron.can_stack(space, "unary", perceptron.params({"margin": 1.0}))
    # the Hungarian oracle (scipy), enumeration's boolean indexing: alone
    assert not perceptron.can_stack(ranking, "permutahedron", perceptron.params({"margin": 1.0}))
    assert not perceptron.can_stack(make_space("ranking", 5, "birkhoff"), "birkhoff", perceptron.params({}))
    assert not perceptron.can_stack(make_space("multilabel", 6, "pairwise"), "pairwise", perceptron.params({}))


def test_run_writes_each_members_row_with_the_run_ids_of_unstacked_runs(tmp_path):
    """``run`` with stacking (the default) and with ``--no-stack`` (RunOptions.stack = 1): the same
    run ids, one row and its curves per run; bce, exact-mle and perceptron give equal test metrics; a group
    whose members are partly stored runs only the missing ones."""
    from harness_fixtures import serial_options, write_suite

    from harness import store
    from harness.commands.run import run_suite
    from harness.plan import Filters

    suite = write_suite(tmp_path, methods=("bce", "exact-mle", "minmin-logistic", "mcmc-pcd", "perceptron"), seeds=3,
                        steps=20)
    stacked = run_suite(suite, options=serial_options(tmp_path / "stacked"))
    alone = run_suite(suite, options=serial_options(tmp_path / "alone", stack=1))
    assert stacked.counts == alone.counts == {"ok": 15}
    a = store.read_table(tmp_path / "stacked", "runs").set_index("run_id").sort_index()
    b = store.read_table(tmp_path / "alone", "runs").set_index("run_id").sort_index()
    assert list(a.index) == list(b.index) and a.groupby("method").size().to_dict() == {
        "bce": 3, "exact-mle": 3, "mcmc-pcd": 3, "minmin-logistic": 3, "perceptron": 3}
    assert (a["stacked"] == 3).all() and b["stacked"].isna().all()
    exact = ~a["method"].isin(["minmin-logistic", "mcmc-pcd"])
    assert (a.loc[exact, "test_nll"] - b.loc[exact, "test_nll"]).abs().max() < 1e-4
    curves = store.read_table(tmp_path / "stacked", "curves")
    assert set(curves["run_id"]) == set(a.index)
    assert (curves[curves["split"] == "val"].groupby("run_id").size() == 2).all()

    partial = tmp_path / "partial"
    run_suite(suite, Filters(seeds=1), serial_options(partial))
    resumed = run_suite(suite, options=serial_options(partial))
    assert resumed.to_run == 10 and resumed.counts == {"ok": 10}
    assert sorted(store.read_table(partial, "runs")["run_id"]) == list(a.index)


def test_a_group_member_claimed_by_another_driver_is_left_to_it(tmp_path):
    """Another live driver holds seed 1's claim: this driver's group trains seeds 0 and 2
    stacked (``stacked`` = 2) and leaves seed 1 to the holder (counted as held elsewhere)."""
    from harness_fixtures import serial_options, write_suite

    from harness import store
    from harness.claims import Claims
    from harness.commands.run import run_suite
    from harness.plan import plan_runs
    from harness.suites import load_suite

    suite = write_suite(tmp_path, methods=("bce",), seeds=3, steps=10)
    plan = sorted(plan_runs(load_suite(suite)), key=lambda run: run.spec.seed)
    other = Claims(tmp_path / "r", "another-driver")
    assert other.try_claim(plan[1].run_id)
    summary = run_suite(suite, options=serial_options(tmp_path / "r"))
    other.close()
    runs = store.read_table(tmp_path / "r", "runs")
    assert summary.held_elsewhere == 1 and summary.counts == {"ok": 2}
    assert sorted(runs["seed"]) == [0, 2] and (runs["stacked"] == 2).all()


def test_stack_groups_balances_stackable_configurations_and_leaves_the_rest_alone(tmp_path):
    from harness_fixtures import write_suite

    from harness.dispatch import stack_groups
    from harness.plan import plan_runs
    from harness.suites import load_suite

    plan = plan_runs(load_suite(write_suite(tmp_path, methods=("bce", "constant", "minmin-finite"), seeds=7)))
    jobs = stack_groups(plan.runnable(), 5)
    stacked = [job for job in jobs if len(job) > 1]
    assert sorted(len(job) for job in stacked) == [3, 4]  # 7 seeds: the fewest groups ≤ 5, balanced
    assert {run.spec.method for job in stacked for run in job} == {"bce"}
    assert sorted(run.spec.seed for job in stacked for run in job) == list(range(7))
    assert sum(len(job) for job in jobs) == len(plan.runnable()) == 21
    assert all(len(job) == 1 for job in stack_groups(plan.runnable(), 1))
    # q depends on the seed's training labels: bce takes each member's own (stacks_priors), exact-mle does not
    frequency = plan_runs(load_suite(write_suite(tmp_path, methods=("bce", "exact-mle"), seeds=3, name="frequency.toml",
                                                 params='{bce = {prior = "frequency"}, exact-mle = {prior = '
                                                        '"frequency"}}')))
    jobs = stack_groups(frequency.runnable(), 5)
    assert sorted((job[0].spec.method, len(job)) for job in jobs) == [("bce", 3)] + [("exact-mle", 1)] * 3


def test_execute_group_rows_for_bad_members_and_unstackable_groups(tmp_path):
    """A member whose data failed to load gets its own ``failed`` row while the others train
    stacked; a group whose method cannot stack (minmin-finite) runs each member alone."""
    from harness_fixtures import write_suite

    from harness.commands.run import _loader
    from harness.plan import plan_runs
    from harness.suites import load_suite
    from harness.worker import execute_group

    load = _loader(None)
    bce = plan_runs(load_suite(write_suite(tmp_path, methods=("bce",), seeds=3, steps=10))).runnable()
    data = [load(run.spec.data_key) for run in bce]
    results = execute_group(bce, bce[0].method, data[0], RuntimeError("disk on fire"), data[2])
    assert [r.record.run_id for r in results] == [run.run_id for run in bce]
    assert [r.record.status for r in results] == ["ok", "failed", "ok"]
    assert "disk on fire" in results[1].record.error and results[1].curves == []
    assert [r.record.stacked for r in results] == [2, None, 2]
    finite = plan_runs(load_suite(write_suite(tmp_path, methods=("minmin-finite",), seeds=2, steps=10,
                                              name="finite.toml"))).runnable()
    alone = execute_group(finite, finite[0].method, *(load(run.spec.data_key) for run in finite))
    assert [r.record.status for r in alone] == ["ok", "ok"] and all(r.record.stacked is None for r in alone)
    assert all(r.curves for r in alone)


#: methods whose q enters only through the space inside their objective (StepMethod.stacks_priors), with
#: small settings: multilabel unary k = 6, frequency priors
PRIOR_METHODS = [("bce", {"lr": 1e-2}), ("perceptron", {"margin": 1.0, "lr": 1e-2}), ("nce", {"n_samples": 4}),
                 ("minmin-logistic", {"n_samples": 4}), ("minmin-logistic-is", {"n_samples": 4}),
                 ("minmax-reinforce", {"sampler_steps": 2, "n_samples": 4, "sampler_hidden": 16})]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(("name", "params"), PRIOR_METHODS, ids=[name for name, _ in PRIOR_METHODS])
def test_members_with_their_own_prior_equal_their_single_runs(name, params, monkeypatch):
    """Frequency priors: each member's π comes from its own training rows, so the members' q differ,
    and a stacked group must train each with its own (inside the vmapped step the template's space
    holds the member's π). Three members of one seed on different rows under ``randomness="same"``
    (each draws its single run's noise; q turns it into the member's own prior draws) equal their
    single runs, each on its own space. A member trained with the group's q instead (member 0's)
    would not: the single runs on the group's space differ by ≫ 1e-5."""
    import torch.func

    from ebm.spaces import make_space as space_of

    method, model = get_method(name), "unary"
    base = make_space("multilabel", 6, model)
    data = [_data(base, seed, rows=N + 3 * seed) for seed in (3, 4, 5)]
    spaces = [space_of("multilabel", 6, model, prior="frequency", y_train=d.y_train) for d in data]
    assert not torch.equal(spaces[0].prior_probs, spaces[1].prior_probs)
    params = {**params, "prior": "frequency", "hidden": 16}
    budget = Budget(max_steps=30, batch_size=16, eval_every=10)
    singles = [method.fit(s, model, d, params, budget, seed=3, device=CPU) for s, d in zip(spaces, data)]
    with_group_q = method.fit(spaces[0], model, data[1], params, budget, seed=3, device=CPU)
    assert _max_difference(singles[1], with_group_q) > 1e-4

    vmap = torch.func.vmap
    monkeypatch.setattr(torch.func, "vmap", lambda f, **kw: vmap(f, **{**kw, "randomness": "same"}))
    stacked = fit_stacked(method, spaces[0], model, [Member(d, 3, space=s) for d, s in zip(data, spaces)],
                          params, budget, device=CPU)
    for single, member, space in zip(singles, stacked, spaces):
        assert isinstance(member, Fitted) and member.info["stacked"] == 3
        assert member.space is space  # its evaluation's q is its own
        assert _max_difference(single, member) < 1e-5


def test_own_priors_need_a_method_that_takes_them():
    """exact-mle enumerates log q once, before its first step: members with their own q do not
    stack (fit_stacked refuses; the dispatcher leaves its frequency-prior runs alone)."""
    from ebm.spaces import make_space as space_of

    base = make_space("multilabel", 6, "unary")
    data = [_data(base, seed) for seed in (1, 2)]
    spaces = [space_of("multilabel", 6, "unary", prior="frequency", y_train=d.y_train) for d in data]
    exact = get_method("exact-mle")
    assert not exact.stacks_priors and get_method("bce").stacks_priors
    with pytest.raises(ValueError, match="own prior"):
        fit_stacked(exact, spaces[0], "unary", [Member(d, 1, space=s) for d, s in zip(data, spaces)], {},
                    Budget(max_steps=2), device=CPU)
    # one q for all (or none given): the group's
    (alone,) = fit_stacked(exact, spaces[0], "unary", [Member(data[0], 1, space=spaces[0])], {},
                           Budget(max_steps=2), device=CPU)
    assert isinstance(alone, Fitted)


def test_execute_group_trains_frequency_prior_members_each_with_its_own_q(tmp_path):
    """The worker hands each member its own space (its π from its own training rows): a stacked
    group of frequency-prior bce runs gives each run the metrics of its lone run (bce draws nothing)."""
    from harness_fixtures import write_suite

    from harness.commands.run import _loader
    from harness.plan import plan_runs
    from harness.suites import load_suite
    from harness.worker import execute_group, execute_run

    load = _loader(None)
    runs = plan_runs(load_suite(write_suite(tmp_path, methods=("bce",), seeds=3, steps=10,
                                            params='{bce = {prior = "frequency"}}'))).runnable()
    data = [load(run.spec.data_key) for run in runs]
    stacked = execute_group(runs, runs[0].method, *data)
    alone = [execute_run(run, run.method, d) for run, d in zip(runs, data)]
    assert [r.record.stacked for r in stacked] == [3, 3, 3]
    for group_member, single in zip(stacked, alone):
        assert group_member.record.status == single.record.status == "ok"
        metrics = single.record.metrics
        assert metrics and set(group_member.record.metrics) == set(metrics)
        for name, value in metrics.items():
            if isinstance(value, float) and not name.endswith("seconds"):
                assert group_member.record.metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
