"""MCMC kernels leaving p(y|x) ∝ q(y)·exp(g(x, y)) invariant, vectorised over inputs and chains.

States y have shape (n, *event) (one chain per input) or (n, c, *event) (c chains per input).
Each kernel returns the new states and the number of energy evaluations it spent (an energy
value g(x, y) or a single-site energy difference counts as one).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ebm.batching import is_stacked
from ebm.energies import Energy, LinearInY, Pairwise, positions_score, site_field, site_views
from ebm.spaces import OutputSpace, is_binary, is_ranking, uniform_noise


def _with_chains(space: OutputSpace, y: Tensor) -> tuple[Tensor, bool]:
    """View y as (n, c, *event); also say whether a chain axis was added."""
    space.check_y(y)
    added = y.dim() == 1 + len(space.event_shape)
    return (y.unsqueeze(1) if added else y), added


def candidate_scorer(energy: Energy | Callable[[Tensor, Tensor], Tensor], x: Tensor) -> Callable[[Tensor], Tensor]:
    """y ↦ g(x, y) (y (n, m, *event) → (n, m)) for many candidate sets of the same inputs x.

    An :class:`Energy` computes its trunk h(x) once here rather than in every call, and its head's
    per-input terms (θ(x), the couplings: :meth:`Energy.candidate_scorer`): a kernel scores new
    candidates of the same x at every site or Metropolis–Hastings step, and the trunk (an MLP
    over x) and the head's first layer were recomputed each time. The values are the same bits as
    ``energy(x, y)`` (its ``forward`` is ``score(features(x), y)``) when h(x) is deterministic,
    as in the samplers, which run the energy in eval mode (``baselines.mcmc``) or under no_grad
    on a fitted model. Other energy functions are called as they are."""
    if not isinstance(energy, Energy):
        return lambda y: energy(x, y)
    score = energy.candidate_scorer(energy.features(x))
    return lambda y: score(y.to(x.dtype))


@torch.no_grad()
def gibbs_sweep(energy: Energy, space: OutputSpace, x: Tensor, y: Tensor, *,
                generator: torch.Generator | None = None, sweeps: int = 1) -> tuple[Tensor, int]:
    """``sweeps`` systematic-scan Gibbs sweeps over the k labels of a multilabel state.

    Site i is resampled from p(y_i = 1 | rest) = σ(Δ_i), Δ_i = g(y^{i←1}) − g(y^{i←0}) + logit π_i:
    y_i = [ν < σ(Δ_i)] with ν ~ U(0, 1). With ``pairwise_terms`` (Ising), Δ_i = u_i + Σ_j U_ij y_j +
    logit π_i in closed form (one evaluation per site), from (u, U) computed once for all the
    sweeps; for an energy linear in y (unary, g = ⟨θ, y⟩) Δ_i = θ_i + logit π_i does not depend on
    the other sites, so a sweep is one draw of every site; otherwise both values are scored in one
    batched call (two per site). Each sweep's noise is drawn in one call, (k, n, c), site-major:
    on CPU the same numbers, in the same order, as one draw of (n, c) per site, so the states are
    those of sweeps run one call at a time (which recomputed (u, U) and drew per site).

    On CPU the Ising site loop runs compiled (:func:`_compiled_pairwise_sweeps`; a NumPy loop that
    kept the fields up to date, as ICM's once did, was slower than torch's: a Gibbs sweep flips
    many chains at a site where ICM flips almost none); stacked (vmapped) and accelerator states
    keep the torch loop.
    """
    if not is_binary(space):
        raise ValueError(f"Gibbs sweeps are for Multilabel spaces, got {space!r}; use mh_transpositions for rankings")
    states, added = _with_chains(space, y)
    states = states.clone().to(x.dtype)
    n, c, k = states.shape
    prior_logits = space.prior_logits(x.device).to(x.dtype)
    closed_form = isinstance(energy, Pairwise)

    def sweep_noise() -> Tensor:  # (k, n, c): site i's noise of every chain
        return uniform_noise((k, n, c), generator, x.device).to(x.dtype)

    if isinstance(energy, Pairwise):
        u, coupling = energy.pairwise_terms(x)
    elif isinstance(energy, LinearInY) and (theta := energy.linear_scores(x)) is not None:
        probability = torch.sigmoid(theta + prior_logits).unsqueeze(1)
        for _ in range(sweeps):  # every sweep's draw, so that the generator moves as the site loop's
            states = (sweep_noise().permute(1, 2, 0) < probability).to(x.dtype)
        return (states.squeeze(1) if added else states), n * c * k * sweeps
    if closed_form and states.device.type == "cpu" and not is_stacked(states):
        return _compiled_pairwise_sweeps(states, added, u, coupling, prior_logits, sweep_noise, sweeps)
    if closed_form:  # per-site views, made once (see ebm.energies.site_views)
        (unary, rows), site_logits = site_views(u, coupling), prior_logits.unbind(0)
    else:
        score = candidate_scorer(energy, x)
    labels = states.unbind(-1)  # writing a label's column writes states
    for _ in range(sweeps):
        noise = sweep_noise().unbind(0)
        for i in range(k):
            if closed_form:
                delta = unary[i] + site_field(states, rows[i]) + site_logits[i]
            else:
                both = states.unsqueeze(2).repeat(1, 1, 2, 1)  # (n, c, 2, k)
                both[:, :, 0, i] = 0.0
                both[:, :, 1, i] = 1.0
                g = score(both.reshape(n, 2 * c, k)).reshape(n, c, 2)
                delta = g[..., 1] - g[..., 0] + prior_logits[i]
            labels[i].copy_(noise[i] < torch.sigmoid(delta))
    evals = n * c * k * (1 if closed_form else 2) * sweeps
    return (states.squeeze(1) if added else states), evals


def _compiled_pairwise_sweeps(states: Tensor, added: bool, u: Tensor, coupling: Tensor, prior_logits: Tensor,
                              sweep_noise: Callable[[], Tensor], sweeps: int) -> tuple[Tensor, int]:
    """:func:`gibbs_sweep`'s pairwise site loop on CPU, compiled (:func:`ebm.compiled.gibbs_sweep_sites`):
    the same noise, drawn the same way, and the same decisions up to the last bits of Δ. In
    torch a site is ~7 dispatched operations on (n, c) for every chain at once (cal500: 174 sites,
    n = 64, 4 chains, 2-3 sweeps a step: most of mcmc-pcd's step); compiled, a site costs its
    arithmetic. The arrays share the tensors' memory."""
    from ebm.compiled import gibbs_sweep_sites, kernel, shared_rows

    n, c, k = states.shape
    states = states.contiguous()  # its array is a view of it
    couplings = torch.bmm(states, coupling).reshape(n * c, k)  # S = yU (U symmetric)
    arrays = (states.reshape(n * c, k).numpy(), couplings.numpy(), u.contiguous().numpy(),
              shared_rows(coupling), prior_logits.contiguous().numpy(), c)
    sweep = kernel(gibbs_sweep_sites)
    for _ in range(sweeps):
        sweep(*arrays, sweep_noise().reshape(k, n * c).numpy())  # noise (k, n, c): site i's of every chain
    return (states.squeeze(1) if added else states), n * c * k * sweeps


def transpose_labels(y: Tensor, a: Tensor, b: Tensor, event_dims: int) -> Tensor:
    """Swap labels a and b (per chain) along the label axis (the first event axis): the rank
    values of two labels for ``Permutations``, two rows for ``PermutationMatrices``."""
    axis = y.dim() - event_dims
    shape = (*a.shape, *([1] * event_dims))
    index_a = a.reshape(shape).expand(*a.shape, 1, *y.shape[axis + 1 :])
    index_b = b.reshape(shape).expand(*b.shape, 1, *y.shape[axis + 1 :])
    value_a, value_b = y.gather(axis, index_a), y.gather(axis, index_b)
    return y.scatter(axis, index_a, value_b).scatter(axis, index_b, value_a)


def random_labels(shape: tuple[int, ...], k: int, generator: torch.Generator | None, device) -> Tensor:
    """One label per entry of ``shape``, uniform over 0..k−1 (int64)."""
    return (uniform_noise(shape, generator, device) * k).long().clamp(max=k - 1)


def random_label_pairs(shape: tuple[int, ...], k: int, generator: torch.Generator | None,
                       device) -> tuple[Tensor, Tensor]:
    """Two distinct labels (a, b) per entry of ``shape``, uniform over the k(k − 1) ordered pairs:
    a uniform, b = a + 1 + (uniform over the other k − 1) mod k."""
    first = random_labels(shape, k, generator, device)
    offset = 1 + random_labels(shape, k - 1, generator, device)
    return first, (first + offset) % k


#: Metropolis–Hastings steps whose randomness :func:`mh_transpositions` draws at once (3 numbers a
#: chain a step: a 64-step block of lr-vowel's stacked chains, 25 × 64 × 4, is 10 MB)
MH_NOISE_BLOCK = 64


@torch.no_grad()
def mh_transpositions(
    energy: Energy, space: OutputSpace, x: Tensor, y: Tensor, n_steps: int, *, generator: torch.Generator | None = None
) -> tuple[Tensor, int]:
    """``n_steps`` Metropolis–Hastings steps with a uniformly random transposition of two labels
    (a symmetric proposal), accepted with probability min(1, q(y')e^{g(y')} / (q(y)e^{g(y)}))."""
    if not is_ranking(space):
        raise ValueError("random transpositions are for ranking spaces; use gibbs_sweep for Multilabel")
    states, added = _with_chains(space, y)
    n, c = states.shape[:2]
    # Permutation matrices (k × k a state) move as positions (n, c, k), each label's position: swapping
    # two labels' positions transposes them. On Birkhoff the swaps, copies and selections of whole
    # matrices were most of a step (lr-vowel's stacked mcmc-pcd, a group step: 92-171 → 74-84 ms,
    # alternating); the same states, proposals and decisions. Rank vectors are already (n, c, k), and
    # move as they are.
    as_positions = math.prod(space.event_shape) > space.k
    encode = (lambda chains: space._from_positions(chains).to(x.dtype)) if as_positions else (lambda chains: chains)
    chains = space._to_positions(states) if as_positions else states.to(x.dtype)
    theta = energy.linear_scores(x) if as_positions and isinstance(energy, LinearInY) else None
    if theta is not None:
        # A linear energy scores a permutation matrix as ⟨Θ, P⟩ = Σ_j Θ[j, position of j]: k entries of Θ
        # gathered per chain, where encoding each proposal wrote a k × k matrix for a product to read
        # (lr-vowel's stacked mcmc-pcd, 25 × 64 × 4 chains of 11 × 11 matrices and 55 proposals a step:
        # 7.2-8.7 → 4.8-4.9 ms a member-step). The same terms summed in another order, so Δg may differ
        # in its last bits. q is uniform on rankings (PermutationSpace.log_prior): log q(y′) − log q(y)
        # = 0, and the targets leave it out
        profit = space.assignment_scores(theta.to(x.dtype))  # (n, k labels, k positions)

        def score_chains(chains: Tensor) -> Tensor:
            return positions_score(profit, chains)
    else:
        score = candidate_scorer(energy, x)

        def score_chains(chains: Tensor) -> Tensor:
            candidates = encode(chains)
            return score(candidates) + space.log_prior(candidates)
    log_target = score_chains(chains)
    for start in range(0, int(n_steps), MH_NOISE_BLOCK):
        # the randomness of a block of steps drawn at once, step-major: each step's pairs and acceptance
        # noise are then views, where drawing them took ~13 dispatched operations a step of ~23 (at batch
        # 64 a step is bound by per-operation overhead, issue 15)
        steps = min(MH_NOISE_BLOCK, int(n_steps) - start)
        firsts, seconds = random_label_pairs((steps, n, c), space.k, generator, x.device)
        log_noise = torch.log(uniform_noise((steps, n, c), generator, x.device))
        for first, second, log_u in zip(firsts.unbind(0), seconds.unbind(0), log_noise.unbind(0), strict=True):
            proposed = transpose_labels(chains, first, second, 1)
            log_proposal = score_chains(proposed)
            accept = log_u < (log_proposal - log_target)
            chains = torch.where(accept.unsqueeze(-1), proposed, chains)
            log_target = torch.where(accept, log_proposal, log_target)
    evals = n * c * (int(n_steps) + 1)
    states = encode(chains)
    return (states.squeeze(1) if added else states), evals


def mcmc_steps(
    energy: Energy, space: OutputSpace, x: Tensor, y: Tensor, sweeps: int, *, generator: torch.Generator | None = None
) -> tuple[Tensor, int]:
    """``sweeps`` sweeps of the space's MCMC kernel (``space.kind.mcmc``): Gibbs sweeps over the
    k labels (``"gibbs"``) or ``sweeps·k`` random-transposition Metropolis–Hastings steps
    (``"transpositions"``). Returns the states and the energy evaluations spent."""
    if space.kind.mcmc == "gibbs":
        return gibbs_sweep(energy, space, x, y, generator=generator, sweeps=int(sweeps))
    if space.kind.mcmc == "transpositions":
        return mh_transpositions(energy, space, x, y, int(sweeps) * space.k, generator=generator)
    raise ValueError(f"unknown MCMC kernel {space.kind.mcmc!r} of {space!r}")
