"""Exact-likelihood baselines on enumerable output spaces: ``exact-mle`` and ``exact-sparsemax``.

Both score every y ∈ Y for every x of the batch: the trunk h(x) is computed once (so the
data term and all candidates share one dropout mask) and the data score is read off the
enumerated scores via ``space.enumeration_index``. An energy linear in a fixed feature map of
the labels, g = ⟨w(h(x)), φ(y)⟩ (unary, pairwise, permutahedron, Birkhoff:
``Energy.label_features``), scores all of Y as one GEMM w(h) φ(Y)ᵀ against φ(Y) computed once per
fit (:class:`Enumeration`); any other energy (mlp), or a φ(Y) past
:data:`MAX_FEATURE_BYTES`, is scored chunk by chunk through its GEMM path
``score(h, Y_chunk, shared=True)``, each chunk gradient-checkpointed when there is more than one,
so memory holds the (n, |Y|) score matrix plus ONE chunk's activations, not |Y|/chunk of them.

* ``exact-mle``: −log p(y|x) = log Σ_y' q(y') e^{g(x,y')} − g(x, y) − log q(y) (the last term
  is constant in the parameters; it makes the objective the NLL). Unary multilabel uses the
  closed form log Z = Σ_i softplus(θ_i + logit π_i) + Σ_i log(1 − π_i) and runs at any k.
* ``exact-sparsemax``: the sparsemax Fenchel–Young loss Ω*(g) − g(x, y) with
  Ω*(g) = max_p ⟨p, g⟩ − D_f(p, q), f(t) = ½(t − 1)², p = q·[1 + g − τ]₊, τ by sort/threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ebm.energies import Energy, UnaryEnergy
from ebm.method import Fitted
from ebm.objective import sparsemax_threshold
from ebm.spaces import OutputSpace, is_binary
from ebm.training import COMMON_DEFAULTS, FitContext, StepMethod, suggest_common

EXACT_DEFAULTS: dict[str, Any] = {**COMMON_DEFAULTS, "max_subsets": 2**16, "max_permutations": math.factorial(8),
                                  "chunk_size": 4096}


#: the largest φ(Y) an :class:`Enumeration` keeps (bytes); past it Y is scored chunk by chunk. The
#: paper's largest enumerations take far less: pairwise k = 16, 2^16 × 136 floats = 36 MB
MAX_FEATURE_BYTES = 2**28


@dataclass(frozen=True)
class Enumeration:
    """All of Y, enumerated once per fit on the run's device: candidate chunks, log q(y) and, for
    an energy linear in a feature map of the labels, φ(Y) (:meth:`Energy.label_features`)."""

    chunks: tuple[Tensor, ...]
    log_prior: Tensor  # (|Y|,)
    features: Tensor | None = None  # φ(Y), (|Y|, d)

    @classmethod
    def of(cls, space: OutputSpace, chunk_size: int, device: torch.device | str | None = None,
           energy: Energy | None = None) -> Enumeration:
        """Y in chunks of ``chunk_size``; with ``energy``, also its φ(Y) if it has one of at most
        :data:`MAX_FEATURE_BYTES`."""
        chunks = tuple(space.enumerate(chunk_size, device=device))
        log_prior = torch.cat([space.log_prior(c) for c in chunks])
        first = energy.label_features(chunks[0][:1]) if energy is not None else None
        if energy is None or first is None or space.size * first.numel() * first.element_size() > MAX_FEATURE_BYTES:
            return cls(chunks, log_prior)
        return cls(chunks, log_prior, torch.cat([cast(Tensor, energy.label_features(c)) for c in chunks]))


def enumerated_scores(energy: Energy, h: Tensor, enumeration: Enumeration) -> Tensor:
    """g(x, y) for all y ∈ Y from trunk features h (n, feature_dim) → (n, |Y|), differentiable.

    With φ(Y) in the enumeration: one GEMM w(h) φ(Y)ᵀ (yeast's pairwise exact-mle step, k = 14:
    ~120 → ~10 ms; the same scores up to float rounding). Otherwise chunk by chunk, several chunks
    checkpointed (recomputed in backward) to bound activation memory."""
    if enumeration.features is not None:
        return energy.feature_weights(h) @ enumeration.features.T
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
        enumeration = None if closed else Enumeration.of(space, int(params["chunk_size"]), ctx.device, energy)
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

