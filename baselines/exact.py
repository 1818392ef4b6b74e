"""Exact-likelihood baselines on enumerable output spaces: ``exact-mle`` and ``exact-sparsemax``.

Both score every y ∈ Y for every x of the batch: the trunk h(x) is computed once (so the
data term and all candidates share one dropout mask), the shared candidate set is scored
chunk by chunk through the energy's GEMM path ``score(h, Y_chunk, shared=True)``, and the
data score is read off the enumerated scores via ``space.enumeration_index``. With more
than one chunk each chunk is gradient-checkpointed, so memory holds the (n, |Y|) score
matrix plus ONE chunk's activations, not |Y|/chunk of them.

* ``exact-mle``: −log p(y|x) = log Σ_y' q(y') e^{g(x,y')} − g(x, y) − log q(y) (the last term
  is constant in the parameters; it makes the objective the NLL). Unary multilabel uses the
  closed form log Z = Σ_i softplus(θ_i + logit π_i) + Σ_i log(1 − π_i) and runs at any k.
* ``exact-sparsemax``: the sparsemax Fenchel–Young loss Ω*(g) − g(x, y) with
  Ω*(g) = max_p ⟨p, g⟩ − D_f(p, q), f(t) = ½(t − 1)², p = q·[1 + g − τ]₊, τ by sort/threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ebm.energies import Energy, UnaryEnergy
from ebm.method import Fitted
from ebm.spaces import OutputSpace, is_binary
from ebm.training import COMMON_DEFAULTS, FitContext, StepMethod, suggest_common

EXACT_DEFAULTS: dict[str, Any] = {**COMMON_DEFAULTS, "max_subsets": 2**16, "max_permutations": math.factorial(8),
                                  "chunk_size": 4096}


@dataclass(frozen=True)
class Enumeration:
    """All of Y, enumerated once per fit on the run's device: candidate chunks and log q(y)."""

    chunks: tuple[Tensor, ...]
    log_prior: Tensor  # (|Y|,)

    @classmethod
    def of(cls, space: OutputSpace, chunk_size: int, device: torch.device | str | None = None) -> Enumeration:
        chunks = tuple(space.enumerate(chunk_size, device=device))
        return cls(chunks, torch.cat([space.log_prior(c) for c in chunks]))


def enumerated_scores(energy: Energy, h: Tensor, enumeration: Enumeration) -> Tensor:
    """g(x, y) for all y ∈ Y from trunk features h (n, feature_dim) → (n, |Y|), differentiable.

    Several chunks are checkpointed (recomputed in backward) to bound activation memory."""
    many = len(enumeration.chunks) > 1 and torch.is_grad_enabled()
    score = lambda features, chunk: energy.score(features, chunk, True)  # noqa: E731
    return torch.cat([checkpoint(score, h, c, use_reentrant=False) if many else score(h,
            c) for c in enumeration.chunks], dim=1)


def data_and_all_scores(energy: Energy, space: OutputSpace, x: Tensor, y: Tensor,
                        enumeration: Enumeration) -> tuple[Tensor, Tensor]:
    """(g(x, y) (n,), g(x, ·) over Y (n, |Y|)) from one trunk evaluation."""
    g_all = enumerated_scores(energy, energy.features(x), enumeration)
    return g_all.gather(1, space.enumeration_index(y)[:, None]).squeeze(1), g_all


def exact_nll(energy: Energy, space: OutputSpace, x: Tensor, y: Tensor,
              enumeration: Enumeration | None = None) -> Tensor:
    """Per-example −log p(y|x) = log Z(x) − g(x, y) − log q(y), exact and differentiable, (n,).

    Closed form for the unary multilabel model; otherwise ``enumeration`` (built once per fit
    with :meth:`Enumeration.of`) is required."""
    if is_binary(space) and isinstance(energy, UnaryEnergy):  # unary energy, factorised multilabel prior
        theta = energy.linear_scores(x)
        log_partition = F.softplus(theta + space.prior_logits(x.device)).sum(-1) + space.log_prior_all_zero(x.device)
        return log_partition - (theta * y).sum(-1) - space.log_prior(y)
    if enumeration is None:
        raise ValueError(f"exact_nll needs the enumeration of {space!r} for a {type(energy).__name__}")
    g_data, g_all = data_and_all_scores(energy, space, x, y, enumeration)
    return torch.logsumexp(g_all + enumeration.log_prior, dim=1) - g_data - space.log_prior(y)


