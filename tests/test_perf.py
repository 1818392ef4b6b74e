"""``ebm-bench perf`` machinery: rows land in the perf table with the schema, every ratio is
value / the reference's value from the same invocation, targets are judged from the rows.
No timing assertions (timings are the benchmark's output, not its correctness)."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
import torch

from harness import store
from harness.perf import PerfConfig, run_perf, select_benchmarks, steps
from harness.perf.quality import Curve
from harness.perf.targets import assess, with_targets

KEYS = ["benchmark", "task", "model", "k", "metric"]


def _check_ratios(frame: pd.DataFrame) -> int:
    """Each row with a ratio: ratio == value / value of the row of its reference method with the
    same benchmark, task, model, k and metric. Returns how many ratios were checked."""
    checked = 0
    for _, row in frame[frame["ratio"].notna()].iterrows():
        same = frame
        for key in KEYS:
            same = same[same[key].isna()] if pd.isna(row[key]) else same[same[key] == row[key]]
        reference = same[same["method"] == row["reference_method"]]["value"].unique()
        assert len(reference) == 1, (row.to_dict(), reference)
        assert row["ratio"] == pytest.approx(row["value"] / reference[0], rel=1e-12)
        checked += 1
    return checked


def test_step_cost_rows_have_schema_and_consistent_ratios(tmp_path):
    config = PerfConfig(quick=True)
    rows, notes = steps.run(config, configs=(("pairwise", 8), ("pairwise", 20)),
                            methods=("bce", "minmin-logistic", "exact-mle"))
    store.append_rows(tmp_path, "perf", rows)
    frame = store.read_table(tmp_path, "perf")
    mirror = pd.read_parquet(tmp_path / "perf.parquet")
    assert list(frame.columns) == store.PERF_SCHEMA.names == list(mirror.columns)
    assert len(frame) == len(mirror) == len(rows)
    # k = 8: 3 methods vs bce + exact vs minmin; k = 20: exact is past its enumeration limit
    assert len(frame) == 4 + 2
    assert any("exact-mle pairwise k=20 skipped" in note and "max_subsets" in note for note in notes)
    assert set(frame["unit"]) == {"ms"} and (frame["value"] > 0).all()
    assert set(frame["reference_method"]) == {"bce", "minmin-logistic"}
    assert (frame.loc[frame["method"] == "bce", "ratio"] == 1.0).all()
    assert _check_ratios(frame) == 6
    assert frame["host"].nunique() == 1 and frame["started_at"].nunique() == 1


def test_stacking_rows_name_the_members_and_measure_the_site_loop_past_its_limit(monkeypatch):
    """Each case: the lone fits and the stacked group, the ratio to the lone fits; the Gibbs
    site-loop cases carry their sweeps in the name and are measured even where mcmc-pcd's
    ``MAX_STACKED_SITES`` keeps runs of that size alone (the benchmark measures that rule), while
    the registry's instance keeps its limit."""
    from baselines.registry import get_method
    from ebm.spaces import make_space
    from harness.perf import stacking

    monkeypatch.setattr(stacking, "CASES", (("multilabel", "unary", 5, ("bce",)),))
    monkeypatch.setattr(stacking, "GIBBS_SITES", (6, 8))
    monkeypatch.setattr(type(get_method("mcmc-pcd")), "MAX_STACKED_SITES", 7)
    rows, _ = stacking.run(PerfConfig(quick=True))
    frame = pd.DataFrame(rows)
    assert sorted(zip(frame["method"], frame["k"])) == [
        ("bce", 5), ("bce[stacked=5]", 5), ("mcmc-pcd[stacked=5,sweeps=3]", 6), ("mcmc-pcd[stacked=5,sweeps=3]", 8),
        ("mcmc-pcd[sweeps=3]", 6), ("mcmc-pcd[sweeps=3]", 8)]
    assert _check_ratios(frame) == 6 and (frame["value"] > 0).all()
    assert not get_method("mcmc-pcd").can_stack(make_space("multilabel", 8, "pairwise"), "pairwise", {})


