"""ebm: energy-based models over combinatorial output spaces, trained jointly with
their log-partition function (Sander, Roulet, Liu, Blondel, ICML 2025).

Submodules (import them directly; nothing heavy is imported here):
``spaces`` (output spaces and priors q), ``energies`` (g(x, y)), ``divergences``
(f, f*, (f*)'), ``objective`` (the min-min loss), ``tau`` (learned log-partition),
``samplers`` (Gibbs / Metropolis-Hastings), ``inference`` (mode, sample, log Z, NLL),
``method`` (the training-method interface).

It also holds the "did you mean" helpers for unknown names, used by ebm, baselines and the
harness: one of exactly two definitions (the other, :mod:`tasks.names`, exists because tasks
may not import ebm; tests/test_names.py keeps the two in step).
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
