"""One run → one result record. Runs in a Ray worker or in-process (serial executor).

:func:`execute_run` never raises: an exception becomes a ``failed`` row with its message
and a short traceback, :class:`ebm.method.Diverged` a ``diverged`` row, training cut by
``--timeout-per-run`` (the budget's ``max_seconds``) a ``timeout`` row that still carries the
metrics of the model as it was. Hard kills (a hung run, a dead worker) are turned into rows
by the driver with :func:`failure_row`.

Metrics (all on dataset labels, via :mod:`tasks.metrics`):
  * ``val_*`` / ``test_*``: prediction metrics of the mode ``argmax_y g(x, y) + log q(y)``;
  * ``test_nll`` = mean_i −log p(y_i|x_i); ``test_nll_stderr`` = sqrt(Σ_i se_i²)/n, the
    Monte-Carlo error of that mean (0 where log Z is exact);
  * ``tau_mae`` = mean |τ(x) − τ*(x)| on ≤ 256 test inputs for methods that learn τ, where
    τ* is the minimiser of τ + E_q f*(g − τ) (= log Z(x) for the KL divergence);
  * ``kl_to_truth`` (synthetic tasks) = E_x E_{y~p_true}[log p_true(y|x) + nll_model(x, y)],
    Monte Carlo over ``KL_SAMPLES`` truth samples for ≤ 256 test inputs.
"""

from __future__ import annotations

import json
import math
import platform
import socket
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from harness.allocator import keep_freed_memory
from harness.records import RunRecord, Status
from tasks.metrics import direction, get_metric

TAU_INPUTS = 256
KL_INPUTS = 256
KL_SAMPLES = 32
#: validation examples scored at each curve point (the final validation metrics use all)
CURVE_VAL_LIMIT = 512
TRACEBACK_CHARS = 2000


@dataclass
class RunResult:
    record: RunRecord
    curves: list[dict[str, Any]] = field(default_factory=list)
    #: (step, validation primary metric) at each evaluation point, for the tuner
    intermediate: list[tuple[int, float]] = field(default_factory=list)

    @property
    def row(self) -> dict[str, Any]:
        """The record as the store's row dict."""
        return self.record.to_row()


def versions() -> dict[str, str]:
    from importlib import metadata

    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    try:
        out["ebm-bench"] = metadata.version("ebm-bench")
    except metadata.PackageNotFoundError:
        out["ebm-bench"] = "source"
    return out


def base_record(run) -> RunRecord:
    """The identity columns every row of a planned run carries, whatever its outcome."""
    spec = run.spec
    return RunRecord(
        run_id=run.run_id, suite=spec.suite, task=spec.task, space=run.space, k=run.k,
        model=spec.model, method=spec.method, seed=spec.seed, torch_seed=spec.torch_seed,
        fold=spec.fold, params_json=json.dumps(spec.params, sort_keys=True),
        budget_json=json.dumps(spec.budget, sort_keys=True), tuned=spec.tuned,
        primary_metric=run.primary_metric, config_hash=spec.config_hash, config=run.config,
        host=socket.gethostname(),
    )


def failure_record(run, status: Status | str, message: str | None, *, started_at: datetime | None = None,
                   attempts: int | None = None) -> RunRecord:
    """The record of a run that produced no result of its own (plan-time skip, timeout, dead worker)."""
    from harness.store import utc_now

    now = utc_now()
    record = base_record(run)
    record.status, record.error = Status(status), message
    record.started_at, record.finished_at, record.attempts = started_at or now, now, attempts
    return record


def pick_device(gpus: float) -> str:
    """cuda when this run was given a GPU and one is visible, else cpu (never hard-coded)."""
    import torch

    return "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"


def _check_finite(name: str, x: np.ndarray) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"task {name!r}: features contain NaN/inf ({int(bad.sum())} values; "
                         f"first at row {i}, column {j})")


def is_worse(value: float, threshold: float, direction: str) -> bool:
    """True when ``value`` is strictly worse than ``threshold`` (NaN is worst)."""
    if value is None or math.isnan(value):
        return True
    return value < threshold if direction == "max" else value > threshold


