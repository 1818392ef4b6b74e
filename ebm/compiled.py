"""Site loops compiled for the CPU (numba): the sequential loops over labels that no tensor
operation expresses, where at batch 64 a dispatched operation (~1 µs in NumPy, ~3 µs in torch)
costs more than the arithmetic it does.

Each kernel is written here as plain Python over NumPy arrays, compiled on first use
(:func:`kernel`, ``numba.njit(cache=True)``: the machine code is cached on disk, so a new process
loads it instead of compiling again) and called on arrays that share the tensors' memory. numba
is imported only there, the first time a kernel is needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import Any


def icm_sweeps(fields, labels, rows, chains_per_input: int, max_sweeps: int) -> None:
    """Iterated conditional modes in place (see :func:`ebm.inference.icm`), chain by chain.

    ``fields`` F (N, k) and ``labels`` y (N, k), of one float dtype, of N = n · C chains, input-major;
    ``rows`` U (n, k, k), symmetric with a zero diagonal, or (1, k, k) when every input has the same U
    (:func:`shared_rows`); chain c belongs to input c // C. Site by site,
    a chain whose best y_i (F_i > 0) is not its label flips it by δ = ±1 and adds δ U_i to its
    fields (U_ii = 0: F_i stays); sweeps until one changes nothing or ``max_sweeps``.

    Every product is ±1 · U_ij, exact, and each field receives the same additions in the same
    order as the tensor loop's, so the states are the same bits (tests/test_inference.py)."""
    n_chains, k = fields.shape
    rows_per_input = 1 if rows.shape[0] > 1 else 0  # input c // C reads U[(c // C) · rows_per_input]
    for _ in range(max_sweeps):
        changed = False
        for i in range(k):
            for chain in range(n_chains):
                label = labels[chain, i]
                if (fields[chain, i] > 0) != (label != 0):
                    step = 1 - 2 * label  # +1 where 0 → 1, −1 where 1 → 0 (exact)
                    row = rows[(chain // chains_per_input) * rows_per_input, i]
                    for j in range(k):
                        fields[chain, j] += step * row[j]
                    labels[chain, i] = label + step
                    changed = True
        if not changed:  # a full sweep that changed nothing: every chain is at a local optimum
            break


def gibbs_sweep_sites(labels, couplings, unary, rows, site_logits, chains_per_input: int, noise) -> None:
    """One systematic-scan Gibbs sweep in place (see :func:`ebm.samplers.gibbs_sweep`), chain by chain.

    ``labels`` y (N, k) and ``couplings`` S = yU (N, k), of one float dtype, of N = n · C chains,
    input-major; ``unary`` u (n, k), ``rows`` U (n, k, k) (symmetric, zero diagonal; (1, k, k): one U
    for every input, :func:`shared_rows`), ``site_logits``
    logit π (k,); chain c belongs to input c // C; ``noise`` ν (k, N) in U(0, 1), site-major. Site i of chain c
    becomes y_i = [ν_ic < σ(Δ_ic)], Δ_i = u_i + S_i + logit π_i, and where it changes by δ = ±1,
    S += δ U_i (U_ii = 0: S_i stays). Δ is summed in that dtype as the tensor loop sums it; S is kept
    up to date rather than summed afresh per site, so it differs from the tensor loop's fresh
    Σ_j U_ij y_j in the last bits (a decision changes only where ν lies that close to σ(Δ))."""
    n_chains, k = labels.shape
    rows_per_input = 1 if rows.shape[0] > 1 else 0
    for i in range(k):
        for chain in range(n_chains):
            source = chain // chains_per_input
            delta = unary[source, i] + couplings[chain, i] + site_logits[i]
            new = 1.0 if noise[i, chain] < 1.0 / (1.0 + math.exp(-delta)) else 0.0
            step = new - labels[chain, i]
            if step != 0:
                row = rows[source * rows_per_input, i]
                for j in range(k):
                    couplings[chain, j] += step * row[j]
                labels[chain, i] = new


def shared_rows(coupling):
    """U (n, k, k) as the kernels' ``rows``: (1, k, k) when it is one matrix expanded over the inputs
    (stride 0 along n: the pairwise energy at rank 0), so that the (n, k, k) copy a contiguous array
    would need is never made (k = 174, n = 64: 7.7 MB a call); else U contiguous. Torch in, NumPy out."""
    rows = coupling[:1] if coupling.shape[0] > 1 and coupling.stride(0) == 0 else coupling
    return rows.contiguous().numpy()


@cache
def kernel(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (one of this module's) compiled, once per process."""
    import numba

    return numba.njit(cache=True, nogil=True)(function)
