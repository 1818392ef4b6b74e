"""Benchmark suites: which tasks × models × methods to run, with which budget and seeds.

A suite is a TOML file (the built-in ones live in ``harness/suites/``; a user's file uses
the same format)::

    [suite]
    name = "my-suite"
    description = "..."
    seeds = 2              # seed indices 0..seeds-1 (the data split and torch seed derive from them)
    folds = 1              # CV folds per task: an int (the first n) or "all"
    tune_trials = 0        # Optuna trials per (task, model, method); 0 = default hyperparameters
    val_fraction = 0.2     # validation carve-out of the training split
    prior = "uniform"      # multilabel prior q: "uniform" | "frequency"
    stack = 1              # optional: runs trained stacked in one job, at most (default 25:
                           # harness.dispatch.STACK_LIMIT; 1 = each run alone, e.g. for curves
                           # read against wall seconds); --stack overrides

    [budget]               # every method gets the same budget
    max_steps = 500
    batch_size = 64
    eval_every = 100
    selection = "best_val" # the returned model: best validation evaluation, or "last" step
    patience = 5           # optional: stop after 5 evaluations without improvement

    [[grid]]               # one or more blocks; the suite is their union
    tasks = ["emotions", "syn-*"]        # names or globs ("*" = every task)
    models = ["unary", "pairwise"]       # omitted or ["*"]: every model of each task's kind
    methods = ["minmin-logistic", "bce"] # names or globs
    optional = true        # tasks whose data is missing are left out (with a note) instead of
                           # recorded as `skipped` rows
    max_k = 8              # optional: leave out tasks with more labels than this
    budget = { max_steps = 200 }                    # optional per-block budget override
    params = { minmin-logistic = { n_samples = 16 } } # optional per-method hyperparameters

    [tasks.my-task]        # optional user tasks (format: tasks/user.py)

Errors name the file and, for malformed TOML, the line (from :mod:`tomllib`).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ebm import did_you_mean

BUILTIN_SUITES = ("quick", "paper", "paper-convergence", "minmin-scale", "full")
SUITES_DIR = Path(__file__).with_name("suites")
DEFAULT_BUDGET: dict[str, Any] = {"max_steps": 500, "batch_size": 64, "eval_every": 100, "selection": "best_val"}
#: ``selection``: which model a run returns (ebm.method.SELECTIONS); ``patience``: evaluations
#: without a better validation value before training stops (absent: never)
_SELECTIONS = ("best_val", "last")

_SUITE_KEYS = {"name", "description", "seeds", "folds", "tune_trials", "val_fraction", "prior", "stack"}
_BUDGET_KEYS = set(DEFAULT_BUDGET) | {"patience"}
_GRID_KEYS = {"tasks", "models", "methods", "optional", "max_k", "budget", "params"}
_TOP_KEYS = {"suite", "budget", "grid", "tasks"}


class SuiteError(ValueError):
    """A suite cannot be loaded; the message names the file and what is wrong."""


@dataclass(frozen=True)
class GridBlock:
    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    models: tuple[str, ...] = ("*",)
    optional: bool = False
    max_k: int | None = None
    budget: dict[str, Any] = field(default_factory=dict)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Suite:
    name: str
    grid: tuple[GridBlock, ...]
    description: str = ""
    seeds: int = 2
    folds: int | str = 1
    tune_trials: int = 0
    val_fraction: float = 0.2
    prior: str = "uniform"
    budget: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_BUDGET))
    #: seeds of one configuration trained stacked in one job, at most (None: ``run``'s default)
    stack: int | None = None
    source: str = ""
    user_tasks: tuple[str, ...] = ()

    def block_budget(self, block: GridBlock) -> dict[str, Any]:
        return {**self.budget, **block.budget}


def _unknown_keys(where: str, table: dict, allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            hint = did_you_mean(key, sorted(allowed))
            raise SuiteError(f"{where}: unknown key {key!r}{hint} (allowed: {', '.join(sorted(allowed))})")


def _string_list(where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise SuiteError(f"{where}: expected a non-empty list of names, got {value!r}")
    return tuple(value)


def _budget(where: str, table: Any) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise SuiteError(f"{where}: expected a table, got {table!r}")
    _unknown_keys(where, table, _BUDGET_KEYS)
    for key, value in table.items():
        if key == "selection":
            if value not in _SELECTIONS:
                raise SuiteError(f"{where}: selection must be \"best_val\" or \"last\", got {value!r}")
        elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SuiteError(f"{where}: {key} must be a positive integer, got {value!r}")
    return dict(table)


def _toml_error(source: str, text: str, exc: tomllib.TOMLDecodeError) -> SuiteError:
    message = str(exc)
    if "line" not in message:  # "(at end of document)": the error is on the last line
        message += f" (line {max(1, len(text.splitlines()))})"
    return SuiteError(f"{source}: malformed TOML: {message}")


def parse_suite(text: str, *, source: str = "<string>", base_dir: Path | None = None) -> Suite:
    """Parse and validate a suite's TOML text; user ``[tasks.*]`` are registered."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_error(source, text, exc) from None
    _unknown_keys(source, doc, _TOP_KEYS)
    head = doc.get("suite", {})
    if not isinstance(head, dict):
        raise SuiteError(f"{source}: [suite] must be a table")
    _unknown_keys(f"{source} [suite]", head, _SUITE_KEYS)
    name = head.get("name") or (Path(source).stem if source != "<string>" else "custom")
    seeds, folds, trials = head.get("seeds", 2), head.get("folds", 1), head.get("tune_trials", 0)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise SuiteError(f"{source} [suite]: seeds must be a positive integer, got {seeds!r}")
    if not (folds == "all" or (isinstance(folds, int) and not isinstance(folds, bool) and folds >= 1)):
        raise SuiteError(f"{source} [suite]: folds must be a positive integer or \"all\", got {folds!r}")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 0:
        raise SuiteError(f"{source} [suite]: tune_trials must be an integer >= 0, got {trials!r}")
    val_fraction = head.get("val_fraction", 0.2)
    if not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise SuiteError(f"{source} [suite]: val_fraction must be in (0, 1), got {val_fraction!r}")
    prior = head.get("prior", "uniform")
    if prior not in ("uniform", "frequency"):
        raise SuiteError(f"{source} [suite]: prior must be \"uniform\" or \"frequency\", got {prior!r}")
    stack = head.get("stack")
    if stack is not None and (not isinstance(stack, int) or isinstance(stack, bool) or stack < 1):
        raise SuiteError(f"{source} [suite]: stack must be a positive integer (1: each run alone), got {stack!r}")
    budget = {**DEFAULT_BUDGET, **_budget(f"{source} [budget]", doc.get("budget", {}))}

    blocks = doc.get("grid")
    if not isinstance(blocks, list) or not blocks:
        raise SuiteError(f"{source}: needs at least one [[grid]] block (tasks, models, methods)")
    grid = []
    for i, block in enumerate(blocks, 1):
        where = f"{source} [[grid]] block {i}"
        _unknown_keys(where, block, _GRID_KEYS)
        for required in ("tasks", "methods"):
            if required not in block:
                raise SuiteError(f"{where}: missing {required!r}")
        params = block.get("params", {})
        if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
            raise SuiteError(f"{where}: params must map method names to tables of hyperparameters, got {params!r}")
        max_k = block.get("max_k")
        if max_k is not None and (not isinstance(max_k, int) or max_k < 1):
            raise SuiteError(f"{where}: max_k must be a positive integer, got {max_k!r}")
        grid.append(GridBlock(
            tasks=_string_list(f"{where} tasks", block["tasks"]),
            methods=_string_list(f"{where} methods", block["methods"]),
            models=_string_list(f"{where} models", block.get("models", ["*"])),
            optional=bool(block.get("optional", False)),
            max_k=max_k,
            budget=_budget(f"{where} budget", block.get("budget", {})),
            params=params,
        ))

    user_tasks: tuple[str, ...] = ()
    if "tasks" in doc:
        from tasks.registry import tasks_from_toml

        try:
            user_tasks = tuple(t.name for t in tasks_from_toml(doc["tasks"], base_dir or Path.cwd()))
        except ValueError as exc:
            raise SuiteError(f"{source} [tasks]: {exc}") from None
    return Suite(name=str(name), grid=tuple(grid), description=str(head.get("description", "")), seeds=seeds,
                 folds=folds, tune_trials=trials, val_fraction=float(val_fraction), prior=prior, budget=budget,
                 stack=stack, source=source, user_tasks=user_tasks)


def load_suite(name_or_path: str | Path) -> Suite:
    """A built-in suite by name (``quick``, ``paper``, ``full``) or a TOML file by path."""
    text_name = str(name_or_path)
    path = Path(text_name).expanduser()
    if text_name in BUILTIN_SUITES:
        path = SUITES_DIR / f"{text_name}.toml"
    elif not (text_name.endswith(".toml") or path.exists()):
        hint = did_you_mean(text_name, BUILTIN_SUITES)
        raise SuiteError(f"unknown suite {text_name!r}{hint} "
                         f"(built-in: {', '.join(BUILTIN_SUITES)}, or a path to a .toml file)")
    if not path.is_file():
        raise SuiteError(f"suite file {path} not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise SuiteError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} on line {line}); "
                         "save the suite file as UTF-8") from None
    except OSError as exc:
        raise SuiteError(f"suite file {path} cannot be read ({exc.strerror or exc})") from None
    return parse_suite(text, source=str(path), base_dir=path.parent)


def has_glob(pattern: str) -> bool:
    return bool(re.search(r"[*?\[]", pattern))
