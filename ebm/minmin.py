"""The joint ("min-min") EBM: g(x, y) and τ(x) ≈ log-partition learned together.

Per training pair (x, y), with n′ samples y′_j ~ q drawn afresh every step,

    L = τ(x) + (1/n′) Σ_j f*(g(x, y′_j) − τ(x)) − g(x, y)

(:func:`ebm.objective.minmin_loss`). Its expectation over y′ is minimised in τ at
Ω*(g)(x) (= log E_q e^g for ``kl``), where it equals the Fenchel–Young loss of g; so
minimising over g and τ jointly is maximum likelihood for ``kl`` without ever
computing a partition function. ``sparsemax``/``entmax15`` give sparse p = q·(f*)′(g − τ).

Variants (names are part of the CLI): ``minmin-logistic`` (kl, neural τ),
``minmin-sparsemax``, ``minmin-entmax15`` (neural τ), ``minmin-finite`` (kl, one τ per
training example), ``minmin-scalar`` (kl, one τ for all x).
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from ebm.divergences import get_divergence
from ebm.method import FitContext, FitData, Fitted, Method
from ebm.objective import minmin_loss
from ebm.spaces import Multilabel, OutputSpace
from ebm.tau import TAUS, build_tau
from ebm.training import COMMON_DEFAULTS, score_data_and_samples, suggest_common

#: prior names: "space" keeps the prior of the space the caller built (the harness sets it
#: per suite, so every method of a suite shares q); "uniform" is Bernoulli(½)^k; "frequency"
#: (alias "bernoulli") the factorised Bernoulli prior with π = training label frequencies
PRIOR_NAMES = ("space", "uniform", "frequency", "bernoulli")


def prior_space(space: OutputSpace, prior: str, y_train: Tensor) -> OutputSpace:
    """The space with the requested prior q: unchanged for ``space``; Bernoulli(½)^k for
    ``uniform``; for ``frequency`` (alias ``bernoulli``) a Multilabel space with
    π_i = label frequency clipped to [0.01, 0.99]."""
    if prior == "space" or (prior == "uniform" and not isinstance(space, Multilabel)):
        return space
    if prior == "uniform":
        return Multilabel(space.k)
    if prior in ("frequency", "bernoulli"):
        if not isinstance(space, Multilabel):
            raise ValueError(f"prior {prior!r} exists only for multilabel spaces, not {space!r}")
        return Multilabel.with_label_frequencies(space.k, y_train)
    raise ValueError(f"unknown prior {prior!r}; known: {', '.join(PRIOR_NAMES)}")


class MinMinMethod(Method):
    """The joint EBM; ``divergence`` and ``tau`` pick the variant (see the module docstring).

    ``tau_lr_mult`` scales τ's learning rate: a finite τ_i only moves when example i is
    in the batch, so it needs a larger rate to track Ω*(g)(x_i) as g changes.
    """

    name: ClassVar[str] = "minmin"
    description: ClassVar[str] = "joint EBM: g and τ(x) ≈ log Z(x) trained together with prior samples"
    defaults: ClassVar[dict[str, Any]] = {
        **COMMON_DEFAULTS,
        "divergence": "kl",
        "tau": "neural",
        "tau_shares_trunk": False,
        "tau_lr_mult": 1.0,
        "n_samples": 16,
        "prior": "space",
    }

    def check(self, space: OutputSpace, model: str, params: dict[str, Any]) -> tuple[str, str] | None:
        params = self.params(params)
        get_divergence(params["divergence"])  # raises with "did you mean" on a bad name
        if params["tau"] not in TAUS:
            raise ValueError(f"unknown tau {params['tau']!r}; known: {', '.join(TAUS)}")
        if params["prior"] not in PRIOR_NAMES:
            raise ValueError(f"unknown prior {params['prior']!r}; known: {', '.join(PRIOR_NAMES)}")
        if params["prior"] in ("frequency", "bernoulli") and not isinstance(space, Multilabel):
            return ("unsupported", f"prior {params['prior']!r} is a multilabel prior; rankings use the uniform prior")
        return None

    def search_space(self, trial: Any) -> dict[str, Any]:
        # n′ is a budget choice (shared with nce), not tuned
        return suggest_common(trial)

    def model_space(self, space: OutputSpace, params: dict[str, Any], data: FitData) -> OutputSpace:
        return prior_space(space, self.params(params)["prior"], data.y_train)

    def train_model(self, ctx: FitContext) -> Fitted:
        space, params, setup = ctx.space, ctx.params, ctx.setup
        energy, x_train, y_train = ctx.energy, ctx.x_train, ctx.y_train
        n_samples, divergence = int(params["n_samples"]), get_divergence(params["divergence"])
        if n_samples < 1:
            raise ValueError(f"{self.name}: n_samples must be >= 1, got {n_samples}")

        shares = bool(params["tau_shares_trunk"]) and params["tau"] == "neural"
        tau = build_tau(
            params["tau"],
            in_features=energy.feature_dim if shares else x_train.shape[1],
            x_train=x_train,
            hidden=int(params["hidden"]),
            depth=int(params["depth"]),
            dropout=float(params["dropout"]),
            trunk=energy.trunk if shares else None,
        ).to(ctx.device)
        tau_own = [p for p in tau.parameters() if all(p is not q for q in energy.parameters())]
        # τ gets its own group (its own rate, no decay: τ is a free log-partition estimate)
        ctx.optimizer.add_param_group({"params": tau_own, "lr": float(params["lr"]) * float(params["tau_lr_mult"]), "weight_decay": 0.0})

        def batch_objective(index: Tensor) -> tuple[Tensor, int]:
            x, y = x_train[index], y_train[index]
            samples = space.sample_prior((len(index), n_samples), generator=setup.sampler, device=x.device)
            g_data, g_samples = score_data_and_samples(energy, x, y, samples)
            loss = minmin_loss(g_data, g_samples, tau(x, index=index), divergence)
            return loss.mean(), len(index) * (1 + n_samples)

        info = {"method": self.name, "divergence": divergence.name, "tau": params["tau"], "prior": params["prior"]}
        snapshot = lambda: Fitted(space, energy, tau, info=dict(info), divergence=divergence.name)  # noqa: E731
        return ctx.train(snapshot, batch_objective, [energy, tau], n_samples=n_samples)


class MinMinLogistic(MinMinMethod):
    name = "minmin-logistic"
    description = "joint EBM, kl (logistic / MLE) with a neural τ(x)"
    defaults = {**MinMinMethod.defaults, "divergence": "kl", "tau": "neural"}


class MinMinSparsemax(MinMinMethod):
    name = "minmin-sparsemax"
    description = "joint EBM, sparsemax Fenchel–Young loss (p = q·[1 + g − τ]₊) with a neural τ(x)"
    # uniform q: the mode of p = q·[1 + g − τ]₊ is then argmax g, which the mode oracles
    # compute exactly; with a non-uniform q it is argmax q·(1 + g − τ), which they do not
    defaults = {**MinMinMethod.defaults, "divergence": "sparsemax", "tau": "neural", "prior": "uniform"}


class MinMinEntmax15(MinMinMethod):
    name = "minmin-entmax15"
    description = "joint EBM, 1.5-entmax Fenchel–Young loss with a neural τ(x)"
    defaults = {**MinMinMethod.defaults, "divergence": "entmax15", "tau": "neural", "prior": "uniform"}  # as sparsemax


class MinMinFinite(MinMinMethod):
    name = "minmin-finite"
    description = "joint EBM, kl with one free τ per training example (unseen x: nearest training example)"
    defaults = {**MinMinMethod.defaults, "divergence": "kl", "tau": "finite", "tau_lr_mult": 10.0}


class MinMinScalar(MinMinMethod):
    name = "minmin-scalar"
    description = "joint EBM, kl with one τ for all x (self-normalised likelihood ablation)"
    defaults = {**MinMinMethod.defaults, "divergence": "kl", "tau": "scalar"}


MINMIN_LOGISTIC = MinMinLogistic()
MINMIN_SPARSEMAX = MinMinSparsemax()
MINMIN_ENTMAX15 = MinMinEntmax15()
MINMIN_FINITE = MinMinFinite()
MINMIN_SCALAR = MinMinScalar()
#: the registered variants by name (baselines/registry.py lists them)
VARIANTS: dict[str, MinMinMethod] = {m.name: m for m in (MINMIN_LOGISTIC, MINMIN_SPARSEMAX, MINMIN_ENTMAX15, MINMIN_FINITE, MINMIN_SCALAR)}
