"""Inference for p(y|x) = q(y)·exp(g(x, y) − A(x)), A(x) = log E_q[exp g(x, ·)].

Memory: enumeration is chunked over candidates (``chunk_size``) and over inputs so that one
energy call scores at most ``MAX_PAIRS`` = 2**18 (input, candidate) pairs, i.e. 1 MiB of
float32 scores (times the head width for the mlp energy); exact sampling additionally holds
at most ``MAX_SCORES`` = 2**22 scores (16 MiB) at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from ebm import unknown_name_error
from ebm.batching import is_stacked
from ebm.energies import (
    Energy,
    EnergyFunction,
    LabelFeatureScoring,
    Pairwise,
    PairwiseEnergy,
    UnaryEnergy,
    site_views,
)
from ebm.importance import (
    PartitionEstimate,
    PriorProposal,
    Proposal,
    assignment_proposal,
    defensive,
    defensive_bernoulli,
    importance_log_partition,
    mean_field_logits,
    pairwise_mean_field,
    sequential_mean_field,
    with_mode,
)
from ebm.samplers import mcmc_steps
from ebm.spaces import Multilabel, OutputSpace, is_binary, is_ranking

MAX_PAIRS = 2**18
MAX_SCORES = 2**22
#: |Y| up to which modes of nonlinear energies are found by enumeration (2^16, i.e. k ≤ 16 labels)
MODE_ENUMERATION_LIMIT = 2**16
#: importance-sampling proposals of ``make_proposal``
PROPOSALS = ("auto", "prior", "sequential-mean-field", "mean-field", "local-field", "assignment")
#: weight of the prior q in the defensive mixture (1 − α) r + α q: weights stay ≤ e^g / α
DEFENSIVE_PRIOR_WEIGHT = 0.1
#: share of the log Z estimate's draws at the model's mode and its neighbours, half each
#: (``partition_estimate``): a mode holding nearly all of p's mass is hit by ~5% of the draws, a
#: binomial spread of ≈ 0.07 nats at 4096 draws; a diffuse model loses 10% of its draws
MODE_PROPOSAL_WEIGHT = 0.1
#: multilabel proposals are mixtures around the PROPOSAL_MODES best distinct local optima (ICM
#: from PROPOSAL_RESTARTS prior draws for pairwise, greedy search from MODE_RESTARTS for mlp):
#: built around one local optimum only, a proposal missed a second mode holding a quarter of
#: the mass (seen at k = 12)
PROPOSAL_MODES = 3
PROPOSAL_RESTARTS = 8
MODE_RESTARTS = 4
#: the local-field proposal also mixes in its components at this temperature (logits / T): the
#: fields at a local optimum are over-confident about labels that flip together; with T = 2
#: the worst |z| on peaked mlp models at k = 10-12 fell from ~10-60 to ~3-25 (T = 3 similar)
LOCAL_FIELD_TEMPERATURE = 2.0


def _row_blocks(n: int, columns: int, budget: int) -> Iterator[slice]:
    rows = max(1, budget // max(columns, 1))
    for start in range(0, n, rows):
        yield slice(start, min(start + rows, n))


def _shared_scores(energy: Energy, x: Tensor, candidates: Tensor) -> Tensor:
    """g(x, candidates) (n, c): one GEMM w(x) φ(candidates)ᵀ for an energy linear in label features
    (:class:`LabelFeatureScoring`; its only intermediate is the (n, c) result), else the energy's
    own scoring in blocks of inputs of at most MAX_PAIRS pairs each (a pairwise energy's shared path
    holds (c, n·rank) products: a yeast mode by enumeration, 250 inputs × 2^14, 110 → 21 ms)."""
    if isinstance(energy, LabelFeatureScoring) and (features := energy.label_features(candidates)) is not None:
        weights = energy.label_feature_weights(x)
        return weights @ features.to(weights.dtype).T
    return torch.cat([energy(x[rows], candidates) for rows in _row_blocks(x.shape[0], candidates.shape[0], MAX_PAIRS)])


def _scored_chunks(energy: Energy, space: OutputSpace, x: Tensor, chunk_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """(Y_c, log q(Y_c) + g(x, Y_c)) for each enumeration chunk: (c, *event), (n, c)."""
    for candidates in space.enumerate(chunk_size, device=x.device):
        g = _shared_scores(energy, x, candidates)
        yield candidates, g + space.log_prior(candidates).to(g.dtype)


@torch.no_grad()
def enumerate_scores(energy: Energy, space: OutputSpace, x: Tensor, chunk_size: int = 4096) -> Tensor:
    """g(x, y) for every y ∈ Y in ``space.enumerate`` order: (n, |Y|). Holds n·|Y| floats."""
    return torch.cat([_shared_scores(energy, x, candidates) for candidates in space.enumerate(chunk_size,
                                                                                              device=x.device)], dim=1)


def unary_log_partition(theta: Tensor, space: Multilabel) -> Tensor:
    """log Σ_y q(y) e^{⟨θ, y⟩} = Σ_i softplus(θ_i + logit π_i) + Σ_i log(1 − π_i), (n,); differentiable.
    (The sum factorises over labels; uniform prior: Σ_i softplus(θ_i) − k log 2.)"""
    softplus = torch.nn.functional.softplus(theta + space.prior_logits(theta.device)).sum(-1)
    return softplus + space.log_prior_all_zero(theta.device)


@torch.no_grad()
def log_partition(
    energy: Energy,
    space: OutputSpace,
    x: Tensor,
    *,
    limit: int = 2**16,
    n_samples: int = 4096,
    generator: torch.Generator | None = None,
    chunk_size: int = 4096,
    proposal: str = "auto",
) -> tuple[Tensor, Tensor]:
    """A(x) = log Σ_y q(y) e^{g(x,y)} and its standard error, both (n,); see
    ``partition_estimate`` (which also reports the effective sample size)."""
    result = partition_estimate(energy, space, x, limit=limit, n_samples=n_samples, generator=generator,
                                chunk_size=chunk_size, proposal=proposal)
    return result.estimate, result.stderr


@torch.no_grad()
def partition_estimate(
    energy: Energy,
    space: OutputSpace,
    x: Tensor,
    *,
    limit: int = 2**16,
    n_samples: int = 4096,
    generator: torch.Generator | None = None,
    chunk_size: int = 4096,
    proposal: str = "auto",
) -> PartitionEstimate:
    """A(x) = log Σ_y q(y) e^{g(x,y)} with its standard error and effective sample size, (n,) each.

    * unary multilabel: closed form Σ_i softplus(θ_i + logit π_i) + Σ_i log(1 − π_i)
      (uniform prior: Σ_i softplus(θ_i) − k log 2); stderr 0;
    * |Y| ≤ ``limit``: exact streaming log-sum-exp over enumeration chunks; stderr 0; memory
      is bounded by chunk_size × (input block) ≤ MAX_PAIRS = 2**18 floats of scores per call
      (times the head width for the mlp energy), whatever n and |Y|;
    * otherwise importance sampling from a proposal r (``make_proposal``; "auto" picks it from
      the energy and space, "prior" is plain Monte Carlo from q), every proposal but "prior"
      mixed with the model's mode and its neighbours (weight ``MODE_PROPOSAL_WEIGHT``,
      ``ebm.importance.with_mode``: a sharply peaked model's mass is not missed):
      Â = log (1/S) Σ_s q(y_s) e^{g(x, y_s)} / r(y_s), y_s ~ r, delta-method stderr
      sd(w) / (√S · mean(w)) and ESS = (Σw)²/Σw².
    """
    if is_binary(space) and isinstance(energy, UnaryEnergy):
        estimate = unary_log_partition(energy.linear_scores(x), space)
        return PartitionEstimate(estimate, torch.zeros_like(estimate), torch.full_like(estimate, math.inf),
                                 "closed-form")
    if space.size <= limit:
        estimate = torch.full((x.shape[0],), -math.inf, device=x.device, dtype=x.dtype)
        for _, log_target in _scored_chunks(energy, space, x, chunk_size):
            estimate = torch.logaddexp(estimate, torch.logsumexp(log_target, dim=1))
        return PartitionEstimate(estimate, torch.zeros_like(estimate), torch.full_like(estimate, math.inf),
                                 "enumeration")
    if proposal not in PROPOSALS:
        raise unknown_name_error("importance-sampling proposal", proposal, PROPOSALS)
    def build(block: Tensor) -> Proposal:
        main = make_proposal(energy, space, block, proposal, generator=generator)
        if proposal == "prior" or not has_mode_oracle(energy, space, block):  # plain Monte Carlo, as asked; no mode
            return main
        return with_mode(main, space, mode(energy, space, block, generator=generator), MODE_PROPOSAL_WEIGHT)

    return importance_log_partition(energy, space, x, build, n_samples, generator)


@torch.no_grad()
def make_proposal(
    energy: Energy,
    space: OutputSpace,
    x: Tensor,
    name: str = "auto",
    *,
    generator: torch.Generator | None = None,
    prior_weight: float = DEFENSIVE_PRIOR_WEIGHT,
) -> Proposal:
    """The importance-sampling proposal r(·|x) named ``name`` (one of ``PROPOSALS``), mixed
    defensively with the prior q (weight ``prior_weight``) unless it is q itself.

    * "mean-field" (pairwise multilabel): factorised Bernoullis at the damped mean-field fixed
      points φ = u + logit π + U σ(φ), started from the unary fields and from the best distinct
      ICM local optima, mixed uniformly;
    * "sequential-mean-field" (pairwise multilabel): from the same mean-field means, labels
      drawn one at a time from their exact conditionals given the labels drawn so far (the
      rest at their means), which follows the couplings (see ``sequential_mean_field``);
    * "local-field" (any multilabel energy): factorised Bernoullis with the flip differences
      φ_i = g(y*^{i←1}) − g(y*^{i←0}) + logit π_i at the best distinct local optima y* of a
      greedy search, and the same at temperature LOCAL_FIELD_TEMPERATURE, mixed uniformly;
    * "assignment" (rankings, linear energies): sequential assignment with Sinkhorn logits of
      Θ (birkhoff) or of Θ_{j,r} = θ_j (k − 1 − r) (permutahedron: ⟨θ, y⟩ with y_j = k−1−pos_j);
    * "auto": sequential-mean-field for pairwise, local-field for other multilabel energies, assignment for
      linear ranking energies, else the prior.
    """
    if name not in PROPOSALS:
        raise unknown_name_error("importance-sampling proposal", name, PROPOSALS)
    prior = PriorProposal(space, x.shape[0], device=x.device)
    theta = energy.linear_scores(x)
    if name == "auto":
        if space.kind.binary:
            name = "sequential-mean-field" if isinstance(energy, Pairwise) else "local-field"
        else:
            name = space.kind.proposal if theta is not None else "prior"
    if name == "prior":
        return prior
    if name in ("mean-field", "local-field") and not space.kind.binary:
        raise ValueError(f"the {name!r} proposal is for Multilabel spaces, got {space!r}; use 'assignment' for "
                         f"rankings")
    if name in ("mean-field", "sequential-mean-field"):
        if not isinstance(energy, Pairwise):
            raise ValueError(f"the {name!r} proposal needs a pairwise energy (pairwise_terms), got "
                             f"{type(energy).__name__}")
        if not is_binary(space):  # (mean-field: checked above; pairwise energies are multilabel-only anyway)
            raise ValueError(f"the {name!r} proposal is for Multilabel spaces, got {space!r}")
        u, coupling = energy.pairwise_terms(x)
        fields, prior_logits = u + space.prior_logits(x.device), space.prior_logits(x.device)
        restarts = space.sample_prior((x.shape[0], PROPOSAL_RESTARTS), generator=generator, device=x.device).to(x.dtype)
        optima = icm(fields, coupling, torch.cat([(fields > 0).to(x.dtype).unsqueeze(1), restarts], dim=1))
        starts = torch.cat([torch.sigmoid(fields).unsqueeze(1), _distinct_best(energy, space, x, optima,
                                                                               PROPOSAL_MODES)], dim=1)
        logits = mean_field_logits(fields, coupling, starts)
        if name == "mean-field":
            return defensive_bernoulli(logits, prior_logits, prior_weight, name)
        return sequential_mean_field(fields, coupling, torch.sigmoid(logits), prior_logits, prior_weight)
    if name == "local-field" and is_binary(space):  # (binary: checked above)
        optima = _greedy_local_optima(energy, space, x, MODE_RESTARTS, generator)
        logits = _local_fields(energy, space, x, _distinct_best(energy, space, x, optima, PROPOSAL_MODES))
        logits = torch.cat([logits, logits / LOCAL_FIELD_TEMPERATURE], dim=1)
        return defensive_bernoulli(logits, space.prior_logits(x.device), prior_weight, name)
    if space.kind.proposal != "assignment" or not is_ranking(space) or theta is None:
        raise ValueError(f"the 'assignment' proposal needs a linear energy on a ranking space, got "
                         f"{type(energy).__name__} on {space!r}")
    return defensive(assignment_proposal(space.assignment_scores(theta), space._from_positions, space._to_positions),
                     prior, prior_weight)


def _distinct_best(energy, space: Multilabel, x, candidates: Tensor, count: int) -> Tensor:
    """The ``count`` best distinct candidates (n, c, k) by g + log q per input, (n, count, k)
    (repeats where fewer than ``count`` are distinct)."""
    score = energy(x, candidates) + space.log_prior(candidates)
    ranking = score.argsort(dim=1, descending=True)
    candidates, score = candidates.gather(1, ranking.unsqueeze(-1).expand_as(candidates)), score.gather(1, ranking)
    repeated = (candidates.unsqueeze(1) == candidates.unsqueeze(2)).all(-1).tril(-1).any(-1)  # equals a better one
    keep = score.masked_fill(repeated, -math.inf).argsort(dim=1, descending=True, stable=True)[:, :count]
    return candidates.gather(1, keep.unsqueeze(-1).expand(-1, -1, candidates.shape[-1]))


def _local_fields(energy, space: Multilabel, x, y: Tensor) -> Tensor:
    """φ_ci = (2y_ci − 1)(g(y_c) − g(y_c ⊕ e_i)) + logit π_i at states y (n, C, k) → (n, C, k):
    the log-odds of label i given the other labels of y_c."""
    n, c, k = y.shape
    flips = torch.eye(k, device=x.device, dtype=x.dtype)
    neighbours = (y.unsqueeze(2) + flips - 2 * y.unsqueeze(2) * flips).reshape(n, c * k, k)  # y_c XOR e_i
    gain = energy(x, y).unsqueeze(-1) - energy(x, neighbours).reshape(n, c, k)
    return (2 * y - 1) * gain + space.prior_logits(x.device)


@torch.no_grad()
def nll(
    energy: Energy,
    space: OutputSpace,
    x: Tensor,
    y: Tensor,
    *,
    limit: int = 2**16,
    n_samples: int = 4096,
    generator: torch.Generator | None = None,
    proposal: str = "auto",
    log_z: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """−log p(y|x) = A(x) − g(x, y) − log q(y) per example, and the stderr of A (0 where exact).
    ``log_z``: A(x) and its stderr already computed for these x (:func:`log_partition`), e.g. shared
    with another metric of the same inputs; otherwise estimated here."""
    space.check_y(y)
    if y.shape[0] != x.shape[0] or y.dim() != 1 + len(space.event_shape):
        raise ValueError(f"nll needs one label per input: x {tuple(x.shape)}, y {tuple(y.shape)}")
    y = y.to(x.dtype)
    if log_z is None:
        log_z = log_partition(energy, space, x, limit=limit, n_samples=n_samples, generator=generator,
                              proposal=proposal)
    estimate, stderr = log_z
    if estimate.shape != x.shape[:1] or stderr.shape != x.shape[:1]:
        raise ValueError(f"log_z must hold one estimate and one stderr per input ({x.shape[0]}), got "
                         f"{tuple(estimate.shape)} and {tuple(stderr.shape)}")
    return estimate - energy(x, y.unsqueeze(1)).squeeze(1) - space.log_prior(y), stderr


def _mode_enumerate(energy, space, x, chunk_size=4096) -> Tensor:
    best_score = torch.full((x.shape[0],), -math.inf, device=x.device, dtype=x.dtype)
    best = torch.zeros((x.shape[0], *space.event_shape), device=x.device, dtype=x.dtype)
    for candidates, log_target in _scored_chunks(energy, space, x, chunk_size):
        score, index = log_target.max(dim=1)
        better = score > best_score
        best_score = torch.where(better, score, best_score)
        best[better] = candidates[index[better]].to(x.dtype)
    return best


def icm(u: Tensor, coupling: Tensor, init: Tensor, max_sweeps: int = 100, *,
        skip_unflipped: bool | None = None) -> Tensor:
    """Iterated conditional modes for max_y ⟨u, y⟩ + ½ yᵀUy over {0,1}^k (U symmetric, zero diagonal):
    set y_i = 1 iff u_i + Σ_j U_ij y_j > 0, site by site, until a full sweep changes nothing.
    u (n, k), U (n, k, k), init (n, c, k) → a local optimum per chain (n, c, k).

    The fields F = u + yU (n, c, k) are kept up to date rather than summed afresh at every site:
    site i reads F_i, and where chains flip y_i by δ = ±1, F += δ U_i (U_ii = 0: F_i itself stays).
    A site that no chain flips then costs one comparison instead of a pass over (n, c, k), and
    after the first sweep almost every site is one (k = 174, 64 inputs × 5 chains: 68 → 46 ms).
    The fields are sums of the same terms in another order than a fresh u_i + Σ_j U_ij y_j: the
    same decisions unless a field lies within rounding of 0.

    ``skip_unflipped`` tests every site for a flip before updating; that test waits for an
    accelerator, so there every site updates (a zero step leaves F and y as they are) and a sweep
    is compared with the one before, one wait a sweep. By default (None) a CPU tensor runs the
    same loop compiled (:func:`_icm_compiled`: the same states, ~5× faster) and an accelerator's
    updates every site."""
    if skip_unflipped is None and init.device.type == "cpu" and not is_stacked(init):
        return _icm_compiled(u, coupling, init, max_sweeps)
    y = init.clone()
    skip = y.device.type == "cpu" if skip_unflipped is None else bool(skip_unflipped)
    field = u.unsqueeze(1) + torch.bmm(y, coupling)  # (yU)_i = Σ_j U_ji y_j = Σ_j U_ij y_j (U symmetric)
    # per-site views, made once (see site_views): writing a label's column writes y, F_i reads F
    labels, fields, rows = y.unbind(-1), field.unbind(-1), site_views(u, coupling)[1]
    for _ in range(max_sweeps):
        before = None if skip else y.clone()
        changed = False
        for i, label in enumerate(labels):
            flip = (fields[i] > 0) != label  # (n, c): chains whose best y_i is the other value
            if skip and not flip.any():
                continue
            step = flip * (1 - 2 * label)  # +1 where 0 → 1, −1 where 1 → 0, 0 elsewhere
            field.addcmul_(step.unsqueeze(-1), rows[i])
            label.add_(step)
            changed = True
        # a full sweep that changed nothing: every chain is at a local optimum
        if (not changed) if before is None else torch.equal(before, y):
            break
    return y


def _icm_compiled(u: Tensor, coupling: Tensor, init: Tensor, max_sweeps: int) -> Tensor:
    """:func:`icm`'s site loop on CPU, compiled (:func:`ebm.compiled.icm_sweeps`), chain by chain:
    the loop is ~2,000 site visits with a flip a call at k = 174 (cal500's perceptron: 64 inputs ×
    5 starts, ~19 sweeps, ~49,000 flips), ~12 operations each in NumPy (the loop this replaced:
    33 → 6 ms a call, the same states) and more in torch. The arrays share the tensors' memory."""
    from ebm.compiled import icm_sweeps, kernel, shared_rows

    n, c, k = init.shape
    with torch.no_grad():
        y = init.detach().clone(memory_format=torch.contiguous_format)  # its array is a view of it
        field = (u.detach().unsqueeze(1) + torch.bmm(y, coupling.detach())).reshape(n * c, k)
    # U is symmetric: its row i is the column that site i sends
    kernel(icm_sweeps)(field.numpy(), y.reshape(n * c, k).numpy(), shared_rows(coupling.detach()), c,
                       int(max_sweeps))
    return y


