"""Benchmark ``dropout``: ebm's dropout (:func:`ebm.energies.dropout`, masks from 16-bit quarters of
random words) against ``torch.nn.functional.dropout`` (one Bernoulli draw per element), forward
and backward, side by side.

Every tuned network drops in each trunk block (``ebm.energies.mlp``; the suites tune p in
[0, 0.3]), in g and, for min-min, in τ. Cases, at batch 64 and p = 0.13: the op on activations of
width 128 and 256, and on a stacked group's (10 members × 64 × 256, the op's shape inside a
vmapped step); and lr-vowel's tuned trunk (3 blocks Linear → ReLU → Dropout of width 256 on its
10 features) built once with each dropout, the same weights. The figure is microseconds per
forward + backward, timed in interleaved repetitions (median); rows ``us_per_call`` of ``ebm``
relative to ``torch``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from harness.perf.common import PerfConfig, Threads, interleaved, perf_rows, synchronize

P = 0.13
BATCH = 64
#: (name, activation shape) of the op cases
OP_SHAPES: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("op", (BATCH, 128)), ("op", (BATCH, 256)), ("op-stacked-10", (10, BATCH, 256)))
#: lr-vowel's tuned trunk: in_features, width, depth
TRUNK = (10, 256, 3)


def _per_call(call: Callable[[], Any], calls: int, device: torch.device) -> float:
    """Microseconds per ``call()`` over ``calls`` calls."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        call()
    synchronize(device)
    return 1e6 * (time.perf_counter() - start) / calls


def _forward_backward(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                      grad: torch.Tensor) -> Callable[[], None]:
    def call() -> None:
        forward(x).backward(grad)
        x.grad = None

    return call


def _torch_trunk(trunk: nn.Sequential) -> nn.Sequential:
    """A copy of ``trunk`` (same weights) whose dropout layers are ``torch.nn.Dropout``."""
    other = copy.deepcopy(trunk)
    for index, layer in enumerate(other):
        if isinstance(layer, nn.Dropout):
            other[index] = nn.Dropout(layer.p)
    return other


def run(config: PerfConfig) -> tuple[list[dict[str, Any]], list[str]]:
    import torch.nn.functional as F

    from ebm.energies import dropout, mlp

    device = config.torch_device
    generator = torch.Generator().manual_seed(config.seed)
    cases: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor],
                           tuple[int, ...]]] = {}
    for name, op_shape in OP_SHAPES:
        cases[f"{name} {'x'.join(map(str, op_shape))}"] = (
            lambda x: F.dropout(x, P, training=True), lambda x: dropout(x, P, training=True), op_shape)
    in_features, width, depth = TRUNK
    trunk = mlp(in_features, width, depth, P).to(device).train()
    cases[f"mlp-{depth}x{width} {BATCH}x{in_features}"] = (_torch_trunk(trunk), trunk, (BATCH, in_features))
    seconds_per_sample = 0.05 if config.quick else 0.2
    rows: list[dict[str, Any]] = []
    with Threads(config.threads):
        for case, (torch_forward, ebm_forward, shape) in cases.items():
            x = torch.randn(shape, generator=generator).to(device).requires_grad_()
            out_shape = ebm_forward(x).shape
            grad = torch.randn(out_shape, generator=generator).to(device)
            contenders = {"torch": _forward_backward(torch_forward, x, grad),
                          "ebm": _forward_backward(ebm_forward, x, grad)}
            pilot = _per_call(contenders["torch"], 20, device)
            calls = max(20, round(1e6 * seconds_per_sample / max(pilot, 1.0)))
            samples = interleaved({name: partial(_per_call, call, calls, device)
                                   for name, call in contenders.items()}, config.reps)
            rows += perf_rows(config, "dropout", "us_per_call", "µs", samples, reference="torch", task=case)
    note = f"dropout: p = {P}, forward + backward, {config.threads} thread(s), on {device}"
    return rows, [note]