def test_compile_rows_time_whole_fits_and_their_compiled_steps_in_fresh_processes(monkeypatch):
    """--quick on bce, 20 steps: eager, compiled (empty cache) and compiled (warm cache), each fit in
    a new interpreter (real subprocesses); per contender a ``fit_seconds`` and a ``ms_per_step``
    row, ratios to eager. The second half's steps lie inside the fit: fit ≥ 10 steps' time."""
    from harness.perf import compiled

    monkeypatch.setattr(compiled, "QUICK_STEPS", 20)
    rows, notes = compiled.run(PerfConfig(quick=True))
    frame = pd.DataFrame(rows)
    labels = ["bce[stacked=5]", "bce[stacked=5,compiled]", "bce[stacked=5,compiled-warm]"]
    assert sorted(zip(frame["metric"], frame["method"])) == sorted(
        [("fit_seconds", m) for m in labels] + [("ms_per_step", m) for m in labels])
    assert _check_ratios(frame) == 6 and (frame["value"] > 0).all() and (frame["n_repeats"] == 2).all()
    values = frame.set_index(["metric", "method"])["value"]
    for label in labels:
        assert values["fit_seconds", label] >= 10 * values["ms_per_step", label] / 1e3
    assert "20 steps" in notes[0]


def test_dropout_rows_set_ebms_dropout_beside_torchs_on_the_same_trunk(monkeypatch):
    """Per case (the op at each shape, the tuned trunk) a ``torch`` and an ``ebm`` row, the ratio to
    torch's; the two trunks hold the same weights and differ in their dropout layers only."""
    from torch import nn

    from ebm.energies import Dropout, mlp
    from harness.perf import dropout

    monkeypatch.setattr(dropout, "OP_SHAPES", (("op", (4, 6)),))
    rows, notes = dropout.run(PerfConfig(quick=True))
    frame = pd.DataFrame(rows)
    assert sorted(zip(frame["task"], frame["method"])) == [
        ("mlp-3x256 64x10", "ebm"), ("mlp-3x256 64x10", "torch"), ("op 4x6", "ebm"), ("op 4x6", "torch")]
    assert _check_ratios(frame) == 4 and (frame["value"] > 0).all() and "p = 0.13" in notes[0]
    trunk = mlp(10, 8, 2, 0.3)
    other = dropout._torch_trunk(trunk)
    kinds = [(type(a), type(b)) for a, b in zip(trunk, other) if isinstance(a, nn.Dropout)]
    assert kinds == [(Dropout, nn.Dropout)] * 2
    assert all(torch.equal(a, b) for a, b in zip(trunk.parameters(), other.parameters()))