def _best_of(energy, space, x, candidates) -> Tensor:
    """Per input, the candidate (n, c, *event) with the largest g + log q."""
    score = energy(x, candidates) + space.log_prior(candidates)
    return candidates[torch.arange(x.shape[0], device=x.device), score.argmax(dim=1)]


def _pairwise_icm_mode(energy, space: Multilabel, x, restarts, generator) -> Tensor:
    """ICM from the unary solution (threshold of u + logit π) and from ``restarts`` prior draws."""
    u, coupling = energy.pairwise_terms(x)
    u = u + space.prior_logits(x.device)  # the prior is unary: log q(y) = ⟨logit π, y⟩ + const
    starts = [(u > 0).to(x.dtype).unsqueeze(1)]
    if restarts > 0:
        starts.append(space.sample_prior((x.shape[0], restarts), generator=generator, device=x.device).to(x.dtype))
    return _best_of(energy, space, x, icm(u, coupling, torch.cat(starts, dim=1)))


def _greedy_local_optima(energy, space: Multilabel, x, restarts, generator,
                         max_iterations: int | None = None) -> Tensor:
    """Steepest-ascent local search over single-label flips, from the prior mode and ``restarts``
    prior draws: each step scores all k flips of every chain in one call and takes the best
    improving one; a chain stops at a local optimum. Returns every chain's end, (n, 1 + restarts, k)."""
    n, k = x.shape[0], space.k
    starts = [(space.prior_logits(x.device) > 0).to(x.dtype).expand(n, 1, k)]
    if restarts > 0:
        starts.append(space.sample_prior((n, restarts), generator=generator, device=x.device).to(x.dtype))
    y = torch.cat(starts, dim=1)
    c = y.shape[1]
    flips = torch.eye(k, device=x.device, dtype=x.dtype)
    score = energy(x, y) + space.log_prior(y)
    for _ in range(max_iterations or 2 * k):
        neighbours = (y.unsqueeze(2) + flips - 2 * y.unsqueeze(2) * flips).reshape(n, c * k, k)  # y XOR e_i
        neighbour_score = (energy(x, neighbours) + space.log_prior(neighbours)).reshape(n, c, k)
        best_score, best_flip = neighbour_score.max(dim=2)
        improves = best_score > score + 1e-6
        if not bool(improves.any()):
            break
        chosen = neighbours.reshape(n, c, k, k).gather(2, best_flip[:, :, None, None].expand(n, c, 1, k)).squeeze(2)
        y = torch.where(improves.unsqueeze(-1), chosen, y)
        score = torch.where(improves, best_score, score)
    return y


