"""Finite output spaces Y with an easy prior q(y) (the proposal of the min-min objective).

Encodings (see docs/ARCHITECTURE.md):

* ``Multilabel(k)``: y ∈ {0,1}^k as float (…, k); prior ∏_i π_i^{y_i}(1 − π_i)^{1−y_i}.
* ``Permutations(k)``: y_j = k − 1 − position_j ∈ {0..k−1} (the best label has the largest
  value, so ⟨θ, y⟩ is maximised by y = rank(θ)); uniform prior 1/k!.
* ``PermutationMatrices(k)``: P[j, r] = 1 iff label j has position r; uniform prior 1/k!.

Dataset labels (numpy) are 0/1 int8 arrays for multilabel and position arrays
(``ranks[i, j]`` = position of label j, 0 = best) for rankings.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import Tensor

from ebm import unknown_name_error

if TYPE_CHECKING:  # annotations only (``from __future__ import annotations``): no runtime dependency
    from typing_extensions import TypeIs


@dataclass(frozen=True)
class Kind:
    """What is kind-specific about a family of output spaces, owned here so that no other
    module asks ``isinstance(space, …)``: code reads ``space.kind.<field>`` instead.

    ``name`` is the task kind and the metrics family (``tasks.metrics``); ``models`` the energy
    models of the kind (each space lists those on its encoding in ``OutputSpace.models``);
    ``binary``: y ∈ {0,1}^k with a factorised q (Gibbs sweeps, mean-field and local-field
    proposals, the closed-form unary log Z, per-label logistic losses); ``mcmc`` the MCMC kernel
    (``ebm.samplers.mcmc_steps``: ``"gibbs"`` sweeps or ``"transpositions"`` Metropolis–Hastings);
    ``proposal`` the default importance-sampling proposal for an energy linear in y (``"factorised"``
    or ``"assignment"``); ``sampler`` the learned-sampler family of minmax-reinforce
    (``"bernoulli"`` or ``"plackett-luce"``); ``size_limit`` the exact methods' hyperparameter that
    bounds |Y|."""

    name: str
    models: tuple[str, ...]
    binary: bool
    mcmc: str
    proposal: str
    sampler: str
    size_limit: str


MULTILABEL = Kind("multilabel", ("unary", "pairwise", "mlp"), binary=True, mcmc="gibbs", proposal="factorised",
                  sampler="bernoulli", size_limit="max_subsets")
RANKING = Kind("ranking", ("permutahedron", "birkhoff"), binary=False, mcmc="transpositions", proposal="assignment",
               sampler="plackett-luce", size_limit="max_permutations")
KINDS: dict[str, Kind] = {kind.name: kind for kind in (MULTILABEL, RANKING)}
MODELS: dict[str, tuple[str, ...]] = {kind.name: kind.models for kind in KINDS.values()}
PRIORS: tuple[str, ...] = ("uniform", "frequency")
#: enumeration is refused beyond this many elements (it would take minutes and gigabytes)
MAX_ENUMERATION = 2**24


def _shape(n: int | tuple[int, ...]) -> tuple[int, ...]:
    return (int(n),) if isinstance(n, (int, np.integer)) else tuple(int(v) for v in n)


def uniform_noise(shape: tuple[int, ...], generator: torch.Generator | None, device) -> Tensor:
    """U(0, 1) noise drawn on the generator's device (torch requires them to match), then moved."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device or generator.device)


#: random bits per int64 word drawn by :func:`random_bits` (randint's range [0, 2^63 − 1) has 63
#: uniform bits, up to a bias of 2^-63)
_BITS_PER_WORD = 63
#: a word's 63 bits are unpacked as 9 groups of 7 (63 = 9 · 7): group c is (w >> 7c) & 127
_GROUP_BITS = 7
#: per device, built once (a fresh tensor every step is a dispatched operation of its own): the
#: shifts 0, 7, …, 56 of the groups, int64, and the 128 × 7 table whose row v holds the bits of v
#: (bit b of v in column b), float32
_GROUP_SHIFTS: dict[torch.device, Tensor] = {}
_GROUP_BITS_TABLE: dict[torch.device, Tensor] = {}


