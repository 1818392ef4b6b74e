"""ebm: energy-based models over combinatorial output spaces, trained jointly with
their log-partition function (Sander, Roulet, Liu, Blondel, ICML 2025).

Submodules (import them directly; nothing heavy is imported here):
``spaces`` (output spaces and priors q), ``energies`` (g(x, y)), ``divergences``
(f, f*, (f*)'), ``objective`` (the min-min loss), ``tau`` (learned log-partition),
``samplers`` (Gibbs / Metropolis-Hastings), ``inference`` (mode, sample, log Z, NLL),
``method`` (the training-method interface).
"""

from __future__ import annotations

import difflib


def unknown_name_error(what: str, name: str, known: "list[str] | tuple[str, ...]") -> ValueError:
    """A ValueError for an unknown registry name, with a "did you mean" suggestion."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {what} {name!r}{hint} (known: {', '.join(sorted(known))})")
