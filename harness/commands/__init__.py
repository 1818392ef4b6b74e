"""Subcommands of ``ebm-bench``: one module per command, each exposing
``register(subparsers)`` that adds its parser and sets ``func(args) -> int``.

Modules are imported by name when the parser is built; they import nothing heavy at import time.
"""

from __future__ import annotations

import importlib
from types import ModuleType

COMMANDS = ("tasks", "methods", "run", "tune", "leaderboard", "compare", "query", "plot", "report", "data", "merge",
            "compact", "perf")


def load_command(name: str) -> ModuleType:
    """The module ``harness.commands.<name>``."""
    return importlib.import_module(f"{__name__}.{name}")
