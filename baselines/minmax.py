"""Min-max EBM training with a learned sampler and the score-function (REINFORCE) estimator.

The KL variational form of the log-partition, log Z(x) = log E_q[exp g] =
max_p E_p[g(x, ·)] − KL(p, q), turns maximum likelihood into a saddle-point problem over
the energy g and an explicit sampler p_φ(·|x):

    min_g max_φ  J(g, φ) = E_{(x,y)} [ E_{y'~p_φ(·|x)}[g(x, y')] − KL(p_φ(·|x), q(·|x)) − g(x, y) ],

a lower bound of the NLL (up to the constant −log q(y)), tight when p_φ = q·exp(g − A).

* The energy g descends ∂J/∂g = E_{p_φ}[∇g(x, y')] − ∇g(x, y) (y' are discrete, so no
  gradient flows through the samples); estimated with m samples per x.
* The sampler ascends J through the score-function estimator. With the reward
  R(y') = g(x, y') + log q(y') − log p_φ(y'), J_x = E_{p_φ}[R] and
  ∇_φ J_x = E_{p_φ}[(R(y') − b) ∇_φ log p_φ(y')] (the entropy's own E[∇ log p] = 0, and any
  b not depending on y' keeps it unbiased). b is the leave-one-out mean of the other m − 1
  rewards of the same x. KL is estimated by samples too (no closed form for
  Plackett–Luce), which is what makes this the paper's high-variance comparator.

Stabiliser (``energy_l2`` = λ, default 0.1): the energy's loss adds λ·(g(x, y)² + mean_j g(x, y'_j)²),
the energy-magnitude penalty of Du & Mordatch (2019). Without it the game diverges as soon as
the sampler lags: J is a *lower* bound of the NLL, so g can drive it to −∞ by raising g where
p_φ puts no mass (measured on a planted k = 8 Ising task: objective −5·10⁵ after 300 steps,
example-F1 0.24 vs 0.63 for the best constant; with λ = 0.1 and two sampler steps per energy
step, 0.70–0.77 depending on the learning rates). λ = 0 gives the pure min-max objective above.
``sampler_steps`` = s: s − 1 extra
ascent steps on φ alone (fresh samples) before each joint step.

Samplers, both small x-dependent networks (MLP of width ``sampler_hidden``):
factorised Bernoulli p_φ(y|x) = ∏ σ(l_i)^{y_i} σ(−l_i)^{1−y_i} (multilabel) and
Plackett–Luce p_φ(order|x) = ∏_i exp(s_{o_i}) / Σ_{j≥i} exp(s_{o_j}) (ranking, both encodings),
sampled exactly by the Gumbel-argsort trick.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ebm.energies import mlp
from ebm.method import Fitted
from ebm.spaces import OutputSpace, PermutationSpace, inverse_permutations, is_ranking
from ebm.training import COMMON_DEFAULTS, FitContext, PreSteps, StepMethod, score_data_and_samples, suggest_common


class BernoulliSampler(nn.Module):
    """p_φ(y|x) = ∏_i Bernoulli(y_i; σ(l_i(x))) on {0,1}^k."""

    def __init__(self, in_features: int, k: int, hidden: int) -> None:
        super().__init__()
        self.logits = mlp(in_features, hidden, 1, out_features=k)

    def sample(self, x: Tensor, m: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """m draws per x, (n, m, k), and their log-probabilities (n, m) (differentiable in φ)."""
        logits = self.logits(x)[:, None, :]  # (n, 1, k)
        noise = torch.rand((x.shape[0], m, logits.shape[-1]), generator=generator, device=generator.device).to(x.device)
        y = (noise < torch.sigmoid(logits.detach())).float()
        # log σ(l)·y + log σ(−l)·(1 − y) = y·l − softplus(l)
        return y, (y * logits - F.softplus(logits)).sum(-1)


class PlackettLuceSampler(nn.Module):
    """Plackett–Luce over the orders of k labels, emitted in a ranking space's encoding."""

    def __init__(self, in_features: int, space: PermutationSpace, hidden: int) -> None:
        super().__init__()
        self.space = space
        self.scores = mlp(in_features, hidden, 1, out_features=space.k)

    def sample(self, x: Tensor, m: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """m draws per x in the space encoding, (n, m, *event), and log-probabilities (n, m).

        Gumbel trick: the argsort (descending) of s + Gumbel noise is an exact PL draw;
        log p(o) = Σ_i s_{o_i} − logsumexp_{j ≥ i} s_{o_j} (:func:`plackett_luce_log_prob`).
        """
        scores = self.scores(x)  # (n, k)
        draws = scores[:, None, :].expand(-1, m, -1)  # (n, m, k)
        uniform = torch.rand(draws.shape, generator=generator, device=generator.device).to(x.device)
        gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20)))
        order = (draws.detach() + gumbel).argsort(dim=-1, descending=True)  # order[i] = label at position i
        positions = inverse_permutations(order)  # position of each label
        return self.space._from_positions(positions), plackett_luce_log_prob(scores, order)