def _greedy_mode(energy, space: Multilabel, x, restarts, generator, max_iterations: int | None = None) -> Tensor:
    """The best of ``_greedy_local_optima``'s chains."""
    return _best_of(energy, space, x, _greedy_local_optima(energy, space, x, restarts, generator, max_iterations))


def has_mode_oracle(energy: EnergyFunction, space: OutputSpace, x: Tensor) -> bool:
    """Whether :func:`mode` can answer for inputs x: a multilabel or enumerable space, or an energy
    linear in y (the space's oracle); not a nonlinear energy on a large ranking space."""
    return is_binary(space) or space.size <= MODE_ENUMERATION_LIMIT or energy.linear_scores(x) is not None


@torch.no_grad()
def mode(
    energy: EnergyFunction,
    space: OutputSpace,
    x: Tensor,
    *,
    restarts: int = MODE_RESTARTS,
    generator: torch.Generator | None = None,
    enumeration_limit: int = MODE_ENUMERATION_LIMIT,
) -> Tensor:
    """argmax_y g(x, y) + log q(y), shape (n, *event).

    Linear energies use the space's oracle (threshold incl. prior logit; argsort; Hungarian).
    Otherwise exact enumeration when |Y| ≤ ``enumeration_limit``; beyond it, ICM for the
    pairwise energy and greedy single-flip local search for the mlp energy (both from a
    deterministic start plus ``restarts`` random ones; approximate).
    """
    theta = energy.linear_scores(x)
    if theta is not None:
        return space.mode_linear(theta)
    if space.size <= enumeration_limit:
        return _mode_enumerate(energy, space, x)
    if not is_binary(space):
        raise ValueError(f"no mode oracle for a nonlinear energy on {space!r} with {space.size} elements")
    if isinstance(energy, Pairwise):
        return _pairwise_icm_mode(energy, space, x, restarts, generator)
    return _greedy_mode(energy, space, x, restarts, generator)


