"""Planning: the suite's grid expanded into run specs, each identified by a canonical hash.

A run is task × model × method × seed × fold × params × budget × data settings. Its id is
the first 16 hex digits of sha256 over the canonical JSON of that identity (sorted keys,
no whitespace), so the same run gets the same id on every machine and in every order, and
the torch seed derives from the id, never from the position of the run in the plan. The
suite's *name* is a label, not part of the identity: two suites that contain the same run
share its result.

``method.check`` is applied here: a run the method cannot do is recorded with status
``unsupported`` / ``skipped`` and its reason, never raised. A task whose data files are
missing is recorded as ``skipped`` ("data not available: ...") — except in grid blocks
marked ``optional = true`` (the ``quick`` suite's real tasks), where it is left out of the
plan with a note, so ``quick`` on a machine without data does not show dozens of skips.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.records import Status
from harness.suites import Suite, SuiteError, has_glob

RUN_ID_LENGTH = 16


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal specs give equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def short_hash(obj: Any, length: int = RUN_ID_LENGTH) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


@dataclass(frozen=True)
class RunSpec:
    """What a run is. ``params`` are the full hyperparameters (defaults merged with overrides),
    so changing a method's defaults changes the id and re-runs it."""

    task: str
    model: str
    method: str
    seed: int
    fold: int
    params: dict[str, Any]
    budget: dict[str, Any]
    data: dict[str, Any]
    suite: str = ""      # label only
    tuned: bool = False  # label only (params came from an Optuna study)

    def identity(self) -> dict[str, Any]:
        return {"task": self.task, "model": self.model, "method": self.method, "seed": self.seed,
                "fold": self.fold, "params": self.params, "budget": self.budget, "data": self.data}

    @property
    def run_id(self) -> str:
        return short_hash(self.identity())

    @property
    def config_hash(self) -> str:
        """Groups the seeds and folds of one configuration."""
        identity = self.identity()
        del identity["seed"], identity["fold"]
        return short_hash(identity)

    @property
    def torch_seed(self) -> int:
        """A 31-bit seed derived from the run id (independent of run order)."""
        return derive_seed("torch", self.run_id)

    @property
    def data_key(self) -> tuple:
        """Runs with equal keys share one loaded TaskData (same split for every method)."""
        return (self.task, self.seed, self.fold, canonical_json(self.data))


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, "g")
    return value if isinstance(value, str) else canonical_json(value)


def config_label(method: str, params: dict[str, Any], defaults: dict[str, Any], *, tuned: bool = False,
                 fixed: dict[str, Any] | None = None) -> str:
    """The run's configuration label, benchopt style: ``method`` plus its non-default
    hyperparameters in sorted order, ``minmin-logistic[lr=0.01,n_samples=100]``, or just the name
    when every hyperparameter is a default. A tuned run lists only the suite's ``fixed``
    hyperparameters that are not defaults (the tuned ones vary by study) and ends with
    ``tuned``: ``exact-mle[tuned]``, ``minmin-logistic[n_samples=10,tuned]``."""
    shown = (fixed or {}) if tuned else params
    parts = [f"{key}={_format_value(value)}" for key, value in sorted(shown.items())
             if key not in defaults or defaults[key] != value]
    if tuned:
        parts.append("tuned")
    return f"{method}[{','.join(parts)}]" if parts else method