def plackett_luce_log_prob(scores: Tensor, order: Tensor) -> Tensor:
    """log p(o) = Σ_i [s_{o_i} − log Σ_{j≥i} e^{s_{o_j}}] of orders o (n, m, k) (o_i: the label at
    position i) under Plackett–Luce scores s (n, k) → (n, m) in s's dtype, differentiable in s.

    The suffix log-sum-exps L_i = log Σ_{j≥i} e^{s_{o_j}} by their recurrence from the last
    position, L_i = logaddexp(s_{o_i}, L_{i+1}): k − 1 vectorised steps over all draws, stable for
    any spread of the scores. ``torch.logcumsumexp`` runs the same recurrence as a scalar loop on
    CPU, and two more in its backward: forward and backward of a stacked group's draws (10 × 64 ×
    16 orders of k = 11) 14.6 → 5.0 ms; lr-vowel's Birkhoff group step, four such calls, 105 → 72 ms.
    (Suffix sums of e^{s − max s} by one ``cumsum`` take 3.1 ms, but underflow once scores lie
    ~700 nats apart.) The positions are moved to the front first, so that each step's operands
    are contiguous: on a column of the (n, m, k) draws (stride k) torch's logaddexp runs its
    scalar loop, 6× slower (forward and backward of a stacked group's 25 × 64 × 16 orders of
    k = 11: 8.9 → 5.1 ms). Not the same bits: a vectorised exp and log1p where logcumsumexp
    calls the scalar ones, so within float rounding of it (tests/test_baselines.py)."""
    ordered = scores[:, None, :].expand(-1, order.shape[1], -1).gather(-1, order)  # s_{o_i}, (n, m, k)
    columns = ordered.movedim(-1, 0).contiguous().unbind(0)  # k contiguous (n, m) columns
    suffixes = [columns[-1]]
    for column in reversed(columns[:-1]):
        suffixes.append(torch.logaddexp(column, suffixes[-1]))
    return ordered.sum(-1) - torch.stack(suffixes).sum(0)


def build_sampler(space: OutputSpace, in_features: int, hidden: int) -> BernoulliSampler | PlackettLuceSampler:
    if space.kind.sampler == "bernoulli":
        return BernoulliSampler(in_features, space.k, hidden)
    if space.kind.sampler == "plackett-luce" and is_ranking(space):
        return PlackettLuceSampler(in_features, space, hidden)
    raise ValueError(f"minmax-reinforce has no sampler for {space!r}")


def leave_one_out_baseline(reward: Tensor) -> Tensor:
    """b_j = mean of the other m − 1 rewards in the row (n, m); needs m ≥ 2."""
    m = reward.shape[-1]
    return (reward.sum(-1, keepdim=True) - reward) / (m - 1)


def reinforce_surrogate(reward: Tensor, log_prob: Tensor) -> Tensor:
    """Per-example surrogate whose φ-gradient is the score-function estimate of −∇J:
    −mean_j (R_j − b_j)·log p_φ(y'_j), with R detached and b the leave-one-out baseline."""
    reward = reward.detach()
    return -((reward - leave_one_out_baseline(reward)) * log_prob).mean(-1)


