"""The joint (min-min) objective and its exact counterparts on enumerated spaces.

Per training pair (x, y) with samples y'_j ~ r(·|x) (r = q unless importance weights are given):

    L = τ(x) + (1/m) Σ_j w_j f*(g(x, y'_j) − τ(x)) − g(x, y),   w_j = q(y'_j)/r(y'_j).

Its expectation over the samples is τ + E_q[f*(g − τ)] − g(x, y), which is minimised over τ at
Ω*(g) (= log E_q eᵍ for kl), where the loss becomes the Fenchel–Young loss Ω*(g) − g(x, y).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ebm.divergences import SPARSEMAX_TANGENT_FROM, Divergence, get_divergence, sparsemax, weighted_conjugate


def minmin_loss(
    g_data: Tensor,
    g_samples: Tensor,
    tau: Tensor,
    divergence: Divergence | str,
    log_weights: Tensor | None = None,
) -> Tensor:
    """Per-example L = τ + mean_j w_j f*(g_j − τ) − g_data; shapes (n,), (n, m), (n,) [, (n, m)] → (n,).

    τ may also be (n, m), one τ_j per draw: L = mean_j (τ_j + w_j f*(g_j − τ_j)) − g_data (used with
    leave-one-out offsets τ_j that do not depend on draw j, so each term stays unbiased)."""
    divergence = get_divergence(divergence)
    n = g_data.shape[0]
    if (g_data.shape != (n,) or g_samples.dim() != 2 or g_samples.shape[0] != n
            or tau.shape not in ((n,), g_samples.shape)):
        raise ValueError(
            f"minmin_loss needs g_data (n,), g_samples (n, m), tau (n,) or (n, m); got {tuple(g_data.shape)}, "
            f"{tuple(g_samples.shape)}, {tuple(tau.shape)}"
        )
    per_draw = tau.dim() == 2
    margins = g_samples - (tau if per_draw else tau[:, None])
    if log_weights is None:
        terms = divergence.conjugate(margins)
    else:
        if log_weights.shape != g_samples.shape:
            raise ValueError(f"log_weights has shape {tuple(log_weights.shape)}, expected {tuple(g_samples.shape)}")
        terms = weighted_conjugate(divergence, margins, log_weights.detach())  # guard on log w + g − τ
    if per_draw:
        return (tau + terms).mean(dim=1) - g_data
    return tau + terms.mean(dim=1) - g_data


def expected_dual(tau: Tensor, g_all: Tensor, log_q: Tensor, divergence: Divergence | str) -> Tensor:
    """τ + Σ_y q(y) f*(g(y) − τ) for every row: g_all (…, N), log_q (N,) or (…, N), τ (…,)."""
    divergence = get_divergence(divergence)
    return tau + (log_q.exp() * divergence.conjugate(g_all - tau[..., None])).sum(-1)


@torch.no_grad()
def optimal_tau(g_all: Tensor, log_q: Tensor, divergence: Divergence | str, iterations: int = 200) -> Tensor:
    """τ* = argmin_τ τ + E_q f*(g − τ): the root of the first-order condition
    F(τ) = E_q[(f*)'(g − τ)] − 1 = 0 (in float64). The root lies in [min g, max g] over the support
    of q, because (f*)' is nondecreasing with (f*)'(0) = 1.

    F is decreasing and convex in τ ((f*)' is convex for kl, sparsemax, entmax and their
    linearised tails), so Newton's method started left of the root (F ≥ 0) stays left of it and
    converges monotonically, quadratically near the root. Bisection first narrows the bracket to
    ``NEWTON_START_WIDTH`` (far from the root Newton only halves the distance); F′ comes with F
    from one forward-mode pass. ~15 passes over the scores instead of bisection's ~55
    (:func:`bisect_tau`, kept as the reference).

    Sparse divergences ((f*)' = 0 far enough below 0: sparsemax, entmax) first solve on the
    ``SPARSE_CANDIDATES`` largest scores of each row: when every left-out score has
    (f*)'(g − τ) = 0 at that root, the left-out terms vanish there and it is the root of the
    whole row (the same equation); otherwise that row tries the next size, then its whole row.
    A trained model's support is hundreds to a few thousand of yeast's 2^14 label sets."""
    divergence = get_divergence(divergence)
    g = g_all.double()
    if divergence is sparsemax:
        tau = _sparsemax_tau(g, log_q.double().exp())
        if tau is not None:
            return tau.to(g_all.dtype)
    q = log_q.double().exp().expand_as(g)
    n_columns = g.shape[-1]
    if not _has_sparse_support(divergence):
        return _newton_tau(g, q, divergence, iterations).to(g_all.dtype)
    # each row moves on to the next size (or the whole row) only if its own support is larger:
    # supports vary a lot between inputs (yeast: 172 to 6199 of 2^14 for one model), and one
    # large row used to send every row to the whole-row solve (the τ check of an entmax15 model
    # on 256 yeast inputs: 2.8 → 0.26 s, a sparsemax one 1.2 → 0.19 s, the same τ to the bit)
    g, q = g.reshape(-1, n_columns), q.reshape(-1, n_columns)
    tau = torch.empty(g.shape[0], dtype=g.dtype, device=g.device)
    pending = torch.arange(g.shape[0], device=g.device)
    for size in SPARSE_CANDIDATES:
        if 2 * size > n_columns or pending.numel() == 0:
            break
        top, order = g[pending].topk(size, dim=-1)
        solved = _newton_tau(top, q[pending].gather(-1, order), divergence, iterations)
        # the largest left-out score is at most the smallest kept one
        exact = divergence.conjugate_grad(top[:, -1] - solved) == 0
        tau[pending[exact]] = solved[exact]
        pending = pending[~exact]
    if pending.numel() > 0:
        tau[pending] = _newton_tau(g[pending], q[pending], divergence, iterations)
    return tau.reshape(g_all.shape[:-1]).to(g_all.dtype)


def _sparsemax_tau(g: Tensor, q: Tensor) -> Tensor | None:
    """sparsemax's τ* directly: the root of Σ q [1 + g − τ]₊ = 1 is :func:`sparsemax_threshold` of
    s = 1 + g (a few passes over each row, where Newton's method takes ~15 with a forward-mode
    derivative). None when a margin g − τ reaches the guard's tangent (``SPARSEMAX_TANGENT_FROM``,
    ~2e17), where the guarded equation differs: margins at the root stay below 1/q(y) − 1, so only a
    label set with q(y) < 5e-18 can. g (…, N) and q (N,) or (…, N), float64."""
    n_columns = g.shape[-1]
    rows = g.reshape(-1, n_columns)
    tau = sparsemax_threshold(1.0 + rows, q if q.dim() == 1 else q.expand_as(g).reshape(-1, n_columns))
    if not bool((rows - tau[:, None] <= SPARSEMAX_TANGENT_FROM).all()):
        return None
    return tau.reshape(g.shape[:-1])


#: candidate sizes :func:`optimal_tau` tries, in turn, for a sparse divergence
SPARSE_CANDIDATES = (1024, 4096)


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


def _has_sparse_support(divergence: Divergence) -> bool:
    """(f*)'(s) = 0 for very negative s: the optimal p = q·(f*)'(g − τ) then has a sparse support."""
    return bool(divergence.conjugate_grad(torch.tensor([-1e6], dtype=torch.float64)).item() == 0)


def _newton_tau(g: Tensor, q: Tensor, divergence: Divergence, iterations: int) -> Tensor:
    """The root of Σ q·(f*)'(g − τ) = 1 per row (float64 g, q): bisection to a bracket of width
    ``NEWTON_START_WIDTH``, then Newton from its left end (see :func:`optimal_tau`)."""
    from torch.func import jvp

    low, high = _bracket(g, q)
    for _ in range(iterations):
        if bool(((high - low) <= NEWTON_START_WIDTH).all()):
            break
        middle = 0.5 * (low + high)
        too_low = (q * divergence.conjugate_grad(g - middle[..., None])).sum(-1) > 1
        low = torch.where(too_low, middle, low)
        high = torch.where(too_low, high, middle)
    tau = low  # F(low) ≥ 0: left of the root
    for _ in range(iterations):
        shifted = g - tau[..., None]
        primal_and_tangent = jvp(divergence.conjugate_grad, (shifted,), (torch.ones_like(shifted),))
        slope, curvature = primal_and_tangent[0], primal_and_tangent[1]
        excess, derivative = (q * slope).sum(-1) - 1.0, -(q * curvature).sum(-1)
        step = torch.where(derivative < 0, -excess / torch.where(derivative < 0, derivative, -torch.ones_like(excess)),
                           torch.zeros_like(excess))
        # rounding may not overshoot the bracket; a non-positive step means the root is reached
        tau_next = torch.minimum(tau + step.clamp(min=0), high)
        if bool(((tau_next - tau) <= 1e-15 * (1 + tau.abs())).all()):
            return tau_next
        tau = tau_next
    return tau


#: bracket width (in units of g) at which :func:`optimal_tau` switches from bisection to Newton
NEWTON_START_WIDTH = 1.0


def _bracket(g: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    """[min g, max g] over the support of q, per row: it contains τ*."""
    support = q > 0
    low = torch.where(support, g, torch.full_like(g, float("inf"))).amin(-1)
    high = torch.where(support, g, torch.full_like(g, -float("inf"))).amax(-1)
    return low, high


@torch.no_grad()
def bisect_tau(g_all: Tensor, log_q: Tensor, divergence: Divergence | str, iterations: int = 200) -> Tensor:
    """τ* by plain bisection on E_q[(f*)'(g − τ)] = 1 (float64, to 1e-15 relative): slow and sure,
    the reference :func:`optimal_tau` is tested against."""
    divergence = get_divergence(divergence)
    g = g_all.double()
    q = log_q.double().exp().expand_as(g)
    low, high = _bracket(g, q)
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        mass = (q * divergence.conjugate_grad(g - middle[..., None])).sum(-1)
        too_low = mass > 1  # τ too small: the candidate distribution has mass > 1
        low = torch.where(too_low, middle, low)
        high = torch.where(too_low, high, middle)
        if bool(((high - low) <= 1e-15 * (1 + high.abs())).all()):
            break
    return (0.5 * (low + high)).to(g_all.dtype)


def variational_log_partition(g_all: Tensor, log_q: Tensor, divergence: Divergence | str) -> Tensor:
    """Exact Ω*(g) = min_τ τ + E_q f*(g − τ) on enumerated scores g_all (…, N) with log_q (N,) or (…, N).

    For kl this is log Σ_y q(y) e^{g(y)}. Differentiable in g_all: by the envelope theorem
    the gradient is that of the dual at the (detached) optimum τ*, i.e. the optimal p."""
    tau = optimal_tau(g_all.detach(), log_q.detach(), divergence)
    return expected_dual(tau, g_all, log_q, divergence)


def optimal_distribution(g_all: Tensor, log_q: Tensor, tau: Tensor, divergence: Divergence | str) -> Tensor:
    """p(y) = q(y)·(f*)'(g(y) − τ) on enumerated scores (…, N); sums to 1 at τ = τ*."""
    divergence = get_divergence(divergence)
    return log_q.exp() * divergence.conjugate_grad(g_all - tau[..., None])
