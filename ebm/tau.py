"""τ(x): the learned log-partition (more generally the dual variable Ω*(g)(x)).

All variants map x (n, d) → (n,) and accept ``index=`` (positions of the batch in the
training set), which only :class:`FiniteTau` uses; so a training loop can call
``tau(x, index=idx)`` whatever the variant.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ebm import unknown_name_error
from ebm.energies import mlp

TAUS = ("neural", "finite", "scalar")
#: what τ is learned on top of: "none" (τ itself) or "estimate" (a detached log-partition estimate
#: b(x) of the current energy, see :class:`OffsetTau`)
TAU_OFFSETS = ("none", "estimate")


class NeuralTau(nn.Module):
    """τ(x) = MLP(x), its own trunk; or, with ``trunk=`` (e.g. an energy's ``trunk``), a linear
    head on the shared features h(x) (then ``in_features`` is the trunk's output width).
    A shared trunk's parameters then belong to both modules: hand each parameter to the
    optimiser once (e.g. deduplicate by identity)."""

    def __init__(self, in_features: int, hidden: int = 128, depth: int = 1, dropout: float = 0.0, *,
                 trunk: nn.Module | None = None, init: float = 0.0) -> None:
        super().__init__()
        self.shared_trunk = trunk
        self.net = mlp(in_features, hidden, 0 if trunk is not None else depth, dropout, out_features=1)
        nn.init.constant_(self.output_bias, float(init))

    @property
    def output_bias(self) -> Tensor:
        """The bias of the final Linear(·, 1): adding to it shifts τ(x) by the same amount for every x."""
        output = self.net[-1]
        assert isinstance(output, nn.Linear)  # mlp(..., out_features=1) ends with that layer
        return output.bias

    def forward(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        h = self.shared_trunk(x) if self.shared_trunk is not None else x
        return self.net(h).squeeze(-1)


class FiniteTau(nn.Module):
    """One free scalar τ_i per training example x_i (the paper's finite-sum variant).

    During training pass ``index=`` (the batch's rows in ``x_train``). For an x without
    an index (unseen inputs, or training inputs at evaluation time) it returns τ of the
    nearest training example in Euclidean distance, which for a training input is its own τ.
    """

    def __init__(self, x_train: Tensor, init: float = 0.0, chunk_size: int = 1024) -> None:
        super().__init__()
        if x_train.dim() != 2 or x_train.shape[0] == 0:
            raise ValueError(f"FiniteTau needs x_train of shape (n ≥ 1, d), got {tuple(x_train.shape)}")
        self.x_train: Tensor
        self.register_buffer("x_train", x_train.detach().clone())
        self.values = nn.Parameter(torch.full((x_train.shape[0],), float(init)))
        self.chunk_size = int(chunk_size)

    def nearest(self, x: Tensor) -> Tensor:
        """Row of the nearest training example for each x, (n,) int64; memory chunk × n_train."""
        rows = [torch.cdist(chunk, self.x_train).argmin(dim=1) for chunk in x.split(self.chunk_size)]
        return torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long, device=x.device)

    def forward(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        if index is None:
            index = self.nearest(x.to(self.x_train.dtype))
        elif index.shape != x.shape[:1]:
            raise ValueError(f"index has shape {tuple(index.shape)}, expected ({x.shape[0]},)")
        return self.values[index]


class ScalarTau(nn.Module):
    """One τ for every x (the self-normalised-likelihood ablation)."""

    def __init__(self, init: float = 0.0) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        return self.value.expand(x.shape[0])


class OffsetTau(nn.Module):
    """τ(x) = b(x) + τ_net(x): a learned correction τ_net on top of an estimate b(x) of the current
    energy's log-partition, computed without gradient (a warm start that moves with g: τ_net only
    learns the residual, so τ never lags far behind log Z while g changes quickly).

    ``offset`` maps x (n, d) → b(x) (n,); it holds the energy by reference, so the energy's
    parameters are not this module's (its state is τ_net's). During training the min-min step
    adds its own offsets (closed form, or leave-one-out importance estimates per draw) to
    ``net``'s output; this module is the τ(x) the fitted model reports."""

    def __init__(self, net: nn.Module, offset: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.net, self.offset = net, offset

    def forward(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        with torch.no_grad():
            base = self.offset(x)
        return self.net(x, index=index) + base.to(x.dtype)


def build_tau(
    kind: str,
    *,
    in_features: int | None = None,
    x_train: Tensor | None = None,
    hidden: int = 128,
    depth: int = 1,
    dropout: float = 0.0,
    trunk: nn.Module | None = None,
    init: float = 0.0,
) -> nn.Module:
    """``neural`` (needs ``in_features``; ``trunk=`` shares features), ``finite`` (needs
    ``x_train``) or ``scalar``; ``init`` is the starting value of τ."""
    if kind == "neural":
        if in_features is None:
            raise ValueError("a neural τ needs in_features")
        return NeuralTau(in_features, hidden, depth, dropout, trunk=trunk, init=init)
    if kind == "finite":
        if x_train is None:
            raise ValueError("a finite τ needs x_train (one τ per training example)")
        return FiniteTau(x_train, init=init)
    if kind == "scalar":
        return ScalarTau(init=init)
    raise unknown_name_error("tau", kind, TAUS)