def sparsemax_conjugate(g_all: Tensor, log_q: Tensor) -> tuple[Tensor, Tensor]:
    """Ω*(g) = max_p ⟨p, g⟩ − Σ_y q ½(p/q − 1)² over the simplex, per row of g_all (n, N), and τ* (n,).

    The maximiser is p = q·[s − τ]₊ with s = 1 + g, τ fixed by Σ p = 1: sort s descending; on the
    top-m support τ_m = (Σ_{top m} q s − 1) / Σ_{top m} q, and the support is the largest m with
    s_(m) > τ_m (the q-weighted simplex projection). Then Ω* = τ + ½ Σ q [s − τ]₊² − ½ Σ q.
    τ is computed without gradient: by the envelope theorem ∂Ω*/∂g = p exactly."""
    q_row = log_q.exp().to(g_all.dtype)  # q(y), the same for every row
    q = q_row.expand_as(g_all)
    s = 1.0 + g_all
    with torch.no_grad():
        tau = sparsemax_threshold(s, q_row)
    value = tau + 0.5 * (q * F.relu(s - tau[:, None]) ** 2).sum(1) - 0.5 * q.sum(1)
    return value, tau


#: fixed-point rounds :func:`sparsemax_threshold` allows before it falls back to a full sort
SPARSEMAX_ROUNDS = 64


@torch.no_grad()
def sparsemax_threshold(s: Tensor, q: Tensor) -> Tensor:
    """τ with Σ_y q·[s − τ]₊ = 1 per row of s (n, N), for q ≥ 0 of shape (N,) (one prior for
    every row) or (n, N).

    Michelot's fixed point instead of a sort: from the support S = all of Y, τ_S = (Σ_S q s − 1)/Σ_S q,
    then S = {s > τ_S}, until S no longer changes. τ_S rises monotonically to τ* and the support
    shrinks to the true one, whose τ_S is exactly the sort formula's (same support, same sums).
    Each round is a few passes over the scores, a handful of rounds suffice in practice, against
    a sort of all |Y| = 2^14 scores of yeast per row (a ~6× faster training step); a row still
    moving after ``SPARSEMAX_ROUNDS`` rounds gets the full sort. A uniform q (every exact-sparsemax
    fit: the method requires it) takes :func:`_uniform_sparsemax_threshold`, the same rounds in
    fewer passes."""
    q = q.to(s.dtype)
    if q.dim() == 1 and bool((q == q[0]).all()) and bool(q[0] > 0):
        return _uniform_sparsemax_threshold(s, q[0])
    q_s = q * s
    support = (q > 0).expand_as(s)
    tau = torch.zeros(s.shape[0], dtype=s.dtype, device=s.device)
    for _ in range(SPARSEMAX_ROUNDS):
        tau = (torch.where(support, q_s, 0.0).sum(1) - 1.0) / torch.where(support, q, 0.0).sum(1)
        shrunk = support & (s > tau[:, None])
        if torch.equal(shrunk, support):
            return tau
        support = shrunk
    return _sorted_sparsemax_threshold(s, q.expand_as(s))


def _uniform_sparsemax_threshold(s: Tensor, q: Tensor) -> Tensor:
    """:func:`sparsemax_threshold` for one q > 0 on every y (a 0-dim tensor): Michelot's rounds,
    each written from the previous τ as a Newton step on F(τ) = q Σ [s − τ]₊ − 1,

        τ ← τ + F(τ) / (q |S|),  S = {s > τ}

    (= (q Σ_S s − 1)/(q |S|), the fixed point's τ_S). One clamped difference gives both sums:
    Σ [s − τ]₊ and |S| = Σ sign([s − τ]₊): four passes over the scores a round, where the
    support masks, their weights and the comparison of the supports took eight (boolean passes
    are the slow ones on CPU). Measured on yeast's 2^14 scores for 64 rows: 13–17 → 6–8 ms a call;
    an exact-sparsemax step at k = 14 (``ebm-bench perf``'s step timer), 25–27 → 15 ms. The
    supports are nested (τ rises), so an unchanged size is an unchanged support and the last
    step's τ is the fixed point's; the sums differ from the masked ones only by rounding."""
    tau = (q * s.sum(1) - 1.0) / (q * s.shape[1])  # S = all of Y
    size = torch.full_like(tau, float(s.shape[1]))
    excess = torch.empty_like(s)
    for _ in range(SPARSEMAX_ROUNDS):
        torch.sub(s, tau[:, None], out=excess).clamp_(min=0.0)
        new_size = torch.sign(excess).sum(1)
        step = tau + (q * excess.sum(1) - 1.0) / (q * new_size)
        if torch.equal(new_size, size):
            return step
        # τ only rises (a row at its fixed point may round a step below it): the supports then
        # only shrink and the rounds end, where a size going back and forth by one never did
        tau, size = torch.maximum(tau, step), new_size
    return _sorted_sparsemax_threshold(s, q.expand_as(s))


