"""Plots are non-empty PNGs (one per task × model or task, as documented); the report holds the
leaderboard, the figures and the failed runs."""

from __future__ import annotations

import argparse

from test_outputs_fixtures import FAILED, curve_rows, run_rows, results_dir  # noqa: F401 (fixture)

from harness import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_tau_points_pair_tau_with_logz():
    import pandas as pd

    points = plots.tau_points(pd.DataFrame(curve_rows(run_rows())))
    assert len(points) == 7 * 5
    assert ((points["tau"] - points["logz"]).round(12) == 0.1).all()


def test_plot_all_writes_non_empty_pngs(results_dir, tmp_path):
    paths = plots.plot_all(results_dir, tmp_path / "plots")
    names = sorted(p.name for p in paths)
    assert names == sorted([
        "convergence-lr-iris-permutahedron.png", "convergence-yeast-pairwise.png", "convergence-yeast-unary.png",
        "tau-lr-iris-permutahedron.png", "tau-yeast-pairwise.png", "tau-yeast-unary.png",
        "leaderboard-lr-iris.png", "leaderboard-yeast.png"])
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, path


def test_plot_cli_prints_paths(results_dir, tmp_path, capsys):
    from harness.commands import plot as command

    assert command.run(argparse.Namespace(results_dir=str(results_dir), out=str(tmp_path / "p"))) == 0
    lines = capsys.readouterr().out.split()
    assert len(lines) == 8 and all(line.endswith(".png") for line in lines)


def test_report_contains_leaderboard_figures_and_failures(results_dir, tmp_path):
    from harness.report import write_report

    md_path = write_report(results_dir, tmp_path / "report")
    text = md_path.read_text()
    assert "| yeast | unary | minmin-logistic |" in text and "**0.620 ± 0.020**" in text
    assert "![leaderboard-yeast](plots/leaderboard-yeast.png)" in text
    assert (tmp_path / "report" / "plots" / "leaderboard-yeast.png").is_file()
    assert not list((tmp_path / "report").glob("*.png"))  # nothing beside REPORT.md
    n_failed = sum(len(v) for v in FAILED.values())
    assert f"## Failed runs ({n_failed})" in text and "boom: exact-mle exploded" in text
    html = (tmp_path / "report" / "report.html").read_text()
    assert "0.620 ± 0.020" in html and 'src="plots/convergence-yeast-unary.png"' in html


def test_report_on_empty_results_dir(tmp_path):
    from harness.report import write_report

    (tmp_path / "r").mkdir()
    text = write_report(tmp_path / "r").read_text()
    assert "(no results yet)" in text and "Failed runs (0)" in text and "(no timed runs)" in text


def test_compute_table_counts_a_stacked_group_once_and_every_trial():
    """Worker-seconds per method against hand counts: a group of 2 members (100 s each, stacked=2)
    counts 100 s, a lone run its 30 s, a failed run its 5 s; trials their own spans; shares of the
    total and the costliest method first."""
    import pandas as pd

    from harness.report import compute_table

    origin = pd.Timestamp("2026-01-01", tz="UTC")
    at = lambda seconds: origin + pd.Timedelta(seconds=seconds)  # noqa: E731
    runs = pd.DataFrame([
        {"method": "a", "started_at": at(0), "finished_at": at(100), "stacked": 2, "eval_seconds": 4.0},
        {"method": "a", "started_at": at(0), "finished_at": at(100), "stacked": 2, "eval_seconds": 6.0},
        {"method": "b", "started_at": at(0), "finished_at": at(30), "stacked": None, "eval_seconds": 1.0},
        {"method": "b", "started_at": at(30), "finished_at": at(35), "stacked": None, "eval_seconds": None},
    ])
    trials = pd.DataFrame([
        {"method": "b", "started_at": at(0), "finished_at": at(50)},
        {"method": "b", "started_at": at(50), "finished_at": at(120)},
        {"method": "c", "started_at": at(0), "finished_at": at(20)},
    ])
    table = compute_table(runs, trials).set_index("method")
    assert list(table.index) == ["b", "a", "c"]  # 155, 100 and 20 worker-seconds
    assert table.loc["a", "runs (worker-s)"] == 100 and table.loc["a", "of which evaluation (s)"] == 10
    assert table.loc["b", "runs (worker-s)"] == 35 and table.loc["b", "tuning (worker-s)"] == 120
    assert table.loc["b", "tuning trials"] == 2 and table.loc["b", "runs"] == 2
    assert table.loc["c", "runs"] == 0 and table.loc["c", "tuning (worker-s)"] == 20
    assert table["share (%)"].tolist() == [round(100 * 155 / 275, 1), round(100 * 100 / 275, 1),
                                           round(100 * 20 / 275, 1)]


def test_report_shows_the_compute_per_method(results_dir, tmp_path):
    """The report's compute section: one row per method of the stored runs (the fixture has no
    trials), in REPORT.md and report.html."""
    from harness import store
    from harness.report import write_report

    text = write_report(results_dir, tmp_path / "report").read_text()
    section = text.split("## Compute per method (worker-seconds)")[1].split("## Figures")[0]
    methods = set(store.read_table(results_dir, "runs")["method"])
    rows = [line for line in section.splitlines() if line.startswith("| ") and "share (%)" not in line]
    assert {line.split(" | ")[0].strip("| ") for line in rows} == methods
    assert "Compute per method" in (tmp_path / "report" / "report.html").read_text()
