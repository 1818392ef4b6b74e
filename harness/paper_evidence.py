"""The evidence of the paper-reproduction report: which configuration is "our best min-min",
the paper's claims tested on the runs, and the issue's targets checked per dataset.

Everything is computed from a runs table (the ``paper`` suite's rows); nothing is hard-coded
but the paper's published figures (:data:`PAPER_MULTILABEL`, :data:`PAPER_RANKING`).

**Selection on validation.** Wherever the report needs "the best X" (our best min-min, the
exact-MLE configuration to compare against, …) it takes the configuration (config label:
method, fixed hyperparameters, prior, ``[tuned]``) with the best *validation* mean of the metric
at hand over its ok runs (:func:`select_config`), so the test split is not used to pick what is
then reported on it.

**Paired comparisons.** Two configurations are compared on the (seed, fold) units both have an
ok run for (same split, same budget): d = A − B oriented so that d > 0 means "A is better" (for
a metric to minimise, d = B − A), its mean, 95 % t-interval and paired t-test p-value from
:func:`harness.stats.paired_difference`. F1 and Kendall τ are × 100, NLL in nats.

**The rule (one comparison = one task × model cell).**

* fewer than :data:`MIN_PAIRS` paired units: ``n too small``;
* a claim that A is *better* than B: ``for`` when the interval's lower end is > 0, ``against``
  when its upper end is < 0, else ``unclear``;
* a claim that A *≈* B: the margin is one standard deviation (the two configurations' pooled
  sample std over their runs, √((s_A² + s_B²)/2), as the issue's target "within one std");
  ``for`` when |mean d| ≤ margin, ``against`` when the whole interval lies beyond the margin
  (low > margin or high < −margin), else ``unclear``.

**The verdict of a claim** over its cells: ``inconclusive (n too small)`` when no cell has enough
pairs; ``supported`` when more than half of the cells with enough pairs are ``for``; otherwise
``not supported`` (the counts for / against / unclear are printed beside it, so "not supported
because contradicted" and "not supported because undecided" are told apart).

**Targets** (per dataset, our best min-min selected on validation over both models):
(1) its test mean ≥ the paper's figure in at least one F1 variant (Kendall τ for rankings);
(2) its test mean ≥ the best scikit-learn reference's on the same (seed, fold) splits, on
example-F1 / Kendall τ; (3) significantly above the ``constant`` floor of the same model
(the "better" rule above: the 95 % interval of the paired difference above 0).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.records import Status
from harness.stats import PairedDifference, paired_difference

#: dataset -> (figure × 100, the paper's best method): F1 × 100 with the unary model and the
#: best min-min variant; Kendall τ × 100 with the permutahedron model (read from the paper's tables)
PAPER_MULTILABEL = {
    "yeast": (65.04, "min-min logistic"), "scene": (75.83, "min-min sparsemax"),
    "birds": (46.48, "min-min logistic"), "emotions": (66.86, "min-min sparsemax"),
    "cal500": (46.39, "min-min sparsemax"),
}
PAPER_RANKING = {
    "lr-authorship": (88.69, "min-min"), "lr-glass": (85.94, "min-min"), "lr-iris": (99.26, "min-min"),
    "lr-vehicle": (86.34, "MCMC"), "lr-vowel": (74.26, "min-min"), "lr-wine": (91.98, "min-min"),
}
PAPER_FIGURES = {**PAPER_MULTILABEL, **PAPER_RANKING}
MINMIN = ("minmin-logistic", "minmin-logistic-is", "minmin-sparsemax")
LOGISTIC = ("minmin-logistic", "minmin-logistic-is")  # the KL min-min variants: they learn τ ≈ log Z
FLOOR = "constant"
#: metrics shown on the × 100 scale
PERCENT = ("f1_example", "f1_micro", "f1_macro", "subset_acc", "kendall", "spearman", "exact_match")
MIN_PAIRS = 3
#: "large k" for the sparsemax claim: the paper's example is cal500 (k = 174); the others have k ≤ 19
LARGE_K = 50
FOR, AGAINST, UNCLEAR, TOO_FEW = "for", "against", "unclear", "n too small"
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive (n too small)"
RULE = (f"per task × model cell, a paired comparison over the shared (seed, fold) units (≥ {MIN_PAIRS} pairs); "
        "\"A better than B\": for when the 95 % t-interval of A − B is above 0, against when below 0; "
        "\"A ≈ B\": for when |mean A − B| ≤ one pooled std of the two configs, against when the whole "
        "interval lies beyond it; a claim is *supported* when more than half of its cells with enough "
        "pairs are for, *inconclusive (n too small)* when no cell has enough pairs, else *not supported*")


def scale(metric: str) -> float:
    return 100.0 if metric in PERCENT else 1.0


def direction(metric: str) -> str:
    from tasks.metrics import direction as metric_direction

    return metric_direction(metric)


def test_column(metric: str) -> str:
    from harness.leaderboard import metric_column

    return metric_column(metric)


def val_column(metric: str) -> str:
    return f"val_{metric}"


def prepare(runs: pd.DataFrame) -> pd.DataFrame:
    """The ok runs with a ``config`` label and a pairing ``unit`` ("seed/fold")."""
    from harness.leaderboard import _units, with_config

    if runs.empty:
        return runs.assign(config=pd.Series(dtype=object), unit=pd.Series(dtype=object))
    ok = with_config(runs[runs["status"] == Status.OK.value])
    return ok.assign(unit=_units(ok))


def primary_metric(kind_or_task: str) -> str:
    return "kendall" if kind_or_task in PAPER_RANKING or kind_or_task == "ranking" else "f1_example"


def select_config(ok: pd.DataFrame, task: str, models: str | Sequence[str], methods: Iterable[str],
                  metric: str, fallback: str | None = None) -> tuple[str, str] | None:
    """(model, config) with the best validation mean of ``metric`` among the ok runs of ``task``
    on ``models`` whose method is in ``methods``; ties go to the first (model, config) in sorted
    order. When no run has a validation value of ``metric`` (validation NLL is not always
    measured), the ``fallback`` metric's; None when neither has one. A config with an impossible
    validation value (a negative NLL: :meth:`tasks.metrics.Metric.impossible`) is not a candidate."""
    from harness.leaderboard import impossible_values

    models = [models] if isinstance(models, str) else list(models)
    column = val_column(metric)
    rows = ok[(ok["task"] == task) & ok["model"].isin(models) & ok["method"].isin(list(methods))]
    if column in rows and len(rows):
        values = pd.to_numeric(rows[column], errors="coerce")
        configs = [rows["model"], rows["config"]]
        broken = impossible_values(rows.assign(value=values), metric, split="val")
        means = values.where(~broken.groupby(configs).transform("any").astype(bool)).groupby(configs).mean().dropna()
    else:
        means = pd.Series(dtype=float)
    if means.empty:
        return select_config(ok, task, models, methods, fallback) if fallback else None
    means = means.sort_index()
    best = means.idxmax() if direction(metric) == "max" else means.idxmin()
    return str(best[0]), str(best[1])


def unit_values(ok: pd.DataFrame, task: str, model: str, config: str, metric: str) -> pd.Series:
    """Test values (× :func:`scale`) of one configuration, one per unit (repeats averaged)."""
    column = test_column(metric)
    rows = ok[(ok["task"] == task) & (ok["model"] == model) & (ok["config"] == config)]
    if column not in rows or rows.empty:
        return pd.Series(dtype=float)
    values = pd.to_numeric(rows[column], errors="coerce") * scale(metric)
    return values.groupby(rows["unit"]).mean().dropna()


@dataclass(frozen=True)
class Comparison:
    """A − B on one cell, oriented so that ``mean`` > 0 means A is better."""

    task: str
    model: str
    a: str
    b: str
    metric: str
    sense: str  # "better" | "equivalent"
    n: int
    mean: float
    low: float
    high: float
    p_value: float
    margin: float
    verdict: str

    def row(self) -> dict[str, object]:
        margin = f"±{self.margin:.2f}" if self.sense == "equivalent" and np.isfinite(self.margin) else ""
        return {"task": self.task, "model": self.model, "A": self.a, "B": self.b, "metric": self.metric,
                "n pairs": self.n, "A − B (better > 0)": _num(self.mean),
                "95 % CI": "–" if not np.isfinite(self.low) else f"[{self.low:.2f}, {self.high:.2f}]",
                "p": "–" if not np.isfinite(self.p_value) else f"{self.p_value:.3g}",
                "margin": margin, "cell": self.verdict}


def _num(value: float) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:+.2f}"


def cell_verdict(n: int, mean: float, low: float, high: float, sense: str, margin: float = math.nan) -> str:
    """The rule of the module doc for one paired comparison."""
    if n < MIN_PAIRS or not np.isfinite(mean):
        return TOO_FEW
    if sense == "better":
        return FOR if low > 0 else AGAINST if high < 0 else UNCLEAR
    if sense != "equivalent":
        raise ValueError(f"unknown claim sense {sense!r}")
    if not np.isfinite(margin):
        return TOO_FEW
    if abs(mean) <= margin:
        return FOR
    return AGAINST if (low > margin or high < -margin) else UNCLEAR


def paired(task: str, model: str, a_name: str, b_name: str, metric: str, a: pd.Series, b: pd.Series,
           sense: str, *, maximize: bool = True) -> Comparison:
    """Compare unit-indexed values ``a`` and ``b`` (see the module doc)."""
    units = a.index.intersection(b.index)
    a_shared, b_shared = a.loc[units].to_numpy(float), b.loc[units].to_numpy(float)
    diff = paired_difference(a_shared, b_shared) if maximize else paired_difference(b_shared, a_shared)
    margin = math.nan
    if sense == "equivalent" and len(a) > 1 and len(b) > 1:
        margin = float(math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2))
    verdict = cell_verdict(diff.n, diff.mean, diff.low, diff.high, sense, margin)
    return Comparison(task, model, a_name, b_name, metric, sense, diff.n, diff.mean, diff.low, diff.high,
                      diff.p_value, margin, verdict)


def compare_configs(ok: pd.DataFrame, task: str, a: tuple[str, str], b: tuple[str, str], metric: str,
                    sense: str) -> Comparison:
    """Configs ``a`` = (model, config) and ``b`` on ``task``'s test ``metric``; the cell's model
    is shown as ``a``'s, or ``a vs b`` when they differ."""
    model = a[0] if a[0] == b[0] else f"{a[0]} vs {b[0]}"
    return paired(task, model, a[1], b[1], metric, unit_values(ok, task, *a, metric),
                  unit_values(ok, task, *b, metric), sense, maximize=direction(metric) == "max")


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, its cells and its verdict."""

    name: str
    statement: str
    how: str
    comparisons: tuple[Comparison, ...]

    @property
    def counts(self) -> dict[str, int]:
        return {v: sum(c.verdict == v for c in self.comparisons) for v in (FOR, AGAINST, UNCLEAR, TOO_FEW)}

    @property
    def verdict(self) -> str:
        return claim_verdict(c.verdict for c in self.comparisons)


def claim_verdict(cells: Iterable[str]) -> str:
    """The claim-level rule of the module doc."""
    cells = [c for c in cells if c != TOO_FEW]
    if not cells:
        return INCONCLUSIVE
    return SUPPORTED if sum(c == FOR for c in cells) > len(cells) / 2 else NOT_SUPPORTED


def _cells(ok: pd.DataFrame, kind: str | None = None) -> list[tuple[str, str]]:
    tasks = PAPER_MULTILABEL if kind == "multilabel" else PAPER_RANKING if kind == "ranking" else PAPER_FIGURES
    present = ok[ok["task"].isin(list(tasks))]
    return sorted(set(zip(present["task"], present["model"])))


def _best_vs_best(ok: pd.DataFrame, cells, a_methods, b_methods, metric: str, select_on: str,
                  sense: str, *, fallback: bool = False) -> list[Comparison]:
    out = []
    for task, model in cells:
        other = primary_metric(task) if fallback else None
        a = select_config(ok, task, model, a_methods, select_on, other)
        b = select_config(ok, task, model, b_methods, select_on, other)
        if a is not None and b is not None:
            out.append(compare_configs(ok, task, a, b, metric, sense))
    return out


def tau_generalisation(ok: pd.DataFrame, curves: pd.DataFrame) -> list[Comparison]:
    """Per cell, the KL min-min config with the best validation primary metric: per run, the mean
    |τ(x) − log Z(x)| over its unseen (test) x against that of the best x-independent constant
    (the median of log Z over the same x, chosen on the test points themselves: an oracle that
    favours the baseline). A = τ(x), B = constant; lower error is better."""
    from harness.plots import tau_points

    points = tau_points(curves) if len(curves) else pd.DataFrame(columns=["run_id", "step", "tau", "logz"])
    if points.empty:
        return []
    per_run = points.groupby("run_id").apply(
        lambda g: pd.Series({"tau": float(np.mean(np.abs(g["tau"] - g["logz"]))),
                             "const": float(np.mean(np.abs(g["logz"] - np.median(g["logz"]))))}),
        include_groups=False)
    out = []
    for task, model in _cells(ok):
        chosen = select_config(ok, task, model, LOGISTIC, primary_metric(task))
        if chosen is None:
            continue
        rows = ok[(ok["task"] == task) & (ok["model"] == model) & (ok["config"] == chosen[1])]
        errors = rows[["run_id", "unit"]].merge(per_run, left_on="run_id", right_index=True)
        if errors.empty:
            continue
        by_unit = errors.groupby("unit")[["tau", "const"]].mean()
        out.append(paired(task, model, f"τ(x) of {chosen[1]}", "best constant", "|τ − log Z| (nats)",
                          by_unit["tau"], by_unit["const"], "better", maximize=False))
    return out


def paper_claims(runs: pd.DataFrame, curves: pd.DataFrame | None = None) -> list[Claim]:
    """The five claims of the paper (issue 16) tested on ``runs`` (see the module doc)."""
    ok = prepare(runs)
    curves = curves if curves is not None else pd.DataFrame()
    multilabel = _cells(ok, "multilabel")
    large = [(t, m) for t, m in _cells(ok)
             if pd.to_numeric(ok.loc[ok["task"] == t, "k"], errors="coerce").max() >= LARGE_K]
    claims = [
        Claim("likelihood", "min-min ≈ exact MLE in likelihood (test NLL)",
              "min-min logistic (plain or importance-weighted) vs exact MLE, each the config with the best "
              "validation NLL (the validation primary metric where no validation NLL is recorded); "
              "equivalence within one std",
              tuple(_best_vs_best(ok, _cells(ok), LOGISTIC, ("exact-mle",), "nll", "nll", "equivalent",
                                  fallback=True))),
    ]
    for metric, label in (("f1_example", "example-F1"), ("f1_micro", "micro-F1")):
        claims.append(Claim(
            f"beats-mle-{metric}", f"min-min beats exact MLE in F1 ({label})",
            f"best min-min (any variant) vs exact MLE, each selected on validation {label}; multilabel cells",
            tuple(_best_vs_best(ok, multilabel, MINMIN, ("exact-mle",), metric, metric, "better"))))
    claims += [
        Claim("sparsemax-large-k", f"min-min sparsemax wins at large k (k ≥ {LARGE_K})",
              "min-min sparsemax vs the best min-min logistic variant (selected on the validation primary "
              f"metric) on the tasks with k ≥ {LARGE_K}",
              tuple(c for t, m in large for c in _best_vs_best(
                  ok, [(t, m)], ("minmin-sparsemax",), LOGISTIC, primary_metric(t), primary_metric(t), "better"))),
        Claim("tau", "τ(x) generalises to unseen x (τ(x) ≈ log Z(x))",
              "mean |τ(x) − log Z(x)| on test inputs of the KL min-min config against the best "
              "x-independent constant (the median log Z of the same inputs)",
              tuple(tau_generalisation(ok, curves))),
    ]
    pairs = []
    for task in sorted(set(ok.loc[ok["task"].isin(list(PAPER_MULTILABEL)), "task"])):
        a = select_config(ok, task, "pairwise", MINMIN, "f1_example")
        b = select_config(ok, task, "unary", MINMIN, "f1_example")
        if a is not None and b is not None:
            pairs.append(compare_configs(ok, task, a, b, "f1_example", "equivalent"))
    claims.append(Claim("pairwise-unary", "pairwise ≈ unary (multilabel, example-F1)",
                        "the best min-min on the pairwise model vs the best on the unary model (each selected "
                        "on validation example-F1), paired over the same splits; equivalence within one std",
                        tuple(pairs)))
    return claims


# ----------------------------------------------------------------------------- targets

@dataclass(frozen=True)
class Target:
    """The issue's targets for one dataset (see the module doc)."""

    task: str
    model: str | None
    config: str | None
    values: dict[str, float]          # our test means (× 100) on the paper's metrics
    paper: float
    beats_paper: bool | None
    reference: str | None
    versus_reference: Comparison | None
    beats_reference: bool | None
    versus_floor: Comparison | None
    above_floor: bool | None
    #: ours − the paper's figure per (seed, fold) unit on the paper metric closest to it (the paper
    #: gives one number, no spread): tells a shortfall within our seed/fold noise from a real one
    versus_paper: tuple[str, PairedDifference] | None = None
    floor_mean: float | None = None  # the constant floor's test mean on the primary metric (× 100)

    @property
    def met(self) -> bool | None:
        checks = (self.beats_paper, self.beats_reference, self.above_floor)
        if any(c is None for c in checks):
            return None
        return all(checks)

    def misses(self) -> list[str]:
        """One phrase per target not met (or not checkable)."""
        out = []
        if self.config is None:
            return ["no ok min-min run"]
        metrics = ", ".join(f"{m} {v:.2f}" for m, v in self.values.items())
        if self.beats_paper is False:
            gap = ""
            if self.versus_paper is not None:
                metric, d = self.versus_paper
                gap = (f"; {metric} − paper {d.mean:+.2f}, 95 % CI [{d.low:.2f}, {d.high:.2f}] over n = {d.n} "
                       f"(seed, fold) units: " + ("significantly below" if d.high < 0 else "within our spread"))
            out.append(f"below the paper's {self.paper:.2f} ({metrics}{gap})")
        if self.beats_reference is False and self.versus_reference is not None:
            c = self.versus_reference
            out.append(f"below the best scikit-learn reference {self.reference} by {-c.mean:.2f} "
                       f"(95 % CI of ours − ref [{c.low:.2f}, {c.high:.2f}], n = {c.n})")
        elif self.beats_reference is None:
            out.append("no scikit-learn reference on the same splits")
        if self.above_floor is False and self.versus_floor is not None:
            c = self.versus_floor
            floor = ""
            if self.floor_mean is not None and np.isfinite(self.floor_mean):
                floor = f"; the featureless floor alone scores {self.floor_mean:.2f}" + (
                    f", above the paper's {self.paper:.2f} too" if self.floor_mean >= self.paper else "")
            out.append(f"not significantly above the constant floor (ours − floor {c.mean:+.2f}, 95 % CI "
                       f"[{c.low:.2f}, {c.high:.2f}], n = {c.n}: {c.verdict}{floor})")
        elif self.above_floor is None:
            out.append("no constant floor run to compare with")
        return out


