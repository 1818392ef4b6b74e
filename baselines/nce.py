"""Ranking noise-contrastive estimation (Ma & Collins, EMNLP 2018).

The model is the EBM p_g(y|x) = q(y|x)·exp(g(x, y) − A(x)). For each training pair (x, y₀)
draw K noise labels y₁ … y_K ~ r = q(·|x) and present the K + 1 candidates in random
order. The posterior probability that candidate i is the data point, under the model, is

    P(i | x, y₀:K) = [p_g(y_i)/r(y_i)] / Σ_j [p_g(y_j)/r(y_j)]
                   = exp(s_i) / Σ_j exp(s_j),   s_j = g(x, y_j) + log q(y_j) − log r(y_j),

because each candidate's likelihood ratio to the all-noise hypothesis is p_g/r and the
normaliser exp(A(x)) cancels. With noise from the prior (r = q) the logits are simply
s_j = g(x, y_j) (the "g − log q" of a model written as p ∝ exp(s) is our g, since our
EBM already multiplies by q). The loss is the cross-entropy of picking the data point:

    L(x, y₀) = −s₀ + log Σ_{j=0..K} exp(s_j).

Ma & Collins show ranking NCE is consistent for conditional models *without* learning the
normaliser (unlike binary NCE), which is why it is the natural sampling baseline for the
min-min objective: K equals min-min's n′ (default 16), so both spend K + 1 energy
evaluations per training example per step. Compared with min-min KL, whose optimal τ
equals log (1/K) Σ_j exp g(y_j) over the noise alone, NCE also puts the data point in the
log-sum-exp (a biased but lower-variance estimate of log Z at small K).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ebm.method import Fitted
from ebm.spaces import OutputSpace
from ebm.training import COMMON_DEFAULTS, FitContext, StepMethod, score_data_and_samples, suggest_common


def ranking_nce_loss(g_data: Tensor, g_noise: Tensor, log_ratio_noise: Tensor | None = None,
                     log_ratio_data: Tensor | None = None) -> Tensor:
    """Per-example ranking-NCE loss −s₀ + logsumexp(s₀, s₁, …, s_K), shape (n,).

    ``g_data`` (n,), ``g_noise`` (n, K); the optional ``log_ratio_*`` = log q − log r add to
    the logits when the noise r is not the prior q (zero when r = q).
    """
    s_data = g_data if log_ratio_data is None else g_data + log_ratio_data
    s_noise = g_noise if log_ratio_noise is None else g_noise + log_ratio_noise
    logits = torch.cat([s_data.unsqueeze(1), s_noise], dim=1)
    return torch.logsumexp(logits, dim=1) - s_data


class RankingNCE(StepMethod):
    name = "nce"
    description = "ranking NCE (Ma & Collins 2018): pick the data label among K prior samples by softmax of g"
    defaults = {**COMMON_DEFAULTS, "n_samples": 16}
    stackable = True  # seeds train stacked (ebm.stacking): noise from setup.sampler, a vmap-safe objective
    stacks_priors = True  # q only as the noise distribution, drawn inside the objective

    def check(self, space: OutputSpace, model: str, params: dict[str, Any]) -> tuple[str, str] | None:
        if int(params.get("n_samples", 16)) < 1:
            return ("unsupported", "nce needs n_samples >= 1 noise samples")
        return None

    def search_space(self, trial: Any) -> dict[str, Any]:
        # n_samples is fixed to min-min's n' (same sample budget), so it is not tuned.
        return suggest_common(trial, self.required_prior)

    def train_model(self, ctx: FitContext) -> Fitted:
        space, setup = ctx.space, ctx.setup
        n_noise = int(ctx.params["n_samples"])
        energy, x_train, y_train = ctx.energy, ctx.x_train, ctx.y_train

        def batch_objective(index: Tensor) -> tuple[Tensor, int]:
            x, y = x_train[index], y_train[index]
            noise = space.sample_prior((len(index), n_noise), generator=setup.sampler, device=x.device)
            g_data, g_noise = score_data_and_samples(energy, x, y, noise)
            return ranking_nce_loss(g_data, g_noise).mean(), len(index) * (1 + n_noise)

        snapshot = lambda: Fitted(space, energy, info={"method": self.name})  # noqa: E731
        return ctx.train(snapshot, batch_objective, [energy], n_samples=n_noise)