class _Evaluator:
    """Metrics of a fitted model on one split (dataset labels in, floats out)."""

    def __init__(self, kind: str, space, x, labels: np.ndarray, y, seed: int):
        self.kind, self.space, self.x, self.labels, self.y, self.seed = kind, space, x, labels, y, seed

    def head(self, n: int) -> _Evaluator:
        return _Evaluator(self.kind, self.space, self.x[:n], self.labels[:n], self.y[:n], self.seed)

    def prediction(self, fitted) -> dict[str, float]:
        from tasks.metrics import multilabel_metrics, ranking_metrics

        predicted = self.space.to_labels(fitted.predict(self.x).cpu())
        score = multilabel_metrics if self.kind == "multilabel" else ranking_metrics
        return score(self.labels, predicted)

    def log_partition(self, fitted):
        """log Z(x) of this split's inputs and its stderr, as :meth:`nll` estimates it (the same draws)."""
        import torch

        generator = torch.Generator(device=self.x.device).manual_seed(self.seed)
        return fitted.log_partition(self.x, generator=generator)

    def nll(self, fitted, log_z=None) -> dict[str, float]:
        """Mean NLL and its stderr; ``log_z``: :meth:`log_partition`'s result when already computed."""
        import torch

        values, stderr = fitted.nll(self.x, self.y, log_z=self.log_partition(fitted) if log_z is None else log_z)
        n = values.shape[0]
        return {"nll": float(values.mean()), "nll_stderr": float(torch.sqrt((stderr.double() ** 2).sum()) / n)}

    def primary(self, fitted, metric: str) -> float:
        return self.family(fitted, metric)[metric]

    def family(self, fitted, metric: str) -> dict[str, float]:
        """The values of ``metric``'s family (prediction or nll) on this split."""
        from tasks.metrics import get_metric

        return self.nll(fitted) if get_metric(metric).family == "nll" else self.prediction(fitted)


class CurveMonitor:
    """Records the training curve (train objective; validation primary metric), returns the
    validation value as an :class:`ebm.method.Evaluation` (the training loop keeps the best
    model), and stops training when that value is worse than the tuner's pruning threshold."""

    def __init__(self, run_id: str, metric: str, val: _Evaluator | None, thresholds: dict[int, float] | None):
        self.run_id, self.metric, self.val = run_id, metric, val
        self.thresholds = thresholds or {}
        self.direction = direction(metric)
        self.curves: list[dict[str, Any]] = []
        self.intermediate: list[tuple[int, float]] = []
        self.pruned_at: int | None = None
        self.last_step = 0

    def _point(self, progress, split: str, metric: str, value: float) -> dict[str, Any]:
        return {"run_id": self.run_id, "step": progress.step, "seconds": progress.seconds,
                "energy_evals": progress.energy_evals, "split": split, "metric": metric, "value": value}

    def __call__(self, progress, model):
        from ebm.method import Evaluation

        self.last_step = progress.step
        self.curves.append(self._point(progress, "train", "objective", progress.train_objective))
        maximize = self.direction == "max"
        if self.val is None:
            return Evaluation(None, maximize)
        value = self.val.primary(model, self.metric)
        self.curves.append(self._point(progress, "val", self.metric, value))
        self.intermediate.append((progress.step, value))
        threshold = self.thresholds.get(progress.step)
        if threshold is not None and is_worse(value, threshold, self.direction):
            self.pruned_at = progress.step
            return Evaluation(value, maximize, stop=True)
        return Evaluation(value, maximize)


def tau_error(fitted, x, log_z=None) -> tuple[float | None, list[tuple[float, float]]]:
    """mean |τ(x) − τ*(x)| and, for KL, the (τ(x_i), log Z(x_i)) pairs (for the τ plot).
    τ* = log Z(x) for KL (``log_z``: its estimate for these x when already computed, e.g. the
    NLL's); for other divergences the exact minimiser (small spaces only).
    An audit: computed without a graph (a stacked member's modules still require grad)."""
    import torch

    with torch.no_grad():
        return _tau_error(fitted, x, log_z)


def _tau_error(fitted, x, log_z=None) -> tuple[float | None, list[tuple[float, float]]]:
    tau = fitted.tau_estimate(x)
    if tau is None:
        return None, []
    divergence, space = fitted.divergence, fitted.space  # the method's space: its prior may differ
    if divergence == "kl":
        target = fitted.log_partition(x)[0] if log_z is None else log_z
    elif space.size <= 2**16:
        from ebm.inference import enumerate_scores
        from ebm.objective import optimal_tau

        log_q = space.log_prior(space.enumerate_all(device=x.device))
        target = optimal_tau(enumerate_scores(fitted.energy, space, x), log_q, divergence)
    else:
        return None, []
    tau, target = tau.reshape(-1).double().cpu(), target.reshape(-1).double().cpu()
    pairs = list(zip(tau.tolist(), target.tolist())) if divergence == "kl" else []
    return float((tau - target).abs().mean()), pairs