def reference_values(references: pd.DataFrame, task: str, method: str, metric: str) -> pd.Series:
    from harness.leaderboard import _units

    rows = references[(references["task"] == task) & (references["method"] == method)]
    column = test_column(metric)
    if rows.empty or column not in rows:
        return pd.Series(dtype=float)
    return (pd.to_numeric(rows[column], errors="coerce") * scale(metric)).groupby(_units(rows)).mean().dropna()


def best_reference(references: pd.DataFrame, task: str, metric: str) -> str | None:
    rows = references[references["task"] == task] if len(references) else references
    column = test_column(metric)
    if rows.empty or column not in rows:
        return None
    means = pd.to_numeric(rows[column], errors="coerce").groupby(rows["method"]).mean().dropna().sort_index()
    if means.empty:
        return None
    return str(means.idxmax() if direction(metric) == "max" else means.idxmin())


def targets(runs: pd.DataFrame, references: pd.DataFrame, tasks: Sequence[str] | None = None) -> list[Target]:
    """One :class:`Target` per paper dataset (``tasks``: default every dataset of the paper)."""
    ok = prepare(runs)
    out = []
    for task in tasks if tasks is not None else list(PAPER_FIGURES):
        paper, _ = PAPER_FIGURES[task]
        metrics = ("kendall",) if task in PAPER_RANKING else ("f1_example", "f1_micro")
        primary = metrics[0]
        models = sorted(set(ok.loc[ok["task"] == task, "model"]))
        chosen = select_config(ok, task, models, MINMIN, primary)
        if chosen is None:
            out.append(Target(task, None, None, {}, paper, None, None, None, None, None, None))
            continue
        model, config = chosen
        per_unit = {m: unit_values(ok, task, model, config, m) for m in metrics}
        values = {m: float(v.mean()) for m, v in per_unit.items()}
        finite = [v for v in values.values() if np.isfinite(v)]
        beats_paper = bool(max(finite) >= paper) if finite else None
        versus_paper = None
        if finite:
            closest = max((m for m in metrics if np.isfinite(values[m])), key=values.__getitem__)
            units = per_unit[closest].to_numpy()
            versus_paper = (closest, paired_difference(units, np.full(len(units), paper)))
        ref = best_reference(references, task, primary)
        versus_ref = beats_ref = None
        if ref is not None:
            ours = unit_values(ok, task, model, config, primary)
            versus_ref = paired(task, model, config, ref, primary, ours,
                                reference_values(references, task, ref, primary), "better")
            beats_ref = bool(versus_ref.mean >= 0) if np.isfinite(versus_ref.mean) else None
        versus_floor = above_floor = floor_mean = None
        if FLOOR in set(ok.loc[(ok["task"] == task) & (ok["model"] == model), "config"]):
            versus_floor = compare_configs(ok, task, (model, config), (model, FLOOR), primary, "better")
            above_floor = versus_floor.verdict == FOR
            floor_mean = float(unit_values(ok, task, model, FLOOR, primary).mean())
        out.append(Target(task, model, config, values, paper, beats_paper, ref, versus_ref, beats_ref,
                          versus_floor, above_floor, versus_paper, floor_mean))
    return out


