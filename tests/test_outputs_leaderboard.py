"""Leaderboard: means, stds, failure counts and ranks against hand computation on the fixture."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_outputs_fixtures import FAILED, OK_RESULTS, PRIMARY, results_dir  # noqa: F401 (fixture)

from harness import leaderboard, store


def _cell(board: pd.DataFrame, task: str, model: str, method: str, metric: str) -> pd.Series:
    rows = board[(board.task == task) & (board.model == model) & (board.method == method) & (board.metric == metric)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_means_stds_and_counts_match_hand_computation(results_dir):
    board = leaderboard.build_leaderboard(store.read_table(results_dir, "runs"))
    for (task, model, method), metrics in OK_RESULTS.items():
        n_failed = len(FAILED.get((task, model, method), []))
        for metric, values in metrics.items():
            row = _cell(board, task, model, method, metric)
            assert row["mean"] == pytest.approx(np.mean(values), abs=1e-12)
            expected_std = np.std(values, ddof=1)
            assert row["std"] == pytest.approx(expected_std, abs=1e-12)
            assert (row["n_ok"], row["n_failed"]) == (len(values), n_failed)
    # the superseded failed attempt of yeast/unary/bce/s1 is not counted: only the timeout is
    assert _cell(board, "yeast", "unary", "bce", "f1_example")["n_failed"] == 1


def test_all_failed_group_is_shown_not_averaged(results_dir):
    board = leaderboard.build_leaderboard(store.read_table(results_dir, "runs"))
    row = _cell(board, "yeast", "unary", "exact-mle", "f1_example")
    assert (row["n_ok"], row["n_failed"]) == (0, 3)
    assert np.isnan(row["mean"]) and np.isnan(row["rank"])
    # unsupported runs are neither ok nor failed: no row at all
    assert not ((board.task == "lr-iris") & (board.method == "exact-mle")).any()
    # a metric the task never reports gets no rows (kendall on yeast)
    assert not ((board.task == "yeast") & (board.metric == "kendall")).any()


def test_ranks_follow_metric_direction(results_dir):
    board = leaderboard.build_leaderboard(store.read_table(results_dir, "runs"))
    # f1_example is maximised: unary 0.62 (minmin) > 0.52 (bce); pairwise 0.59 (bce) > 0.56
    assert _cell(board, "yeast", "unary", "minmin-logistic", "f1_example")["rank"] == 1
    assert _cell(board, "yeast", "unary", "bce", "f1_example")["rank"] == 2
    assert _cell(board, "yeast", "pairwise", "bce", "f1_example")["rank"] == 1
    # hamming is minimised: unary 0.19 (minmin) < 0.24; pairwise tie 0.21 = 0.21 shares rank 1
    assert _cell(board, "yeast", "unary", "minmin-logistic", "hamming")["rank"] == 1
    assert _cell(board, "yeast", "unary", "bce", "hamming")["rank"] == 2
    assert _cell(board, "yeast", "pairwise", "bce", "hamming")["rank"] == 1
    assert _cell(board, "yeast", "pairwise", "minmin-logistic", "hamming")["rank"] == 1


def test_mean_rank_across_tasks_on_primary_metric(results_dir):
    runs = store.read_table(results_dir, "runs")
    board = leaderboard.build_leaderboard(runs)
    assert leaderboard.primary_metrics(runs, ["yeast", "lr-iris"]) == PRIMARY
    ranks = leaderboard.mean_rank_across_tasks(board, primary=PRIMARY).set_index("method")
    # primary-metric ranks: minmin 1 (yeast/unary), 2 (yeast/pairwise), 1 (lr-iris) → 4/3;
    # bce 2, 1, 2 → 5/3; exact-mle is never ranked (all failed)
    assert ranks.at["minmin-logistic", "mean_rank"] == pytest.approx(4 / 3)
    assert ranks.at["bce", "mean_rank"] == pytest.approx(5 / 3)
    assert ranks.at["minmin-logistic", "n_cells"] == 3
    assert "exact-mle" not in ranks.index
    on_hamming = leaderboard.mean_rank_across_tasks(board, metric="hamming").set_index("method")
    assert on_hamming.at["minmin-logistic", "mean_rank"] == pytest.approx(1.0)  # (1 + 1) / 2
    assert on_hamming.at["bce", "mean_rank"] == pytest.approx(1.5)  # (2 + 1) / 2


def test_write_leaderboard_is_readable_and_holds_mean_rank_rows(results_dir):
    path = leaderboard.write_leaderboard(results_dir)
    stored = pq.read_table(path).to_pandas()
    assert list(stored.columns) == leaderboard.COLUMNS
    mean_rank = stored[stored.metric == leaderboard.MEAN_RANK].set_index("method")
    assert mean_rank.at["minmin-logistic", "mean"] == pytest.approx(4 / 3)
    assert mean_rank.at["minmin-logistic", "rank"] == 1
    assert not list(path.parent.glob(".tmp-*"))


@pytest.mark.parametrize("fmt", leaderboard.FORMATS)
def test_formats_show_means_and_failures(results_dir, fmt):
    board = leaderboard.leaderboard_for(results_dir)
    text = leaderboard.format_leaderboard(board, fmt)
    if fmt == "csv":
        frame = pd.read_csv(__import__("io").StringIO(text))
        assert list(frame.columns) == leaderboard.COLUMNS and len(frame) == len(board)
    else:
        assert "0.620 ± 0.020" in text.replace(r"$\pm$", "±")
        assert "exact-mle" in text
    filtered = leaderboard.format_leaderboard(board, fmt, task="lr-iris", metric="kendall")
    assert "yeast" not in filtered and "lr-iris" in filtered


def test_unknown_filter_names_the_choices(results_dir):
    board = leaderboard.leaderboard_for(results_dir)
    with pytest.raises(ValueError, match="yeast"):
        leaderboard.format_leaderboard(board, task="yeats")
    with pytest.raises(ValueError, match="format"):
        leaderboard.format_leaderboard(board, fmt="html")


def test_cli_prints_markdown_and_writes_parquet(results_dir, capsys):
    from harness.commands import leaderboard as command

    args = argparse.Namespace(results_dir=str(results_dir), task="yeast", metric=None, format="markdown",
                              no_write=False)
    assert command.run(args) == 0
    out = capsys.readouterr().out
    assert "| yeast | unary | minmin-logistic |" in out and "**0.620 ± 0.020**" in out
    assert (results_dir / "leaderboard.parquet").is_file()
    args.results_dir = str(results_dir / "nowhere")
    assert command.run(args) == 2
    assert "no runs" in capsys.readouterr().err


def _run(tmp_path, suite_text: str):
    from harness.commands.run import RunOptions, run_suite

    path = tmp_path / "suite.toml"
    path.write_text(suite_text)
    run_suite(path, options=RunOptions(results_dir=tmp_path / "r", executor="serial", progress=False))
    return store.read_table(tmp_path / "r", "runs")


_TWO_BLOCKS = """
[suite]
name = "two-blocks"
seeds = 2
[budget]
max_steps = 4
batch_size = 16
eval_every = 2
[[grid]]
tasks = ["syn-ising-k8"]
models = ["unary"]
methods = ["test-constant"]
[[grid]]
tasks = ["syn-ising-k8"]
models = ["unary"]
methods = ["test-constant"]
params = { test-constant = { noise = 0.5 } }
[[grid]]
tasks = ["syn-pl-k6"]
models = ["permutahedron"]
methods = ["test-raises"]
"""


def test_grid_blocks_with_other_params_are_other_rows_and_all_failed_tasks_stay(tmp_path):
    runs = _run(tmp_path, _TWO_BLOCKS)
    assert set(runs["config"]) == {"test-constant", "test-constant[noise=0.5]", "test-raises"}
    board = leaderboard.build_leaderboard(runs)
    nll = board[(board.task == "syn-ising-k8") & (board.metric == "nll")].set_index("config")
    assert set(nll.index) == {"test-constant", "test-constant[noise=0.5]"}
    assert (nll["n_ok"] == 2).all() and (nll["method"] == "test-constant").all()
    # the ranking task whose runs all failed is listed, under its primary metric, with n_ok = 0
    failed = board[board.task == "syn-pl-k6"]
    assert len(failed) == 1 and failed.iloc[0]["n_ok"] == 0 and failed.iloc[0]["n_failed"] == 2
    assert failed.iloc[0]["metric"] == "nll" and np.isnan(failed.iloc[0]["rank"])
    for fmt in ("table", "markdown", "latex"):
        text = leaderboard.format_leaderboard(board, fmt)
        assert "syn-pl-k6" in text and "test-raises !" in text  # every rendering marks failures


def test_old_rows_without_config_get_one_derived():
    runs = pd.DataFrame({"method": ["minmin-logistic", "minmin-logistic", "bce", "gone-method"],
                         "params_json": ['{"n_samples": 100}', None, '{"lr": 0.5}', '{"x": 1}'],
                         "tuned": [False, False, True, False]})
    labels = leaderboard.with_config(runs)["config"].tolist()
    assert labels == ["minmin-logistic[n_samples=100]", "minmin-logistic", "bce[tuned]", "gone-method"]


def _synthetic_runs(cells: dict) -> pd.DataFrame:
    """cells: (task, model) -> {config: per-seed f1 values}; one row per seed (fold 0)."""
    rows = []
    for (task, model), configs in cells.items():
        for config, values in configs.items():
            for seed, value in enumerate(values):
                rows.append(dict(run_id=f"{task}{model}{config}{seed}", task=task, model=model, method=config,
                                 config=config, seed=seed, fold=0, status="ok" if value is not None else "failed",
                                 test_f1_example=value, primary_metric="f1_example"))
    return pd.DataFrame(rows)


def test_significance_floor_and_shared_cell_mean_ranks():
    a, b, c = [0.61, 0.64, 0.59, 0.66, 0.63], [0.58, 0.60, 0.57, 0.61, 0.62], [0.60, 0.65, 0.58, 0.64, 0.64]
    runs = _synthetic_runs({
        ("t1", "unary"): {"a": a, "b": b, "c": c, "constant": [0.60] * 5},
        ("t2", "unary"): {"a": b, "b": a, "c": c, "constant": [0.70] * 5},
        ("t3", "unary"): {"a": a, "b": c},  # c and the floor are absent here
    })
    board = leaderboard.build_leaderboard(runs)
    t1 = board[board.task == "t1"].set_index("config")
    assert t1.at["a", "tied_best"] and t1.at["c", "tied_best"] and not t1.at["b", "tied_best"]
    assert t1.at["a", "beats_floor"] and not t1.at["b", "beats_floor"] and pd.isna(t1.at["constant", "beats_floor"])
    t2 = board[board.task == "t2"].set_index("config")
    assert not t2["beats_floor"].dropna().any()  # the floor wins t2
    markdown = leaderboard.format_leaderboard(board[board.task == "t2"], "markdown")
    assert markdown.count(leaderboard.MARK_FLOOR) >= 3
    # mean ranks: t3 lacks c and the floor, so only t1 and t2 (shared by all four) count
    ranks = leaderboard.mean_rank_across_tasks(board, primary={"t1": "f1_example", "t2": "f1_example",
                                                               "t3": "f1_example"}).set_index("config")
    assert (ranks["n_cells"] == 2).all()
    # t1: a 1, c 2, constant 3, b 4; t2: constant 1, b 2, c 3, a 4
    assert ranks.at["a", "mean_rank"] == pytest.approx(2.5) and ranks.at["constant", "mean_rank"] == pytest.approx(2.0)
    assert ranks.at["b", "mean_rank"] == pytest.approx(3.0) and ranks.at["c", "mean_rank"] == pytest.approx(2.5)


def test_critical_difference_figure_and_friedman_over_shared_cells(tmp_path):
    from scipy.stats import friedmanchisquare

    from harness import plots, stats

    a, b, c = [0.61, 0.64, 0.59], [0.58, 0.60, 0.57], [0.60, 0.65, 0.58]
    cells = {(f"t{i}", "unary"): {"a": [v + i / 10 for v in a], "b": [v + i / 20 for v in b], "c": c}
             for i in range(4)}
    cells[("t9", "unary")] = {"a": a, "b": b}  # not shared by c: left out of the across-task statistics
    board = leaderboard.build_leaderboard(_synthetic_runs(cells))
    primary = {task: "f1_example" for task, _ in cells}
    matrix, _, left_out = leaderboard.rank_matrix(board, primary=primary)
    assert len(matrix) == 4 and left_out == []
    result = stats.friedman(matrix, "max")
    means = {(t, m): {k: float(np.mean(v)) for k, v in configs.items()} for (t, m), configs in cells.items()
             if (t, m) != ("t9", "unary")}
    expected = friedmanchisquare(*[[means[cell][k] for cell in sorted(means)] for k in ("a", "b", "c")])
    assert result.statistic == pytest.approx(expected.statistic) and result.p_value == pytest.approx(expected.pvalue)
    [path] = plots.plot_critical_difference(board, primary, tmp_path)
    assert path.name == "critical-difference.png" and path.stat().st_size > 1000


def test_rank_matrix_leaves_out_configs_that_cover_too_few_cells():
    # 'wide' configs run on 4 cells; 'narrow' only on t0: keeping it would leave 1 shared cell
    # (3 configs × 1 = 3 results) instead of 4 (2 configs × 4 = 8)
    cells = {(f"t{i}", "unary"): {"wide-a": [0.5, 0.6], "wide-b": [0.4, 0.5]} for i in range(4)}
    cells[("t0", "unary")]["narrow"] = [0.9, 0.9]
    board = leaderboard.build_leaderboard(_synthetic_runs(cells))
    primary = {f"t{i}": "f1_example" for i in range(4)}
    matrix, _, left_out = leaderboard.rank_matrix(board, primary=primary)
    assert left_out == ["narrow"] and len(matrix) == 4 and list(matrix.columns) == ["wide-a", "wide-b"]
    ranks = leaderboard.mean_rank_across_tasks(board, primary=primary)
    assert ranks.attrs["left_out"] == ["narrow"] and (ranks["n_cells"] == 4).all()
    text = leaderboard.format_leaderboard(leaderboard.with_mean_rank_rows(board, ranks), "markdown")
    assert "over the 4 task × model cell(s)" in text and "not in the mean rank" in text and "narrow" in text
    # when the narrow config shares three cells, it stays
    cells[("t1", "unary")]["narrow"] = [0.9, 0.9]
    cells[("t2", "unary")]["narrow"] = [0.9, 0.9]
    matrix, _, left_out = leaderboard.rank_matrix(leaderboard.build_leaderboard(_synthetic_runs(cells)),
                                                  primary=primary)
    assert left_out == [] and len(matrix) == 3  # 3 configs × 3 cells = 9 > 8


def test_impossible_values_are_shown_but_never_ranked_or_best():
    """A negative NLL is a failed log Z estimate: config "broken" (−40,000 nats, tiny Monte-Carlo
    error) keeps its mean, marked ✗ with its count, but has no rank, is in no paired test and is
    not "best"; "noisy" (−0.02 with a Monte-Carlo error of 0.05: a true NLL near 0) is a value."""
    def run(config, seed, nll, stderr):
        return dict(task="t", model="m", config=config, method=config, seed=seed, fold=0, status="ok",
                    test_nll=nll, test_nll_stderr=stderr, primary_metric="nll")

    runs = pd.DataFrame([run("broken", s, -40_000.0 - s, 0.1) for s in range(3)]
                        + [run("noisy", s, -0.02 + 0.01 * s, 0.05) for s in range(3)]
                        + [run("good", s, 1.0 + 0.01 * s, 0.0) for s in range(3)])
    board = leaderboard.build_leaderboard(runs)
    broken, noisy, good = (_cell(board, "t", "m", name, "nll") for name in ("broken", "noisy", "good"))
    assert broken["n_impossible"] == 3 and broken["mean"] == pytest.approx(-40_001.0)
    assert np.isnan(broken["rank"]) and pd.isna(broken["tied_best"])
    assert (noisy["n_impossible"], noisy["rank"], good["n_impossible"], good["rank"]) == (0, 1, 0, 2)
    assert bool(noisy["tied_best"]) and not bool(good["tied_best"])
    wide, best = leaderboard.pivot(board)
    cells = dict(zip(wide["config"], wide["nll"]))
    assert cells["broken"].endswith(leaderboard.MARK_IMPOSSIBLE) and leaderboard.MARK_IMPOSSIBLE not in cells["noisy"]
    assert not best.loc[list(wide["config"]).index("broken"), "nll"]
