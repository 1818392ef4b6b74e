""""Did you mean": the two definitions (ebm for ebm/baselines/harness, tasks.names for tasks) agree."""

from __future__ import annotations

import difflib

import pytest

import ebm
from tasks import names

KNOWN = ["pairwise", "unary", "ranking", "minmin-logistic", "minmin-sparsemax", "quick", "paper"]


@pytest.mark.parametrize("name", ["pairwse", "unray", "minmin-logistc", "qiuck", "zzzz", "", "PAIRWISE"])
def test_both_definitions_agree_with_difflib(name):
    expected = difflib.get_close_matches(name, KNOWN, n=1)
    for module in (ebm, names):
        assert module.closest(name, KNOWN) == expected
        assert module.did_you_mean(name, KNOWN) == (f"; did you mean {expected[0]!r}?" if expected else "")
        error = module.unknown_name_error("thing", name, tuple(KNOWN))
        assert isinstance(error, ValueError) and str(error).startswith(f"unknown thing {name!r}")
        assert str(error).endswith(f"(known: {', '.join(sorted(KNOWN))})")


def test_several_suggestions():
    assert names.did_you_mean("minmin", KNOWN, n=2, cutoff=0.5) == ebm.did_you_mean("minmin", KNOWN, n=2, cutoff=0.5)
    assert names.did_you_mean("minmin-l", KNOWN, n=2, cutoff=0.5).count("'minmin-") == 2
