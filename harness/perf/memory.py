"""Benchmark ``memory``: peak memory of exact-mle training at the largest k it accepts
(pairwise model: |Y| = 2^16 by default), next to minmin-logistic at the same k.

How it is measured, and why: torch's CPU tensors come from its own allocator (malloc), which
``tracemalloc`` does not see, and torch keeps no CPU peak statistics. So each contender trains
in a *fresh* spawned process, and we read the kernel's high-water mark of its resident set
(``VmHWM`` in ``/proc/self/status``; ``getrusage`` ``ru_maxrss`` where /proc is absent). That
counts every page the process touched: tensors, autograd buffers, allocator caches, the
interpreter and torch itself. We report the absolute peak (what a machine must have; the
< 2 GiB target applies to it) and the increase over the process's resident size just
before ``fit`` (what training itself costs). On a CUDA device the peak is
``torch.cuda.max_memory_allocated`` instead.
"""

from __future__ import annotations

import resource
from typing import Any

from harness.perf.common import PerfConfig, RowIds, perf_rows

GIB = float(2**30)
METHODS = ("exact-mle", "minmin-logistic")
STEPS = 3


def largest_exact_k(model: str = "pairwise", limit: int = 64) -> int:
    """The largest k at which exact-mle accepts the multilabel ``model`` (its enumeration limit)."""
    from baselines.registry import get_method
    from ebm.spaces import make_space

    method = get_method("exact-mle")
    params = method.params({})
    accepted = [k for k in range(1, limit + 1)
                if method.check(make_space("multilabel", k, model), model, params) is None]
    if not accepted:
        raise RuntimeError(f"exact-mle accepts no multilabel {model} space with k <= {limit}")
    return max(accepted)


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        return None
    return None


def resident_bytes() -> int:
    return _status_bytes("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_resident_bytes() -> int:
    return _status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_fit_memory(method_name: str, k: int, device: str, threads: int, seed: int) -> dict[str, float]:
    """Train ``method_name`` for a few steps (batch 64, pairwise, k labels) in this process and
    return {"peak": bytes, "before": bytes}. Meant to run in a fresh process (see module doc)."""
    import torch

    from baselines.registry import get_method
    from ebm.method import Budget
    from ebm.spaces import make_space
    from harness.perf.common import random_fit_data

    torch.set_num_threads(max(1, threads))
    method = get_method(method_name)
    space = make_space("multilabel", k, "pairwise")
    data = random_fit_data(k, seed=seed)
    budget = Budget(max_steps=STEPS, batch_size=64, eval_every=STEPS + 1)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        data = data.to(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = resident_bytes()
    method.fit(space, "pairwise", data, method.params({}), budget, seed=seed, device=torch.device(device))
    peak = torch.cuda.max_memory_allocated(device) if cuda else peak_resident_bytes()
    return {"peak": float(peak), "before": float(before)}


def in_fresh_process(fn, *args):
    """``fn(*args)`` in a newly spawned Python process (nothing allocated before it counts)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def run(config: PerfConfig) -> tuple[list[dict[str, Any]], list[str]]:
    k = largest_exact_k()
    measured = {name: in_fresh_process(measure_fit_memory, name, k, config.device, config.threads, config.seed)
                for name in METHODS}
    ids: RowIds = {"task": "random-d64", "model": "pairwise", "k": k}
    peak = {name: m["peak"] / GIB for name, m in measured.items()}
    increase = {name: (m["peak"] - m["before"]) / GIB for name, m in measured.items()}
    rows = perf_rows(config, "memory", "peak_memory", "GiB", peak, reference="minmin-logistic", **ids)
    rows += perf_rows(config, "memory", "fit_memory_increase", "GiB", increase, reference="minmin-logistic", **ids)
    what = ("torch.cuda.max_memory_allocated" if config.torch_device.type == "cuda"
            else "peak RSS (VmHWM) of a fresh process")
    return rows, [f"memory: {what}, {STEPS} steps of batch 64 at k={k} (|Y| = {2**k})"]
