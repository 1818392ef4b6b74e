"""Helpers shared by the harness tests (not a test module)."""

from __future__ import annotations

from pathlib import Path

FIXTURE_SUITE = """
[suite]
name = "fixture"
seeds = {seeds}
tune_trials = {trials}

[budget]
max_steps = {steps}
batch_size = 16
eval_every = {eval_every}

[[grid]]
tasks = ["syn-ising-k8"]
models = ["unary"]
methods = {methods}
params = {params}
"""


def write_suite(directory: Path, *, methods=("test-constant",), seeds: int = 1, trials: int = 0, steps: int = 20,
                eval_every: int = 10, params: str = "{}", name: str = "suite.toml") -> Path:
    path = Path(directory) / name
    methods_toml = "[" + ", ".join(f'"{m}"' for m in methods) + "]"
    path.write_text(FIXTURE_SUITE.format(seeds=seeds, trials=trials, steps=steps, eval_every=eval_every,
                                         methods=methods_toml, params=params))
    return path


def serial_options(results_dir, **kw):
    """RunOptions for an in-process (serial) run without a progress display."""
    from harness.commands.run import RunOptions

    return RunOptions(results_dir=results_dir, executor="serial", progress=False, **kw)