class MinMaxReinforce(StepMethod):
    name = "minmax-reinforce"
    description = ("min-max over g and a sampler p_φ (Bernoulli / Plackett–Luce), "
                   "REINFORCE with a leave-one-out baseline")
    defaults = {**COMMON_DEFAULTS, "n_samples": 16, "sampler_lr": 3e-2, "sampler_hidden": 64, "sampler_steps": 2,
                "energy_l2": 0.1}
    #: seeds train stacked (ebm.stacking): the sampler's draws, log-probabilities and rewards are
    #: tensor operations of each member's own sampler and energy, and its extra ascent steps are
    #: PreSteps, which the stacked loop takes for every member at once (tests/test_stacking.py)
    stackable: ClassVar[bool] = True
    #: q only in the reward's log q(y′), inside the objective and the pre-steps
    stacks_priors: ClassVar[bool] = True

    def check(self, space: OutputSpace, model: str, params: dict[str, Any]) -> tuple[str, str] | None:
        if int(params.get("n_samples", 16)) < 2:
            return ("unsupported", "minmax-reinforce needs n_samples >= 2 for its leave-one-out baseline")
        if int(params.get("sampler_steps", 1)) < 1:
            return ("unsupported", "minmax-reinforce needs sampler_steps >= 1")
        return None

    def search_space(self, trial: Any) -> dict[str, Any]:
        return {
            **suggest_common(trial, self.required_prior),
            "sampler_lr": trial.suggest_float("sampler_lr", 1e-4, 3e-2, log=True),
            "sampler_hidden": trial.suggest_categorical("sampler_hidden", [32, 64, 128]),
            "sampler_steps": trial.suggest_int("sampler_steps", 1, 4),
            "energy_l2": trial.suggest_float("energy_l2", 1e-3, 1.0, log=True),
        }

    def train_model(self, ctx: FitContext) -> Fitted:
        space, params, setup = ctx.space, ctx.params, ctx.setup
        m, sampler_steps = int(params["n_samples"]), int(params["sampler_steps"])
        energy_l2 = float(params["energy_l2"])
        energy, x_train, y_train, optimizer = ctx.energy, ctx.x_train, ctx.y_train, ctx.optimizer
        sampler = build_sampler(space, x_train.shape[1], int(params["sampler_hidden"])).to(ctx.device)
        # one optimiser, two groups: the sampler ascends through its own surrogate at its own rate
        optimizer.add_param_group({"params": list(sampler.parameters()), "lr": float(params["sampler_lr"]),
                                   "weight_decay": 0.0})

        def reward(samples: Tensor, log_prob: Tensor, g_samples: Tensor) -> Tensor:
            """R = g + log q − log p_φ, per sample (n, m)."""
            return g_samples + space.log_prior(samples) - log_prob

        def sampler_only_objective(index: Tensor) -> Tensor:
            """The surrogate of an extra ascent step on φ alone with fresh samples (``sampler_steps`` > 1):
            no gradient reaches g, so the step (ebm.training.PreSteps) leaves g and its Adam state as they are."""
            x = x_train[index]
            samples, log_prob = sampler.sample(x, m, setup.sampler)
            with torch.no_grad():
                g_samples = energy(x, samples)
            return reinforce_surrogate(reward(samples, log_prob, g_samples), log_prob).mean()

        def batch_objective(index: Tensor) -> tuple[Tensor, int]:
            x, y = x_train[index], y_train[index]
            samples, log_prob = sampler.sample(x, m, setup.sampler)
            g_data, g_samples = score_data_and_samples(energy, x, y, samples)
            r = reward(samples, log_prob, g_samples)
            energy_loss = g_samples.mean(-1) - g_data  # ∂/∂g of J; samples carry no gradient
            if energy_l2 > 0:
                energy_loss = energy_loss + energy_l2 * (g_data.square() + g_samples.square().mean(-1))
            sampler_loss = reinforce_surrogate(r, log_prob)
            objective = (r.detach().mean(-1) - g_data.detach()).mean()  # the estimated J (reported)
            # (energy_loss + sampler_loss) has the right gradients; shift its value to J for reporting
            total = (energy_loss + sampler_loss).mean()
            return total - total.detach() + objective, len(index) * (1 + m * sampler_steps)

        snapshot = lambda: Fitted(space, energy, info={"method": self.name})  # noqa: E731
        return ctx.train(snapshot, batch_objective, [energy, sampler],
                         pre_steps=PreSteps(sampler_only_objective, sampler_steps - 1), n_samples=m)