def tau_curve_rows(run_id: str, pairs: list[tuple[float, float]]) -> list[dict[str, Any]]:
    """Curves rows ``split="tau"``: for test input i (as ``step``), metric ``tau`` and ``logz``."""
    rows = []
    for i, (tau, logz) in enumerate(pairs):
        for metric, value in (("tau", tau), ("logz", logz)):
            rows.append({"run_id": run_id, "step": i, "seconds": None, "energy_evals": None,
                         "split": "tau", "metric": metric, "value": value})
    return rows


def kl_to_truth(fitted, space, truth, x_np: np.ndarray, x, seed: int) -> float:
    """Monte-Carlo KL(p_true ‖ p_model) averaged over inputs (see module docstring)."""
    import torch

    rng = np.random.default_rng(seed)
    samples = truth.sample(x_np, KL_SAMPLES, rng)                   # (n, S, k) dataset labels
    n, s = samples.shape[:2]
    flat = samples.reshape(n * s, -1)
    x_rep = np.repeat(x_np, s, axis=0)
    log_true = truth.log_prob(x_rep, flat)
    x_rep_t = x.repeat_interleave(s, dim=0)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    model_nll, _ = fitted.nll(x_rep_t, space.from_labels(flat).to(x.device), generator=generator)
    return float(np.mean(log_true + model_nll.cpu().double().numpy()))


def _test_metrics(fitted, test: _Evaluator, x_np: np.ndarray, truth, run_id: str,
                  seed: int) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    """Every test-split metric family of ``fitted`` (metric name → value: prediction, NLL, τ
    audit, KL to the truth) and the τ curve rows. ``x_np``: the test inputs as the task gave them."""
    x_test = test.x
    values: dict[str, float | None] = dict(test.prediction(fitted))
    kl = fitted.divergence == "kl"  # a Fenchel–Young model is not q·exp(g): no Gibbs NLL, no KL
    # one log Z(x) estimate for the NLL and the τ audit: where it is sampled (cal500/pairwise,
    # lr-vowel) it is most of a run's evaluation (~5 s a run on cal500/pairwise), and the audit
    # then reads the NLL's seeded draws instead of the global generator's
    log_z = test.log_partition(fitted) if kl else None
    if log_z is not None:
        values.update(test.nll(fitted, log_z))
    values["tau_mae"], pairs = tau_error(fitted, x_test[:TAU_INPUTS], None if log_z is None else log_z[0][:TAU_INPUTS])
    if truth is not None and kl:
        values["kl_to_truth"] = kl_to_truth(fitted, test.space, truth, np.asarray(x_np[:KL_INPUTS]),
                                            x_test[:KL_INPUTS], seed)
    return values, tau_curve_rows(run_id, pairs)


def _ending(monitor: CurveMonitor, n_steps: int, max_steps: int, train_seconds: float,
            max_seconds: float | None) -> tuple[Status, str | None]:
    """How a fit that returned ended: pruned by the tuner, stopped by the soft timeout, or ok."""
    if monitor.pruned_at is not None:
        return Status.PRUNED, f"pruned at step {monitor.pruned_at}"
    if max_seconds is not None and n_steps < max_steps and train_seconds >= max_seconds:
        return Status.TIMEOUT, (f"training stopped by --timeout-per-run ({max_seconds:g} s) "
                                f"after {n_steps} of {max_steps} steps")
    return Status.OK, None


@dataclass
class _Prepared:
    """A run ready to train: its record (identity filled), space, tensors, budget, validation
    scorer and curve monitor (built by :func:`_prepare`, the same for single and stacked runs)."""

    run: Any
    record: RunRecord
    data: Any                     # the task's TaskData
    space: Any
    fit_data: Any
    budget: Any
    val: _Evaluator
    monitor: CurveMonitor
    device: str


