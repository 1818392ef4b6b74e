"""Registry of tasks by name, with "did you mean" for unknown names.

Built-in tasks (real Mulan / label-ranking files, bundled synthetic and scikit-learn tasks) are
registered on first use; user tasks declared in a suite TOML come from ``tasks_from_toml``.
"""

from __future__ import annotations

from pathlib import Path

from tasks.base import Task, resolve_data_dir
from tasks.names import did_you_mean

__all__ = ["get_task", "list_tasks", "register_task", "resolve_data_dir", "tasks_from_toml"]

_TASKS: dict[str, Task] = {}
_BUILTINS_LOADED = False


def _ensure_builtins() -> None:
    """Register the built-in tasks once (imported lazily so that ``tasks.base`` stays light)."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    from tasks import real, sklearn_ranking, synthetic

    for module in (real, synthetic, sklearn_ranking):
        for task in module.builtin_tasks():
            register_task(task)


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Add ``task`` under ``task.name``; a clash with a different task is an error unless ``replace``."""
    existing = _TASKS.get(task.name)
    if existing is not None and existing is not task and not replace:
        raise ValueError(f"a task named {task.name!r} is already registered ({existing.description!r})")
    _TASKS[task.name] = task
    return task


def list_tasks() -> list[Task]:
    """All registered tasks, in registration order (real multilabel, label ranking, synthetic, sk-*, user)."""
    _ensure_builtins()
    return list(_TASKS.values())


def get_task(name: str) -> Task:
    """The task called ``name``; ValueError with close matches when there is none."""
    _ensure_builtins()
    try:
        return _TASKS[name]
    except KeyError:
        hint = did_you_mean(name, _TASKS, n=3, cutoff=0.5)
        raise ValueError(f"unknown task {name!r}{hint} (`ebm-bench tasks` lists them)") from None


def tasks_from_toml(table: dict, base_dir: Path) -> list[Task]:
    """User tasks from a suite file's ``[tasks.<name>]`` tables (pass the ``tasks`` mapping:
    name -> spec; format in ``tasks/user.py``). Paths are relative to ``base_dir`` (the TOML
    file's folder). The tasks are returned and registered, so ``get_task`` finds them; a name
    taken by a built-in task is an error, re-declaring a user task replaces it."""
    from tasks.user import UserTask, user_task_from_spec

    _ensure_builtins()
    if not isinstance(table, dict):
        raise ValueError(f"[tasks] must be a table of task tables, got {type(table).__name__}")
    tasks: list[Task] = [user_task_from_spec(name, spec, Path(base_dir)) for name, spec in table.items()]
    for task in tasks:
        existing = _TASKS.get(task.name)
        if existing is not None and not isinstance(existing, UserTask):
            raise ValueError(f"user task {task.name!r} clashes with the built-in task of that name; rename it")
        register_task(task, replace=True)
    return tasks
