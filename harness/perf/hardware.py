"""Benchmark ``flops``: achieved FLOP/s of the batched energy evaluation that exact methods
run on every step, against plain torch matmuls on the same machine.

Contender: exact-mle's scoring of n = 64 inputs against all |Y| = 2^16 label sets (k = 16,
rank r = 4): ``baselines.exact.enumerated_scores`` — the pairwise energy's weights
w(h) = [u, (U_ij)_{i<j}] (d = k + k(k − 1)/2 = 136) against φ(Y) = [y, (y_i y_j)_{i<j}], one GEMM
(n, d) @ (d, |Y|) — without autograd. Its FLOPs are counted from the algorithm
(:func:`pairwise_enumeration_flops`). References: one matmul of the same shape with random
operands — the same GEMM work in one call — and a square 1024³ matmul (what the machine's BLAS
peaks at). Timed without autograd, in interleaved repetitions, median.
"""

from __future__ import annotations

from functools import partial
from typing import Any, cast

import torch

from harness.perf.common import PerfConfig, RowIds, Threads, interleaved, perf_rows, timed

N, K, RANK, IN_FEATURES, SQUARE = 64, 16, 4, 64, 1024


def pairwise_enumeration_flops(n: int, m: int, k: int, rank: int) -> float:
    """Floating-point operations of scoring n inputs × all m label sets of a pairwise energy by its
    label features: the weights from the heads' outputs u, A, B (the linear heads on h, like the
    trunk, are not counted; ABᵀ and BAᵀ: 2·2nk²r; their sum, scaling and sym(U₀): 3nk²) and the
    GEMM w φ(Y)ᵀ, 2nm·d with d = k + k(k − 1)/2."""
    d = k + k * (k - 1) // 2
    return 4 * n * k * k * rank + 3 * n * k * k + 2 * n * m * d


def run(config: PerfConfig) -> tuple[list[dict[str, Any]], list[str]]:
    from baselines.exact import EXACT_DEFAULTS, Enumeration, enumerated_scores
    from ebm.energies import PairwiseEnergy, build_energy
    from ebm.spaces import make_space

    device = config.torch_device
    generator = torch.Generator().manual_seed(config.seed)
    space = make_space("multilabel", K, "pairwise")
    # build_energy is typed Energy; the "pairwise" model is a PairwiseEnergy (its coupling is set below)
    energy = cast(PairwiseEnergy, build_energy(space, "pairwise", IN_FEATURES, rank=RANK).to(device).eval())
    with torch.no_grad():  # a trained-looking coupling (zeros would not change the work, but be honest)
        energy.coupling.normal_(generator=generator)
    enumeration = Enumeration.of(space, EXACT_DEFAULTS["chunk_size"], device, energy)
    if enumeration.features is None:
        raise RuntimeError("flops: the pairwise energy's enumeration has no label features to score against")
    m, d = enumeration.features.shape
    x = torch.randn(N, IN_FEATURES, generator=generator).to(device)
    a = torch.randn(N, d, generator=generator).to(device)
    b = torch.randn(m, d, generator=generator).to(device)
    square = torch.randn(SQUARE, SQUARE, generator=generator).to(device)
    work = {"pairwise-energy": pairwise_enumeration_flops(N, m, K, RANK),
            "matmul-same-shape": 2.0 * N * m * d, "matmul-1024^3": 2.0 * SQUARE**3}
    with torch.no_grad(), Threads(config.threads):
        h = energy.features(x)
        calls = {"pairwise-energy": lambda: enumerated_scores(energy, h, enumeration),
                 "matmul-same-shape": lambda: a @ b.T, "matmul-1024^3": lambda: square @ square}
        for call in calls.values():  # warm-up (allocator, BLAS dispatch)
            timed(call, device)
        samples = interleaved({name: partial(timed, call, device) for name, call in calls.items()},
                              2 * config.reps + 1)
    # GFLOP/s of each repetition (the rows keep their median and spread)
    gflops = {name: [work[name] / seconds / 1e9 for seconds in samples[name]] for name in calls}
    ids: RowIds = {"task": None, "model": "pairwise", "k": K}
    rows = perf_rows(config, "flops", "gflops", "GFLOP/s", gflops, reference="matmul-same-shape", **ids)
    rows += perf_rows(config, "flops", "gflops", "GFLOP/s",
                      {"pairwise-energy": gflops["pairwise-energy"], "matmul-1024^3": gflops["matmul-1024^3"]},
                      reference="matmul-1024^3", **ids)[:1]
    note = (f"flops: n={N} inputs × |Y|={m} label sets (k={K}, rank {RANK}, {d} label features), "
            f"{work['pairwise-energy'] / 1e9:.2f} GFLOP per evaluation, {config.threads} thread(s)")
    return rows, [note]