def _prepare(run, task_data, record: RunRecord, *, device: str, max_seconds: float | None,
             prune_thresholds: dict[int, float] | None) -> _Prepared:
    """Everything before ``fit``: data checks, the space and tensors (:func:`harness.fitdata.prepare_fit`),
    the budget and the monitor. Raises on bad data."""
    from ebm.method import Budget
    from harness.fitdata import prepare_fit

    record.device = device
    record.versions_json = json.dumps(versions(), sort_keys=True)
    if isinstance(task_data, BaseException):
        raise RuntimeError(f"loading task data failed: {type(task_data).__name__}: {task_data}")
    spec, data = run.spec, task_data
    for part in ("train", "val", "test"):
        _check_finite(spec.task, getattr(data, f"x_{part}"))
    # the prior q was decided at plan time, into the run's params (harness.fitdata.resolve_prior)
    space, fit_data = prepare_fit(data, run.kind, spec.model, spec.params.get("prior"))
    budget = Budget(max_steps=spec.budget["max_steps"], batch_size=spec.budget["batch_size"],
                    eval_every=spec.budget["eval_every"], max_seconds=max_seconds,
                    selection=spec.budget.get("selection", "best_val"), patience=spec.budget.get("patience"))
    seed = spec.torch_seed
    val = _Evaluator(run.kind, space, fit_data.x_val.to(device), np.array(data.y_val), fit_data.y_val.to(device),
                     seed + 1)
    monitor = CurveMonitor(run.run_id, run.primary_metric, val.head(CURVE_VAL_LIMIT), prune_thresholds)
    return _Prepared(run, record, data, space, fit_data, budget, val, monitor, device)


def _evaluate(prepared: _Prepared, fitted, train_seconds: float, *, max_seconds: float | None,
              evaluate_test: bool) -> None:
    """Everything after ``fit``: the record's spending, selection, status and metrics (validation;
    test unless pruned or ``evaluate_test`` is off), the τ curve rows into the monitor's curves."""
    import torch

    run, record, space, monitor, device = (prepared.run, prepared.record, prepared.space, prepared.monitor,
                                           prepared.device)
    spec, data, val, budget, seed = run.spec, prepared.data, prepared.val, prepared.budget, run.spec.torch_seed
    info = fitted.info or {}
    record.n_steps = int(info.get("steps", monitor.last_step))
    record.train_seconds = float(info.get("train_seconds", train_seconds))
    record.energy_evals = info.get("energy_evals")
    # the q the model used: the run's prior, or (a method without one) that of its space
    record.prior = spec.params.get("prior") or ("uniform" if fitted.space.uniform_prior else "frequency")
    record.best_step, record.selection = info.get("best_step"), info.get("selection")
    record.stopped_early = info.get("stopped_early")
    record.stacked = info.get("stacked")
    t1 = time.perf_counter()
    record.set_metrics("val", val.prediction(fitted))
    if get_metric(run.primary_metric).family == "nll" and fitted.divergence == "kl":
        record.set_metrics("val", val.nll(fitted))
    record.status, record.error = _ending(monitor, record.n_steps, budget.max_steps, record.train_seconds,
                                          max_seconds)
    if evaluate_test and record.status is not Status.PRUNED:
        as_x = torch.tensor(np.asarray(data.x_test), dtype=torch.float32)  # a copy (Ray's arrays are read-only)
        y_test = np.array(data.y_test)
        test = _Evaluator(run.kind, space, as_x.to(device), y_test, space.from_labels(y_test).to(device), seed + 2)
        values, tau_rows = _test_metrics(fitted, test, data.x_test, getattr(data, "truth", None), run.run_id,
                                         seed + 3)
        record.set_metrics("test", values)
        monitor.curves += tau_rows
    record.eval_seconds = time.perf_counter() - t1


def _failed(record: RunRecord, exc: BaseException, *, with_traceback: bool = True) -> None:
    """The record of a run ended by ``exc``: ``diverged`` for :class:`ebm.method.Diverged`, else ``failed``."""
    record.status = Status.DIVERGED if _is_diverged(exc) else Status.FAILED
    record.error = f"{type(exc).__name__}: {exc}"
    if with_traceback:
        record.traceback = traceback.format_exc()[-TRACEBACK_CHARS:]
    elif exc.__traceback__ is not None:
        record.traceback = "".join(traceback.format_exception(exc))[-TRACEBACK_CHARS:]


def execute_run(run, method, task_data, *, device: str | None = None, threads: int = 1, gpus: float = 0.0,
                max_seconds: float | None = None, prune_thresholds: dict[int, float] | None = None,
                evaluate_test: bool = True) -> RunResult:
    """Train ``method`` on ``task_data`` as ``run`` says and evaluate it. Never raises."""
    from harness.store import utc_now

    record = base_record(run)
    record.started_at, record.threads = utc_now(), threads
    prepared = None
    try:
        import torch

        torch.set_num_threads(max(1, int(threads)))  # Ray sets OMP_NUM_THREADS=1 otherwise
        keep_freed_memory()  # a step's temporaries stay in the heap for the next (harness.allocator)
        prepared = _prepare(run, task_data, record, device=device or pick_device(gpus), max_seconds=max_seconds,
                            prune_thresholds=prune_thresholds)
        t0 = time.perf_counter()
        fitted = method.fit(prepared.space, run.spec.model, prepared.fit_data, dict(run.spec.params),
                            prepared.budget, seed=run.spec.torch_seed, device=torch.device(prepared.device),
                            monitor=prepared.monitor)
        _evaluate(prepared, fitted, time.perf_counter() - t0, max_seconds=max_seconds, evaluate_test=evaluate_test)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row
        _failed(record, exc)
    record.finished_at = utc_now()
    monitor = prepared.monitor if prepared else None
    return RunResult(record=record, curves=monitor.curves if monitor else [],
                     intermediate=monitor.intermediate if monitor else [])


