"""``bce``: per-label binary cross-entropy, i.e. maximum likelihood of the unary multilabel model.

With g(x, y) = ⟨u(x), y⟩ and the factorised prior q = ∏ Bernoulli(π_i), p(y|x) ∝ q(y)·e^g
factorises into independent labels with P(y_i = 1 | x) = σ(u_i(x) + logit π_i), so

    −log p(y|x) = Σ_i BCE(σ(u_i + logit π_i), y_i),

which equals exact-MLE's NLL for the unary model (uniform prior: logit π = 0).
On ``pairwise`` and ``mlp`` it trains the unary part only: the fitted energy is the unary
model (couplings zero; the mlp energy has no additive unary part), recorded in ``info["note"]``.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from ebm.energies import LinearEnergy
from ebm.method import Fitted
from ebm.spaces import Multilabel, OutputSpace, is_binary
from ebm.training import COMMON_DEFAULTS, FitContext, StepMethod, suggest_common


def bce_nll(energy: LinearEnergy, space: Multilabel, x: Tensor, y: Tensor) -> Tensor:
    """Per-example Σ_i BCE-with-logits(u_i(x) + logit π_i, y_i), (n,), for a linear (unary) energy."""
    logits = energy.linear_scores(x) + space.prior_logits(x.device)
    return F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(-1)


class BCE(StepMethod):
    name = "bce"
    description = "per-label binary cross-entropy (MLE of the unary multilabel model; unary part only on pairwise/mlp)"
    defaults = dict(COMMON_DEFAULTS)
    stackable = True  # seeds train stacked (ebm.stacking)
    stacks_priors = True  # q only as the prior logits inside the objective

    def check(self, space: OutputSpace, model: str, params: dict[str, Any]) -> tuple[str, str] | None:
        if not space.kind.binary:
            return ("unsupported", f"bce is per-label binary cross-entropy; it has no meaning on {space!r}")
        return None

    def search_space(self, trial: Any) -> dict[str, Any]:
        return suggest_common(trial, self.required_prior)

    def energy_model(self, model: str) -> str:
        return "unary"

    def train_model(self, ctx: FitContext) -> Fitted:
        space, model = ctx.space, ctx.model
        energy, x_train, y_train = ctx.energy, ctx.x_train, ctx.y_train
        if not is_binary(space) or not isinstance(energy, LinearEnergy):  # check() and energy_model() ensure both
            raise ValueError(f"bce trains a unary energy on a Multilabel space, got {type(energy).__name__} on "
                             f"{space!r}")

        def batch_objective(index: Tensor) -> tuple[Tensor, int]:
            # k per-label scores per example, i.e. one g(x, ·) evaluation of the unary model
            return bce_nll(energy, space, x_train[index], y_train[index]).mean(), len(index)

        info = {"method": self.name, "trained_model": "unary"}
        if model != "unary":
            info["note"] = (f"bce trains the unary part only: requested model {model!r}, "
                            "fitted the unary model (no couplings)")
        snapshot = lambda: Fitted(space, energy, info=dict(info))  # noqa: E731
        return ctx.train(snapshot, batch_objective, [energy])