@torch.no_grad()
def sample(
    energy: Energy,
    space: OutputSpace,
    x: Tensor,
    n: int,
    *,
    generator: torch.Generator | None = None,
    limit: int = 2**16,
    n_sweeps: int = 50,
) -> Tensor:
    """n draws y ~ p(·|x) per input, (batch, n, *event).

    Exact (categorical over the enumerated log q + g) when |Y| ≤ ``limit``; otherwise n
    independent MCMC chains started from q: ``n_sweeps`` Gibbs sweeps (multilabel) or
    ``n_sweeps·k`` random-transposition Metropolis–Hastings steps (rankings), approximate.
    """
    if space.size <= limit:
        return _sample_exact(energy, space, x, n, generator)
    start = space.sample_prior((x.shape[0], n), generator=generator, device=x.device).to(x.dtype)
    return mcmc_steps(energy, space, x, start, n_sweeps, generator=generator)[0]


def _sample_exact(energy, space, x, n, generator) -> Tensor:
    candidates = space.enumerate_all(device=x.device)
    log_q = space.log_prior(candidates)
    draws = []
    for rows in _row_blocks(x.shape[0], space.size, MAX_SCORES):
        probs = torch.softmax(enumerate_scores(energy, space, x[rows]) + log_q, dim=1)
        device = generator.device if generator is not None else probs.device
        draws.append(torch.multinomial(probs.to(device), n, replacement=True, generator=generator).to(x.device))
    return candidates[torch.cat(draws)].to(x.dtype)