def execute_group(runs: list, method, *task_data, device: str | None = None, threads: int = 1, gpus: float = 0.0,
                  max_seconds: float | None = None, evaluate_test: bool = True) -> list[RunResult]:
    """Train ``runs`` (one configuration, different seeds; ``task_data[i]`` is run i's data) as
    one stacked group (:func:`ebm.stacking.fit_stacked`) and evaluate each member exactly as
    :func:`execute_run` does: one :class:`RunResult` per run, in order, same rows and run ids.
    Never raises. A member that fails before training gets its own ``failed`` row; one that
    diverges its ``diverged`` row; when the group cannot train stacked (members of unequal
    training shapes or spaces, a refusal) each run is executed alone. ``max_seconds`` (the
    per-run training timeout) is the group's: len(runs) × it, on the group's wall clock."""
    from harness.store import utc_now

    if len(task_data) != len(runs):
        raise ValueError(f"execute_group: {len(runs)} runs but {len(task_data)} task data")
    alone: dict[str, Any] = dict(device=device, threads=threads, gpus=gpus, max_seconds=max_seconds,
                                 evaluate_test=evaluate_test)
    records = [base_record(run) for run in runs]
    prepared: list[_Prepared | None] = [None] * len(runs)
    group_seconds = None if max_seconds is None else max_seconds * len(runs)
    try:
        import torch

        from ebm.stacking import Member, fit_stacked

        torch.set_num_threads(max(1, int(threads)))
        keep_freed_memory()
        device = device or pick_device(gpus)
        for i, (run, data) in enumerate(zip(runs, task_data)):
            records[i].started_at, records[i].threads = utc_now(), threads
            try:
                prepared[i] = _prepare(run, data, records[i], device=device, max_seconds=group_seconds,
                                       prune_thresholds=None)
            except Exception as exc:  # noqa: BLE001 - this member's row
                _failed(records[i], exc)
        ready = [p for p in prepared if p is not None]
        if len(ready) > 1 and len({repr(p.space) for p in ready}) == 1:
            spec = ready[0].run.spec
            # each member's own space: a frequency prior is estimated from the member's training rows
            members = [Member(p.fit_data, p.run.spec.torch_seed, p.monitor, p.space) for p in ready]
            t0 = time.perf_counter()
            outcomes = fit_stacked(method, ready[0].space, spec.model, members, dict(spec.params),
                                   ready[0].budget, device=torch.device(device))
            seconds = time.perf_counter() - t0
            for p, outcome in zip(ready, outcomes):
                try:
                    if isinstance(outcome, BaseException):
                        raise outcome
                    _evaluate(p, outcome, seconds, max_seconds=group_seconds, evaluate_test=evaluate_test)
                except Exception as exc:  # noqa: BLE001 - this member's row
                    _failed(p.record, exc)
                p.record.finished_at = utc_now()
        elif ready:
            raise _Unstackable
    except Exception:  # noqa: BLE001 - the group cannot train stacked: each run alone
        return [execute_run(run, method, data, **alone) if p is not None else
                RunResult(record=_finished(records[i])) for i, (run, data, p) in
                enumerate(zip(runs, task_data, prepared))]
    results = []
    for record, member in zip(records, prepared):
        if record.finished_at is None:
            record.finished_at = utc_now()
        results.append(RunResult(record=record, curves=member.monitor.curves if member else [],
                                 intermediate=member.monitor.intermediate if member else []))
    return results


class _Unstackable(Exception):
    """The group's members cannot share a stacked model (their spaces differ)."""


def _finished(record: RunRecord) -> RunRecord:
    from harness.store import utc_now

    record.finished_at = record.finished_at or utc_now()
    return record


def _is_diverged(exc: BaseException) -> bool:
    from ebm.method import Diverged

    return isinstance(exc, Diverged)
