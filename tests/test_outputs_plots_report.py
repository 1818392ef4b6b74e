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
    assert "(no results yet)" in text and "Failed runs (0)" in text