def derive_seed(*parts: Any) -> int:
    return int(hashlib.sha256(canonical_json([str(p) for p in parts]).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


@dataclass
class PlannedRun:
    spec: RunSpec
    kind: str
    k: int
    space: str
    primary_metric: str
    #: None = to run; else Status.UNSUPPORTED | Status.SKIPPED, decided at plan time
    status: Status | None = None
    reason: str | None = None
    method: Any = field(default=None, repr=False, compare=False)
    #: the suite's hyperparameters for this run (grid ``params``); they stay fixed when tuning
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def config(self) -> str:
        """The configuration label (:func:`config_label`) that leaderboards group by."""
        defaults = dict(getattr(self.method, "defaults", None) or {})
        return config_label(self.spec.method, self.spec.params, defaults, tuned=self.spec.tuned,
                            fixed=self.overrides)


class Plan(list):
    """A list of :class:`PlannedRun` plus ``notes`` (tasks left out, and why)."""

    def __init__(self, runs=(), notes=()):
        super().__init__(runs)
        self.notes: list[str] = list(notes)

    def runnable(self) -> list[PlannedRun]:
        return [p for p in self if p.status is None]


@dataclass(frozen=True)
class Filters:
    """Command-line filters; each a list of names or fnmatch globs (empty = everything)."""

    tasks: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    seeds: int | None = None
    max_steps: int | None = None

    @staticmethod
    def parse_list(value: str | None) -> tuple[str, ...]:
        return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def resolve_method(name: str):
    """The Method called ``name`` (the registry; unknown names raise with did-you-mean)."""
    from baselines.registry import get_method

    return get_method(name)


def _all_models() -> dict[str, tuple[str, ...]]:
    from ebm.spaces import MODELS

    return MODELS


def _expand(patterns: tuple[str, ...], known: list[str], validate) -> list[str]:
    """Names matching any pattern, in ``known`` order; an exact unknown name gets did-you-mean."""
    out: list[str] = []
    for pattern in patterns:
        if has_glob(pattern):
            out += [n for n in known if fnmatch.fnmatchcase(n, pattern) and n not in out]
        else:
            validate(pattern)
            if pattern not in out:
                out.append(pattern)
    return out


def validate_filters(filters: Filters) -> None:
    """Exact names in the filters must exist (else ValueError with did-you-mean)."""
    from ebm import unknown_name_error
    from tasks.registry import get_task

    all_models = sorted({m for ms in _all_models().values() for m in ms})
    for name in filters.tasks:
        if not has_glob(name):
            get_task(name)
    for name in filters.methods:
        if not has_glob(name):
            resolve_method(name)
    for name in filters.models:
        if not has_glob(name) and name not in all_models:
            raise unknown_name_error("model", name, all_models)


def _folds(suite: Suite, task) -> range:
    n_folds = getattr(task, "n_folds", 1)
    return range(n_folds if suite.folds == "all" else min(int(suite.folds), n_folds))


@dataclass
class _Unmodelled:
    """Tasks of one kind that the task filter selected and ``--models`` left without a model."""

    models: list[str]  # the kind's models in the grid block, none of which ``--models`` matched
    tasks: dict[str, None] = field(default_factory=dict)  # ordered set of task names


def plan_runs(suite: Suite, filters: Filters | None = None, *, data_dir: Path | None = None) -> Plan:
    """Every run of ``suite`` that passes ``filters``, in grid order, deduplicated by run id."""
    from baselines.registry import list_methods
    from ebm.spaces import make_space
    from harness.fitdata import resolve_prior
    from tasks.registry import get_task, list_tasks

    filters = filters or Filters()
    validate_filters(filters)
    models_by_kind = _all_models()
    task_names = [t.name for t in list_tasks()]
    method_names = [m.name for m in list_methods()]
    availability: dict[str, str | None] = {}
    plan, seen, notes = Plan(), set(), []
    seeds = filters.seeds if filters.seeds is not None else suite.seeds
    data = {"val_fraction": suite.val_fraction}  # the prior q is a hyperparameter (harness.fitdata.resolve_prior)
    #: what each filter could have matched (for the message when one matches nothing)
    candidates: dict[str, dict[str, None]] = {"task": {}, "model": {}, "method": {}}
    #: tasks the task filter selected but the model filter left without a model, by kind
    unmodelled: dict[str, _Unmodelled] = {}

    for number, block in enumerate(suite.grid, 1):
        where = f"suite {suite.name!r} grid block {number}"
        try:
            tasks = _expand(block.tasks, task_names, get_task)
            methods = _expand(block.methods, method_names, resolve_method)
        except ValueError as exc:
            raise SuiteError(f"{where}: {exc}") from None
        for task_name in tasks:
            task = get_task(task_name)
            if block.max_k is not None and task.k > block.max_k:
                continue
            candidates["task"][task_name] = None
            if not _matches(task_name, filters.tasks):
                continue
            block_models = [m for m in models_by_kind[task.kind] if _matches(m, block.models)]
            candidates["model"].update(dict.fromkeys(block_models))
            if any(_matches(m, filters.models) for m in block_models):
                candidates["method"].update(dict.fromkeys(methods))
            if task_name not in availability:
                availability[task_name] = task.available(data_dir)
            missing = availability[task_name]
            if missing is not None and block.optional:
                note = f"task {task_name!r} left out (optional, data not available: {missing})"
                if note not in notes:
                    notes.append(note)
                continue
            budget = suite.block_budget(block)
            if filters.max_steps is not None:
                # as many evaluations as the suite's budget has (a curve keeps its points); a budget
                # smaller than that (a smoke test) is evaluated once, at its end
                evals = max(1, budget["max_steps"] // budget["eval_every"])
                every = filters.max_steps // evals if filters.max_steps >= evals else filters.max_steps
                budget = {**budget, "max_steps": filters.max_steps, "eval_every": max(1, every)}
            models = [m for m in block_models if _matches(m, filters.models)]
            if block_models and not models:  # said once per kind below, rather than dropped silently
                unmodelled.setdefault(task.kind, _Unmodelled(block_models)).tasks[task_name] = None
            for model in models:
                space = make_space(task.kind, task.k, model)
                for method_name in methods:
                    if not _matches(method_name, filters.methods):
                        continue
                    method = resolve_method(method_name)
                    overrides = dict(block.params.get(method_name, {}))
                    try:  # the prior q, decided once: block params > method's required q > suite (multilabel)
                        check_param_types(method_name, method.defaults, overrides)
                        prior = resolve_prior(method, task.kind, overrides, suite.prior)
                        overrides.update({"prior": prior.prior} if prior.fixed else {})
                        params = method.params({**overrides, **({"prior": prior.prior} if prior.prior else {})})
                    except ValueError as exc:
                        raise SuiteError(f"{where}: {exc}") from None
                    verdict = ((Status.SKIPPED, f"data not available: {missing}") if missing else
                               (Status.UNSUPPORTED, prior.refusal) if prior.refusal else
                               method.check(space, model, params))
                    for seed in range(seeds):
                        for fold in _folds(suite, task):
                            spec = RunSpec(task=task_name, model=model, method=method_name, seed=seed, fold=fold,
                                           params=params, budget=budget, data=data, suite=suite.name)
                            if spec.run_id in seen:
                                continue
                            seen.add(spec.run_id)
                            plan.append(PlannedRun(spec=spec, kind=task.kind, k=task.k, space=space.name,
                                                   primary_metric=task.primary_metric,
                                                   status=Status(verdict[0]) if verdict else None,
                                                   reason=verdict[1] if verdict else None, method=method,
                                                   overrides=overrides))
    planned = {p.spec.task for p in plan}
    for kind, left in unmodelled.items():
        if not (names := [t for t in left.tasks if t not in planned]):
            continue  # another grid block gave them a model
        notes.append(f"{kind} tasks left out: --models {','.join(filters.models)!r} selects none of their models "
                     f"({', '.join(left.models)}): {', '.join(names)}")
    plan.notes = notes
    _check_filters_matched(suite, filters, plan, {k: list(v) for k, v in candidates.items()})
    return plan


def _check_filters_matched(suite: Suite, filters: Filters, plan: Plan, candidates: dict[str, list[str]]) -> None:
    """A filter that selects nothing is almost surely a mistake: name the filter and what it
    could have matched (``candidates``: what the grid offered that flag, given the task filter)."""
    scope = f"suite {suite.name!r}" if suite.name != GRID_SUITE else "the grid"
    for what in ("task", "model", "method"):
        patterns = getattr(filters, what + "s")
        known = candidates[what]
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(name, pattern) for name in known):
                where = scope if what == "task" else f"{scope} for the selected tasks"
                hint = ("; without --suite the flags define the grid themselves"
                        if suite.name != GRID_SUITE else "")
                raise SuiteError(f"--{what}s {pattern!r} matches no {what} of {where} "
                                 f"(it has: {', '.join(known) or 'none'}){hint}")
    if not plan:
        raise SuiteError(f"no runs: {scope} with these filters selects nothing"
                         + (f" ({'; '.join(plan.notes)})" if plan.notes else ""))


#: the label of the suite that ``--tasks/--methods/--models`` define without ``--suite``
GRID_SUITE = "grid"


def grid_suite(filters: Filters, base: Suite | None = None) -> Suite:
    """The suite the command line names without ``--suite``: ``--tasks`` (names or globs over
    every task; default: the quick suite's tasks) × every model of each task's kind (or
    ``--models``) × ``--methods`` (names or globs over every method; default: all), with the
    ``base`` suite's (default: quick) budget, seeds, folds and data settings.

    Tasks named exactly whose data is missing become ``skipped`` rows (with the reason); tasks
    reached by a glob only are left out with a note, as the quick suite's optional tasks are."""
    import dataclasses

    from baselines.registry import list_methods
    from harness.suites import GridBlock, load_suite
    from tasks.registry import list_tasks

    base = base or load_suite("quick")
    methods = filters.methods or ("*",)
    models = ("*",)  # --models then filters (and says what it could have matched)
    all_tasks = [t.name for t in list_tasks()]
    all_methods = [m.name for m in list_methods()]
    for flag, patterns, known in (("tasks", filters.tasks, all_tasks), ("methods", filters.methods, all_methods)):
        for pattern in patterns:
            if has_glob(pattern) and not any(fnmatch.fnmatchcase(n, pattern) for n in known):
                raise SuiteError(f"--{flag} {pattern!r} matches nothing (known: {', '.join(known)})")
    if filters.tasks:
        exact = tuple(t for t in filters.tasks if not has_glob(t))
        globbed = tuple(t for t in filters.tasks if has_glob(t))
        blocks = [GridBlock(tasks=names, methods=methods, models=models, optional=optional)
                  for names, optional in ((exact, False), (globbed, True)) if names]
    else:
        blocks = [GridBlock(tasks=b.tasks, methods=methods, models=models, optional=b.optional, max_k=b.max_k)
                  for b in base.grid]
    return dataclasses.replace(base, name=GRID_SUITE, grid=tuple(blocks), tune_trials=base.tune_trials,
                               description="the grid named on the command line", source="<command line>")


def resolve_suite(suite: str | Path | Suite | None, filters: Filters) -> tuple[Suite, Filters]:
    """(suite, filters to apply to it). ``suite=None`` with task/method/model filters: the grid
    they name (:func:`grid_suite`), then only seeds and steps still filter; with none: quick."""
    from harness.suites import load_suite

    if isinstance(suite, Suite):
        return suite, filters
    if suite is not None:
        return load_suite(suite), filters
    if filters.tasks or filters.methods or filters.models:
        validate_filters(filters)
        return grid_suite(filters), filters  # the filters then only check that each matched something
    return load_suite("quick"), filters


def with_params(run: PlannedRun, params: dict[str, Any], *, tuned: bool) -> PlannedRun:
    """The same planned run with other hyperparameters (after tuning): a new run id."""
    spec = RunSpec(**{**run.spec.__dict__, "params": params, "tuned": tuned})
    return PlannedRun(**{**run.__dict__, "spec": spec})


#: integer hyperparameters whose default is positive but which may be 0: the pairwise coupling's
#: low-rank part (``rank = 0``: none), which tuning explores (ebm.training.suggest_common: 0..8)
ZERO_ALLOWED = frozenset({"rank"})


def check_param_types(method_name: str, defaults: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Each override must have the type of the method's default value (a float default takes
    any finite number, an int default an integer, a bool default true/false, a string a
    string), and the default's sign: positive if the default is > 0 (>= 0 for ``ZERO_ALLOWED``),
    >= 0 if it is 0. Raises ValueError naming ``params.<method>.<name>`` (``lr = inf`` and
    ``lr = true`` are refused)."""
    import math

    for name, value in overrides.items():
        if name not in defaults or defaults[name] is None:
            continue  # unknown names are Method.params's to report; None defaults take anything
        default, where = defaults[name], f"params.{method_name}.{name}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{where} must be true or false, got {value!r}")
        elif isinstance(default, (int, float)):
            integer = isinstance(default, int)
            if name in ZERO_ALLOWED and default > 0:
                default = 0
            sign = "positive " if default > 0 else "non-negative " if default == 0 else ""
            wanted = f"a {sign}integer" if integer else f"a finite {sign}number"
            if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or \
                    (isinstance(value, float) and not math.isfinite(value)) or \
                    (default > 0 and value <= 0) or (default == 0 and value < 0):
                raise ValueError(f"{where} must be {wanted}, got {value!r}")
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ValueError(f"{where} must be a string (like the default {default!r}), got {value!r}")
        elif not isinstance(value, type(default)):
            raise ValueError(f"{where} must be a {type(default).__name__} (like the default {default!r}), "
                             f"got {value!r}")

