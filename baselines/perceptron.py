"""The generalised (structured) perceptron and structured hinge loss, through the mode oracle.

With the model score s(x, y) = g(x, y) + log q(y) (the log of the unnormalised EBM), the loss is

    L(x, y) = max_{y'} [ s(x, y') + μ·Δ(y, y') ] − s(x, y) ≥ 0,

μ = ``margin``. μ = 0 is Collins' structured perceptron; μ > 0 the margin-rescaled
structured hinge (structured SVM without the explicit norm, which ``weight_decay`` supplies).
Its (sub)gradient is ∇g(x, ŷ) − ∇g(x, y) with ŷ the loss-augmented mode; no partition
function is ever estimated, so the fitted model's NLL measures how (un)calibrated it is.

Δ is chosen linear in y', so loss-augmented inference is the plain mode oracle with
shifted linear scores (Δ(y, y') = const + ⟨c(y), y'⟩):

* multilabel: Hamming distance Σ_i |y_i − y'_i|, c = 1 − 2y;
* ranking (both encodings): the number of labels placed at a different position,
  k − ⟨P, P'⟩ with P the permutation matrix; c = −P. For the permutahedron encoding the
  augmented problem max ⟨θ, y'⟩ − μ⟨P, P'⟩ is a linear assignment with profit
  θ_j·(k − 1 − r) − μ·[r = position_j], solved by the Birkhoff space's Hungarian oracle.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from ebm import inference
from ebm.energies import Energy, LinearEnergy, Pairwise
from ebm.method import Fitted
from ebm.spaces import OutputSpace, PermutationMatrices, Permutations
from ebm.training import COMMON_DEFAULTS, FitContext, StepMethod, score_data_and_samples, suggest_common

#: ebm.inference.mode's default number of random restarts (for the evaluation count only)
_MODE_RESTARTS = 4


def margin_coefficients(space: OutputSpace, y: Tensor) -> Tensor:
    """c(y) with Δ(y, y') = const + ⟨c(y), y'⟩ (see the module docstring); shape of y."""
    return space.distance_coefficients(y)


def margin_distance(space: OutputSpace, y: Tensor, y_other: Tensor) -> Tensor:
    """Δ(y, y'): Hamming distance (multilabel) or number of misplaced labels (ranking), shape (n,)."""
    return space.distance(y, y_other)


class LinearlyShiftedEnergy(nn.Module):
    """g̃(x̃, y') = g(x, y') + ⟨c, y'⟩ for per-example shifts c, passed *inside* the input:
    x̃ = [x, vec(c)], so any chunking of x by the inference code keeps each c with its x.
    Exposes ``linear_scores`` / ``pairwise_terms`` / label features when the wrapped energy does."""

    def __init__(self, energy: Energy) -> None:
        super().__init__()
        self.energy = energy
        self.in_features = energy.in_features
        self.event_shape = tuple(energy.event_shape)
        self.k = energy.k

    def pack(self, x: Tensor, shift: Tensor) -> Tensor:
        return torch.cat([x, shift.reshape(x.shape[0], -1).to(x.dtype)], dim=1)

    def _split(self, x_aug: Tensor) -> tuple[Tensor, Tensor]:
        x, shift = x_aug[:, : self.in_features], x_aug[:, self.in_features :]
        return x, shift.reshape(x_aug.shape[0], *self.event_shape)

    def forward(self, x_aug: Tensor, y: Tensor) -> Tensor:
        x, shift = self._split(x_aug)
        d = len(self.event_shape)
        flat_shift = shift.flatten(1)
        flat_y = y.flatten(start_dim=y.dim() - d).to(x.dtype)
        extra = flat_shift @ flat_y.T if y.dim() == d + 1 else torch.einsum("ne,nme->nm", flat_shift, flat_y)
        return self.energy(x, y) + extra

    def linear_scores(self, x_aug: Tensor) -> Tensor | None:
        x, shift = self._split(x_aug)
        theta = self.energy.linear_scores(x)
        return None if theta is None else theta + shift

    def features(self, x_aug: Tensor) -> Tensor:
        return self.energy.features(self._split(x_aug)[0])

    def label_features(self, y: Tensor) -> Tensor | None:
        """[vec(y), φ(y)] where the wrapped energy has label features φ (None otherwise): the shift
        ⟨c, y⟩ is linear in y, so the loss-augmented energy is ⟨[c, w(x)], [vec(y), φ(y)]⟩."""
        features = self.energy.label_features(y)
        if features is None:
            return None
        return torch.cat([y.flatten(start_dim=y.dim() - len(self.event_shape)).to(features.dtype), features], dim=-1)

    def label_feature_weights(self, x_aug: Tensor) -> Tensor:
        x, shift = self._split(x_aug)
        weights = self.energy.label_feature_weights(x)
        return torch.cat([shift.flatten(1).to(weights.dtype), weights], dim=1)


class LinearlyShiftedPairwise(LinearlyShiftedEnergy):
    """The same for Ising energies, which expose (u, U): the shift adds to the unary term u."""

    def pairwise_terms(self, x_aug: Tensor) -> tuple[Tensor, Tensor]:
        x, shift = self._split(x_aug)
        # built by loss_augmented_mode only around a Pairwise energy
        u, coupling = cast(Pairwise, self.energy).pairwise_terms(x)
        return u + shift, coupling


def mode_oracle_evals(energy: Energy, space: OutputSpace) -> int:
    """Energy evaluations one call of :func:`ebm.inference.mode` spends per input.

    Linear energies: one (θ(x), then a combinatorial oracle that never calls g); enumeration:
    |Y|; beyond the enumeration limit (ICM / greedy local search, approximate oracles) a lower
    bound, one pass of k site/flip evaluations for each of the 1 + restarts starts.
    """
    if isinstance(energy, LinearEnergy):
        return 1
    if space.size <= inference.MODE_ENUMERATION_LIMIT:
        return space.size
    return (1 + _MODE_RESTARTS) * space.k


def loss_augmented_mode(energy: Energy, space: OutputSpace, x: Tensor, y: Tensor, margin: float) -> Tensor:
    """argmax_{y'} g(x, y') + log q(y') + μ·Δ(y, y') (the mode itself when μ = 0)."""
    if margin == 0:
        return inference.mode(energy, space, x)
    theta = energy.linear_scores(x)
    if isinstance(space, Permutations):
        if theta is None:
            raise ValueError("margin > 0 on Permutations needs an energy linear in y")
        k = space.k
        values = torch.arange(k - 1, -1, -1, device=x.device, dtype=theta.dtype)  # value of position r
        birkhoff = PermutationMatrices(k)
        profit = theta[:, :, None] * values - margin * birkhoff._from_positions(space._to_positions(y))
        return space._from_positions(birkhoff._to_positions(birkhoff.mode_linear(profit)))
    shift = margin * margin_coefficients(space, y)
    if theta is not None:
        return space.mode_linear(theta + shift)
    wrapped = (LinearlyShiftedPairwise if isinstance(energy, Pairwise) else LinearlyShiftedEnergy)(energy)
    return inference.mode(wrapped, space, wrapped.pack(x, shift))


class Perceptron(StepMethod):
    name = "perceptron"
    description = ("structured perceptron / margin-rescaled hinge: "
                   "max_y' [g + log q + μΔ](y') − [g + log q](y) via the mode oracle")
    defaults = {**COMMON_DEFAULTS, "margin": 0.0}
    #: seeds train stacked (ebm.stacking) where the (loss-augmented) mode is a tensor oracle on
    #: θ(x): see :meth:`can_stack`
    stackable = True
    stacks_priors = True  # q only in the oracle's scores and log q(y), inside the objective

    def can_stack(self, space: OutputSpace, model: str, params: dict[str, Any]) -> bool:
        """Unary multilabel (a threshold, any margin) and the permutahedron with margin 0 (an
        argsort). Not the Birkhoff polytope nor the permutahedron with a margin (the Hungarian
        oracle runs in scipy on numbers taken out of the tensors), nor pairwise/mlp energies
        (enumeration selects its best candidates by boolean indexing, ICM and greedy search
        stop on a Python test of the states: data-dependent shapes and control flow)."""
        if model == "unary" and space.kind.binary:
            return True
        return isinstance(space, Permutations) and model == "permutahedron" and float(params["margin"]) == 0

    def search_space(self, trial: Any) -> dict[str, Any]:
        return {**suggest_common(trial, self.required_prior), "margin": trial.suggest_categorical("margin", [0.0, 0.5,
                                                                                                             1.0, 2.0])}

    def check(self, space: OutputSpace, model: str, params: dict[str, Any]) -> tuple[str, str] | None:
        if float(params.get("margin", 0.0)) < 0:
            return ("unsupported", "perceptron margin must be >= 0")
        return None

    def train_model(self, ctx: FitContext) -> Fitted:
        space = ctx.space
        margin = float(ctx.params["margin"])
        energy, x_train, y_train = ctx.energy, ctx.x_train, ctx.y_train
        evals_per_mode = mode_oracle_evals(energy, space)

        def batch_objective(index: Tensor) -> tuple[Tensor, int]:
            x, y = x_train[index], y_train[index]
            with torch.no_grad():
                y_hat = loss_augmented_mode(energy, space, x, y, margin)
            g_data, g_hat = score_data_and_samples(energy, x, y, y_hat.unsqueeze(1))
            violation = g_hat[:, 0] + space.log_prior(y_hat) + margin * margin_distance(space, y,
                    y_hat) - g_data - space.log_prior(y)
            # exact oracles give violation ≥ 0; approximate ones (ICM, local search) may not
            return violation.clamp_min(0).mean(), len(index) * (2 + evals_per_mode)

        snapshot = lambda: Fitted(space, energy, info={"method": self.name})  # noqa: E731
        return ctx.train(snapshot, batch_objective, [energy], margin=margin)
