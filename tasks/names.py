""""Did you mean": close-match hints for unknown names (tasks, metrics, label names, TOML keys).

This is one of exactly two definitions of these helpers; the other is :mod:`ebm` (``ebm/__init__.py``),
used by ebm, baselines and the harness. The layering (harness → baselines → ebm, harness → tasks)
forbids tasks to import ebm or ebm to import tasks, and a third top-level package for three small
functions would be a layer of its own; so tasks keeps this copy. Keep the two in step
(tests/test_names.py checks they give the same answers).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: str, known: Iterable[str], *, n: int = 1, cutoff: float = 0.6) -> list[str]:
    """Up to ``n`` names of ``known`` close to ``name`` (difflib ratio >= ``cutoff``), best first."""
    return difflib.get_close_matches(str(name), list(known), n=n, cutoff=cutoff)


def did_you_mean(name: str, known: Iterable[str], *, n: int = 1, cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` (or ``'x', 'y'`` for n > 1), or ``""`` when nothing is close."""
    close = closest(name, known, n=n, cutoff=cutoff)
    return f"; did you mean {', '.join(map(repr, close))}?" if close else ""


def unknown_name_error(what: str, name: str, known: Iterable[str]) -> ValueError:
    """A ValueError for an unknown registry name, with a "did you mean" suggestion."""
    known = [str(k) for k in known]
    return ValueError(f"unknown {what} {name!r}{did_you_mean(name, known)} (known: {', '.join(sorted(known))})")
