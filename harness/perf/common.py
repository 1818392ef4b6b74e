"""What every perf benchmark shares: its settings, interleaved timing, and perf rows.

Every figure ``ebm-bench perf`` reports is a *ratio measured side by side in one process*:
shared machines are noisy, so the things compared are timed in interleaved repetitions
(A B C, B C A, C A B, …: a slow spell hits every contender alike) and each is summarised
by its median. A row's ``ratio`` is its ``value`` divided by the value of
``reference_method`` measured in the same invocation, under the same (task, model, k,
metric); rows without a reference carry no ratio.
"""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict, TypeVar

import torch


@dataclass(frozen=True)
class PerfConfig:
    """Settings of one ``ebm-bench perf`` invocation.

    ``threads``: torch threads while timing (1 = what a harness run gets per CPU by default,
    and the least noisy). ``quick``: fewer repetitions and shorter runs (at most
    ``harness.commands.perf.QUICK_MINUTES`` on an idle 2-core machine).
    """

    quick: bool = False
    device: str = "cpu"
    data_dir: Path | None = None
    threads: int = 1
    seed: int = 0
    #: the tasks whose stored configurations ``protocol`` and ``group_size`` time (None: their default)
    tasks: tuple[str, ...] | None = None
    started_at: datetime = field(default_factory=lambda: _utc_now())
    host: str = field(default_factory=socket.gethostname)

    @property
    def reps(self) -> int:
        """Interleaved repetitions of each timing (medians are taken over them)."""
        return 3 if self.quick else 7

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)


def _utc_now() -> datetime:
    from harness.store import utc_now

    return utc_now()


def synchronize(device: torch.device | str) -> None:
    """Wait for queued accelerator work, so wall-clock timings cover the computation."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device | str = "cpu") -> float:
    """Wall seconds of ``fn()`` (accelerator work included)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


Key = TypeVar("Key", bound=Hashable)
Sample = TypeVar("Sample")


def interleaved(measures: Mapping[Key, Callable[[], Sample]], reps: int) -> dict[Key, list[Sample]]:
    """Call every measure ``reps`` times in rotating order (rep r starts at contender r mod n),
    so drifts in machine speed spread evenly over the contenders. Returns the samples."""
    keys = list(measures)
    samples: dict[Key, list[Sample]] = {key: [] for key in keys}
    for rep in range(reps):
        shift = rep % max(len(keys), 1)
        for key in keys[shift:] + keys[:shift]:
            samples[key].append(measures[key]())
    return samples


def median(values: Iterable[float | None]) -> float:
    present = [v for v in values if v is not None and v == v]  # drop missing and NaN
    return statistics.median(present) if present else float("nan")


#: repetitions whose ratios to the reference differ by more than this factor are flagged
UNSTABLE_SPREAD = 2.0


def is_unstable(ratio_spread: float | None) -> bool:
    """A ratio whose repetitions disagree by more than :data:`UNSTABLE_SPREAD` (None or NaN: no
    repetitions to compare): the machine was busy, the ratio is not to be trusted."""
    return ratio_spread is not None and ratio_spread == ratio_spread and ratio_spread > UNSTABLE_SPREAD


def spread(values: Iterable[float | None]) -> float | None:
    """max / min of positive finite repetitions (1.0 = they agree); None with fewer than two."""
    usable = [v for v in values if v is not None and v == v and 0 < v < float("inf")]
    return max(usable) / min(usable) if len(usable) >= 2 else None


class RowIds(TypedDict):
    """What a perf row is about (``perf_rows``' keyword arguments, passed as ``**ids``)."""

    task: str | None
    model: str | None
    k: int | None


def perf_rows(config: PerfConfig, benchmark: str, metric: str, unit: str,
              values: Mapping[str, float | None | list[float] | list[float | None]], *, reference: str | None = None,
              task: str | None = None, model: str | None = None, k: int | None = None) -> list[dict[str, Any]]:
    """One row per contender of a side-by-side measurement.

    ``values`` holds a number, or the list of a contender's interleaved repetitions (then the
    row's ``value`` is their median, ``spread`` their max / min and ``n_repeats`` their count).
    ``ratio = value / values[reference]`` (None without a reference, or when the reference is
    missing, zero or not finite); with repetitions, ``ratio_spread`` is the max / min of the
    per-repetition ratios (repetition r of a contender against repetition r of the reference),
    and a ratio whose repetitions disagree by more than :data:`UNSTABLE_SPREAD` is flagged
    by the printed table."""
    if reference is not None and reference not in values:
        raise ValueError(f"{benchmark}: reference {reference!r} was not measured (have {sorted(values)})")
    samples: dict[str, list[float | None] | None] = {}
    medians: dict[str, float | None] = {}
    for name, v in values.items():
        if isinstance(v, (list, tuple)):
            samples[name], medians[name] = list(v), median(v)
        else:
            samples[name], medians[name] = None, v
    ref_value = medians.get(reference) if reference is not None else None
    if ref_value is None or ref_value != ref_value or ref_value in (0.0, float("inf")):
        ref_value = None  # no usable reference: no ratios
    ref_samples = samples.get(reference) if reference is not None else None
    rows = []
    for method, value in medians.items():
        ratio = value / ref_value if ref_value is not None and value is not None else None
        method_samples = samples[method]
        ratio_spread = None
        if ratio is not None and method_samples is not None and ref_samples is not None:
            ratio_spread = spread(a / b for a, b in zip(method_samples, ref_samples)
                                  if a is not None and b is not None and b > 0)
        rows.append({"benchmark": benchmark, "task": task, "model": model, "method": method, "k": k,
                     "metric": metric, "value": value, "unit": unit,
                     "reference_method": reference if ratio is not None else None, "ratio": ratio,
                     "spread": spread(method_samples) if method_samples is not None else None,
                     "ratio_spread": ratio_spread,
                     "n_repeats": len(method_samples) if method_samples is not None else None,
                     "host": config.host, "started_at": config.started_at})
    return rows


def random_fit_data(k: int, *, n: int = 1024, d: int = 64, seed: int = 0, density: float = 0.3):
    """A :class:`~ebm.method.FitData` of standard-normal features and Bernoulli(``density``)
    label sets: per-step cost depends on shapes only, not on what the data mean."""
    from ebm.method import FitData

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator)
    y = (torch.rand(n, k, generator=generator) < density).float()
    return FitData(x, y, x[:64], y[:64])


class Threads:
    """Context manager: torch uses ``n`` threads inside, the previous number after."""

    def __init__(self, n: int) -> None:
        self.n, self.previous = max(1, int(n)), torch.get_num_threads()

    def __enter__(self) -> Threads:
        self.previous = torch.get_num_threads()
        torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc: Any) -> None:
        torch.set_num_threads(self.previous)
