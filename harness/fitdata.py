"""From a task's arrays and a run's settings to what a method's ``fit`` takes, in one place.

The prior q a run's model uses is decided once, at plan time (:func:`resolve_prior`), into the
run's hyperparameter ``prior``; :func:`prepare_fit` builds the space from it (with the training
label frequencies for ``"frequency"``) and converts the arrays. The worker and ``perf`` both go
through :func:`prepare_fit`, so they cannot disagree on q or on the encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: the prior names (ebm.spaces.PRIORS; repeated here so planning imports no torch)
PRIORS = ("uniform", "frequency")


@dataclass(frozen=True)
class PriorChoice:
    """The run's prior, whether the suite may not tune it (``fixed``), and why the run cannot go
    ahead (``refusal``: the ``unsupported`` reason) when the request contradicts the method or kind."""

    prior: str | None
    fixed: bool = False
    refusal: str | None = None


def resolve_prior(method: Any, kind: str, overrides: dict[str, Any], suite_prior: str) -> PriorChoice:
    """The q of one planned run: the grid block's ``params`` first (an explicit request), then the
    method's ``required_prior`` (sparsemax-type models need uniform q), then the suite's ``prior``
    (multilabel only: rankings have only the uniform prior). A method without a ``prior``
    hyperparameter (its model has no q to choose) gets None."""
    if "prior" not in getattr(method, "defaults", {}):
        return PriorChoice(None)
    required = getattr(method, "required_prior", None)
    asked = overrides.get("prior")
    if asked is not None:
        if asked not in PRIORS:
            raise ValueError(f"{method.name}: unknown prior {asked!r}; known: {', '.join(PRIORS)}")
        if required is not None and asked != required:
            return PriorChoice(asked, True, f"{method.name} models a {required} prior q, not {asked!r}")
        if kind == "ranking" and asked != "uniform":
            return PriorChoice(asked, True,
                               f"prior {asked!r} is a multilabel prior; rankings have only the uniform prior")
        return PriorChoice(asked, True)
    if required is not None:
        return PriorChoice(required, True)
    if kind == "ranking":
        return PriorChoice("uniform", True)
    return PriorChoice(suite_prior, False)


def prepare_fit(task_data: Any, kind: str, model: str, prior: str | None, *, val_limit: int | None = None):
    """(space, FitData) for a run: the space of ``kind``/``model`` with prior q = ``prior``
    (None: uniform), the features as float32 tensors and the labels in the space's encoding;
    validation capped at ``val_limit`` examples. Arrays are copied (those shared through Ray's
    object store are read-only)."""
    import torch

    from ebm.method import FitData
    from ebm.spaces import make_space

    y_train = np.array(task_data.y_train)
    space = make_space(kind, y_train.shape[1], model, prior=prior or "uniform",
                       y_train=torch.tensor(y_train, dtype=torch.float32))
    as_x = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    val = slice(None, val_limit)
    fit_data = FitData(as_x(task_data.x_train), space.from_labels(y_train),
                       as_x(task_data.x_val[val]), space.from_labels(np.array(task_data.y_val[val])))
    return space, fit_data