def params_of(runs: pd.DataFrame, config: str) -> dict:
    """The hyperparameters of the first ok run of ``config`` (for the report's footnotes)."""
    rows = runs[runs.get("config", pd.Series(dtype=object)) == config]
    text = rows["params_json"].dropna().iloc[0] if len(rows) and rows["params_json"].notna().any() else "{}"
    return json.loads(text)


# ----------------------------------------------------------------------------- the prior q

FREQUENCY = "prior=frequency"


def uniform_twin(config: str) -> str | None:
    """The uniform-prior configuration of a ``prior=frequency`` one (the same label without it:
    ``bce[prior=frequency,tuned]`` → ``bce[tuned]``); None for a label without that mark."""
    if "[" not in config or FREQUENCY not in config:
        return None
    name, inside = config[:-1].split("[", 1)
    parts = [p for p in inside.split(",") if p != FREQUENCY]
    return f"{name}[{','.join(parts)}]" if parts else name


def prior_comparisons(runs: pd.DataFrame) -> list[Comparison]:
    """Every configuration the suite ran under both priors q, per task × model: the frequency
    prior against the uniform one on the primary metric, paired over (seed, fold) with the
    "better" rule (``for``: frequency significantly better; ``against``: uniform significantly
    better)."""
    ok = prepare(runs)
    out = []
    for (task, model), cell in ok.groupby(["task", "model"]):
        configs = set(cell["config"])
        metric = primary_metric(task)
        for config in sorted(configs):
            twin = uniform_twin(config)
            if twin is not None and twin in configs:
                out.append(compare_configs(ok, task, (model, config), (model, twin), metric, "better"))
    return out
