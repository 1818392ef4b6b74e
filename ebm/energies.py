"""Energy models g(x, y) = Φ(h(x), y), with h an MLP trunk on the inputs.

Every energy scores many candidates per input in one call: ``forward(x, y)`` takes
y per example, (n, m, *event) → (n, m), or a SHARED candidate set (m, *event) scored
against every input → (n, m). The shared path is pure GEMMs (used by enumeration).
The prior q is not part of g: the model is p(y|x) ∝ q(y)·exp(g(x, y)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ebm import unknown_name_error
from ebm.spaces import OutputSpace

#: resolution of :func:`dropout`'s masks on CPU: each element draws a uniform integer of this many bits
DROPOUT_BITS = 16


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Inverted dropout, x ⊙ m / κ with m_i ~ Bernoulli(κ) i.i.d. and κ ≈ 1 − p the keep
    probability, so that E[output] = x; the identity when not ``training`` or p = 0, zeros at p = 1.

    On CPU, m_i = [u_i < t] with u_i uniform on {0, …, 2^16 − 1} (the four 16-bit quarters of
    uniform 64-bit random words) and t = round((1 − p) 2^16): κ = t / 2^16 is 1 − p to within
    2^-17, and the scale is 1/κ itself, so the output stays unbiased. Why not torch's: on CPU it
    draws one Bernoulli per element (about 6 ns each here), which made dropout a large part of a
    step of the wide tuned networks (every trunk block drops, in g and, for min-min, in τ); a
    quarter of a random word per element takes forward and backward at (64, 256) to 0.56-0.71 of
    torch's time, 0.47-0.51 in a stacked group of 10, and lr-vowel's tuned trunk to 0.86-0.92
    (``ebm-bench perf --benchmarks dropout``, two invocations). The mask comes from torch's default generator, as
    ``nn.Dropout``'s does (so a seeded run repeats; under a stacked step's vmap every member
    draws its own). Other devices use ``torch.nn.functional.dropout`` (fused there)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must lie in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return torch.nn.functional.dropout(x, p, training=True)
    scale = 2**DROPOUT_BITS
    threshold = round((1.0 - p) * scale)
    if threshold == 0:
        return x * 0.0
    quarters, width = 64 // DROPOUT_BITS, x.shape[-1]
    words = torch.randint(-(2**63), 2**63 - 1, (*x.shape[:-1], -(-width // quarters)), device=x.device)
    # int16 views of the words: u − 2^15, uniform on [−2^15, 2^15), below t − 2^15 with probability t / 2^16
    keep = words.view(torch.int16)[..., :width] < threshold - 2 ** (DROPOUT_BITS - 1)
    return x * keep.to(x.dtype).mul_(scale / threshold)


class Dropout(nn.Dropout):
    """``nn.Dropout`` (the same module: ``p``, train/eval, no state) with :func:`dropout`'s masks."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


def mlp(in_features: int, hidden: int, depth: int, dropout: float = 0.0,
        out_features: int | None = None) -> nn.Sequential:
    """``depth`` blocks Linear → ReLU → :class:`Dropout` of width ``hidden``, then an optional
    Linear head to ``out_features``. depth 0 without a head is the identity."""
    if depth < 0 or hidden < 1:
        raise ValueError(f"MLP needs depth ≥ 0 and hidden ≥ 1, got depth={depth}, hidden={hidden}")
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if dropout > 0:
            layers.append(Dropout(dropout))
        width = hidden
    if out_features is not None:
        layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def batched_dot(theta: Tensor, y: Tensor) -> Tensor:
    """⟨θ_i, y_ij⟩ for θ (n, e) and y (n, m, e) → (n, m): ``torch.einsum("ne,nme->nm", θ, y)``.

    For e ≥ 2 einsum runs exactly this batched product, (n, 1, e) @ (n, e, m), so the values and
    gradients are the same bits; called directly it skips einsum's parsing and the permutes and
    views around the product (each a dispatched operation, forward and backward: at batch 64 a
    training step is bound by per-operation overhead, issue 15). For e = 1 einsum multiplies
    instead, and is kept."""
    if theta.shape[-1] < 2:
        return torch.einsum("ne,nme->nm", theta, y)
    return torch.bmm(theta.unsqueeze(1), y.transpose(1, 2)).squeeze(1)


