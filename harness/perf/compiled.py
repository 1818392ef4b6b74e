"""Benchmark ``compile``: a stacked group's fit with its step through ``torch.compile`` against the
same fit eager (:func:`ebm.stacking.fit_stacked`'s ``compile_step``), compile time included.

Issue 15 asks whether compiling the stacked step pays on CPU. Each figure is the wall seconds of
one whole fit of :data:`MEMBERS` stacked members (setup, compilation, every step), each in a
fresh Python process, so that no compiled graph is left in memory from an earlier fit:

* ``eager``: as the harness trains;
* ``compiled``: with an empty on-disk compile cache (``TORCHINDUCTOR_CACHE_DIR`` a new folder):
  what the first group of a configuration pays;
* ``compiled-warm``: with the cache an earlier compiled fit of the same case filled: what a later
  group of the same shapes pays (dynamo still traces; inductor's kernels come from the cache).

Cases (random features, d = 103, as ``stacking``): ``bce`` on the unary model (k = 14) and
``exact-mle`` on the permutahedron (k = 6, 720 rankings enumerated), whose steps draw nothing and
compile to one graph; ``minmin-logistic`` on the unary model, whose draws take a
``torch.Generator``, which dynamo does not trace: the graph breaks there. :data:`STEPS` steps
(the protocol's groups stop near there under patience; ``--quick``: :data:`QUICK_STEPS`, and the
first case only: a cold compilation alone takes 10-20 s), no evaluation. Rows ``fit_seconds``
(the whole fit) and ``ms_per_step`` (its second half's steps, compiled by then) of
``<method>[stacked=5,compiled]`` relative to ``<method>[stacked=5]`` (eager).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from harness.perf.common import PerfConfig, interleaved, perf_rows

MEMBERS = 5
STEPS, QUICK_STEPS = 1000, 100
#: (kind, model, k, method)
CASES: tuple[tuple[str, str, int, str], ...] = (
    ("multilabel", "unary", 14, "bce"),
    ("ranking", "permutahedron", 6, "exact-mle"),
    ("multilabel", "unary", 14, "minmin-logistic"),
)


def fit_seconds(kind: str, model: str, k: int, name: str, steps: int, compile_step: bool,
                threads: int) -> tuple[float, float]:
    """Wall seconds of one stacked fit of :data:`MEMBERS` members (in this process), and the
    milliseconds per step of its second half (compilation done: member 0's monitor notes the
    clock at the half and at the end)."""
    import time

    import torch

    from baselines.registry import get_method
    from ebm.method import Budget, Fitted, Progress
    from ebm.spaces import make_space
    from ebm.stacking import Member, fit_stacked
    from ebm.training import StepMethod
    from harness.perf.stacking import member_data

    torch.set_num_threads(threads)
    method, space = get_method(name), make_space(kind, k, model)
    if not isinstance(method, StepMethod):
        raise TypeError(f"compile benchmark: {name} does not train by steps")
    marks: list[float] = []

    def clock(progress: Progress, model: Fitted) -> bool:
        marks.append(time.perf_counter())
        return False  # go on

    members = [Member(member_data(kind, k, seed), seed, clock if seed == 0 else None) for seed in range(MEMBERS)]
    budget = Budget(max_steps=steps, batch_size=64, eval_every=steps // 2)
    start = time.perf_counter()
    outcomes = fit_stacked(method, space, model, members, method.params({}), budget, device="cpu",
                           compile_step=compile_step)
    seconds = time.perf_counter() - start
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    if failed:
        raise RuntimeError(f"compile benchmark: {name} failed: {failed[0]}")
    return seconds, 1e3 * (marks[1] - marks[0]) / (steps - steps // 2)


def _in_fresh_process(case: tuple[str, str, int, str], steps: int, compile_step: bool, threads: int,
                      cache_dir: Path) -> tuple[float, float]:
    """:func:`fit_seconds` in a new interpreter whose compile cache is ``cache_dir``."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache_dir), "PYTHONPATH": os.pathsep.join(sys.path)}
    arguments = json.dumps([*case, steps, compile_step, threads])
    done = subprocess.run([sys.executable, "-m", "harness.perf.compiled", arguments], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"compile benchmark: the fit of {case[3]} on {case[1]} failed: {tail}")
    fit, per_step = json.loads(done.stdout.strip().splitlines()[-1])
    return float(fit), float(per_step)


def _cold(timing: Callable[..., tuple[float, float]], scratch: Path) -> tuple[float, float]:
    """A compiled fit with a compile cache no fit used before (a new folder under ``scratch``)."""
    return timing(compile_step=True, cache_dir=Path(tempfile.mkdtemp(prefix="cold-", dir=scratch)))


def run(config: PerfConfig) -> tuple[list[dict[str, Any]], list[str]]:
    if config.torch_device.type != "cpu":
        return [], ["compile: measured on CPU only (the question of issue 15); skipped on " + config.device]
    steps = QUICK_STEPS if config.quick else STEPS
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ebm-bench-compile-") as scratch:
        root = Path(scratch)
        for index, case in enumerate(CASES[:1] if config.quick else CASES):
            kind, model, k, name = case
            warm = root / f"warm-{index}"
            _in_fresh_process(case, steps, True, config.threads, warm)  # fills the warm cache; a warm-up
            timing = partial(_in_fresh_process, case, steps, threads=config.threads)
            contenders = {
                f"{name}[stacked={MEMBERS}]": partial(timing, compile_step=False, cache_dir=root / "unused"),
                f"{name}[stacked={MEMBERS},compiled]": partial(_cold, timing, root),
                f"{name}[stacked={MEMBERS},compiled-warm]": partial(timing, compile_step=True, cache_dir=warm),
            }
            samples = interleaved(contenders, max(config.reps // 2, 2))
            reference = f"{name}[stacked={MEMBERS}]"
            for position, (metric, unit) in enumerate((("fit_seconds", "s"), ("ms_per_step", "ms"))):
                values = {label: [sample[position] for sample in repetitions] for label, repetitions in samples.items()}
                rows += perf_rows(config, "compile", metric, unit, values, reference=reference, task="random-d103",
                                  model=model, k=k)
    note = (f"compile: one stacked fit of {MEMBERS} members, {steps} steps of batch 64, each in a fresh process "
            f"({config.threads} thread(s)); compiled = torch.compile of the vmapped step, its time included")
    return rows, [note]


if __name__ == "__main__":  # one timing, in the process _in_fresh_process started
    kind_, model_, k_, name_, steps_, compile_, threads_ = json.loads(sys.argv[1])
    print(json.dumps(fit_seconds(kind_, model_, int(k_), name_, int(steps_), bool(compile_), int(threads_))))
