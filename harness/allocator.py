"""The C heap of a process that trains: freed blocks stay in it for the next step.

glibc's malloc gives a block larger than its mmap threshold (128 kB at start, raised after
each free of such a block up to 32 MB) fresh pages from the kernel, and hands the top of its
heap back once more than its trim threshold (twice the mmap threshold) lies free there. A
training step at batch 64 allocates and frees the same few megabytes of temporaries every step
(at k = 174 the pairwise coupling U(x) alone is 7.7 MB, a Gibbs sweep's or ICM's chains and a
min-min step's draws several hundred kB), so with those defaults many steps fault their
temporaries in afresh and the kernel zeroes every page of them. PyTorch's CPU tuning guide
swaps in jemalloc or tcmalloc for this, which needs LD_PRELOAD before the process starts and a
library the machine may not have; glibc's own thresholds can be set from inside the process
(``mallopt``) and that is what :func:`keep_freed_memory` does.

Measured with ``ebm-bench run ... --executor serial --stack 1``, once with
``EBM_BENCH_KEEP_FREED_MEMORY=0`` and once without: the throughput benchmark's mini-grid (yeast
and lr-glass, every method, 5 seeds, 300 steps) trains in the same time (79.3 and 79.2 s) and
evaluates in 11.1 → 8.3 s (the sparse models' τ checks over yeast's 2^14 label sets); cal500/pairwise
(perceptron, mcmc-pcd, minmin-logistic-is, 2 seeds, 100 steps) 1-3 % less training, 8-11 % less
evaluation, the same metrics. The price: a process's resident memory no longer shrinks below
its peak until it exits (a run's peak, e.g. an evaluation's enumeration chunks, stays reserved
for the next run of that worker);
``EBM_BENCH_KEEP_FREED_MEMORY=0`` in the environment keeps glibc's defaults. Elsewhere than glibc
(macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

#: the environment variable that turns it off ("0")
SWITCH = "EBM_BENCH_KEEP_FREED_MEMORY"

#: mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: blocks up to this size come from the heap (glibc's largest mmap threshold on 64-bit)
MMAP_THRESHOLD = 32 * 2**20
#: free memory at the top of the heap is handed back to the kernel only beyond this
TRIM_THRESHOLD = 2**30


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's mmap threshold to :data:`MMAP_THRESHOLD` and its trim threshold to
    :data:`TRIM_THRESHOLD` for this process (once; later calls return the first result).
    True when both were set; False where :data:`SWITCH` is ``0``, the C library is not glibc, or
    it refused them."""
    if os.environ.get(SWITCH, "1").strip() == "0":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl has mallopt as a stub)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