def test_cli_perf_writes_the_table_and_prints_it(tmp_path, capsys):
    from harness.cli import main

    assert main(["perf", "--quick", "--benchmarks", "flops", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "pairwise-energy" in out and "GFLOP/s" in out
    frame = store.read_table(tmp_path, "perf")
    assert set(frame["benchmark"]) == {"flops"} and frame["value"].map(math.isfinite).all()
    assert _check_ratios(frame) == len(frame) == 4
    from harness.query import run_query

    assert run_query(tmp_path, "select count(*) as n from perf")["n"].iloc[0] == 4


def test_benchmark_selection_keeps_run_order_and_suggests_names(tmp_path):
    assert select_benchmarks(["memory", "step_cost"]) == ["step_cost", "memory"]
    assert select_benchmarks(None)[0] == "step_cost"
    with pytest.raises(ValueError, match="did you mean 'step_cost'"):
        select_benchmarks(["stepcost"])
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(store.StoreError, match="not writable"):  # checked before any benchmark runs
        run_perf(blocker / "results", PerfConfig(quick=True), ["step_cost"])


@pytest.mark.parametrize("ratio, met", [(1.2, True), (2.0, True), (2.1, False), (None, None)])
def test_targets_are_judged_from_the_row(ratio, met):
    row = {"benchmark": "step_cost", "model": "pairwise", "k": 16, "method": "minmin-logistic",
           "reference_method": "bce", "metric": "ms_per_step", "value": 1.0, "ratio": ratio}
    assert assess(row) == ("≤ 2× bce", met)
    other = {**row, "k": 12}
    assert assess(other) == (None, None)
    frame = with_targets(pd.DataFrame([row, other]))
    assert frame["meets_target"].tolist()[1] is None


def test_time_to_quality_curve_reads_the_first_crossing():
    curve = Curve(seconds=[0.5, 1.0, 2.0, 3.0], nll=[6.0, 5.9, 5.7, 5.8])
    assert curve.best() == 5.7
    assert curve.first_within(5.7 * 1.02) == 2.0  # 5.9 > 5.814: the first crossing is the third point
    assert curve.first_within(5.95) == 1.0
    assert curve.first_within(5.0) is None


def test_repetitions_give_median_spread_and_flag_disagreeing_ratios():
    from harness.perf.common import perf_rows
    from harness.perf.targets import render

    config = PerfConfig(quick=True)
    rows = perf_rows(config, "step_cost", "ms_per_step", "ms",
                     {"bce": [1.0, 2.0, 4.0], "nce": [3.0, 3.0, 3.0]}, reference="bce")
    by = {r["method"]: r for r in rows}
    assert by["bce"]["value"] == 2.0 and by["bce"]["spread"] == 4.0 and by["bce"]["n_repeats"] == 3
    assert by["nce"]["value"] == 3.0 and by["nce"]["spread"] == 1.0
    assert by["nce"]["ratio"] == 1.5  # median / median
    assert by["nce"]["ratio_spread"] == pytest.approx(3.0 / 0.75)  # per-repetition ratios 3, 1.5, 0.75
    text = render(pd.DataFrame(rows))
    assert "unstable" in text and "issue" not in text
    steady = perf_rows(config, "x", "s", "s", {"a": [1.0, 1.1], "b": [2.0, 2.1]}, reference="a")
    assert "unstable" not in render(pd.DataFrame(steady))


def test_protocol_estimate_multiplies_each_configurations_step_cost_by_the_stored_work():
    """Per configuration: s_step alone × trials per study × mean trial steps + runs × (s_step in a
    run × mean run steps + evaluation seconds), written out here by hand, where a run's step is a
    stacked member's (its group's clock / members / steps) when the configuration was also timed as
    a group; a stacked member's stored clock counts 1/stacked; a configuration the stored protocol
    lacks is left out."""
    from harness.perf.protocol import estimate

    costs = pd.DataFrame([
        {"task": "t", "model": "m", "method": "a", "prior": "uniform", "status": "ok", "train_seconds": 3.0,
         "n_steps": 300, "eval_seconds": 2.0},
        {"task": "t", "model": "m", "method": "constant", "prior": None, "status": "ok", "train_seconds": 0.0,
         "n_steps": 0, "eval_seconds": 0.5},
        {"task": "t", "model": "m", "method": "new", "prior": "uniform", "status": "ok", "train_seconds": 1.0,
         "n_steps": 100, "eval_seconds": 0.0},
        # "b" alone, then as a stacked group of 4 (every member's train_seconds is the group's clock)
        {"task": "t", "model": "m", "method": "b", "prior": "uniform", "status": "ok", "train_seconds": 3.0,
         "n_steps": 300, "eval_seconds": 2.0},
        *[{"task": "t", "model": "m", "method": "b", "prior": "uniform", "status": "ok", "train_seconds": 6.0,
           "n_steps": 300, "eval_seconds": eval_seconds, "stacked": 4.0} for eval_seconds in (1.0, 1.0, 2.0, 2.0)],
    ])
    stored_runs = pd.DataFrame([
        {"run_id": "r1", "task": "t", "model": "m", "method": "a", "prior": "uniform", "status": "ok",
         "n_steps": 100, "train_seconds": 50.0, "eval_seconds": 1.0, "stacked": 5.0},
        {"run_id": "r2", "task": "t", "model": "m", "method": "a", "prior": "uniform", "status": "ok",
         "n_steps": 300, "train_seconds": 20.0, "eval_seconds": 1.0, "stacked": None},
        {"run_id": "r3", "task": "t", "model": "m", "method": "a", "prior": "uniform", "status": "failed",
         "n_steps": 5, "train_seconds": 1.0, "eval_seconds": 0.0, "stacked": None},
        {"run_id": "r4", "task": "t", "model": "m", "method": "constant", "prior": None, "status": "ok",
         "n_steps": 0, "train_seconds": 0.0, "eval_seconds": 0.25, "stacked": None},
        *[{"run_id": f"b{i}", "task": "t", "model": "m", "method": "b", "prior": "uniform", "status": "ok",
           "n_steps": 100 * i, "train_seconds": 10.0, "eval_seconds": 1.0, "stacked": 2.0} for i in (1, 2, 3)],
    ])
    start = pd.Timestamp("2026-12-01T00:00:00Z")
    stored_trials = pd.DataFrame([
        {"study": study, "trial_number": i, "task": "t", "model": "m", "method": "a", "n_steps": steps,
         "started_at": start, "finished_at": start + pd.Timedelta(seconds=seconds)}
        for study, i, steps, seconds in [("a-uniform", 0, 100, 4.0), ("a-uniform", 1, 200, 6.0),
                                         ("a-frequency", 0, 300, 8.0), ("a-frequency", 1, 400, 10.0)]])
    stored_trials = pd.concat([stored_trials, stored_trials.assign(method="b", study="b-uniform").iloc[:2]])
    table = estimate(costs, stored_runs, stored_trials).set_index("method")
    assert set(table.index) == {"a", "b", "constant"}
    assert table.loc["a", "stacked"] == 1 and table.loc["b", "stacked"] == 4
    # a: 0.01 s a step × (2 trials a study × 250 steps + 2 runs × 200 steps) + 2 runs × 2 s
    assert table.loc["a", "seconds"] == pytest.approx(0.01 * (2 * 250 + 2 * 200) + 2 * 2.0)
    # stored: runs 50/5 + 1 and 20 + 1; trials (4 + 6 + 8 + 10) s over 2 studies
    assert table.loc["a", "stored_seconds"] == pytest.approx(11.0 + 21.0 + 28.0 / 2)
    # b: trials at 0.01 s a step (alone): 2 × 150; runs at 6 / 4 / 300 = 0.005 s a step: 3 × (0.005 × 200
    # + the members' mean evaluation, 1.5 s)
    assert table.loc["b", "seconds"] == pytest.approx(0.01 * 2 * 150 + 3 * (0.005 * 200 + 1.5))
    assert table.loc["constant", "seconds"] == pytest.approx(1 * 0.5)
    assert table.loc["constant", "stored_seconds"] == pytest.approx(0.25)


def test_protocol_goal_is_judged_on_the_measured_wall_time_not_the_estimate():
    """The ≤ 3 h goal reads the stored protocol's measured wall time (method ``measured``, beside the
    whole suite's rows only), never the estimate, which leaves out Ray, Optuna, the store and idle
    workers; the estimate and the stored per-fit seconds are each summed over the tasks / 2 workers."""
    from harness.perf.protocol import WORKERS, protocol_rows

    table = pd.DataFrame({"task": ["a", "a", "b"], "seconds": [1000.0, 3000.0, 2000.0],
                          "stored_seconds": [1500.0, 4500.0, 4000.0]})
    frame = with_targets(pd.DataFrame(protocol_rows(PerfConfig(), table, measured_wall=12_229.0)))
    whole = frame[frame["task"] == "all"].set_index("method")
    assert set(frame[frame["task"] != "all"]["method"]) == {"estimate", "stored"}  # measured: the whole suite only
    assert whole.loc["estimate", "value"] == pytest.approx(6000.0 / WORKERS)
    assert whole.loc["stored", "value"] == pytest.approx(10_000.0 / WORKERS)
    assert whole.loc["measured", "value"] == 12_229.0
    assert whole.loc["measured", "ratio"] == pytest.approx(12_229.0 / 5000.0)  # its run's spending beyond its fits
    assert whole.loc["measured", "target"] == "≤ 3 h" and whole.loc["measured", "meets_target"] == False  # noqa: E712
    assert pd.isna(whole.loc["estimate", "target"])  # 3,000 s "estimated" must not read as the goal met
    faster = with_targets(pd.DataFrame(protocol_rows(PerfConfig(), table, measured_wall=10_000.0)))
    assert faster[faster["method"] == "measured"]["meets_target"].tolist() == [True]
    assert "measured" not in set(pd.DataFrame(protocol_rows(PerfConfig(), table))["method"])


def test_stored_protocol_wall_time_is_its_paper_invocations_seconds():
    """The committed protocol's wall time: the ``seconds`` of its manifest's ``paper`` invocations
    summed (not the convergence study's, which shares the folder), read here from the JSON itself."""
    import json

    from harness.perf.protocol import REFERENCE, stored_wall_seconds

    invocations = json.loads((REFERENCE / "manifest.json").read_text())["invocations"]
    paper = [inv["seconds"] for inv in invocations if inv["suite"] == "paper"]
    assert len(paper) >= 1 and any(inv["suite"] != "paper" for inv in invocations)
    assert stored_wall_seconds() == pytest.approx(sum(paper))


def test_protocol_benchmark_times_every_configuration_of_a_task(data_dir):
    """--quick on one small ranking task: a row per task and for all, the estimate over the
    workers, every configuration of the task timed and counted (none left out)."""
    from harness.perf import protocol

    rows, notes = protocol.run(PerfConfig(quick=True, data_dir=data_dir, tasks=("lr-wine",)))  # perf --tasks
    frame = pd.DataFrame(rows)
    assert set(frame["task"]) == {"lr-wine", "all"} and set(frame["method"]) == {"estimate", "stored"}
    estimate = frame[frame["method"] == "estimate"].set_index("task")["value"]
    assert estimate["all"] == estimate["lr-wine"] > 0
    assert not any("not estimated" in note for note in notes), notes
    assert _check_ratios(frame) == len(frame)
    # the stackable configurations were timed as a group too, of the size run gives 5 seeds x 10 folds:
    # two groups of 25
    from harness.dispatch import STACK_LIMIT

    timed = re.search(r"(\d+) configurations timed .*?(\d+) of them also as a stacked group of their runs' "
                      r"size, (\S+) members", " ".join(notes))
    assert timed is not None, notes
    assert 0 < int(timed.group(2)) < int(timed.group(1)) and timed.group(3) == str(STACK_LIMIT)


def test_group_size_benchmark_times_both_sizes_of_stored_configurations(data_dir, monkeypatch):
    """--quick, two of lr-iris's stored configurations, a few steps: each timed at 10 and 25
    members, the 25's ratio to the 10 per configuration, and the tally."""
    from harness.perf import group_size

    configurations = group_size._configurations
    monkeypatch.setattr(group_size, "_configurations", lambda *a: configurations(*a)[:2])
    monkeypatch.setattr(group_size, "QUICK_SHORT", 2)
    monkeypatch.setattr(group_size, "QUICK_LONG", 6)
    rows, notes = group_size.run(PerfConfig(quick=True, data_dir=data_dir))
    frame = pd.DataFrame(rows)
    assert len(frame) == 4 and set(frame["task"]) == {"lr-iris"}, frame
    # a 4-step difference of two fits can come out ≤ 0 on a busy machine: finite, not positive
    assert frame["method"].str.endswith("[stacked=10]").sum() == 2 and frame["value"].map(math.isfinite).all()
    assert _check_ratios(frame) == len(frame)
    # every configuration is tallied: counted, or left out by name (a 4-step difference of two fits can
    # come out ≤ 0 even on an idle machine: a CI run on bada636 left lr-iris/birkhoff/mcmc-pcd out so)
    joined = " ".join(notes)
    counted = re.search(r"25 members cheaper per member-step than 10 in \d+ of (\d+) configurations", joined)
    left_out = re.search(r"(\d+) configurations left out of that count", joined)
    assert (int(counted.group(1)) if counted else 0) + (int(left_out.group(1)) if left_out else 0) == 2, notes
    assert not any("failed" in note for note in notes), notes


def test_group_size_counts_only_ratios_of_positive_timings(data_dir, monkeypatch):
    """A member-step timing is a difference of two fits; on a busy machine it can come out ≤ 0,
    and a ratio of such numbers (−0.5 against 1.0, or two negatives) is no comparison: that
    configuration is named among those left out, not counted as cheaper. The timings here are
    given (two lr-iris configurations, --quick: a warm-up, then 10 and 25 members once each)."""
    from harness.perf import group_size

    configurations = group_size._configurations
    monkeypatch.setattr(group_size, "_configurations", lambda *a: configurations(*a)[:2])
    timings = iter([9.0, 2.0, 1.5,      # first configuration: warm-up, 10 members, 25 members (cheaper)
                    9.0, -0.5, 1.0])    # second: the 10-member timing came out negative
    monkeypatch.setattr(group_size, "_member_step_ms", lambda *a: next(timings))
    rows, notes = group_size.run(PerfConfig(quick=True, data_dir=data_dir))
    assert len(rows) == 4
    assert any("cheaper per member-step than 10 in 1 of 1 configurations (median ratio 0.75)" in note
               for note in notes), notes
    (left_out,) = [note for note in notes if "left out of that count" in note]
    assert left_out.startswith("group_size: 1 configurations") and "not positive" in left_out, left_out


def test_perf_tasks_must_name_tasks_the_stored_protocol_ran(tmp_path, capsys):
    """``perf --tasks``: an unknown name is refused with "did you mean" before anything is timed;
    a known task the stored protocol never ran gives protocol and group_size a note naming it and no rows."""
    from harness.cli import main
    from harness.perf import group_size, protocol

    assert main(["perf", "--benchmarks", "group_size", "--tasks", "cal50", "--results-dir", str(tmp_path)]) != 0
    assert "unknown task 'cal50'; did you mean 'cal500'" in capsys.readouterr().err
    assert not (tmp_path / "perf").exists()
    for benchmark in (protocol, group_size):
        rows, notes = benchmark.run(PerfConfig(tasks=("cal500", "syn-ising-k12")))
        assert rows == [] and len(notes) == 1, notes
        assert "no stored configuration of syn-ising-k12 in paper" in notes[0] and "cal500" in notes[0].split("tasks:")[1]
