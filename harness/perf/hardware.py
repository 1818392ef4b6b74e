"""Benchmark ``flops``: achieved FLOP/s of the batched energy evaluation that exact methods
run on every step, against plain torch matmuls on the same machine.

Contender: exact-mle's scoring of n = 64 inputs against all |Y| = 2^16 label sets (k = 16,
rank r = 4): ``baselines.exact.enumerated_scores`` — ``PairwiseEnergy.score(h, Y_chunk,
shared=True)`` chunk by chunk (exact's default chunk size), pure GEMMs — without autograd.
Its FLOPs are counted from the algorithm (:func:`pairwise_shared_flops`).
References: one matmul (|Y|, k) @ (k, n·(2 + 2r)) — the *same* GEMM work in one call, as
skinny as the energy's — and a square 1024³ matmul (what the machine's BLAS peaks at).
Timed without autograd, in interleaved repetitions, median.
"""

from __future__ import annotations

from functools import partial
from typing import Any, cast

import torch

from harness.perf.common import PerfConfig, RowIds, Threads, interleaved, perf_rows, timed

N, K, RANK, IN_FEATURES, SQUARE = 64, 16, 4, 64, 1024


def pairwise_shared_flops(n: int, m: int, k: int, rank: int) -> float:
    """Floating-point operations of the shared-candidate pairwise score of n inputs × m candidates:
    u·yᵀ and diag(ABᵀ)·(y²)ᵀ (2nmk each), yA and yB (2mk·nr each), yᵀU₀y (2mk² + 2mk),
    Σ_r (yA)(yB) (2mnr) and the combination of the terms (4nm)."""
    return 2 * n * m * k * (2 + 2 * rank) + 2 * m * k * k + 2 * m * k + 2 * m * n * rank + 4 * n * m


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
    enumeration = Enumeration.of(space, EXACT_DEFAULTS["chunk_size"], device)
    m = space.size
    x = torch.randn(N, IN_FEATURES, generator=generator).to(device)
    a = torch.randn(m, K, generator=generator).to(device)
    b = torch.randn(K, N * (2 + 2 * RANK), generator=generator).to(device)
    square = torch.randn(SQUARE, SQUARE, generator=generator).to(device)
    work = {"pairwise-energy": pairwise_shared_flops(N, m, K, RANK),
            "matmul-same-shape": 2.0 * m * K * b.shape[1], "matmul-1024^3": 2.0 * SQUARE**3}
    with torch.no_grad(), Threads(config.threads):
        h = energy.features(x)
        calls = {"pairwise-energy": lambda: enumerated_scores(energy, h, enumeration),
                 "matmul-same-shape": lambda: a @ b, "matmul-1024^3": lambda: square @ square}
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
    note = (f"flops: n={N} inputs × |Y|={m} label sets (k={K}, rank {RANK}, chunks of {EXACT_DEFAULTS['chunk_size']}), "
            f"{work['pairwise-energy'] / 1e9:.2f} GFLOP per evaluation, {config.threads} thread(s)")
    return rows, [note]
