"""Subcommands of ``ebm-bench``: one module per command, each exposing
``register(subparsers)`` that adds its parser and sets ``func(args) -> int``.

Modules are imported by name; a command whose module does not exist (yet) is left out, so
commands can be developed independently. Modules import nothing heavy at import time.
"""

from __future__ import annotations

import importlib
from types import ModuleType

COMMANDS = ("tasks", "methods", "run", "tune", "leaderboard", "query", "plot", "report", "data", "merge", "compact",
            "perf")


def load_command(name: str) -> ModuleType | None:
    """The module ``harness.commands.<name>``, or None when it does not exist."""
    module_name = f"{__name__}.{name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise
