"""The joint ("min-min") EBM: g(x, y) and τ(x) ≈ log-partition learned together.

Per training pair (x, y), with n′ samples y′_j ~ q drawn afresh every step,

    L = τ(x) + (1/n′) Σ_j f*(g(x, y′_j) − τ(x)) − g(x, y)

(:func:`ebm.objective.minmin_loss`). Its expectation over y′ is minimised in τ at
Ω*(g)(x) (= log E_q e^g for ``kl``), where it equals the Fenchel–Young loss of g; so
minimising over g and τ jointly is maximum likelihood for ``kl`` without ever
computing a partition function. ``sparsemax``/``entmax15`` give sparse p = q·(f*)′(g − τ).

Importance-weighted min-min (``proposal = "model"``): y′_j ~ r(·|x), a proposal rebuilt every
step from the current energy (detached) and mixed defensively with q, (1 − α) r + α q
(:func:`ebm.inference.training_proposal`), with weights w_j = q(y′_j)/r(y′_j) ≤ 1/α:

    L = τ(x) + (1/n′) Σ_j w_j f*(g(x, y′_j) − τ(x)) − g(x, y).

Its expectation over the draws is the same as with y′ ~ q, so the gradient stays unbiased;
but the draws land where the model puts its mass, which the prior's draws almost never visit
at k = 174 or 11!, so the model cannot put unchecked mass there (issue 12: test NLL 6,500 → ~100
on cal500). ``Fitted.info`` records the effective sample size of the sample term's gradient
weights w_j (f*)′(g_j − τ) as a fraction of n′ (``ess``, and ``ess_curve`` per evaluation).

τ warm start (``tau_offset = "estimate"``, the default of ``minmin-logistic-is``): τ(x) = b(x) +
τ_net(x), where b is a detached estimate of the current energy's log Z(x) and τ_net learns the
residual. For the unary multilabel model b is exact (closed form); otherwise draw j gets its own
τ_j = τ_net(x) + b_{−j}(x), b_{−j} = log (1/(n′ − 1)) Σ_{i≠j} w_i e^{g(x, y′_i)}, the importance
estimate from the other draws: given them, term j is an unbiased estimate of the gradient at τ_j
(the estimate from all n′ draws would make the sample term self-normalised, i.e. biased). A τ
learned from scratch lags behind log Z while g moves (issue 12: τ MAE 25 on cal500, 102 on its
pairwise model), which rescales the sample term by Z/e^τ: the model then trains towards an
over-confident p (ex-F1 up, NLL 93 against exact MLE's 65 on cal500). With the offset the sample
term's weights p/r stay O(1), no gradient spikes reach Adam, and min-min matches exact MLE.

Variants (names are part of the CLI): ``minmin-logistic`` (kl, neural τ),
``minmin-logistic-is`` (the same with the model proposal),
``minmin-sparsemax``, ``minmin-entmax15`` (neural τ), ``minmin-finite`` (kl, one τ per
training example), ``minmin-scalar`` (kl, one τ for all x).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ebm.batching import is_stacked
from ebm.divergences import get_divergence, weighted_slope
from ebm.energies import Energy, UnaryEnergy
from ebm.importance import (
    TRAINING_PROPOSALS,
    draw_training_samples,
    effective_sample_fraction,
    leave_one_out_log_mean,
)
from ebm.inference import partition_estimate, training_proposal, unary_log_partition
from ebm.method import Fitted
from ebm.objective import minmin_loss
from ebm.spaces import OutputSpace, is_binary
from ebm.tau import TAU_OFFSETS, TAUS, OffsetTau, build_tau
from ebm.training import COMMON_DEFAULTS, FitContext, StepMethod, score_data_and_samples, suggest_common


class MinMinMethod(StepMethod):
    """The joint EBM; ``divergence`` and ``tau`` pick the variant (see the module docstring).

    ``tau_lr_mult`` scales τ's learning rate: a finite τ_i only moves when example i is
    in the batch, so it needs a larger rate to track Ω*(g)(x_i) as g changes.

    Variance controls: ``proposal`` ("prior" | "model", see the module docstring) with
    ``proposal_prior_weight`` α; ``max_grad_norm`` (common to every method, applied by the
    shared loop) clips the global gradient norm of g and τ before each step (None: off);
    ``adam_beta2`` is Adam's second-moment decay (a rare huge gradient stays in a 0.999 average
    for thousands of steps and shrinks every later update); ``tau_offset`` ("none" | "estimate")
    learns τ on top of a detached log Z estimate (see the module docstring).
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
        "proposal": "prior",
        "proposal_prior_weight": 0.1,
        "adam_beta2": 0.999,
        "tau_offset": "none",
    }
    #: seeds train stacked (ebm.stacking) with a neural or scalar τ, whatever the proposal and τ
    #: offset: the model proposal r(·|x) (built from the detached energy, ebm.inference.training_proposal),
    #: its draws and weights, and the offsets (closed form, or leave-one-out estimates from the step's
    #: draws) are computed inside the vmapped objective from tensors only, with no Python number of a
    #: batch tensor and no branch on one, on every model (unary, pairwise, mlp, permutahedron,
    #: birkhoff); only the ESS log is skipped there (EssLog.add). Not a finite τ: one τ per training
    #: row, whose rows differ between members (tests/test_stacking.py: a group of one, and members of
    #: one seed under randomness="same", give their lone runs' numbers)
    stackable: ClassVar[bool] = True
    #: q only through the space inside the objective (prior draws, the model proposal's defensive mixture,
    #: the unary offset's log Z): members with their own frequency prior stack (ebm.stacking)
    stacks_priors: ClassVar[bool] = True

    def can_stack(self, space: OutputSpace, model: str, params: dict[str, Any]) -> bool:
        return params["tau"] != "finite"

    def check(self, space: OutputSpace, model: str, params: dict[str, Any]) -> tuple[str, str] | None:
        get_divergence(params["divergence"])  # raises with "did you mean" on a bad name
        if params["tau"] not in TAUS:
            raise ValueError(f"unknown tau {params['tau']!r}; known: {', '.join(TAUS)}")
        if params["proposal"] not in TRAINING_PROPOSALS:
            raise ValueError(f"unknown proposal {params['proposal']!r}; known: {', '.join(TRAINING_PROPOSALS)}")
        if not 0 < float(params["proposal_prior_weight"]) <= 1:
            raise ValueError(f"proposal_prior_weight must lie in (0, 1], got {params['proposal_prior_weight']}")
        if params["max_grad_norm"] is not None and float(params["max_grad_norm"]) <= 0:
            raise ValueError(f"max_grad_norm must be positive (or None: no clipping), got {params['max_grad_norm']}")
        if not 0 <= float(params["adam_beta2"]) < 1:
            raise ValueError(f"adam_beta2 must lie in [0, 1), got {params['adam_beta2']}")
        if params["tau_offset"] not in TAU_OFFSETS:
            raise ValueError(f"unknown tau_offset {params['tau_offset']!r}; known: {', '.join(TAU_OFFSETS)}")
        if params["tau_offset"] == "estimate" and int(params["n_samples"]) < 2 and not _closed_form(space, model):
            raise ValueError("tau_offset='estimate' needs n_samples >= 2 (a leave-one-out estimate per draw)")
        return None

    def search_space(self, trial: Any) -> dict[str, Any]:
        # n′ is a budget choice (shared with nce), not tuned
        return suggest_common(trial, self.required_prior)

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
        ctx.optimizer.add_param_group({"params": tau_own, "lr": float(params["lr"]) * float(params["tau_lr_mult"]),
                                       "weight_decay": 0.0})
        set_adam_beta2(ctx.optimizer, float(params["adam_beta2"]))
        use_model, prior_weight = params["proposal"] == "model", float(params["proposal_prior_weight"])
        offset = params["tau_offset"] == "estimate"
        unary = energy if offset and isinstance(energy, UnaryEnergy) else None  # its log Z: closed form
        ess = EssLog()

        def batch_objective(index: Tensor) -> tuple[Tensor, int]:
            x, y = x_train[index], y_train[index]
            log_weights = None
            if use_model:
                proposal = training_proposal(energy, space, x, y, prior_weight, setup.sampler)
                samples, log_weights = draw_training_samples(proposal, space, n_samples, setup.sampler, x.dtype)
            else:
                samples = space.sample_prior((len(index), n_samples), generator=setup.sampler, device=x.device)
            g_data, g_samples = score_data_and_samples(energy, x, y, samples)
            tau_x = tau(x, index=index)
            if unary is not None and is_binary(space):  # unary: b(x) = log Z(x) exactly, from the detached θ(x)
                with torch.no_grad():
                    log_z = unary_log_partition(unary.linear_scores(x), space).to(tau_x.dtype)
                tau_x = tau_x + log_z
            elif offset:  # τ_j = τ(x) + b_{−j}(x): draw j's offset is estimated from the other draws
                log_terms = g_samples.detach() + (0.0 if log_weights is None else log_weights)
                tau_x = tau_x[:, None] + leave_one_out_log_mean(log_terms)
            loss = minmin_loss(g_data, g_samples, tau_x, divergence, log_weights)
            ess.add(g_samples.detach(), tau_x.detach(), log_weights, divergence)
            return loss.mean(), len(index) * (1 + n_samples)

        info = {"method": self.name, "divergence": divergence.name, "tau": params["tau"], "prior": params["prior"],
                "proposal": params["proposal"]}
        reported_tau = OffsetTau(tau, LogPartitionOffset(energy, space, n_samples)) if offset else tau
        snapshot = lambda: Fitted(space, energy, reported_tau, info={**info, **ess.info()},
                                  divergence=divergence.name)  # noqa: E731
        fitted = ctx.train(snapshot, batch_objective, [energy, tau], n_samples=n_samples)
        fitted.info.update(ess.info())
        return fitted