@torch.no_grad()
def training_proposal(energy: Energy, space: OutputSpace, x: Tensor, y: Tensor, prior_weight: float,
                      generator: torch.Generator | None = None) -> Proposal:
    """r(·|x) for the sample term of one min-min step, rebuilt from the current (detached)
    energy every step at a cost bounded per input, and mixed defensively, (1 − α) r + α q
    with α = ``prior_weight`` ∈ (0, 1], so that the weights q/r ≤ 1/α stay bounded:

    * unary multilabel: the model's own distribution, exactly factorised:
      r_i = σ(u_i(x) + logit π_i) (with α = 0 the weights q e^g / r would all equal Z(x));
    * pairwise multilabel: factorised Bernoullis at two damped mean-field fixed points, started
      from μ = ½ and from the observed y (``pairwise_mean_field``: low-rank fields, never the
      (n, k, k) coupling; the NLL's sampler, :func:`make_proposal`, adds ICM optima and
      sequential sampling, ~1 s a step at k = 174, batch 64: too slow to rebuild every step);
    * other multilabel energies (mlp): factorised Bernoullis with the local fields
      φ_i = g(y^{i←1}) − g(y^{i←0}) + logit π_i at the observed labels y, and the same at
      temperature 2: one energy call of k neighbours per input. A proposal may depend on the
      observed y: the target E_q[f*(g(x, ·) − τ(x))] does not, so the weighted estimate stays unbiased;
    * rankings with a linear energy: sequential assignment with Sinkhorn logits; other ranking
      energies: the prior.
    """
    if not 0 < prior_weight <= 1:
        raise ValueError(f"the defensive prior weight must lie in (0, 1], got {prior_weight}")
    if prior_weight == 1:
        return PriorProposal(space, x.shape[0], device=x.device)
    theta = energy.linear_scores(x)
    if is_binary(space):
        prior_logits = space.prior_logits(x.device)
        if theta is not None:  # unary: exact factorised p(y|x) ∝ q(y) e^{⟨θ, y⟩}
            return defensive_bernoulli((theta + prior_logits).unsqueeze(1), prior_logits, prior_weight, "factorised")
        if isinstance(energy, PairwiseEnergy):  # pairwise_mean_field reads its low-rank factors
            means = torch.stack([torch.full_like(x.new_zeros(x.shape[0], space.k), 0.5), y.to(x.dtype)], dim=1)
            return defensive_bernoulli(pairwise_mean_field(energy, x, means, prior_logits), prior_logits, prior_weight,
                                       "mean-field")
        else:
            logits = _local_fields(energy, space, x, y.unsqueeze(1).to(x.dtype))
            logits = torch.cat([logits, logits / LOCAL_FIELD_TEMPERATURE], dim=1)
            return defensive_bernoulli(logits, prior_logits, prior_weight, "local-field")
    return make_proposal(energy, space, x, "auto", generator=generator, prior_weight=prior_weight)
