"""Bundled synthetic tasks with a known conditional p(y | x) (no data directory needed).

* ``syn-ising-k{8,12,16}``: planted pairwise multilabel EBM over y in {0,1}^k,
  ``p(y|x) ∝ exp(u(x)·y + ½ yᵀU(x)y)`` with ``u(x) = A x + b`` and
  ``U(x) = U₀ + Σ_r c_r(x) sym(v_r w_rᵀ)`` (zero diagonal), ``c(x) = C x``, x ~ N(0, I_d).
  log Z(x) and sampling are exact by enumerating all 2^k ≤ 65536 label sets.
* ``syn-pl-k{6,10}``: Plackett–Luce rankings with scores ``s(x) = W₂ tanh(W₁ x)``:
  ``p(order|x) = Π_p exp(s_{o_p}) / Σ_{q≥p} exp(s_{o_q})`` (closed form). Sampled exactly by
  sorting Gumbel-perturbed scores, which has the same law as choosing the next label with
  probability ∝ exp(s) among those left (Yellott 1977; the tests check it by chi-square).

Determinism: the true model is drawn from a fixed per-task seed and the data set (x, y) from
another fixed per-task seed, so every run sees the same truth and the same train/test data;
the run seed only picks the validation carve-out (as for real tasks). Features are already
N(0, I), so they are *not* re-standardised: ``truth.log_prob(x, y)`` takes the task's x as is.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

from tasks.base import PRIMARY_METRIC, Task, TaskData, Unavailable
from tasks.prepare import assemble

_X_CHUNK = 128  # rows of x per enumeration chunk: 2^16 x 128 float64 = 64 MiB


def all_label_sets(k: int) -> np.ndarray:
    """Every y in {0,1}^k as rows of a (2^k, k) int8 array; row m has y_j = bit j of m."""
    return ((np.arange(2**k)[:, None] >> np.arange(k)[None, :]) & 1).astype(np.int8)


@dataclass(frozen=True)
class IsingTruth:
    """Planted pairwise multilabel model (module docstring); arrays drawn from ``seed``."""

    k: int
    d: int
    seed: int

    @functools.cached_property
    def params(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        k, d, rank = self.k, self.d, 2
        u0 = rng.normal(0.0, 1.0, (k, k)) * (1.5 / np.sqrt(k))
        u0 = np.triu(u0, 1) + np.triu(u0, 1).T
        return {
            "A": rng.normal(0.0, 1.5 / np.sqrt(d), (k, d)),
            "b": rng.normal(-1.0, 0.5, k),
            "U0": u0,
            "V": rng.normal(0.0, 1.0 / np.sqrt(k), (rank, k)),
            "W": rng.normal(0.0, 1.0 / np.sqrt(k), (rank, k)),
            "C": rng.normal(0.0, 2.0 / np.sqrt(d), (rank, d)),
        }

    def pairwise_terms(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(u (n, k), U (n, k, k)) explicitly: symmetric, zero diagonal."""
        p = self.params
        x = np.asarray(x, dtype=np.float64)
        u = x @ p["A"].T + p["b"]
        sym = 0.5 * (p["V"][:, :, None] * p["W"][:, None, :] + p["W"][:, :, None] * p["V"][:, None, :])
        big_u = p["U0"][None] + np.einsum("nr,rij->nij", x @ p["C"].T, sym)
        big_u[:, np.arange(self.k), np.arange(self.k)] = 0.0
        return u, big_u

    def energy(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """u(x)·y + ½ yᵀU(x)y for paired rows of x (n, d) and y (n, k)."""
        u, big_u = self.pairwise_terms(x)
        y = np.asarray(y, dtype=np.float64)
        return (u * y).sum(1) + 0.5 * np.einsum("ni,nij,nj->n", y, big_u, y)

    @functools.cached_property
    def _enumeration(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All label sets Y, features F = [Y | M] and offset so that energies = F @ [u; c] + offset.

        With sym_r = sym(v_r w_rᵀ): ½ yᵀ(sym_r − diag)y = ½((v_r·y)(w_r·y) − Σ_i v_ri w_ri y_i),
        using y_i² = y_i; this avoids forming U(x) for each of the 2^k label sets."""
        p = self.params
        labels = all_label_sets(self.k)
        y = labels.astype(np.float64)
        low_rank = 0.5 * ((y @ p["V"].T) * (y @ p["W"].T) - y @ (p["V"] * p["W"]).T)
        offset = 0.5 * np.einsum("mi,ij,mj->m", y, p["U0"], y)
        return labels, np.concatenate([y, low_rank], axis=1), offset

    def _all_energies(self, x: np.ndarray) -> np.ndarray:
        """Energies of every label set for each row of x: (n, 2^k)."""
        p = self.params
        _, features, offset = self._enumeration
        coefficients = np.concatenate([x @ p["A"].T + p["b"], x @ p["C"].T], axis=1)
        return coefficients @ features.T + offset

    def log_partition(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.concatenate([logsumexp(self._all_energies(x[i:i + _X_CHUNK]), axis=1)
                               for i in range(0, len(x), _X_CHUNK)] or [np.zeros(0)])

    def log_prob(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.energy(x, y) - self.log_partition(x)

    def sample(self, x: np.ndarray, n_per_x: int, rng: np.random.Generator) -> np.ndarray:
        """Exact draws by inverse CDF over the enumerated label sets: (n_x, n_per_x, k) int8."""
        x = np.asarray(x, dtype=np.float64)
        labels = self._enumeration[0]
        out = np.empty((len(x), n_per_x, self.k), dtype=np.int8)
        for start in range(0, len(x), _X_CHUNK):
            energies = self._all_energies(x[start:start + _X_CHUNK])
            # unnormalised CDF (shifted by the row max against overflow); uniforms scaled by its total
            cdf = np.cumsum(np.exp(energies - energies.max(axis=1, keepdims=True)), axis=1)
            uniforms = rng.random((len(energies), n_per_x)) * cdf[:, -1:]
            for row, (row_cdf, row_u) in enumerate(zip(cdf, uniforms)):
                index = np.minimum(np.searchsorted(row_cdf, row_u, side="right"), len(row_cdf) - 1)
                out[start + row] = labels[index]
        return out


@dataclass(frozen=True)
class PlackettLuceTruth:
    """Plackett–Luce rankings with scores s(x) = W₂ tanh(W₁ x) (module docstring)."""

    k: int
    d: int
    seed: int
    hidden: int = 16

    @functools.cached_property
    def params(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        return {"W1": rng.normal(0.0, 1.5 / np.sqrt(self.d), (self.hidden, self.d)),
                "W2": rng.normal(0.0, 2.0 / np.sqrt(self.hidden), (self.k, self.hidden))}

    def scores(self, x: np.ndarray) -> np.ndarray:
        p = self.params
        return np.tanh(np.asarray(x, dtype=np.float64) @ p["W1"].T) @ p["W2"].T

    def log_prob(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Σ_p [s_{o_p} − log Σ_{q≥p} exp s_{o_q}] with o = argsort(positions) (label at each place)."""
        order = np.argsort(np.asarray(y), axis=1)
        ordered = np.take_along_axis(self.scores(x), order, axis=1)
        tail_logsumexp = np.logaddexp.accumulate(ordered[:, ::-1], axis=1)[:, ::-1]
        return (ordered - tail_logsumexp).sum(axis=1)

    def sample(self, x: np.ndarray, n_per_x: int, rng: np.random.Generator) -> np.ndarray:
        """Positions (n_x, n_per_x, k) int64: order = argsort(−(s + Gumbel)), ranks = its inverse."""
        keys = self.scores(x)[:, None, :] + rng.gumbel(size=(len(x), n_per_x, self.k))
        order = np.argsort(-keys, axis=2)
        return np.argsort(order, axis=2).astype(np.int64)


@functools.lru_cache(maxsize=8)
def _draw_dataset(truth: IsingTruth | PlackettLuceTruth, n: int, data_seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(data_seed)
    x = rng.normal(size=(n, truth.d))
    y = truth.sample(x, 1, rng)[:, 0]
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@dataclass(kw_only=True)
class SyntheticTask(Task):
    """A task whose data are drawn from ``truth`` (fixed seeds; see module docstring)."""

    truth: IsingTruth | PlackettLuceTruth
    data_seed: int
    n_train: int  # always known for a synthetic task
    n_test: int

    def unavailable(self, data_dir: Path | None) -> Unavailable | None:
        return None

    def load(self, data_dir: Path | None, *, seed: int, fold: int = 0, val_fraction: float = 0.2) -> TaskData:
        self.check_fold(fold)
        x, y = _draw_dataset(self.truth, self.n_train + self.n_test, self.data_seed)
        labels = [f"label{j}" for j in range(self.k)]
        return assemble(
            name=self.name, kind=self.kind, x_train=x[:self.n_train], y_train=y[:self.n_train],
            x_test=x[self.n_train:], y_test=y[self.n_train:], label_names=labels,
            feature_names=[f"x{i}" for i in range(self.truth.d)],
            split_info=f"synthetic: truth seed {self.truth.seed}, data seed {self.data_seed}, "
                       f"first {self.n_train} rows train, last {self.n_test} test",
            seed=seed, val_fraction=val_fraction, truth=self.truth, standardise_features=False,
        )


def builtin_tasks() -> list[Task]:
    d, n_train, n_test = 10, 3000, 1000
    tasks: list[Task] = []
    for k in (8, 12, 16):
        tasks.append(SyntheticTask(
            name=f"syn-ising-k{k}", kind="multilabel", k=k, primary_metric=PRIMARY_METRIC["synthetic"],
            description=f"planted pairwise multilabel EBM, k={k}, d={d}, exact sampling by enumeration",
            n_features=d, n_train=n_train, n_test=n_test,
            truth=IsingTruth(k=k, d=d, seed=1000 + k), data_seed=2000 + k))
    for k in (6, 10):
        tasks.append(SyntheticTask(
            name=f"syn-pl-k{k}", kind="ranking", k=k, primary_metric=PRIMARY_METRIC["synthetic"],
            description=f"Plackett-Luce label ranking, scores from a tanh network of x, k={k}, d={d}",
            n_features=d, n_train=n_train, n_test=n_test,
            truth=PlackettLuceTruth(k=k, d=d, seed=3000 + k), data_seed=4000 + k))
    return tasks