class EssLog:
    """Running effective sample size of the sample term's gradient weights ω_j = w_j (f*)′(g_j − τ)
    as a fraction of n′ (:func:`ebm.importance.effective_sample_fraction`): the mean over all steps,
    and one point per ``every`` steps for a curve.

    The steps' detached scores are kept and reduced together, :attr:`REDUCE_EVERY` steps at a time
    (and whenever :meth:`info` is read): the same per-step values, summed in the same order, but ~20
    dispatched operations and a host sync per step became a list append — at batch 64 a step is
    bound by per-operation overhead (issue 15), and this log was ~4% of a min-min step."""

    #: steps reduced together: enough to amortise the reduction's ~20 operations, few enough that its
    #: float64 temporaries (32 · n · n′) stay small (measured at n = 64, n′ = 16, CPU time per step:
    #: 85 µs one step at a time, 15 µs by 32, 48 µs by 100, whose 800 kB temporaries are fresh pages)
    REDUCE_EVERY: ClassVar[int] = 32

    def __init__(self, every: int = 100) -> None:
        self.every, self.steps, self.total, self.window = every, 0, 0.0, 0.0
        self.curve: list[tuple[int, float]] = []
        self.divergence: Any = None
        self._pending: list[tuple[Tensor, Tensor, Tensor | None]] = []

    def add(self, g_samples: Tensor, tau: Tensor, log_weights: Tensor | None, divergence) -> None:
        """Record one step: g(x, y′_j) (n, n′), τ (n,) or (n, n′), log w_j (n, n′) or None, all detached."""
        if is_stacked(g_samples):  # a stacked step (ebm.stacking) has no per-member float here
            return
        pending = self._pending
        if pending and (divergence is not self.divergence or pending[0][0].shape != g_samples.shape
                        or pending[0][1].shape != tau.shape or (pending[0][2] is None) != (log_weights is None)):
            self._reduce()  # only steps of one shape and divergence are reduced together
        self.divergence = divergence
        self._pending.append((g_samples, tau, log_weights))
        if len(self._pending) >= self.REDUCE_EVERY:
            self._reduce()

    @torch.no_grad()
    def _reduce(self) -> None:
        """ESS/n′ of each pending step (the mean over its rows), added to the running sums in step order."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        steps, (n, m) = len(pending), pending[0][0].shape
        g_samples = torch.stack([g for g, _, _ in pending]).double()  # (steps, n, n′)
        tau = torch.stack([t for _, t, _ in pending]).double()
        margins = g_samples - (tau if tau.dim() == 3 else tau[..., None])
        first_weights = pending[0][2]
        slope = (self.divergence.conjugate_grad(margins) if first_weights is None
                 else weighted_slope(self.divergence, margins,
                                     torch.stack([w for _, _, w in pending if w is not None]).double()))
        log_terms = slope.log().reshape(steps * n, m)
        values = effective_sample_fraction(log_terms).reshape(steps, n).mean(dim=1).tolist()
        for value in values:
            self.steps += 1
            self.total += value
            self.window += value
            if self.steps % self.every == 0:
                self.curve.append((self.steps, self.window / self.every))
                self.window = 0.0

    def info(self) -> dict[str, object]:
        self._reduce()
        return {"ess": self.total / self.steps if self.steps else None, "ess_curve": list(self.curve)}


def _closed_form(space: OutputSpace, model: str) -> bool:
    """The unary multilabel model, whose log Z(x) has a closed form (no draws needed for an offset)."""
    return is_binary(space) and model == "unary"


@dataclass(frozen=True)
class LogPartitionOffset:
    """b(x) of the fitted model's reported τ = b + τ_net (``tau_offset="estimate"``): the energy's
    log Z(x) by :func:`ebm.inference.partition_estimate` (closed form for unary multilabel,
    enumeration up to 2^16 outputs, else importance sampling with ``samples`` draws per input, the
    method's own n′ × 16). In training the offsets come from the step's own draws instead."""

    energy: Energy
    space: OutputSpace
    n_samples: int

    def __call__(self, x: Tensor) -> Tensor:
        return partition_estimate(self.energy, self.space, x, n_samples=max(2, 16 * self.n_samples)).estimate


def set_adam_beta2(optimizer: torch.optim.Optimizer, beta2: float) -> None:
    """Adam's second-moment decay β2 for every parameter group (β1 unchanged)."""
    for group in optimizer.param_groups:
        group["betas"] = (group["betas"][0], beta2)


class MinMinLogistic(MinMinMethod):
    name = "minmin-logistic"
    description = "joint EBM, kl (logistic / MLE) with a neural τ(x)"
    defaults = {**MinMinMethod.defaults, "divergence": "kl", "tau": "neural"}


class MinMinLogisticIS(MinMinMethod):
    name = "minmin-logistic-is"
    description = ("joint EBM, kl with a neural τ(x) learned on top of a log Z estimate (tau_offset=estimate); "
                   "y′ from a model-informed proposal (10% prior), importance-weighted; no clipping "
                   "(README, minmin-scale suite: vowel Kendall 0.69 → 0.88, cal500 unary test NLL 105 → 65.7; "
                   "exact MLE 64.9)")
    defaults = {**MinMinMethod.defaults, "divergence": "kl", "tau": "neural", "proposal": "model",
                "tau_offset": "estimate"}


class MinMinSparsemax(MinMinMethod):
    name = "minmin-sparsemax"
    description = "joint EBM, sparsemax Fenchel–Young loss (p = q·[1 + g − τ]₊) with a neural τ(x)"
    # uniform q: the mode of p = q·[1 + g − τ]₊ is then argmax g, which the mode oracles
    # compute exactly; with a non-uniform q it is argmax q·(1 + g − τ), which they do not
    defaults = {**MinMinMethod.defaults, "divergence": "sparsemax", "tau": "neural"}
    required_prior = "uniform"


class MinMinEntmax15(MinMinMethod):
    name = "minmin-entmax15"
    description = "joint EBM, 1.5-entmax Fenchel–Young loss with a neural τ(x)"
    defaults = {**MinMinMethod.defaults, "divergence": "entmax15", "tau": "neural"}
    required_prior = "uniform"  # as sparsemax


class MinMinFinite(MinMinMethod):
    name = "minmin-finite"
    description = "joint EBM, kl with one free τ per training example (unseen x: nearest training example)"
    defaults = {**MinMinMethod.defaults, "divergence": "kl", "tau": "finite", "tau_lr_mult": 10.0}


class MinMinScalar(MinMinMethod):
    name = "minmin-scalar"
    description = "joint EBM, kl with one τ for all x (self-normalised likelihood ablation)"
    defaults = {**MinMinMethod.defaults, "divergence": "kl", "tau": "scalar"}


MINMIN_LOGISTIC = MinMinLogistic()
MINMIN_LOGISTIC_IS = MinMinLogisticIS()
MINMIN_SPARSEMAX = MinMinSparsemax()
MINMIN_ENTMAX15 = MinMinEntmax15()
MINMIN_FINITE = MinMinFinite()
MINMIN_SCALAR = MinMinScalar()
#: the registered variants by name (baselines/registry.py lists them)
VARIANTS: dict[str, MinMinMethod] = {m.name: m for m in (MINMIN_LOGISTIC, MINMIN_LOGISTIC_IS, MINMIN_SPARSEMAX,
                                                         MINMIN_ENTMAX15, MINMIN_FINITE, MINMIN_SCALAR)}