def _sorted_sparsemax_threshold(s: Tensor, q: Tensor) -> Tensor:
    """The textbook τ by a full sort of every row (q of s's shape): the fixed point's fallback."""
    s_sorted, order = s.sort(dim=1, descending=True)
    q_sorted = q.gather(1, order)
    thresholds = ((q_sorted * s_sorted).cumsum(dim=1) - 1.0) / q_sorted.cumsum(dim=1)
    size = (s_sorted > thresholds).sum(dim=1, keepdim=True)  # the condition holds on a prefix
    return thresholds.gather(1, size - 1).squeeze(1)


def exact_sparsemax_loss(energy: Energy, space: OutputSpace, x: Tensor, y: Tensor, enumeration: Enumeration) -> Tensor:
    """Per-example sparsemax Fenchel–Young loss Ω*(g)(x) − g(x, y) on enumerated Y, (n,)."""
    g_data, g_all = data_and_all_scores(energy, space, x, y, enumeration)
    return sparsemax_conjugate(g_all, enumeration.log_prior)[0] - g_data


class _ExactMethod(StepMethod):
    """Shared fit loop: a per-example loss over the enumerated space, |Y| energy evaluations per example."""

    defaults: ClassVar[dict[str, Any]] = EXACT_DEFAULTS
    #: the unary multilabel model has a closed-form log Z (exact-mle only)
    closed_form_unary: ClassVar[bool] = False
    #: the model's distribution (see ebm.method.Fitted.divergence)
    divergence: ClassVar[str] = "kl"

    def per_example_loss(self, energy: Energy, space: OutputSpace, x: Tensor, y: Tensor,
                         enumeration: Enumeration | None) -> Tensor:
        raise NotImplementedError

    def _uses_closed_form(self, space: OutputSpace, model: str) -> bool:
        return self.closed_form_unary and model == "unary" and space.kind.binary

    #: seeds train stacked (ebm.stacking) where Y is scored in one chunk (checkpointed chunks are not vmapped)
    stackable = True

    def can_stack(self, space: OutputSpace, model: str, params: dict[str, Any]) -> bool:
        return self._uses_closed_form(space, model) or space.size <= int(params["chunk_size"])

    def check(self, space: OutputSpace, model: str, params: dict[str, Any]) -> tuple[str, str] | None:
        if self._uses_closed_form(space, model):
            return None
        key = space.kind.size_limit
        if space.size > int(params[key]):
            size = space.size if space.size < 10**12 else f"{float(space.size):.3g}"  # 2^174 as 2.39e+52, not 53 digits
            return ("skipped", f"|Y| = {size} exceeds {key} = {int(params[key])} for exact enumeration")
        return None

    def search_space(self, trial: Any) -> dict[str, Any]:
        return suggest_common(trial, self.required_prior)

    def train_model(self, ctx: FitContext) -> Fitted:
        space, params = ctx.space, ctx.params
        energy, x_train, y_train = ctx.energy, ctx.x_train, ctx.y_train
        closed = self._uses_closed_form(space, ctx.model)
        enumeration = None if closed else Enumeration.of(space, int(params["chunk_size"]), ctx.device)
        # the closed form costs k label scores per example; count it as one g(x, ·) evaluation
        evals_per_example = 1 if closed else space.size

        def batch_objective(index: Tensor) -> tuple[Tensor, int]:
            loss = self.per_example_loss(energy, space, x_train[index], y_train[index], enumeration)
            return loss.mean(), len(index) * evals_per_example

        snapshot = lambda: Fitted(space, energy, info={"method": self.name}, divergence=self.divergence)  # noqa: E731
        return ctx.train(snapshot, batch_objective, [energy], closed_form=closed)


class ExactMLE(_ExactMethod):
    name = "exact-mle"
    description = "maximum likelihood with the exact log-partition (enumeration; closed form for unary multilabel)"
    closed_form_unary = True

    def per_example_loss(self, energy, space, x, y, enumeration):
        return exact_nll(energy, space, x, y, enumeration)


class ExactSparsemax(_ExactMethod):
    name = "exact-sparsemax"
    description = "exact sparsemax Fenchel–Young loss Ω*(g) − g(x, y) on enumerated Y"
    divergence = "sparsemax"

    # uniform q, as for minmin-sparsemax: the mode of p = q·[1 + g − τ]₊ is then argmax g,
    # which the mode oracles compute exactly (with another q it is argmax q·(1 + g − τ))
    required_prior = "uniform"

    def can_stack(self, space: OutputSpace, model: str, params: dict[str, Any]) -> bool:
        """Never: :func:`sparsemax_threshold`'s fixed point stops on a data-dependent test that
        ``vmap`` cannot run, and its vmap-safe alternative, the sort, made a stacked group of 5 on
        lr-glass cost twice its 5 single runs (measured); a group used to fail at its first step
        and rerun every member alone."""
        return False

    def per_example_loss(self, energy, space, x, y, enumeration):
        return exact_sparsemax_loss(energy, space, x, y, enumeration)