def factor_product(left: Tensor, right: Tensor) -> Tensor:
    """``torch.bmm(left, right)`` for low-rank factors, (n, p, r) @ (n, r, q) → (n, p, q).

    At r = 1 every entry is a single product, computed elementwise (``left * right``): a GEMM with an
    inner dimension of 1 is BLAS's slow case on CPU (k = 174, n = 64: (64, 174, 1) @ (64, 1, 174)
    7.2 → 1.6 ms, (64, 2, 1) @ (64, 1, 174) 86 → 6 µs), and with no sum to order the values are the
    same bits (tests/test_inference.py). The pairwise energy's coupling and the training proposal's
    mean-field fields (``ebm.importance.pairwise_mean_field``) are built from such products."""
    if left.shape[-1] == 1:
        return left * right
    return torch.bmm(left, right)


def site_views(u: Tensor, coupling: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Per site i, u_i as an (n, 1) view and U[:, i] as an (n, 1, k) view (for :func:`site_field`),
    of unary terms u (n, k) and a coupling U (n, k, k). Made once per call of a site loop (ICM, a
    Gibbs sweep): the loop then indexes Python tuples instead of dispatching a select and an
    unsqueeze at every site of every sweep (k = 174 sites on cal500; at these sizes a dispatch
    costs about as much as the arithmetic)."""
    return u.unsqueeze(-1).unbind(1), coupling.unsqueeze(1).unbind(2)


def site_field(states: Tensor, row: Tensor) -> Tensor:
    """Σ_j U_ij y_j, the field that site i of every chain receives from the others, for binary
    states y (n, c, k) and row = U[:, i] as (n, 1, k) (:func:`site_views`) → (n, c).

    A multiply and a sum rather than ``einsum("nck,nk->nc", y, U[:, i])``: that einsum runs as a
    batched matrix-vector product whose per-batch overhead made it ~5× slower on CPU, and site
    loops (Gibbs sweeps, ICM) call it k times a sweep (k = 174 on cal500). Since y ∈ {0, 1} every
    product is exact; only the order of the sum differs from einsum's, i.e. the last bits."""
    return (states * row).sum(-1)


#: 1 − I (k × k) per (k, device, dtype), built once: a fresh ``eye`` every forward is two dispatched
#: operations (eye, 1 − ·) for a constant
_OFF_DIAGONAL: dict[tuple[int, torch.device, torch.dtype], Tensor] = {}


def off_diagonal_mask(k: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """1 − I, shape (k, k): ones off the diagonal, zeros on it (shared; never write to it)."""
    key = (k, device, dtype)
    mask = _OFF_DIAGONAL.get(key)
    if mask is None:
        # not an inference tensor even when first built inside inference mode: training saves it for backward
        with torch.inference_mode(False):
            mask = _OFF_DIAGONAL[key] = 1 - torch.eye(k, device=device, dtype=dtype)
    return mask


#: (i, j, i·k + j) of the pairs i < j (row-major upper triangle) per (k, device), built once
_UPPER_PAIRS: dict[tuple[int, torch.device], tuple[Tensor, Tensor, Tensor]] = {}


def upper_pairs(k: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(i, j, i·k + j) of the k(k − 1)/2 pairs i < j in row-major order, int64 (shared; never write to it)."""
    key = (k, torch.device(device))
    pairs = _UPPER_PAIRS.get(key)
    if pairs is None:
        with torch.inference_mode(False):
            i, j = torch.triu_indices(k, k, 1, device=device)
            pairs = _UPPER_PAIRS[key] = (i, j, i * k + j)
    return pairs


@runtime_checkable
class LinearInY(Protocol):
    """An energy linear in y, g(x, y) = ⟨θ(x), y⟩: its modes are the space's ``mode_linear``
    and, multilabel, its log Z has a closed form. (Every :class:`Energy` has ``linear_scores``;
    it returns None unless the energy is linear, so test the value, or ``is_linear_in_y``.)"""

    def linear_scores(self, x: Tensor) -> Tensor | None: ...


@runtime_checkable
class Pairwise(Protocol):
    """A multilabel energy g = ⟨u(x), y⟩ + ½ yᵀU(x)y that exposes its terms (Gibbs conditionals
    in closed form, mean-field proposals)."""

    def pairwise_terms(self, x: Tensor) -> tuple[Tensor, Tensor]: ...


@runtime_checkable
class LabelFeatureScoring(Protocol):
    """g(x, y) = ⟨w(x), φ(y)⟩ for a fixed feature map φ of the labels: ``label_features(y)`` (None
    where the model is not of this form) and ``label_feature_weights(x)``. Scoring one candidate set
    against many inputs is then one GEMM (``ebm.inference`` on enumerated Y). Every :class:`Energy`
    is one (test the value of ``label_features``), and so is the perceptron's loss-augmented energy."""

    def label_features(self, y: Tensor) -> Tensor | None: ...

    def label_feature_weights(self, x: Tensor) -> Tensor: ...


class EnergyFunction(Protocol):
    """What the mode oracle (``ebm.inference.mode``) calls: g(x, y) for many candidates per input,
    with :meth:`Energy.forward`'s shapes, and θ(x) (None unless linear in y). Every :class:`Energy`
    is one, and so are wrappers that are not trained themselves (``baselines.perceptron``'s
    loss-augmented energy)."""

    def __call__(self, x: Tensor, y: Tensor, /) -> Tensor: ...

    def linear_scores(self, x: Tensor, /) -> Tensor | None: ...


def is_linear_in_y(energy: object) -> bool:
    """True for the energies whose ``linear_scores`` is θ(x) (not None)."""
    return isinstance(energy, LinearEnergy)


def positions_score(profit: Tensor, positions: Tensor) -> Tensor:
    """Σ_j profit[i, j, positions[i, s, j]] for profits (n, k, k) (label × position, e.g.
    :meth:`ebm.spaces.PermutationSpace.assignment_scores` of linear scores: ⟨θ, y⟩ of a ranking y)
    and positions (n, m, k) → (n, m), differentiable in the profits. The k entries of each sample are
    gathered from the flat (n, k·k) profits (entry j·k + position_j), so that a backward would scatter
    into (n, k·k) and not into an (n, m, k, k) expansion. On Birkhoff it replaces an encoding that
    writes a k × k matrix a sample for a product to read (``ebm.samplers.mh_transpositions``)."""
    n, m, k = positions.shape
    index = (torch.arange(k, device=positions.device) * k + positions).reshape(n, m * k)
    return profit.reshape(n, k * k).gather(1, index).reshape(n, m, k).sum(-1)


class Energy(nn.Module):
    """Base class: a feature trunk h(x) (``features``) and a head Φ(h, y) (``score``)."""

    def __init__(self, space: OutputSpace, in_features: int, hidden: int = 128, depth: int = 1,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.k = space.k
        self.event_shape = tuple(space.event_shape)
        self.in_features = int(in_features)
        self.trunk = mlp(in_features, hidden, depth, dropout)
        self.feature_dim = hidden if depth > 0 else int(in_features)

    def features(self, x: Tensor) -> Tensor:
        """h(x), shape (n, feature_dim)."""
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x has shape {tuple(x.shape)}, expected (n, {self.in_features})")
        return self.trunk(x)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """g(x, y): y (n, m, *event) per example or (m, *event) shared → (n, m)."""
        d = len(self.event_shape)
        if tuple(y.shape[y.dim() - d :]) != self.event_shape or y.dim() not in (d + 1, d + 2):
            raise ValueError(f"y has shape {tuple(y.shape)}; expected (n, m, *{self.event_shape}) or (m, "
                             f"*{self.event_shape})")
        shared = y.dim() == d + 1
        if not shared and y.shape[0] != x.shape[0]:
            raise ValueError(f"y has {y.shape[0]} rows but x has {x.shape[0]}")
        return self.score(self.features(x), y.to(x.dtype), shared)

    def score(self, h: Tensor, y: Tensor, shared: bool) -> Tensor:
        raise NotImplementedError

    def candidate_scorer(self, h: Tensor) -> Callable[[Tensor], Tensor]:
        """y ↦ Φ(h, y) for many candidate sets y (n, m, *event) of the same inputs, the same bits as
        ``score(h, y, False)``. Energies whose head computes per-input terms from h alone (θ(x), the
        couplings) compute them once here: an MCMC kernel scores new candidates of the same x at
        every site or Metropolis–Hastings step (``ebm.samplers.candidate_scorer``)."""
        return lambda y: self.score(h, y, False)

    def score_data_and_samples(self, x: Tensor, y: Tensor, samples: Tensor) -> tuple[Tensor, Tensor]:
        """g(x, y) (n,) for one y (n, *event) per input and g(x, y′_j) (n, m) for its samples
        (n, m, *event): one call on the (n, 1 + m) candidates."""
        g = self(x, torch.cat([y.unsqueeze(1), samples], dim=1))
        return g[:, 0], g[:, 1:]

    def linear_scores(self, x: Tensor) -> Tensor | None:
        """θ(x) with g = ⟨θ, y⟩ (shape (n, *event)) for models linear in y, else None."""
        return None

    def label_features(self, y: Tensor) -> Tensor | None:
        """φ(y), shape (..., d) for y (..., *event), when g is linear in a fixed feature map of the
        labels, g(x, y) = ⟨w(h(x)), φ(y)⟩ (w: :meth:`feature_weights`); None (the default) otherwise.

        Scoring one fixed candidate set against every input, as exact enumeration does at every
        step, is then a single GEMM w(h) φ(Y)ᵀ with φ(Y) computed once per fit, whatever the
        model's own scoring path (``baselines.exact.enumerated_scores``)."""
        return None

    def feature_weights(self, h: Tensor) -> Tensor:
        """w(h), shape (n, d), with g(x, y) = ⟨w(h(x)), φ(y)⟩ (:meth:`label_features`), differentiable."""
        raise NotImplementedError(f"{type(self).__name__} is not linear in a feature map of y (label_features is None)")

    def label_feature_weights(self, x: Tensor) -> Tensor:
        """w(h(x)), shape (n, d) (:meth:`feature_weights` of the trunk's features)."""
        return self.feature_weights(self.features(x))


class LinearEnergy(Energy):
    """g(x, y) = ⟨θ(x), y⟩ with θ(x) = W h(x) + b reshaped to the event shape."""

    def __init__(self, space, in_features, hidden=128, depth=1, dropout=0.0) -> None:
        super().__init__(space, in_features, hidden, depth, dropout)
        self.head = nn.Linear(self.feature_dim, int(torch.Size(self.event_shape).numel()))

    def theta(self, h: Tensor) -> Tensor:
        return self.head(h)  # flat (n, prod(event))

    def score(self, h, y, shared):
        return self._score_theta(self.theta(h), y, shared)

    def candidate_scorer(self, h: Tensor) -> Callable[[Tensor], Tensor]:
        theta = self.theta(h)  # once: at lr-vowel's Birkhoff size a third of an MH step's time
        return lambda y: self._score_theta(theta, y, False)

    def _score_theta(self, theta: Tensor, y: Tensor, shared: bool) -> Tensor:
        flat = y.flatten(start_dim=y.dim() - len(self.event_shape))
        if shared:
            return theta @ flat.T  # (n, e) @ (e, m)
        return batched_dot(theta, flat)

    def linear_scores(self, x: Tensor) -> Tensor:
        return self.theta(self.features(x)).reshape(x.shape[0], *self.event_shape)

    def label_features(self, y: Tensor) -> Tensor:
        """φ(y) = y flattened to (..., prod(event))."""
        return y.flatten(start_dim=y.dim() - len(self.event_shape))

    def feature_weights(self, h: Tensor) -> Tensor:
        return self.theta(h)

    def score_data_and_samples(self, x: Tensor, y: Tensor, samples: Tensor) -> tuple[Tensor, Tensor]:
        """⟨θ(x), y⟩ and ⟨θ(x), y′_j⟩ from one θ(x), without the (n, 1 + m, *event) copy of the
        candidates the generic path concatenates (at k = 174 with 16 draws a copy of 0.75 MB, ~7 % of
        a min-min step: the step is bound by per-operation overhead and memory traffic, issue 15).
        The same products as :meth:`forward`, summed in another order (the last bits)."""
        d = len(self.event_shape)
        if tuple(y.shape) != (x.shape[0], *self.event_shape) or tuple(samples.shape[2:]) != self.event_shape \
                or samples.dim() != d + 2 or samples.shape[0] != x.shape[0]:
            raise ValueError(f"score_data_and_samples needs y (n, *{self.event_shape}) and samples (n, m, "
                             f"*{self.event_shape}) for x of {x.shape[0]} rows; got {tuple(y.shape)}, "
                             f"{tuple(samples.shape)}")
        theta = self.theta(self.features(x))  # (n, e)
        g_data = (theta * y.flatten(start_dim=1).to(theta.dtype)).sum(-1)
        return g_data, batched_dot(theta, samples.flatten(start_dim=2).to(theta.dtype))


class UnaryEnergy(LinearEnergy):
    """Multilabel g = ⟨u(x), y⟩ (independent labels given x)."""


class PermutahedronEnergy(LinearEnergy):
    """Ranking g = ⟨θ(x), y⟩ with y the rank vector; mode = argsort of θ."""


class BirkhoffEnergy(LinearEnergy):
    """Ranking g = ⟨Θ(x), P⟩ with P a permutation matrix; mode = Hungarian."""


#: u(h), sym(U₀) and the low-rank factors (A, B) of h, or None at rank 0: what the pairwise head
#: computes from h alone
PairwiseHeadTerms = tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]


class PairwiseEnergy(Energy):
    """Ising energy g = ⟨u(x), y⟩ + ½ yᵀU(x)y, U symmetric with zero diagonal:
    U(x) = sym(U₀) + sym(A(x)B(x)ᵀ), A, B ∈ R^{k×rank} linear in h(x), sym(M) = (M + Mᵀ)/2
    with the diagonal removed. The low-rank part is never formed in ``forward``:
    ½ yᵀ sym(ABᵀ) y = ½[(yᵀA)·(yᵀB) − Σ_i y_i² (A_i·B_i)], cost O(k·rank) per candidate.
    """

    def __init__(self, space, in_features, hidden=128, depth=1, dropout=0.0, rank=4) -> None:
        super().__init__(space, in_features, hidden, depth, dropout)
        if rank < 0:
            raise ValueError(f"rank must be ≥ 0, got {rank}")
        self.rank = int(rank)
        self.unary = nn.Linear(self.feature_dim, self.k)
        self.coupling = nn.Parameter(torch.zeros(self.k, self.k))
        self.low_rank = nn.Linear(self.feature_dim, 2 * self.k * self.rank) if self.rank > 0 else None
        if self.low_rank is not None:
            nn.init.normal_(self.low_rank.weight, std=0.1 / max(self.feature_dim, 1) ** 0.5)
            nn.init.zeros_(self.low_rank.bias)

    def static_coupling(self) -> Tensor:
        """sym(U₀) with zero diagonal, (k, k)."""
        off_diagonal = off_diagonal_mask(self.k, self.coupling.device, self.coupling.dtype)
        return 0.5 * (self.coupling + self.coupling.T) * off_diagonal

    def _factors(self, h: Tensor) -> tuple[Tensor, Tensor] | None:
        if self.low_rank is None:
            return None
        a, b = self.low_rank(h).reshape(h.shape[0], 2, self.k, self.rank).unbind(1)
        return a, b

    def score(self, h, y, shared):
        return self._score_terms(self._head_terms(h), y, shared)

    def candidate_scorer(self, h: Tensor) -> Callable[[Tensor], Tensor]:
        terms = self._head_terms(h)
        return lambda y: self._score_terms(terms, y, False)

    def _head_terms(self, h: Tensor) -> PairwiseHeadTerms:
        return self.unary(h), self.static_coupling(), self._factors(h)

    def _score_terms(self, terms: PairwiseHeadTerms, y: Tensor, shared: bool) -> Tensor:
        u, u0, factors = terms
        if shared:  # y (m, k)
            value = u @ y.T + 0.5 * ((y @ u0) * y).sum(-1)
        else:  # y (n, m, k)
            value = batched_dot(u, y) + 0.5 * ((y @ u0) * y).sum(-1)
        if factors is None:
            return value
        a, b = factors  # (n, k, r)
        diagonal = (a * b).sum(-1)  # (n, k): the diagonal of ABᵀ, removed below
        y2 = y * y
        if shared:
            # one GEMM (m, k) @ (k, n·r) per factor; never expands y to (n, m, k)
            n, k, r = a.shape
            ya = (y @ a.permute(1, 0, 2).reshape(k, n * r)).reshape(-1, n, r)
            yb = (y @ b.permute(1, 0, 2).reshape(k, n * r)).reshape(-1, n, r)
            cross, self_terms = (ya * yb).sum(-1).T, diagonal @ y2.T
        else:
            cross = (torch.bmm(y, a) * torch.bmm(y, b)).sum(-1)
            self_terms = batched_dot(diagonal, y2)
        return value + 0.5 * (cross - self_terms)

    def pairwise_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(u, U): u (n, k) and U (n, k, k) symmetric with zero diagonal, g = ⟨u, y⟩ + ½ yᵀUy."""
        h = self.features(x)
        return self.unary(h), self.coupling_matrix(h)

    def coupling_matrix(self, h: Tensor) -> Tensor:
        """U(h) = sym(U₀) + sym(A(h)B(h)ᵀ) with zero diagonal, (n, k, k), from trunk features h."""
        factors = self._factors(h)
        if factors is None:
            return self.static_coupling().expand(h.shape[0], self.k, self.k)
        a, b = factors
        # ½(ABᵀ + BAᵀ) from two GEMMs that each write a contiguous (n, k, k) block (BAᵀ is (ABᵀ)ᵀ to
        # the bit on CPU: the same products summed in the same order, so U stays exactly symmetric),
        # then scaled, its diagonal cleared and sym(U₀) added in place: one (n, k, k) tensor instead
        # of five temporaries and a transposed read (k = 174, n = 64: 7.7 MB each; the same values
        # as (sym(U₀) + ½(W + Wᵀ)) ∘ (1 − I), which a Gibbs sweep or ICM used to rebuild at 11 ms a call)
        coupling = factor_product(a, b.transpose(1, 2))  # rank 1: outer products, elementwise
        coupling += factor_product(b, a.transpose(1, 2))
        coupling *= 0.5
        coupling.diagonal(dim1=1, dim2=2).zero_()
        coupling += self.static_coupling()
        return coupling

    def label_features(self, y: Tensor) -> Tensor:
        """φ(y) = [y, (y_i y_j)_{i<j}], (..., k + k(k − 1)/2): g = ⟨u, y⟩ + Σ_{i<j} U_ij y_i y_j."""
        i, j, _ = upper_pairs(self.k, y.device)
        # index_select, not y[..., i]: the same values, ~3× faster (the mode by enumeration builds
        # φ of every chunk it scores)
        return torch.cat([y, y.index_select(-1, i) * y.index_select(-1, j)], dim=-1)

    def feature_weights(self, h: Tensor) -> Tensor:
        """w(h) = [u(h), (U_ij(h))_{i<j}], (n, k + k(k − 1)/2): U is symmetric with zero diagonal,
        so ½ yᵀUy = Σ_{i<j} U_ij y_i y_j exactly, for any real y."""
        *_, flat = upper_pairs(self.k, h.device)
        return torch.cat([self.unary(h), self.coupling_matrix(h).flatten(start_dim=1).index_select(1, flat)], dim=1)


class MLPEnergy(Energy):
    """Nonlinear coupling g = MLP([h(x), y]) (beyond the paper). The first layer is split,
    W [h; y] = W_h h + W_y y, so shared candidates cost one GEMM (m, k) @ (k, hidden)."""

    def __init__(self, space, in_features, hidden=128, depth=1, dropout=0.0, head_hidden: int | None = None,
                 head_depth: int = 1) -> None:
        if head_depth < 1:
            raise ValueError(f"MLPEnergy needs head_depth ≥ 1, got {head_depth}")
        super().__init__(space, in_features, hidden, depth, dropout)
        width = int(head_hidden or hidden)
        self.from_features = nn.Linear(self.feature_dim, width)
        self.from_labels = nn.Linear(self.k, width, bias=False)
        # ReLU of the split first layer, then head_depth − 1 hidden layers and a scalar output
        self.head = nn.Sequential(nn.ReLU(), mlp(width, width, head_depth - 1, dropout, out_features=1))

    def score(self, h, y, shared):
        return self._score_features(self.from_features(h)[:, None, :], y)

    def candidate_scorer(self, h: Tensor) -> Callable[[Tensor], Tensor]:
        z = self.from_features(h)[:, None, :]
        return lambda y: self._score_features(z, y)

    def _score_features(self, z: Tensor, y: Tensor) -> Tensor:
        """The head on W_h h (z, (n, 1, w)) and the candidates y ((m, k) or (n, m, k))."""
        yw = self.from_labels(y)  # (m, w) or (n, m, w)
        return self.head(z + yw).squeeze(-1)


ENERGIES: dict[str, type[Energy]] = {
    "unary": UnaryEnergy,
    "pairwise": PairwiseEnergy,
    "mlp": MLPEnergy,
    "permutahedron": PermutahedronEnergy,
    "birkhoff": BirkhoffEnergy,
}


def build_energy(
    space: OutputSpace,
    model: str,
    in_features: int,
    *,
    hidden: int = 128,
    depth: int = 1,
    dropout: float = 0.0,
    rank: int = 4,
    head_hidden: int | None = None,
    head_depth: int = 1,
) -> Energy:
    """The energy named ``model`` (one of ``MODELS[kind]``) for ``space``.

    ``hidden``/``depth``/``dropout`` shape the trunk h(x) (depth 0: h(x) = x, i.e. linear in x);
    ``rank`` is the pairwise x-dependent coupling rank; ``head_hidden``/``head_depth`` the MLP head.
    """
    if model not in ENERGIES:
        raise unknown_name_error("model", model, tuple(ENERGIES))
    if model not in space.models:
        raise ValueError(f"model {model!r} does not apply to {space!r}; models for this space: {list(space.models)}")
    common: dict[str, Any] = dict(hidden=hidden, depth=depth, dropout=dropout)
    if model == "pairwise":
        return PairwiseEnergy(space, in_features, rank=rank, **common)
    if model == "mlp":
        return MLPEnergy(space, in_features, head_hidden=head_hidden, head_depth=head_depth, **common)
    return ENERGIES[model](space, in_features, **common)
