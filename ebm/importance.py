"""Importance sampling for A(x) = log Σ_y q(y) e^{g(x,y)} when |Y| is too large to enumerate.

With draws y_j ~ r(·|x), w_j = q(y_j) e^{g(x,y_j)} / r(y_j) and

    Â = log (1/S) Σ_j w_j,    stderr ≈ sd(w) / (√S · mean(w))    (delta method),
    ESS = (Σ_j w_j)² / Σ_j w_j².

Â is biased low by Jensen's inequality, roughly by var(w)/(2 S mean(w)²); with r = q and a
peaked trained model (ESS ≈ 1) that bias is huge (test NLLs came out negative), so r should
be close to p(y|x) ∝ q e^g. The proposals here are chosen from the energy's structure:

* ``BernoulliMixture`` (multilabel): mixtures of Bernoulli products, either autoregressive
  around mean-field means (pairwise, ``sequential_mean_field``) or factorised with local
  fields at local optima (mlp);
* ``AssignmentProposal`` (rankings): sequential assignment of labels to positions with
  Sinkhorn-balanced logits;
* ``MixtureProposal``: Σ_c a_c r_c, used *defensively* with the prior q (Hesterberg 1995) so
  that w ≤ e^{g}/a_q stays bounded wherever the main proposal is too narrow, and (for the NLL)
  with a point mass at the model's mode and its neighbours (``with_mode``), which a sharply
  peaked model's proposal may otherwise never visit.

Every proposal gives exact log r(y) for any y (a mixture needs each component's density at
every draw), so the estimator is unbiased for Z and consistent for A.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ebm.batching import is_stacked
from ebm.energies import Energy, PairwiseEnergy, factor_product
from ebm.spaces import OutputSpace, inverse_permutations, is_binary, is_ranking, uniform_noise

#: elements (samples × event size) of proposal draws held at once, summed over inputs
MAX_DRAW_ELEMENTS = 2**22


@dataclass(frozen=True)
class PartitionEstimate:
    """log Z(x) with its standard error and the importance sampler's effective sample size,
    all (n,). Exact methods have stderr 0 and ess = inf. ``method`` names how it was computed
    ("closed-form", "enumeration", or the proposal's name)."""

    estimate: Tensor
    stderr: Tensor
    ess: Tensor
    method: str


class Proposal(ABC):
    """r(y|x) for a fixed batch of n inputs."""

    name: str

    @abstractmethod
    def sample(self, m: int, generator: torch.Generator | None = None) -> Tensor:
        """m i.i.d. draws per input, (n, m, *event) float."""

    @abstractmethod
    def log_prob(self, y: Tensor) -> Tensor:
        """log r(y|x) for y (n, m, *event) → (n, m), float64."""

    @abstractmethod
    def restrict(self, rows: slice) -> Proposal:
        """The same proposal for the inputs ``rows`` only."""

    #: positions (…, k) int64 → the ranking space's events, where this proposal can draw positions
    #: (:meth:`sample_positions`); None otherwise
    positions_to_event: Callable[[Tensor], Tensor] | None = None

    def sample_positions(self, m: int, generator: torch.Generator | None = None) -> Tensor:
        """The draws of :meth:`sample` as positions (n, m, k), from the same random numbers, for a
        proposal with :attr:`positions_to_event`: a mixture of such proposals picks among positions
        and builds the (larger) events once (:class:`MixtureProposal`)."""
        raise NotImplementedError(f"{type(self).__name__} draws no positions")


class PriorProposal(Proposal):
    """r = q (the space's prior): the plain Monte Carlo estimator of E_q[e^g]."""

    name = "prior"

    def __init__(self, space: OutputSpace, n: int, device=None) -> None:
        self.space, self.n, self.device = space, n, device
        if is_ranking(space):
            self.positions_to_event = space._from_positions

    def sample(self, m, generator=None):
        return self.space.sample_prior((self.n, m), generator=generator, device=self.device)

    def sample_positions(self, m, generator=None):
        if not is_ranking(self.space):
            return super().sample_positions(m, generator)
        return self.space.sample_prior_positions((self.n, m), generator=generator, device=self.device)

    def log_prob(self, y):
        return self.space.log_prior(y).double()

    def restrict(self, rows):
        return PriorProposal(self.space, len(range(self.n)[rows]), self.device)


class BernoulliMixture(Proposal):
    """r(y) = Σ_c a_c r_c(y) on {0,1}^k, each component autoregressive along a label order o:

        r_c(y) = ∏_t σ(h_ct)^{y_{o_t}} σ(−h_ct)^{1−y_{o_t}},   h_ct = b_ct + s_c Σ_{t'<t} L_{tt'} y_{o_t'},

    base logits b (n, C, k) and coupling L (n, k, k) (strictly lower triangular) in that order,
    scales s (C,) (0: the factorised ∏ σ(b_ct)), weights a (n, C) (rows sum to 1), order o
    (n, k) (None: 0..k−1). ``coupling=None`` makes every component factorised.
    A draw picks its component, then its labels one at a time (all at once when factorised);
    log r uses one batched GEMM y Lᵀ for all labels (the labels are known: teacher forcing)."""

    def __init__(self, logits: Tensor, weights: Tensor, name: str = "bernoulli", *, coupling: Tensor | None = None,
                 coupling_scale: list[float] | None = None, order: Tensor | None = None) -> None:
        if logits.dim() != 3 or weights.shape != logits.shape[:2]:
            raise ValueError(f"BernoulliMixture needs logits (n, C, k) and weights (n, C), got {tuple(logits.shape)} "
                             f"and {tuple(weights.shape)}")
        self.logits, self.weights, self.name = logits.double(), weights.double(), name
        self.coupling = None if coupling is None else coupling.tril(-1)
        self.coupling_scale = ([0.0] * logits.shape[1] if coupling is None
                               else [float(v) for v in (coupling_scale or [1.0] * logits.shape[1])])
        self.order = order

    def _permute(self, y: Tensor) -> Tensor:
        return y if self.order is None else y.gather(-1, self.order.unsqueeze(1).expand_as(y))

    def sample(self, m, generator=None):
        n, c, k = self.logits.shape
        component = categorical(self.weights, m, generator)  # (n, m)
        noise = uniform_noise((n, m, k), generator, self.logits.device)
        logits = self.logits.to(noise.dtype)
        if not any(self.coupling_scale):
            base = logits.gather(1, component.unsqueeze(-1).expand(n, m, k))
            y = (noise < torch.sigmoid(base)).to(noise.dtype)
        else:
            # each draw's base logits gathered straight into the (n, k, m) layout the labels are drawn in
            field = logits.transpose(1, 2).gather(2, component.unsqueeze(1).expand(n, k, m))
            scale = torch.tensor(self.coupling_scale, dtype=noise.dtype, device=noise.device)[component].unsqueeze(-1)
            y = _sample_autoregressive(field, self.coupling.to(noise.dtype), scale, noise)
        if self.order is None:
            return y
        inverse = inverse_permutations(self.order)  # label i was drawn at step inverse_i
        # y back to label order by a gather (faster than scattering y)
        return y.gather(-1, inverse.unsqueeze(1).expand_as(y))

    def log_prob(self, y: Tensor) -> Tensor:
        # (n, m, k) work in y's precision, the (n, m, C) log-probabilities in float64
        y = self._permute(y)
        logits = self.logits.to(y.dtype)
        factorised = torch.bmm(y, logits.transpose(1,
                2)).double() - torch.nn.functional.softplus(self.logits).sum(-1).unsqueeze(1)
        coupled = {c: scale for c, scale in enumerate(self.coupling_scale) if scale != 0}
        coupled_log_probs: dict[int, Tensor] = {}
        if coupled and self.coupling is not None:  # (a non-zero scale comes with a coupling: __init__)
            earlier = torch.bmm(y, self.coupling.to(y.dtype).transpose(1, 2))  # Σ_{t'<t} L_tt' y_t'
            coupled_log_probs = _coupled_log_probs(logits, earlier, y, coupled)
        per_component = [coupled_log_probs[c] if c in coupled else factorised[..., c]
                         for c in range(len(self.coupling_scale))]
        return torch.logsumexp(torch.stack(per_component, -1) + self.weights.log().unsqueeze(1), dim=-1)

    def restrict(self, rows):
        return BernoulliMixture(
            self.logits[rows], self.weights[rows], self.name,
            coupling=None if self.coupling is None else self.coupling[rows],
            coupling_scale=self.coupling_scale, order=None if self.order is None else self.order[rows],
        )


#: draws × labels × inputs that :func:`_coupled_log_probs` works on at once: its five passes (field,
#: sign, softplus, widening, sum) then stay in cache instead of streaming (n, m, k) tensors through memory
COUPLED_BLOCK_ELEMENTS = 2**18


def _coupled_log_probs(logits: Tensor, earlier: Tensor, y: Tensor, scales: dict[int, float]) -> dict[int, Tensor]:
    """log r_c(y) = Σ_t [y_t h_ct − softplus(h_ct)] = −Σ_t softplus((1 − 2y_t) h_ct) (y ∈ {0, 1}),
    h_ct = b_ct + s_c e_t, for each coupled component c (``scales``: c → s_c ≠ 0): base logits b
    (n, C, k), e = Σ_{t'<t} L_tt' y_t' and y (n, m, k), all in y's precision → (n, m) float64 each.

    The draws go in blocks of a multiple of 64 draws (about :data:`COUPLED_BLOCK_ELEMENTS` elements):
    per block and component three passes (h, its sign, softplus) before the float64 sum, in cache.
    Each element meets the same operations as on the whole (n, m, k) tensors, and a block's
    vectorised loops split where the whole tensor's do (64 draws are whole vectors), so the values
    are the same bits; the float64 sum is ``.double().sum``, which is ``sum(dtype=float64)`` to the
    bit without its slower casting loop. cal500's NLL (k = 174, 4096 draws of 5 inputs a block,
    4 coupled components): these passes are a third of its time; one log_prob took 102-109 ms
    streamed through memory, 88-94 ms in blocks (a throwaway benchmark, old and new alternating)."""
    n, m, k = earlier.shape
    block = max(64, COUPLED_BLOCK_ELEMENTS // max(1, n * k) // 64 * 64)
    parts: dict[int, list[Tensor]] = {c: [] for c in scales}
    for start in range(0, m, block):
        draws = slice(start, start + block)
        fields, sign = earlier[:, draws], 1 - 2 * y[:, draws]
        for c, scale in scales.items():
            field = torch.add(logits[:, c].unsqueeze(1), fields, alpha=scale).mul_(sign)
            parts[c].append(torch.nn.functional.softplus(field).double().sum(-1))
    return {c: torch.cat(blocks, dim=1).neg_() for c, blocks in parts.items()}


def _sample_autoregressive(field: Tensor, coupling: Tensor, scale: Tensor, noise: Tensor, block: int = 32) -> Tensor:
    """y_t = [noise_t < σ(base_t + scale Σ_{t'<t} L_{tt'} y_t')] for t = 0..k−1 → y (n, m, k); the
    base logits ``field`` (n, k, m), contiguous and overwritten (the fields accumulate in it), noise
    (n, m, k), L (n, k, k) strictly lower, scale (n, m, 1). Labels go in blocks: inside a block one
    label at a time, updating the block's fields only; after it, one GEMM adds the block's effect
    to every later label. Work is laid out (n, k, m) so that one label's slice is contiguous."""
    noise = noise.transpose(1, 2).contiguous()
    scale = scale.transpose(1, 2)  # (n, 1, m)
    # every label's row of both is written before anything reads it: no zero fill (two passes over
    # cal500's 3.6M draw elements a block of the NLL's draws)
    y = torch.empty_like(noise)
    scaled = torch.empty_like(noise)  # scale · y: the prior's draws (scale 0) push no field
    k = field.shape[1]
    for start in range(0, k, block):
        stop = min(start + block, k)
        for t in range(start, stop):
            y[:, t] = (noise[:, t] < torch.sigmoid(field[:, t])).to(y.dtype)
            scaled[:, t] = y[:, t] * scale[:, 0]
            field[:, t + 1 : stop].addcmul_(coupling[:, t + 1 : stop, t, None], scaled[:, t,
                    None])  # (not `+= a * b`: 50x slower here)
        if stop < k:
            field[:, stop:] += torch.bmm(coupling[:, stop:, start:stop], scaled[:, start:stop])
    return y.transpose(1, 2)


def categorical(probs: Tensor, m: int, generator: torch.Generator | None) -> Tensor:
    """m i.i.d. indices per row of probs (n, C), (n, m) int64 on probs' device (drawn on the
    generator's device, which torch requires to match)."""
    device = generator.device if generator is not None else probs.device
    return torch.multinomial(probs.to(device), m, replacement=True, generator=generator).to(probs.device)


class MixtureProposal(Proposal):
    """r = Σ_c a_c r_c. Each draw picks its component independently (so the draws stay
    i.i.d. from r); log r(y) = logsumexp_c (log a_c + log r_c(y))."""

    def __init__(self, components: list[Proposal], weights: list[float], name: str | None = None) -> None:
        if len(components) != len(weights) or not components:
            raise ValueError(f"a mixture needs one weight per component, got {len(components)} components and "
                             f"{len(weights)} weights")
        if min(weights) <= 0 or not math.isclose(sum(weights), 1.0, rel_tol=1e-9):
            raise ValueError(f"mixture weights must be positive and sum to 1, got {weights}")
        self.components, self.weights = components, [float(a) for a in weights]
        self.name = name or "+".join(c.name for c in components)
        # components that all draw positions of one ranking space are mixed as positions, and the
        # events built once for the draws kept, not for every component's draws (the Birkhoff
        # model's k × k matrices: 1.2M entries a step in lr-vowel's stacked groups)
        maps = [c.positions_to_event for c in components]
        if maps[0] is not None and all(f == maps[0] for f in maps):
            self.positions_to_event = maps[0]

    def sample(self, m, generator=None):
        if self.positions_to_event is not None:
            return self.positions_to_event(self.sample_positions(m, generator))
        return self._select([component.sample(m, generator) for component in self.components], m, generator)

    def sample_positions(self, m, generator=None):
        if self.positions_to_event is None:
            return super().sample_positions(m, generator)
        return self._select([component.sample_positions(m, generator) for component in self.components], m,
                            generator)

    def _select(self, draws: list[Tensor], m: int, generator) -> Tensor:
        """Each draw's component, picked after every component has drawn (events or positions:
        the same random numbers in the same order, so the same draws)."""
        n, device = draws[0].shape[0], draws[0].device
        which = categorical(torch.tensor(self.weights, device=device).expand(n, -1), m, generator)
        out = draws[0]
        for c in range(1, len(draws)):
            selected = (which == c).reshape(n, m, *([1] * (draws[c].dim() - 2)))
            out = torch.where(selected, draws[c], out)
        return out

    def log_prob(self, y):
        terms = [math.log(a) + component.log_prob(y) for a, component in zip(self.weights, self.components)]
        return torch.logsumexp(torch.stack(terms), dim=0)

    def restrict(self, rows):
        return MixtureProposal([c.restrict(rows) for c in self.components], self.weights, self.name)


class PointMassProposal(Proposal):
    """r = δ_{y*}: every draw is the given point y* of its input (``points`` (n, *event)), and
    log r(y) = 0 at y* and −∞ elsewhere. Only useful inside a mixture (:func:`with_mode`)."""

    name = "point"

    def __init__(self, points: Tensor, space: OutputSpace | None = None) -> None:
        self.points, self.space = points, space
        if space is not None and is_ranking(space):
            # the point as positions too: a mixture with the main proposal's positions then selects
            # among positions and builds the events once (:class:`MixtureProposal`)
            self.positions = space._to_positions(points)
            self.positions_to_event = space._from_positions

    def sample(self, m, generator=None):
        """The points, each repeated m times: a broadcast view (read-only), which is all a mixture's
        selection reads (a copy was a pass over all m draws, of which it keeps a few)."""
        return self.points.unsqueeze(1).expand(self.points.shape[0], m, *self.points.shape[1:])

    def sample_positions(self, m, generator=None):
        if self.positions_to_event is None:
            return super().sample_positions(m, generator)
        return self.positions.unsqueeze(1).expand(self.positions.shape[0], m, self.positions.shape[-1])

    def log_prob(self, y):
        distance = _l1_distance(y, self.points)  # 0 only at y* (a sum of non-negative terms)
        return torch.zeros(distance.shape, dtype=torch.float64, device=y.device).masked_fill(distance != 0, -math.inf)

    def restrict(self, rows):
        return PointMassProposal(self.points[rows], self.space)


def _l1_distance(y: Tensor, points: Tensor) -> Tensor:
    """Σ |y − y*| over each draw's event, draws y (n, m, *event) against points y* (n, *event) → (n, m):
    0 exactly where y = y*, and for 0/1 labels the count of labels that differ. In a third of the
    time of comparing every entry and reducing the comparison with all()/any()."""
    return (y - points.unsqueeze(1).to(y.dtype)).abs_().flatten(start_dim=2).sum(-1)


class NeighbourProposal(Proposal):
    """r uniform over the neighbours of a point y* (``points`` (n, *event)) under one elementary
    move: a flip of one label (multilabel, k neighbours) or a transposition of two labels
    (rankings, k(k − 1)/2 neighbours); log r(y) = −log(#neighbours) there and −∞ elsewhere."""

    name = "neighbours"

    def __init__(self, points: Tensor, space: OutputSpace) -> None:
        self.points, self.space = points, space
        self.binary, self.k = is_binary(space), space.k
        self.size = self.k if self.binary else self.k * (self.k - 1) // 2
        if is_ranking(space):
            # a transposition of two labels swaps their positions: drawn as positions (the same
            # events), a mixture selects among positions and builds the events once
            self.positions = space._to_positions(points)
            self.positions_to_event = space._from_positions

    def sample(self, m, generator=None):
        from ebm.samplers import random_labels

        if self.positions_to_event is not None:
            return self.positions_to_event(self.sample_positions(m, generator))
        n, device = self.points.shape[0], self.points.device
        y = self.points.unsqueeze(1).expand(n, m, *self.points.shape[1:]).clone()
        site = random_labels((n, m), self.k, generator, device).unsqueeze(-1)
        return y.scatter_(2, site, 1 - y.gather(2, site))  # in place on the fresh copy: one pass less

    def sample_positions(self, m, generator=None):
        from ebm.samplers import random_label_pairs, transpose_labels

        if self.positions_to_event is None:
            return super().sample_positions(m, generator)
        n = self.positions.shape[0]
        start = self.positions.unsqueeze(1).expand(n, m, self.k)
        return transpose_labels(start, *random_label_pairs((n, m), self.k, generator, self.positions.device), 1)

    def log_prob(self, y):
        if self.binary:  # labels 0/1: Σ_i |y_i − y*_i| counts the labels that differ, exactly
            moved = _l1_distance(y, self.points) == 1
        else:
            differs = y != self.points.unsqueeze(1).to(y.dtype)  # (n, m, *event)
            differs = differs.flatten(start_dim=3).any(dim=-1) if differs.dim() > 3 else differs  # per label
            moved = differs.sum(dim=-1) == 2
        log_r = torch.full(moved.shape, -math.log(self.size), dtype=torch.float64, device=y.device)
        return log_r.masked_fill(~moved, -math.inf)

    def restrict(self, rows):
        return NeighbourProposal(self.points[rows], self.space)


def with_mode(main: Proposal, space: OutputSpace, points: Tensor, weight: float) -> Proposal:
    """(1 − β) r + (β/2) δ_{y*} + (β/2) u_{N(y*)}: a share β/2 of the draws lands on y* (per input:
    the model's mode) and β/2 on its neighbours N(y*) (:class:`NeighbourProposal`).

    For a peaked model the main proposal may never visit y* or the states next to it, which
    then hold nearly all of Z, and Â misses it with a small standard error, since every draw
    weighs about the same (issue 16: test NLLs of −43,000 nats on lr-vowel, where the assignment
    proposal's Sinkhorn logits missed the sharp mode; at moderate peaks, p(y*) ≈ 0.25, it missed
    the near-ties around it by 1.4 nats). With these components w(y*) ≤ q e^g(y*) / (β/2) and
    about βS/2 draws hit y*, so Â ≥ log q(y*) + g(y*) up to their binomial spread, and each
    neighbour is hit ≈ βS / (2 |N|) times; r stays an exact density (Ẑ stays unbiased)."""
    if not 0 < weight < 1:
        raise ValueError(f"the mode's weight must lie in (0, 1), got {weight}")
    return MixtureProposal([main, PointMassProposal(points, space), NeighbourProposal(points, space)],
                           [1.0 - weight, weight / 2, weight / 2], name=f"{main.name}+mode")


def defensive(main: Proposal, prior: Proposal, prior_weight: float) -> Proposal:
    """(1 − α) r + α q (Hesterberg 1995): w = q e^g / r_mix ≤ e^g / α, never unbounded."""
    if prior_weight <= 0:
        return main
    return MixtureProposal([main, prior], [1.0 - prior_weight, prior_weight], name=f"{main.name}+prior")


class AssignmentProposal(Proposal):
    """Sequential assignment of k labels (rows) to k positions (columns).

    Rows are taken in a fixed per-input ``order`` (n, k); row i_t goes to a free column c with
    probability softmax_{c free}(L[i_t, c]). The log-probability of a permutation is the sum of
    those log-softmaxes, computed exactly for any permutation by replaying the same steps.
    ``to_event``/``from_event`` convert positions (…, k) (position of each label) to and from
    the space's encoding.
    """

    name = "assignment"

    def __init__(self, log_potentials: Tensor, order: Tensor, to_event: Callable[[Tensor], Tensor],
                 from_event: Callable[[Tensor], Tensor]) -> None:
        self.log_potentials, self.order = log_potentials.double(), order
        self.positions_to_event, self.from_event = to_event, from_event

    def _step_logits(self) -> Tensor:
        """L[order[t], c] (n, k steps, k columns): the logits of the label placed at step t."""
        n, k, _ = self.log_potentials.shape
        return self.log_potentials.gather(1, self.order.unsqueeze(-1).expand(n, k, k))

    def _draw_block(self, m: int) -> int:
        """Draws per block so that an (n, block, k, k) float64 tensor holds ≤ MAX_DRAW_ELEMENTS."""
        n, k, _ = self.log_potentials.shape
        return max(1, min(m, MAX_DRAW_ELEMENTS // max(1, n * k * k)))

    def sample_positions(self, m, generator=None):
        """m draws per input, as positions (n, m, k): step t puts label order[t] in a free column by
        Gumbel-max on its logits. The logits need no normalisation for a draw (argmax is unchanged by
        a per-row constant), so sampling skips the log-softmax that scoring needs. Every step's noise
        is drawn at once, step-major so that each step reads one contiguous block, and added to every
        step's logits in one operation; a step is then three (mask the taken columns, argmax, mark
        the column taken). The mask is written into the fresh noisy logits in place, not into a copy
        of the step's rows (a stacked step's 25 members × 64 inputs × 16 draws at lr-vowel's k = 11:
        53 → 49 ms a draw); the same bits."""
        n, k, _ = self.log_potentials.shape
        device = self.log_potentials.device
        step_logits = self._step_logits().transpose(0, 1).unsqueeze(2)  # (k steps, n, 1, k columns)
        blocks, block = [], self._draw_block(m)
        for start in range(0, m, block):
            size = min(block, m - start)
            # (step, n, size, column); the float32 noise widened first: the same doubles as the
            # promoting `logits + noise`, whose mixed-dtype broadcast costs ~3 ms more inside a
            # stacked step (lr-vowel: 1.2M entries). Not in place: the noise may be one for all members
            noisy = gumbel_noise((k, n, size, k), generator, device).to(step_logits.dtype) + step_logits
            taken = torch.zeros((n, size, k), dtype=torch.bool, device=device)
            columns = []
            for t in range(k):
                row = noisy[t] if t == 0 else noisy[t].masked_fill_(taken, -math.inf)  # (n, size, column)
                column = row.argmax(dim=-1, keepdim=True)  # (n, size, 1)
                # out of place: under a stacked step (ebm.stacking) the columns are batched, the mask not
                taken = taken.scatter(2, column, True)
                columns.append(column)
            # step t placed label order[t] in columns[t]: positions[order[t]] = columns[t]
            by_step = torch.cat(columns, dim=2)
            blocks.append(torch.zeros_like(by_step).scatter(2, self.order.unsqueeze(1).expand(n, size, k), by_step))
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)

    def _log_prob_positions(self, positions: Tensor) -> Tensor:
        """log r of given positions (n, m, k) → (n, m): the sum over steps of the chosen column's
        logit minus the log-sum-exp of the columns still free, every step at once: the columns free
        at step t are those the permutation fills at step t or later (its step of each column, the
        inverse of its column at each step), so the masks of all k steps are one comparison.

        The log-sum-exp is written out so that no exp underflows: each term is e^{d}, d = logit −
        the free columns' max ≤ 0, clamped at −700, taken columns (−∞) included: below −700 a term
        e^d < 1e-304 is lost in a sum that holds the max's e^0 = 1, so the sum is the same double
        as with those terms zeroed (which cost a pass of its own). An exp that underflows (of −∞,
        or of d < −745) takes a slow path in torch's float64 kernel, 10× here. The (n, size, k, k)
        tensor is written once and updated in place: at lr-vowel's k = 11 a stacked group's draws
        are 1.2M of them a step, and each pass costs about a millisecond."""
        n, m, k = positions.shape
        device = self.log_potentials.device
        step_logits = self._step_logits()  # (n, k steps, k columns)
        steps = torch.arange(k, device=device)
        parts, block = [], self._draw_block(m)
        for start in range(0, m, block):
            drawn = positions[:, start : start + block]
            size = drawn.shape[1]
            column_at_step = drawn.gather(2, self.order.unsqueeze(1).expand(n, size, k))  # (n, size, k)
            chosen = step_logits.gather(2, column_at_step.transpose(1, 2)).sum(1)  # (n, size): Σ_t L[o_t, c_t]
            step_of_column = inverse_permutations(column_at_step)  # the step that fills each column
            taken = step_of_column.unsqueeze(2) < steps.view(k, 1)  # (n, size, step, column): filled before the step
            free_logits = step_logits.unsqueeze(1).masked_fill(taken, -math.inf)  # (n, size, step, column)
            free_max = free_logits.amax(dim=-1, keepdim=True)  # finite: c_t is free
            terms = free_logits.sub_(free_max).clamp_min_(-700.0).exp_()
            parts.append(chosen - (free_max.squeeze(-1) + terms.sum(-1).log_()).sum(-1))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def sample(self, m, generator=None):
        return self.positions_to_event(self.sample_positions(m, generator))

    def log_prob(self, y):
        return self._log_prob_positions(self.from_event(y))

    def restrict(self, rows):
        return AssignmentProposal(self.log_potentials[rows], self.order[rows], self.positions_to_event,
                                   self.from_event)


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator | None, device) -> Tensor:
    """Standard Gumbel noise −log(−log U), float32 (argmax of logits + noise samples the softmax).
    U is float32 (``uniform_noise``), so its logs are taken in float32 too: a float64 log runs
    unvectorised here, 1.1 of the 1.5 ms of a (64, 16, 11, 11) draw; float32 rounds the noise to
    6e-8 of itself, far below the 2^-24 steps of U. Every step in place on the fresh draw (clamp_min_,
    not clamp: a stacked step's 1.2M draws at lr-vowel are 1.6 ms less a step)."""
    uniform = uniform_noise(shape, generator, device).clamp_min_(1e-12)  # U ∈ [0, 1): −log U > 0
    return uniform.log_().neg_().log_().neg_()


#: |log| of a Sinkhorn scaling past which :func:`sinkhorn` redoes an input in log space (float64
#: holds e^±709; a scaling this far out means potentials spread over hundreds of nats)
_SCALING_LIMIT = 600.0


def sinkhorn(log_potentials: Tensor, iterations: int = 50) -> Tensor:
    """log of the doubly-stochastic scaling D₁ e^Θ D₂ (alternate row/column normalisation): the
    maximiser of ⟨Θ, M⟩ + H(M) over the Birkhoff polytope, a cheap surrogate for the marginals
    P(label i at position c). Used as sequential-assignment logits, its column offsets steer
    early rows away from positions that later rows need.

    The iterations run on the scalings, u ← 1/(K v), v ← 1/(Kᵀ u) with K = e^{Θ − max Θ}, which
    are the log-space iterates' offsets (log M = log u + log K + log vᵀ): the same logits up to
    rounding (1e-14) for a third of the time of a log-sum-exp per row and column (at batch 64 a
    training step rebuilds this proposal, issue 15). An input whose scalings leave float64's
    range (potentials spread over ≳ 600 nats) is redone in log space; inside a stacked step,
    where no value may be tested on the host, it keeps its potentials instead (still exact
    logits for the assignment, only not balanced)."""
    theta = log_potentials.double()
    shifted = theta - theta.amax(dim=(-2, -1), keepdim=True)
    kernel = shifted.exp()
    if is_stacked(kernel):
        log_u, log_v = _scalings_inputs_last(kernel, iterations)
    else:
        log_u, log_v = _scalings(kernel, iterations)
    balanced = shifted + log_u + log_v.transpose(-2, -1)
    in_range = (log_u.abs() < _SCALING_LIMIT).all(dim=(-2, -1)) & (log_v.abs() < _SCALING_LIMIT).all(dim=(-2, -1))
    out_of_range = ~in_range  # NaN (0 · ∞ after an overflow) is out of range too
    if is_stacked(balanced):
        return torch.where(out_of_range[..., None, None], theta, balanced)
    if out_of_range.any():
        balanced[out_of_range] = _log_space_sinkhorn(theta[out_of_range], iterations)
    return balanced


def _scalings(kernel: Tensor, iterations: int) -> tuple[Tensor, Tensor]:
    """log u (…, k, 1) and log v (…, k, 1) after ``iterations`` of u ← 1/(K v), v ← 1/(Kᵀ u), by a
    batched matrix-vector product per input."""
    # Kᵀ copied once: a product with the transposed view took 2.3× as long as with a contiguous
    # copy, in each of the 50 iterations (the same bits either way, checked on CPU)
    kernel_t = kernel.transpose(-2, -1).contiguous()
    v = torch.ones_like(kernel[..., :1])  # (n, k, 1): column scalings
    u = v
    # torch.bmm, not @, for (n, k, k) potentials: the same kernel as matmul (the stacked step
    # takes the other function)
    product = torch.bmm if kernel.dim() == 3 else torch.matmul
    for _ in range(iterations):
        u = torch.reciprocal(product(kernel, v))  # rows of diag(u) K diag(v) sum to 1
        v = torch.reciprocal(product(kernel_t, u))  # then its columns
    return u.log(), v.log()


def _scalings_inputs_last(kernel: Tensor, iterations: int) -> tuple[Tensor, Tensor]:
    """:func:`_scalings` with the inputs as the last axis, K[i, j, …]: each product is one
    elementwise multiply and a sum over j, across all inputs at once, where a batched
    matrix-vector product calls a tiny GEMM per input. A stacked step's 25 × 64 inputs at
    lr-vowel's k = 11: 23 → 13 ms for the 50 iterations (k = 3: 5.6 → 3.2 ms); alone, 64 inputs
    are too few and it is slower (1.2 → 1.6 ms). The same numbers as :func:`_scalings` up to
    rounding (tests/test_importance.py; the same bits at a batch of 64 here, but with few inputs
    torch may sum over j in another order: within 2e-15 of log u)."""
    rows = kernel.movedim((-2, -1), (0, 1)).contiguous()  # K[i, j, …]
    columns = kernel.movedim((-1, -2), (0, 1)).contiguous()  # Kᵀ[j, i, …]
    v = torch.ones_like(rows[0])  # (k, …): column scalings
    u = v
    for _ in range(iterations):
        u = torch.reciprocal((rows * v).sum(1))
        v = torch.reciprocal((columns * u).sum(1))
    return u.log().movedim(0, -1).unsqueeze(-1), v.log().movedim(0, -1).unsqueeze(-1)


def _log_space_sinkhorn(log_m: Tensor, iterations: int) -> Tensor:
    """:func:`sinkhorn` by alternate log-sum-exp normalisation: any spread, three times the time."""
    for _ in range(iterations):
        log_m = log_m - torch.logsumexp(log_m, dim=-1, keepdim=True)
        log_m = log_m - torch.logsumexp(log_m, dim=-2, keepdim=True)
    return log_m


def assignment_proposal(log_potentials: Tensor, to_event, from_event) -> AssignmentProposal:
    """Sequential assignment with Sinkhorn logits, most certain label first (its largest
    marginal is the highest), so that uncertain labels choose among the positions left."""
    logits = sinkhorn(log_potentials)
    order = logits.amax(dim=-1).argsort(dim=-1, descending=True)
    return AssignmentProposal(logits, order, to_event, from_event)


def mean_field_logits(fields: Tensor, coupling: Tensor, init_means: Tensor, iterations: int = 30,
                      damping: float = 0.5) -> Tensor:
    """Damped mean-field fixed point for p(y) ∝ exp(⟨a, y⟩ + ½ yᵀUy) on {0,1}^k (a = u + logit π):
    φ ← (1 − η) φ + η (a + U σ(φ)), started from φ = a + U μ₀ for each initial mean μ₀.
    fields a (n, k), coupling U (n, k, k), init_means (n, C, k) → logits φ (n, C, k)."""
    fields, coupling = fields.double(), coupling.double()

    def local_fields(means: Tensor) -> Tensor:
        return fields.unsqueeze(1) + torch.einsum("nkl,ncl->nck", coupling, means)

    logits = local_fields(init_means.double())
    for _ in range(iterations):
        logits = (1 - damping) * logits + damping * local_fields(torch.sigmoid(logits))
    return logits


def defensive_bernoulli(logits: Tensor, prior_logits: Tensor, prior_weight: float, name: str) -> BernoulliMixture:
    """(1 − α) · (uniform mixture of the factorised Bernoullis with logits (n, C, k)) + α q,
    q = ∏ Bernoulli(π) itself being the factorised Bernoulli with logits logit π (k,)."""
    logits, weights = _with_prior(logits.double(), prior_logits, prior_weight)
    return BernoulliMixture(logits, weights, f"{name}+prior" if prior_weight > 0 else name)


def _with_prior(logits: Tensor, prior_logits: Tensor, prior_weight: float) -> tuple[Tensor, Tensor]:
    """Component logits (n, C, k) → (n, C[+1], k) with the prior's logits ((k,) or (n, k))
    appended, and the weights: (1 − α)/C each, α for the prior (left out when α = 0)."""
    n, c, k = logits.shape
    weights = torch.full((n, c), (1.0 - prior_weight) / c, dtype=logits.dtype, device=logits.device)
    if prior_weight <= 0:
        return logits, weights
    logits = torch.cat([logits, prior_logits.to(logits).expand(n, k).unsqueeze(1)], dim=1)
    return logits, torch.cat([weights, torch.full((n, 1), prior_weight, dtype=logits.dtype, device=logits.device)],
                             dim=1)


def sequential_mean_field(fields: Tensor, coupling: Tensor, means: Tensor, prior_logits: Tensor,
                          prior_weight: float) -> BernoulliMixture:
    """Autoregressive proposals from mean-field means μ_c (n, C, k) of p ∝ exp(⟨a, y⟩ + ½ yᵀUy):
    label o_t is drawn from its exact conditional given the labels already drawn, with the
    labels still to come replaced by their means,

        h_ct = a_{o_t} + Σ_{t'<t} U_{o_t o_t'} y_{o_t'} + Σ_{t'>t} U_{o_t o_t'} μ_{c o_t'},

    so the proposal follows the couplings a factorised one ignores. The order o puts the least
    certain labels (smallest |logit μ| in any component) first: the confident labels then react
    exactly to how the uncertain ones came out, which is where a mean-field guess errs most
    (in trials on peaked Ising models, uncertain-first gave 2-4x smaller errors than
    certain-first or the natural order).
    Mixed uniformly over c, and defensively with the prior q (its last component, scale 0)."""
    fields, coupling, means = fields.double(), coupling.double(), means.double()
    n, c, k = means.shape
    certainty = torch.logit(means.clamp(1e-12, 1 - 1e-12)).abs().amin(dim=1)  # (n, k)
    order = certainty.argsort(dim=-1)
    permuted = coupling.gather(1, order.unsqueeze(-1).expand(n, k, k)).gather(2, order.unsqueeze(1).expand(n, k, k))
    later = torch.einsum("nts,ncs->nct", permuted.triu(1), means.gather(2, order.unsqueeze(1).expand(n, c, k)))
    base = fields.gather(1, order).unsqueeze(1) + later  # (n, C, k), in the order o
    base, weights = _with_prior(base, prior_logits.to(base).expand(n, k).gather(1, order), prior_weight)
    scales = [1.0] * c + ([0.0] if prior_weight > 0 else [])
    name = "sequential-mean-field" + ("+prior" if prior_weight > 0 else "")
    return BernoulliMixture(base, weights, name, coupling=permuted, coupling_scale=scales, order=order)


def importance_log_partition(
    energy: Energy,
    space: OutputSpace,
    x: Tensor,
    make_proposal: Callable[[Tensor], Proposal],
    n_samples: int,
    generator: torch.Generator | None = None,
) -> PartitionEstimate:
    """Â = log mean_j q(y_j) e^{g(x,y_j)} / r(y_j), y_j ~ r = ``make_proposal(x_block)``, with
    the delta-method stderr sd(w)/(√S mean(w)) and ESS = (Σw)²/Σw²; float64 throughout the
    log-mean-exp. Inputs are processed in blocks holding ≤ MAX_DRAW_ELEMENTS draw elements."""
    if n_samples < 2:
        raise ValueError(f"importance sampling needs n_samples ≥ 2, got {n_samples}")
    event = math.prod(space.event_shape)
    draw_rows = max(1, MAX_DRAW_ELEMENTS // (n_samples * event))
    # proposals are built for larger blocks (their set-up, e.g. ICM or Sinkhorn, is per input
    # and would be slow in tiny blocks); their state is O(event²) per input at most
    proposal_rows = max(draw_rows, MAX_DRAW_ELEMENTS // event**2)
    estimates, stderrs, esss, name = [], [], [], "prior"
    for start in range(0, x.shape[0], proposal_rows):
        inputs = x[start : start + proposal_rows]
        proposal = make_proposal(inputs)
        name = proposal.name
        for offset in range(0, inputs.shape[0], draw_rows):
            rows = slice(offset, offset + draw_rows)
            log_w = _log_weights(energy, space, inputs[rows], proposal.restrict(rows), n_samples, generator)
            shift = log_w.amax(dim=1, keepdim=True)
            weights = (log_w - shift).exp()  # ratios (sd/mean, ESS) are shift-invariant
            mean = weights.mean(dim=1)
            estimates.append(shift.squeeze(1) + mean.log())
            stderrs.append(weights.std(dim=1) / (math.sqrt(n_samples) * mean))
            esss.append(weights.sum(1) ** 2 / (weights**2).sum(1))
    if not estimates:
        empty = torch.zeros(0, device=x.device, dtype=x.dtype)
        return PartitionEstimate(empty, empty, empty, name)
    cat = lambda parts: torch.cat(parts).to(x.dtype)  # noqa: E731
    return PartitionEstimate(cat(estimates), cat(stderrs), cat(esss), name)


def _log_weights(energy, space, x, proposal: Proposal, n_samples, generator) -> Tensor:
    """log w = g(x, y) + log q(y) − log r(y) for y ~ r, (n, n_samples) float64."""
    y = proposal.sample(n_samples, generator).to(x.dtype)
    return energy(x, y).double() + space.log_prior(y).double() - proposal.log_prob(y)


#: what a training step's proposal is built from (``ebm.inference.training_proposal``): "prior" is q itself
#: (the paper's estimator, unit weights); "model" is r(·|x) from the current energy (detached),
#: mixed defensively with q
TRAINING_PROPOSALS = ("prior", "model")
#: damped mean-field iterations of the pairwise training proposal (the NLL's sampler uses 30
#: and ICM restarts: ~1 s a step at k = 174, batch 64; this one is rebuilt every step)
TRAINING_MEAN_FIELD_ITERATIONS = 10


def draw_training_samples(proposal: Proposal, space: OutputSpace, m: int, generator: torch.Generator | None,
                          dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """m draws per input from ``proposal`` and their log-weights log q − log r ((n, m), ``dtype``);
    the weights are None when the proposal is the prior itself (all 1)."""
    samples = proposal.sample(m, generator)
    if isinstance(proposal, PriorProposal):
        return samples, None
    samples = samples.to(dtype) if samples.is_floating_point() else samples
    log_weights = space.log_prior(samples).double() - proposal.log_prob(samples)
    return samples, log_weights.to(dtype)


def leave_one_out_log_mean(log_terms: Tensor) -> Tensor:
    """b_{−j} = log (1/(m − 1)) Σ_{i≠j} e^{ℓ_i} for every j of each row of ℓ (n, m) → (n, m), m ≥ 2.

    With ℓ_j = log w_j + g(x, y_j) this is the importance-sampling estimate of log Z(x) from every
    draw but the j-th: it does not depend on draw j, so a term of draw j offset by it stays an
    unbiased estimate given the others (the estimate from all m draws would make the sample term
    self-normalised, i.e. biased)."""
    n, m = log_terms.shape
    if m < 2:
        raise ValueError(f"a leave-one-out estimate needs at least 2 draws per input, got {m}")
    others = log_terms.unsqueeze(1).expand(n, m, m).masked_fill(
        torch.eye(m, dtype=torch.bool, device=log_terms.device), -math.inf)
    return torch.logsumexp(others, dim=-1) - math.log(m - 1)


def effective_sample_fraction(log_terms: Tensor) -> Tensor:
    """ESS/m = (Σ_j ω_j)² / (m Σ_j ω_j²) per row of log ω (n, m): 1 when every draw counts the same,
    1/m when one draw carries all the weight (rows with no positive weight give 0)."""
    log_terms = log_terms.double()
    shift = log_terms.amax(dim=1, keepdim=True).clamp(min=-1e300)
    weights = torch.nan_to_num((log_terms - shift).exp())
    total, squares = weights.sum(1), (weights**2).sum(1)
    return torch.where(squares > 0, total**2 / (log_terms.shape[1] * squares.clamp(min=1e-300)),
                       torch.zeros_like(total))


def pairwise_mean_field(energy: PairwiseEnergy, x: Tensor, means: Tensor, prior_logits: Tensor,
                        iterations: int = TRAINING_MEAN_FIELD_ITERATIONS, damping: float = 0.5) -> Tensor:
    """Damped mean-field logits φ ← (1 − η) φ + η (u + logit π + U σ(φ)) of a pairwise energy from
    initial means μ₀ (n, C, k) → (n, C, k), as ``mean_field_logits`` but with U μ computed from
    the energy's factors, U μ = sym(U₀) μ + ½ (A Bᵀ + B Aᵀ) μ − diag(A Bᵀ) μ: O(k² + k·rank)
    per input for the shared U₀, no (n, k, k) tensor."""
    h = energy.features(x)
    fields = (energy.unary(h) + prior_logits).unsqueeze(1)  # (n, 1, k)
    static = energy.static_coupling()
    factors = energy._factors(h)
    if factors is not None:  # what every iteration reads, made once: Aᵀ, Bᵀ and diag(A Bᵀ) (n, 1, k)
        a, b = factors  # (n, k, r)
        a_t, b_t, diagonal = a.transpose(1, 2), b.transpose(1, 2), (a * b).sum(-1).unsqueeze(1)

    def local_fields(mu: Tensor) -> Tensor:
        out = fields + mu @ static  # sym(U₀) is symmetric
        if factors is not None:
            # (μB)Aᵀ: at rank 1 an outer product (factor_product: 20 slow K = 1 GEMMs a min-min step)
            out = out + 0.5 * (factor_product(torch.bmm(mu, b), a_t) + factor_product(torch.bmm(mu, a), b_t))
            out = out - diagonal * mu
        return out

    logits = local_fields(means.to(fields.dtype))
    for _ in range(iterations):
        logits = (1 - damping) * logits + damping * local_fields(torch.sigmoid(logits))
    return logits