def _group_shifts(device: torch.device) -> Tensor:
    shifts = _GROUP_SHIFTS.get(device)
    if shifts is None:
        with torch.inference_mode(False):  # a normal tensor even when first built under inference mode
            shifts = _GROUP_SHIFTS[device] = _GROUP_BITS * torch.arange(_BITS_PER_WORD // _GROUP_BITS, device=device)
    return shifts


def _group_bits_table(device: torch.device) -> Tensor:
    table = _GROUP_BITS_TABLE.get(device)
    if table is None:
        with torch.inference_mode(False):  # as _group_shifts
            values = torch.arange(2**_GROUP_BITS, device=device)
            table = ((values[:, None] >> torch.arange(_GROUP_BITS, device=device)) & 1).float()
        _GROUP_BITS_TABLE[device] = table
    return table


def random_bits(shape: tuple[int, ...], k: int, generator: torch.Generator | None, device) -> Tensor:
    """i.i.d. fair bits, shape (*shape, k), float: 63 per random word w, bit j of a word being
    ⌊w / 2^j⌋ mod 2 (j = 0..62), the words' bits laid end to end. One draw per 63 labels instead
    of one uniform per label: the uniform prior's samples at k = 174 cost a third of
    ``uniform_noise(...) < 0.5`` (the largest single cost of a min-min step there).

    A word is unpacked as 9 groups of 7 bits, c_g = ⌊w / 2^{7g}⌋ mod 2^7, each looked up in the
    128 × 7 table of their bits: bit j of w is bit j mod 7 of group ⌊j / 7⌋, so the lookup lays the
    63 bits out in order and the result is a view of it (one gather writes the floats; no shift,
    mask or conversion per label). Measured at n = 64 × 16 draws (``ebm-bench perf``'s step): k =
    174, 166 → 88 µs; stacked (320 × 16), 1135 → 430 µs, against a shift of every bit of the
    words' 32-bit halves. Only the groups of the bits used are unpacked (k = 16: 3 of 9)."""
    words = -(-k // _BITS_PER_WORD)
    draw_device = generator.device if generator is not None else device
    raw = torch.randint(0, 2**63 - 1, (*shape, words), generator=generator, device=draw_device)
    groups = -(-min(k, _BITS_PER_WORD) // _GROUP_BITS)
    codes = (raw.unsqueeze(-1) >> _group_shifts(raw.device)[:groups]) & (2**_GROUP_BITS - 1)  # (*shape, words, groups)
    bits = torch.nn.functional.embedding(codes, _group_bits_table(raw.device))  # (*shape, words, groups, 7)
    # only the words' first 63 bits exist, so for k > 63 every word holds 9 full groups and the
    # flattened groups are the words' bits end to end; for k ≤ 63 the one word's first k
    return bits.flatten(-3)[..., :k].to(device=device or draw_device)


#: rankings up to this k draw their uniform permutations as rows of the table of all k! of them
#: (8! rows of 8 int64: 2.6 MB a device; 11!: 3.5 GB)
PERMUTATION_TABLE_MAX_K = 8
#: up to this k, as a row of that table placed among the slots a row of the table of placements of
#: the other labels leaves free (k = 12: 11,880 rows of 12 int64, 1.1 MB); larger k as the argsort of
#: i.i.d. noise
PERMUTATION_PLACEMENT_MAX_K = 12
#: per (k, device), built once: all k! permutations of {0..k−1}, lexicographic, int64 positions
_PERMUTATION_TABLES: dict[tuple[int, torch.device], Tensor] = {}
#: per (k, device), built once: :func:`_placement_table`
_PLACEMENT_TABLES: dict[tuple[int, torch.device], Tensor] = {}


def inverse_permutations(order: Tensor) -> Tensor:
    """The positions of the labels, positions[order[i]] = i, for orders (…, k) (order[i]: the label
    at position i): the same integers as ``order.argsort(-1)``, by one scatter instead of a sort
    (a stacked minmax-reinforce step's 10 × 64 × 16 orders of k = 11: 1.6 → 0.3 ms a call).
    Out of place, so that it also works on a stacked step's batched orders."""
    labels = torch.arange(order.shape[-1], device=order.device).expand_as(order)
    return torch.zeros_like(order).scatter(-1, order, labels)


def random_permutations(shape: tuple[int, ...], k: int, generator: torch.Generator | None, device) -> Tensor:
    """Uniform random permutations of {0..k−1}, shape (*shape, k), int64 positions.

    k ≤ :data:`PERMUTATION_TABLE_MAX_K` (8): row u of the table of all k! permutations, u uniform on
    {0..k!−1} (one randint and one gather). Up to :data:`PERMUTATION_PLACEMENT_MAX_K`: the places
    of labels 8, …, k − 1 as a uniform row of the table of all k!/8! placements, and labels 0..7
    in the 8 places left as a uniform row of the table of 8! places them (:func:`place_labels`).
    Larger k: the argsort of i.i.d. U(0, 1) noise (ties have probability 0). All three are exactly
    uniform; the tables are 3-5× cheaper than the argsort (one or two draws per permutation instead
    of k, and no sort; 10 × 64 × 16 draws at k = 6: ~600 → ~120 µs; a stacked step's 25 × 64 × 16
    at lr-vowel's k = 11: see :func:`place_labels`): the prior's draws of min-min and nce, 64 × 16
    a step of every member, and the prior proposal of the NLL's importance sampler."""
    if k > PERMUTATION_PLACEMENT_MAX_K:
        return uniform_noise((*shape, k), generator, device).argsort(dim=-1)
    draw_device = generator.device if generator is not None else device
    table_k = min(k, PERMUTATION_TABLE_MAX_K)
    index = torch.randint(0, math.factorial(table_k), shape, generator=generator, device=draw_device)
    index = index.to(device or draw_device)
    first = _permutation_table(table_k, index.device)[index]
    if k == table_k:
        return first
    placements = _placement_table(k, index.device)
    placement = torch.randint(0, len(placements), shape, generator=generator, device=draw_device)
    return place_labels(first, placements[placement.to(index.device)])


def place_labels(first_positions: Tensor, placements: Tensor) -> Tensor:
    """Permutations of k labels, as positions (…, k), from ``first_positions`` (…, 8), the positions
    of labels 0..7 among themselves, and rows (…, k) of :func:`_placement_table`: labels 8..k−1 at
    the row's last k − 8 places, label j < 8 at the ``first_positions[j]``-th of its first 8 (the
    places left, ascending). (permutation of 8, placement) ↦ permutation is a bijection (a
    permutation's places of labels 8..k−1 give the placement, and the rank of label j's place among
    those of labels 0..7 its first position), so uniform rows of both tables give uniform
    permutations (tests/test_spaces.py checks the bijection on every pair at k = 9 and 10). Two
    table rows and a gather: a stacked step's 25 × 64 × 16 prior draws at k = 11 take 2.3-2.7 ms,
    5.3-5.5 ms by the argsort of noise."""
    return torch.cat([placements[..., :PERMUTATION_TABLE_MAX_K].gather(-1, first_positions),
                      placements[..., PERMUTATION_TABLE_MAX_K:]], dim=-1)


def _placement_table(k: int, device: torch.device) -> Tensor:
    """All k!/8! placements of labels 8..k−1 among k places, built once per (k, device): row r is
    the 8 places they leave free, ascending, then their own k − 8 places (int64, k columns)."""
    key = (k, torch.device(device))
    table = _PLACEMENT_TABLES.get(key)
    if table is None:
        rows = [sorted(set(range(k)) - set(placed)) + list(placed)
                for placed in itertools.permutations(range(k), k - PERMUTATION_TABLE_MAX_K)]
        with torch.inference_mode(False):  # as _group_shifts
            table = torch.as_tensor(rows, dtype=torch.int64, device=device)
        _PLACEMENT_TABLES[key] = table
    return table


def _permutation_table(k: int, device: torch.device) -> Tensor:
    """All k! permutations (lexicographic, :func:`_permutation_chunks`) on ``device``, built once."""
    key = (k, torch.device(device))
    table = _PERMUTATION_TABLES.get(key)
    if table is None:
        with torch.inference_mode(False):  # as _group_shifts
            table = torch.as_tensor(next(_permutation_chunks(k, math.factorial(k))), device=device)
        _PERMUTATION_TABLES[key] = table
    return table


def _permutation_chunks(k: int, chunk_size: int) -> Iterator[np.ndarray]:
    """All k! permutations (lexicographic), as int64 arrays (c, k) of positions."""
    perms = itertools.permutations(range(k))
    while chunk := list(itertools.islice(perms, chunk_size)):
        yield np.asarray(chunk, dtype=np.int64).reshape(len(chunk), k)


class OutputSpace(ABC):
    """A finite output space with a factorised/uniform prior q and the oracles the methods need."""

    name: str
    k: int
    event_shape: tuple[int, ...]
    #: the kind-specific behaviour (see :class:`Kind`)
    kind: ClassVar[Kind]
    #: the energy models defined on this encoding (``ebm.energies.build_energy``)
    models: ClassVar[tuple[str, ...]]

    @property
    @abstractmethod
    def size(self) -> int:
        """|Y| as an exact Python int."""

    @property
    @abstractmethod
    def log10_size(self) -> float:
        """log10 |Y| (finite even when |Y| is astronomically large)."""

    @abstractmethod
    def sample_prior(self, n: int | tuple[int, ...], *, generator: torch.Generator | None = None,
                     device=None) -> Tensor:
        """i.i.d. draws y ~ q, shape (*n, *event_shape), float32."""

    @abstractmethod
    def log_prior(self, y: Tensor) -> Tensor:
        """log q(y), shape y.shape[:-len(event_shape)]."""

    @abstractmethod
    def _enumerate_chunks(self, chunk_size: int, device) -> Iterator[Tensor]: ...

    def enumerate(self, chunk_size: int = 4096, device=None) -> Iterator[Tensor]:
        """Every element of Y once, in a fixed order, as chunks (c ≤ chunk_size, *event_shape)."""
        if self.size > MAX_ENUMERATION:
            raise ValueError(f"{self!r} has {self.size} elements; enumeration is limited to 2**24 = {MAX_ENUMERATION}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        return self._enumerate_chunks(int(chunk_size), device)

    def enumerate_all(self, device=None) -> Tensor:
        """All of Y as one tensor (|Y|, *event_shape); only for small spaces."""
        return torch.cat(list(self.enumerate(65536, device=device)))

    @abstractmethod
    def enumeration_index(self, y: Tensor) -> Tensor:
        """Position of each y in ``enumerate`` order, int64 of shape y.shape[:-len(event_shape)]
        (e.g. to pick the data's score out of enumerated scores)."""

    @abstractmethod
    def from_labels(self, labels: np.ndarray) -> Tensor:
        """Dataset labels (numpy) → space encoding (float32 tensor)."""

    @abstractmethod
    def to_labels(self, y: Tensor) -> np.ndarray:
        """Space encoding → dataset labels (numpy)."""

    @abstractmethod
    def mode_linear(self, theta: Tensor) -> Tensor:
        """argmax_y ⟨θ, y⟩ + log q(y) for linear scores θ of shape (n, *event_shape)."""

    @property
    def uniform_prior(self) -> bool:
        """True when q is uniform on Y (every ranking space; Multilabel with π = ½)."""
        return True

    @abstractmethod
    def distance(self, y: Tensor, y_other: Tensor) -> Tensor:
        """Δ(y, y′): Hamming distance (multilabel) or number of misplaced labels (rankings),
        shape y.shape[:-len(event_shape)]."""

    def distance_coefficients(self, y: Tensor) -> Tensor:
        """c(y) with Δ(y, y′) = const + ⟨c(y), y′⟩ in this encoding (shape of y); ValueError
        where Δ is not linear in y′."""
        raise ValueError(f"no linear margin in the encoding of {self!r} (use its permutation matrices)")

    def check_y(self, y: Tensor, what: str = "y") -> None:
        """Raise a clear error when y's trailing dimensions are not this space's event shape."""
        d = len(self.event_shape)
        if y.dim() < d or tuple(y.shape[-d:]) != self.event_shape:
            raise ValueError(f"{what} has shape {tuple(y.shape)}; {self!r} needs trailing shape {self.event_shape}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k})"


class Multilabel(OutputSpace):
    """Y = {0,1}^k with prior q = ∏ Bernoulli(π_i); ``prior_probs=None`` is uniform (π = ½)."""

    name = "multilabel"
    kind = MULTILABEL
    models = MULTILABEL.models

    def __init__(self, k: int, prior_probs: Tensor | None = None) -> None:
        if int(k) < 1:
            raise ValueError(f"Multilabel needs k ≥ 1 labels, got {k}")
        self.k = int(k)
        self.event_shape = (self.k,)
        if prior_probs is not None:
            prior_probs = torch.as_tensor(prior_probs, dtype=torch.float32).reshape(-1)
            if prior_probs.numel() != self.k:
                raise ValueError(f"prior_probs has {prior_probs.numel()} entries, expected k={self.k}")
            if not bool(((prior_probs > 0) & (prior_probs < 1)).all()):
                raise ValueError("prior_probs must lie strictly inside (0, 1)")
        self.prior_probs = prior_probs

    @property
    def uniform_prior(self) -> bool:
        return self.prior_probs is None or bool((self.prior_probs == 0.5).all())

    def distance(self, y: Tensor, y_other: Tensor) -> Tensor:
        return (y - y_other).abs().sum(-1)

    def distance_coefficients(self, y: Tensor) -> Tensor:
        return 1.0 - 2.0 * y  # |y_i − y′_i| = y_i + (1 − 2 y_i) y′_i

    @classmethod
    def with_label_frequencies(cls, k: int, y_train, clip: tuple[float, float] = (0.01, 0.99)) -> Multilabel:
        """Factorised Bernoulli prior with π_i = training frequency of label i, clipped to [0.01, 0.99]."""
        y = torch.as_tensor(np.asarray(y_train) if not isinstance(y_train, Tensor) else y_train).float()
        if y.dim() != 2 or y.shape[1] != k:
            raise ValueError(f"y_train has shape {tuple(y.shape)}, expected (n, {k})")
        return cls(k, y.mean(0).clamp(*clip).cpu())

    @property
    def uniform(self) -> bool:
        return self.prior_probs is None

    @property
    def size(self) -> int:
        return 2**self.k

    @property
    def log10_size(self) -> float:
        return self.k * math.log10(2)

    def prior_logits(self, device=None) -> Tensor:
        """logit π_i, shape (k,): the prior's contribution to each label's score."""
        if self.prior_probs is None:
            return torch.zeros(self.k, device=device)
        return torch.logit(self.prior_probs).to(device)

    def log_prior_all_zero(self, device=None) -> Tensor:
        """Σ_i log(1 − π_i) = log q(0): with the logits, log q(y) = ⟨logit π, y⟩ + log q(0)."""
        if self.prior_probs is None:
            return torch.tensor(-self.k * math.log(2.0), device=device)
        return torch.log1p(-self.prior_probs).sum().to(device)

    def sample_prior(self, n, *, generator=None, device=None) -> Tensor:
        if self.prior_probs is None:  # uniform q: fair bits
            return random_bits(_shape(n), self.k, generator, device)
        noise = uniform_noise((*_shape(n), self.k), generator, device)
        return (noise < self.prior_probs.to(noise.device)).float()

    def log_prior(self, y: Tensor) -> Tensor:
        self.check_y(y)
        if self.prior_probs is None:
            return torch.full(y.shape[:-1], -self.k * math.log(2.0), device=y.device, dtype=y.dtype)
        return y @ self.prior_logits(y.device).to(y.dtype) + self.log_prior_all_zero(y.device).to(y.dtype)

    def _enumerate_chunks(self, chunk_size, device):
        bits = torch.arange(self.k, device=device)
        for start in range(0, self.size, chunk_size):
            index = torch.arange(start, min(start + chunk_size, self.size), device=device)
            yield ((index[:, None] >> bits) & 1).float()

    def enumeration_index(self, y: Tensor) -> Tensor:
        """Binary number Σ_j y_j 2^j (the enumeration order)."""
        self.check_y(y)
        return ((y > 0.5).long() << torch.arange(self.k, device=y.device)).sum(-1)

    def from_labels(self, labels: np.ndarray) -> Tensor:
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.shape[1] != self.k:
            raise ValueError(f"multilabel labels have shape {labels.shape}, expected (n, {self.k})")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("multilabel labels must be 0/1")
        return torch.as_tensor(labels.astype(np.float32))

    def to_labels(self, y: Tensor) -> np.ndarray:
        self.check_y(y)
        return (y.detach().cpu().numpy() > 0.5).astype(np.int8)

    def mode_linear(self, theta: Tensor) -> Tensor:
        """Per-label threshold: y_i = 1 iff θ_i + logit π_i > 0 (the problem is separable)."""
        self.check_y(theta, "theta")
        return (theta + self.prior_logits(theta.device) > 0).float()

    def __repr__(self) -> str:
        return f"Multilabel(k={self.k}, prior={'uniform' if self.uniform else 'frequency'})"


class PermutationSpace(OutputSpace):
    """Common parts of the two ranking encodings: uniform prior 1/k!, enumeration of k! orders."""

    name = "ranking"
    kind = RANKING

    def distance(self, y: Tensor, y_other: Tensor) -> Tensor:
        return (self._to_positions(y) != self._to_positions(y_other)).sum(-1).to(y.dtype)

    def assignment_scores(self, theta: Tensor) -> Tensor:
        """Linear scores θ (n, *event_shape) as a label × position profit matrix (n, k, k):
        ⟨θ, y⟩ = Σ_j profit[j, position_j]."""
        return theta

    def __init__(self, k: int) -> None:
        if int(k) < 2:
            raise ValueError(f"a ranking space needs k ≥ 2 labels, got {k}")
        self.k = int(k)

    @property
    def size(self) -> int:
        return math.factorial(self.k)

    @property
    def log10_size(self) -> float:
        return math.lgamma(self.k + 1) / math.log(10)

    def log_prior(self, y: Tensor) -> Tensor:
        self.check_y(y)
        batch = y.shape[: y.dim() - len(self.event_shape)]
        return torch.full(batch, -math.lgamma(self.k + 1), device=y.device, dtype=y.dtype)

    @abstractmethod
    def _from_positions(self, positions: Tensor) -> Tensor:
        """positions (…, k) int64 (position of label j) → encoding."""

    @abstractmethod
    def _to_positions(self, y: Tensor) -> Tensor:
        """encoding → positions (…, k) int64."""

    def sample_prior(self, n, *, generator=None, device=None) -> Tensor:
        return self._from_positions(self.sample_prior_positions(n, generator=generator, device=device))

    def sample_prior_positions(self, n, *, generator=None, device=None) -> Tensor:
        """:meth:`sample_prior`'s draws as positions (*n, k) int64, from the same random numbers."""
        return random_permutations(_shape(n), self.k, generator, device)

    def _enumerate_chunks(self, chunk_size, device):
        for chunk in _permutation_chunks(self.k, chunk_size):
            yield self._from_positions(torch.as_tensor(chunk, device=device))

    def enumeration_index(self, y: Tensor) -> Tensor:
        """Lexicographic rank of the position tuple (its Lehmer code): Σ_j c_j (k − 1 − j)!,
        c_j = #{l > j : pos_l < pos_j}."""
        self.check_y(y)
        positions = self._to_positions(y)
        later_smaller = (positions.unsqueeze(-2) < positions.unsqueeze(-1)).triu(diagonal=1).sum(-1)
        weights = torch.tensor([math.factorial(self.k - 1 - j) for j in range(self.k)], device=y.device)
        return (later_smaller * weights).sum(-1)

    def from_labels(self, labels: np.ndarray) -> Tensor:
        ranks = np.asarray(labels)
        if ranks.ndim != 2 or ranks.shape[1] != self.k:
            raise ValueError(f"ranking labels have shape {ranks.shape}, expected (n, {self.k})")
        if not (np.sort(ranks, axis=1) == np.arange(self.k)).all():
            raise ValueError("each ranking row must be a permutation of positions 0..k−1")
        return self._from_positions(torch.as_tensor(ranks.astype(np.int64)))

    def to_labels(self, y: Tensor) -> np.ndarray:
        self.check_y(y)
        return self._to_positions(y.detach()).cpu().numpy().astype(np.int64)


class Permutations(PermutationSpace):
    """Rank vectors y_j = k − 1 − position_j (the permutahedron's vertices), uniform prior."""

    models = ("permutahedron",)

    def assignment_scores(self, theta: Tensor) -> Tensor:
        # y_j = k − 1 − position_j, so label j at position r scores θ_j (k − 1 − r)
        return theta.unsqueeze(-1) * torch.arange(self.k - 1, -1, -1, device=theta.device, dtype=theta.dtype)

    def __init__(self, k: int) -> None:
        super().__init__(k)
        self.event_shape = (self.k,)

    def _from_positions(self, positions):
        return (self.k - 1 - positions).float()

    def _to_positions(self, y):
        return (self.k - 1 - y.round()).long()

    def mode_linear(self, theta: Tensor) -> Tensor:
        """y = rank(θ): the label with the largest θ gets value k − 1 (rearrangement inequality)."""
        self.check_y(theta, "theta")
        return inverse_permutations(theta.argsort(dim=-1)).float()


class PermutationMatrices(PermutationSpace):
    """Permutation matrices P[j, r] = 1 iff label j has position r (Birkhoff vertices), uniform prior."""

    models = ("birkhoff",)

    def distance_coefficients(self, y: Tensor) -> Tensor:
        return -y  # misplaced labels = k − ⟨P, P′⟩

    def __init__(self, k: int) -> None:
        super().__init__(k)
        self.event_shape = (self.k, self.k)

    def _from_positions(self, positions):
        # one_hot's values, a 1 scattered into each row of zeros: one_hot writes an int64 tensor (eight
        # bytes per entry) that .float() then converts, a comparison with arange(k) a bool tensor that it
        # converts; a stacked step's draws hold 1.2M entries at k = 11 (2.0-2.3 → 1.0-1.3 ms a call).
        # Out of place: under a stacked step (vmap) the positions are batched, a fresh zeros is not
        zeros = torch.zeros((*positions.shape, self.k), device=positions.device)
        return zeros.scatter(-1, positions.unsqueeze(-1), 1.0)

    def _to_positions(self, y):
        return y.argmax(dim=-1)

    def mode_linear(self, theta: Tensor) -> Tensor:
        """argmax_P ⟨Θ, P⟩: a linear assignment problem per example (Hungarian, scipy)."""
        from scipy.optimize import linear_sum_assignment

        self.check_y(theta, "theta")
        scores = theta.detach().reshape(-1, self.k, self.k).cpu().double().numpy()
        positions = np.stack([linear_sum_assignment(s,
                maximize=True)[1] for s in scores]) if len(scores) else np.zeros((0, self.k), dtype=np.int64)
        out = self._from_positions(torch.as_tensor(positions, dtype=torch.long, device=theta.device))
        return out.reshape(theta.shape)


def is_binary(space: OutputSpace) -> TypeIs[Multilabel]:
    """``space.kind.binary``, as a test the type checker narrows on: the binary kind's spaces are
    the :class:`Multilabel` ones (``prior_logits``, ``log_prior_all_zero``); ``tests/test_spaces.py``
    holds every space class to it."""
    return space.kind.binary


def is_ranking(space: OutputSpace) -> TypeIs[PermutationSpace]:
    """``space.kind`` is the ranking kind, as a test the type checker narrows on: its spaces are the
    :class:`PermutationSpace` ones (``assignment_scores``, positions ↔ encoding); ``tests/test_spaces.py``
    holds every space class to it."""
    return space.kind is RANKING


def make_space(kind: str, k: int, model: str, *, prior: str = "uniform", y_train: Tensor | None = None) -> OutputSpace:
    """The space for a task kind and a model name (see ``MODELS``).

    ``prior="frequency"`` (multilabel only) sets q = ∏ Bernoulli(π_i) with π_i the training
    frequency of label i (clipped to [0.01, 0.99]); it needs ``y_train``.
    """
    if kind not in MODELS:
        raise unknown_name_error("task kind", kind, tuple(MODELS))
    if model not in MODELS[kind]:
        raise unknown_name_error(f"model for {kind}", model, MODELS[kind])
    if prior not in PRIORS:
        raise unknown_name_error("prior", prior, PRIORS)
    if kind == "ranking":
        if prior != "uniform":
            raise ValueError(f"ranking spaces only have the uniform prior, got prior={prior!r}")
        return Permutations(k) if model == "permutahedron" else PermutationMatrices(k)
    if prior == "frequency":
        if y_train is None:
            raise ValueError("prior='frequency' needs y_train (the training labels)")
        return Multilabel.with_label_frequencies(k, y_train)
    return Multilabel(k)
