"""``constant``: the floor every table is read against. It ignores x.

* **Multilabel.** Its distribution is the frequency prior itself, q(y) = ∏_i π_i^{y_i}(1 − π_i)^{1 − y_i}
  with π_i the training frequency of label i clipped to [0.01, 0.99]
  (:meth:`ebm.spaces.Multilabel.with_label_frequencies`), i.e. the Gibbs model with g ≡ 0 on that
  space, so its NLL is −log q(y) and log Z(x) = 0 exactly. Its prediction is one label set for
  every input: the best on validation among the nested sets

      S_t = {i : π̂_i > t},  t ∈ {−1} ∪ {distinct training frequencies π̂_i}   (π̂ unclipped)

  ("every label whose training frequency exceeds t"; t = −1 is all labels, t = max π̂ the empty
  set). "Best" is the task's primary metric on validation as the harness's monitor scores it
  (the same evaluator every method's model selection uses); ties, and a primary metric that
  does not depend on the prediction (NLL), fall back to validation example-F1 (empty/empty = 1,
  as :mod:`tasks.metrics`), then to the smaller t.
* **Rankings.** Its distribution is the uniform prior (NLL = log k!); its prediction is the
  training consensus ranking by Borda count: label j scores Σ_rows (k − 1 − position_j), the
  highest score is put first, ties broken by label index.

It has no hyperparameters and no training loop (``fit`` is overridden): the candidate label
sets are reported to the monitor as evaluation steps 1, 2, … (so its curve is the threshold
sweep, and ``info["best_step"]`` is the chosen one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ebm.energies import build_energy
from ebm.method import Budget, FitData, Fitted, Method, Monitor, Progress
from ebm.spaces import Multilabel, OutputSpace, is_binary


def borda_positions(positions: np.ndarray) -> np.ndarray:
    """Consensus ranking of position rows (n, k) (``positions[r, j]`` = place of label j in row r,
    0 = first) by Borda count: label j scores Σ_r (k − 1 − positions[r, j]); returns the consensus
    positions (k,), highest score at position 0, ties broken by the lower label index."""
    positions = np.asarray(positions)
    k = positions.shape[1]
    scores = (k - 1 - positions).sum(axis=0)
    order = np.lexsort((np.arange(k), -scores))  # labels from best to worst
    consensus = np.empty(k, dtype=np.int64)
    consensus[order] = np.arange(k)
    return consensus


def threshold_label_sets(frequencies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The candidate thresholds t (ascending: −1, then each distinct frequency) and their sets
    S_t = {i : frequency_i > t} as a 0/1 matrix (n_candidates, k)."""
    frequencies = np.asarray(frequencies, dtype=np.float64)
    thresholds = np.concatenate([[-1.0], np.unique(frequencies)])
    return thresholds, (frequencies[None, :] > thresholds[:, None]).astype(np.float32)


def example_f1(y_true: Tensor, predicted: Tensor) -> float:
    """Mean over rows of 2|y ∩ ŷ| / (|y| + |ŷ|), a row with both sets empty scoring 1
    (``tasks.metrics.multilabel_metrics``' convention); ``predicted`` is one row (k,) or (n, k)."""
    predicted = predicted.expand_as(y_true)
    overlap = (y_true * predicted).sum(-1)
    sizes = y_true.sum(-1) + predicted.sum(-1)
    scores = torch.where(sizes > 0, 2 * overlap / sizes.clamp(min=1), torch.ones_like(sizes))
    return float(scores.mean())


@dataclass
class ConstantFitted(Fitted):
    """A Fitted whose prediction is one fixed ``y`` (space encoding, ``event_shape``) and whose
    distribution is the space's prior q (g ≡ 0, so log Z = 0 and −log p(y|x) = −log q(y))."""

    constant: Tensor = field(default_factory=lambda: torch.zeros(0))

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self.constant.to(x.device).expand(x.shape[0], *self.constant.shape).clone()

    @torch.no_grad()
    def log_partition(self, x: Tensor, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        zeros = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        return zeros, zeros.clone()

    @torch.no_grad()
    def nll(self, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None,
            log_z: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        self.space.check_y(y)
        estimate, stderr = self.log_partition(x) if log_z is None else log_z
        return estimate - self.space.log_prior(y.to(x.device, x.dtype)), stderr


class Constant(Method):
    name = "constant"
    description = ("floor: ignores x; multilabel = frequency prior + the validation-best set of frequent labels, "
                   "rankings = training Borda consensus")
    defaults: ClassVar[dict[str, Any]] = {}

    def search_space(self, trial: Any) -> dict[str, Any]:
        return {}

    @staticmethod
    def _frequency_space(space: OutputSpace, data: FitData) -> OutputSpace:
        """The space with q = the clipped training label frequencies (multilabel); rankings unchanged."""
        if is_binary(space):
            return Multilabel.with_label_frequencies(space.k, data.y_train.cpu())
        return space

    def energy_model(self, model: str) -> str:
        return "unary" if model in ("unary", "pairwise", "mlp") else model

    def fit(self, space: OutputSpace, model: str, data: FitData, params: dict[str, Any], budget: Budget, *,
            seed: int, device: torch.device, monitor: Monitor | None = None) -> Fitted:
        started = time.perf_counter()
        params = self.params(params)
        space = self._frequency_space(space, data)
        energy = build_energy(space, self.energy_model(model), data.x_train.shape[1], depth=0).to(device)
        for parameter in energy.parameters():  # g ≡ 0: the model is the prior q
            torch.nn.init.zeros_(parameter)
        energy.requires_grad_(False)
        y_train = data.y_train.to(device)
        train_nll = float(-space.log_prior(y_train).mean())
        info: dict[str, Any] = {"method": self.name, "steps": 0, "energy_evals": 0, "selection": "best_val",
                                "stopped_early": False}

        def fitted(constant: Tensor) -> ConstantFitted:
            return ConstantFitted(space, energy, info=info, constant=constant.to(device))

        if not is_binary(space):
            consensus = borda_positions(space.to_labels(data.y_train))
            constant = space.from_labels(consensus[None])[0]
            info.update(best_step=0, train_seconds=time.perf_counter() - started)
            return fitted(constant)

        frequencies = data.y_train.float().mean(0).cpu().numpy()
        thresholds, sets = threshold_label_sets(frequencies)
        y_val = data.y_val.to(device) if data.y_val is not None else None
        best: tuple | None = None
        for step, (threshold, label_set) in enumerate(zip(thresholds, torch.as_tensor(sets)), 1):
            candidate = fitted(label_set)
            primary, raw = None, None
            if monitor is not None:
                progress = Progress(step, time.perf_counter() - started, 0, train_nll)
                result = monitor(progress, candidate)
                value, maximize = getattr(result, "value", None), getattr(result, "maximize", True)
                if value is not None and np.isfinite(value):
                    raw = float(value)
                    primary = raw if maximize else -raw
            f1 = example_f1(y_val, label_set.to(device)) if y_val is not None else 0.0
            key = (primary if primary is not None else -np.inf, f1)
            if best is None or key > best[0]:  # strict: ties keep the smaller t
                best = (key, step, float(threshold), label_set, raw)
        assert best is not None
        _, step, threshold, label_set, raw = best
        info.update(best_step=step, best_value=raw,
                    threshold=threshold, train_seconds=time.perf_counter() - started)
        return fitted(label_set)
