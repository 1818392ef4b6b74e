"""No finished run lost: real drivers (``ebm-bench run`` through tests/fixture_cli.py) stopped by real signals at
random moments, then resumed.

Each trial starts a driver on a results dir, waits a random number of reported runs (0-3) plus
a random fraction of a second (or, for 0, a random time during start-up), and sends SIGTERM or
SIGKILL. The runs the driver *reported* finished (its progress lines, printed only after the
run's row is on disk) must all have a stored row; no temp file may be left once the next start
is done; and every start re-runs only what has no row (one row per run_id at all times).
Trials are chained on one results dir (each start resumes the previous, interrupted one), five
per signal, four with the serial executor and one with a local Ray instance (Ray starts a
cluster per driver: ~10 s on two loaded cores, so one Ray trial per signal keeps this file near
two minutes).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness_fixtures import write_suite

from harness import store
from harness.plan import plan_runs
from harness.suites import load_suite

ROOT = Path(__file__).resolve().parent.parent
#: the CLI with the test fixture methods registered (tests/fixture_cli.py), in a real process
CLI = [sys.executable, str(ROOT / "tests" / "fixture_cli.py")]
#: "[3/30] ok       syn-ising-k8/unary/test-sleep seed 4 fold 0  (...)" (harness.progress)
FINISHED = re.compile(r"^\[\d+/\d+\] (\w+)\s+(\S+)/(\S+)/(\S+) seed (\d+) fold (\d+)", re.MULTILINE)
SEEDS = 24


def _start(suite: Path, results: Path, log: Path, executor: str, env: dict | None = None,
           ignored: tuple[signal.Signals, ...] = ()) -> subprocess.Popen:
    """A driver in its own session, as started from a terminal: SIGINT, SIGTERM and SIGHUP at their
    defaults (this test process may run under ``nohup``, whose ignored SIGHUP a child inherits),
    but for the ``ignored`` ones (as ``nohup`` ignores SIGHUP); ``env`` added to its environment."""
    args = [*CLI, "run", "--suite", str(suite), "--executor", executor,
            "--results-dir", str(results), "--no-leaderboard"]
    if executor == "ray":
        args += ["--num-cpus", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **(env or {})}
    with open(log, "w") as handle:  # progress lines (not a tty: one line per finished run)
        return subprocess.Popen(args, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, preexec_fn=lambda: _dispositions(ignored))


def _dispositions(ignored: tuple[signal.Signals, ...]) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN if sig in ignored else signal.SIG_DFL)


def _reported(log: Path, ids: dict) -> set[str]:
    return {ids[(task, model, method, int(seed), int(fold))]
            for _status, task, model, method, seed, fold in FINISHED.findall(log.read_text())}


def _temp_files(results: Path) -> list[Path]:
    return [p for p in results.rglob(".tmp-*")]


def _stop_group(driver: subprocess.Popen) -> None:
    """Kill what the driver left behind in its session (a SIGKILLed driver's Ray processes)."""
    try:
        os.killpg(driver.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _trial(suite, results, log, executor, sig, rng, ids) -> dict:
    driver = _start(suite, results, log, executor)
    wait_runs = rng.randint(0, 3)
    deadline = time.monotonic() + 120
    if wait_runs == 0:
        time.sleep(rng.uniform(0.5, 8.0))  # somewhere in start-up (imports, planning, Ray start)
    else:
        while time.monotonic() < deadline and driver.poll() is None and \
                len(FINISHED.findall(log.read_text())) < wait_runs:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))  # and then anywhere inside the next run or its write
    if driver.poll() is None:
        os.kill(driver.pid, sig)
    code = driver.wait(timeout=120)
    _stop_group(driver)  # leftovers only (Ray processes of a killed driver); the driver is gone
    reported = _reported(log, ids)
    raw = store.read_arrow(results, "runs", on_corrupt="raise")["run_id"].to_pylist()
    return {"code": code, "reported": reported, "raw": raw, "log": log.read_text()[-2000:],
            "temp": _temp_files(results)}


def _manifest_statuses(results: Path) -> list[str]:
    doc = json.loads((results / "manifest.json").read_text())
    return [e.get("status") for e in doc["invocations"]]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_no_finished_run_lost_when_the_driver_is_stopped(tmp_path, sig):
    suite = write_suite(tmp_path, methods=("test-sleep",), seeds=SEEDS, params="{ test-sleep = { seconds = 0.15 } }")
    plan = plan_runs(load_suite(suite))
    ids = {(r.spec.task, r.spec.model, r.spec.method, r.spec.seed, r.spec.fold): r.run_id for r in plan}
    assert len(ids) == SEEDS
    results = tmp_path / "results"
    rng = random.Random(int(sig))
    executors = ["serial", "serial", "ray", "serial", "serial"]
    reported_total: set[str] = set()
    for trial, executor in enumerate(executors):
        invocations_before = len(_manifest_statuses(results)) if (results / "manifest.json").exists() else 0
        out = _trial(suite, results, tmp_path / f"log-{trial}.txt", executor, sig, rng, ids)
        invocations = len(_manifest_statuses(results)) if (results / "manifest.json").exists() else 0
        lost = out["reported"] - set(out["raw"])
        assert not lost, (trial, executor, lost, out["log"])
        dupes = {r for r in out["raw"] if out["raw"].count(r) > 1}
        assert not dupes, (trial, executor, dupes, out["log"])  # a start re-ran a stored run
        if sig == signal.SIGTERM and out["code"] == -signal.SIGTERM:
            # the signal came while Python was still importing (before `run` installs its
            # handler): the driver had started nothing, recorded nothing and left nothing
            assert invocations == invocations_before and out["temp"] == [], out["log"]
        elif sig == signal.SIGTERM:
            assert out["code"] in (0, 130), out["log"]
            assert out["temp"] == [], out["temp"]               # the interrupted driver cleaned up
            assert _manifest_statuses(results)[-1] in ("interrupted", "finished")
        else:
            assert out["code"] == -signal.SIGKILL or out["code"] == 0, out["log"]
        reported_total |= out["reported"]

    # the next start finishes the suite: it runs exactly the runs without a row
    stored_before = set(store.read_arrow(results, "runs", on_corrupt="raise")["run_id"].to_pylist())
    final = subprocess.run([*CLI, "run", "--suite", str(suite), "--executor", "serial",
                            "--results-dir", str(results), "--no-leaderboard", "--no-progress"],
                           cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)
    assert final.returncode == 0, final.stderr
    assert f"{SEEDS - len(stored_before)} run" in final.stderr, final.stderr
    raw = store.read_arrow(results, "runs", on_corrupt="raise")["run_id"].to_pylist()
    assert sorted(raw) == sorted(ids.values())   # every run exactly once: none lost, none run twice
    assert reported_total <= set(raw)
    assert _temp_files(results) == []
    assert not list((results / "claims").glob("*.claim"))
    statuses = _manifest_statuses(results)
    assert statuses[-1] == "finished" and "running" not in statuses, statuses
    if sig == signal.SIGKILL:
        assert "killed" in statuses, statuses     # found stale by the next start
    # curves: one attempt per run, the one its row is
    curves = store.read_table(results, "curves", on_corrupt="raise")
    runs = store.read_table(results, "runs", on_corrupt="raise").set_index("run_id")
    assert set(curves["run_id"]) == set(raw)
    for run_id, points in curves.groupby("run_id"):
        assert set(points["attempt"]) == {runs.at[run_id, "attempt"]}


def test_two_concurrent_drivers_run_each_run_exactly_once(tmp_path):
    """Two live drivers started together on one results dir: claims make each run happen once
    (one row per run id in the raw part files, not only after dedupe)."""
    suite = write_suite(tmp_path, methods=("test-sleep",), seeds=10, params="{ test-sleep = { seconds = 0.3 } }")
    results = tmp_path / "results"
    drivers = [_start(suite, results, tmp_path / f"log-{i}.txt", "serial") for i in range(2)]
    for driver in drivers:
        assert driver.wait(timeout=300) == 0
    raw = store.read_arrow(results, "runs", on_corrupt="raise")["run_id"].to_pylist()
    assert sorted(raw) == sorted(r.run_id for r in plan_runs(load_suite(suite)))
    assert not list((results / "claims").iterdir()) or \
        [p.name for p in (results / "claims").iterdir()] == [".lock"]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_claims_are_taken_over_and_live_ones_skipped(tmp_path):
    """A claim of a dead process on this host and an expired claim of another host are taken
    over; a claim of a live process (this test) is respected: that run is skipped with a note."""
    from harness import claims
    from harness.commands.run import RunOptions, run_suite

    suite = write_suite(tmp_path, methods=("test-constant",), seeds=3)
    plan = plan_runs(load_suite(suite))
    results = tmp_path / "results"
    folder = results / "claims"
    folder.mkdir(parents=True)
    live = claims.Claims(results, "live-test")
    dead_path = live.path(plan[0].run_id)
    dead_path.write_text(json.dumps({"host": store.HOST, "pid": _dead_pid(), "invocation": "dead"}))
    other_path = live.path(plan[1].run_id)
    other_path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "invocation": "far"}))
    os.utime(other_path, (time.time() - 3600, time.time() - 3600))
    assert live.try_claim(plan[2].run_id)

    summary = run_suite(suite, options=RunOptions(results_dir=results, executor="serial", progress=False))
    stored = set(store.read_table(results, "runs")["run_id"])
    assert stored == {plan[0].run_id, plan[1].run_id}
    assert any("claimed by another live driver" in note for note in summary.notes)
    live.close()
    assert run_suite(suite, options=RunOptions(results_dir=results, executor="serial", progress=False)).to_run == 1
    assert set(store.read_table(results, "runs")["run_id"]) == {r.run_id for r in plan}


def test_compact_merges_parts_and_keeps_every_row(tmp_path):
    """Per-run part files merged into one per table; the rows (runs deduped, curves of the kept
    attempts) are the same before and after; a second driver start adds parts again."""
    from harness.cli import main
    from harness.commands.run import RunOptions, run_suite

    suite = write_suite(tmp_path, methods=("test-constant",), seeds=5)
    results = tmp_path / "results"
    run_suite(suite, options=RunOptions(results_dir=results, executor="serial", progress=False))
    assert store.part_counts(results)["runs"] == 5
    runs_before = store.read_table(results, "runs").sort_values("run_id").reset_index(drop=True)
    curves_before = store.read_table(results, "curves").sort_values(["run_id", "step", "split", "metric"])
    assert main(["compact", "--results-dir", str(results)]) == 0
    assert store.part_counts(results)["runs"] == 1 and store.part_counts(results)["curves"] == 1
    runs_after = store.read_table(results, "runs").sort_values("run_id").reset_index(drop=True)
    curves_after = store.read_table(results, "curves").sort_values(["run_id", "step", "split", "metric"])
    assert runs_after.equals(runs_before)
    assert curves_after.reset_index(drop=True).equals(curves_before.reset_index(drop=True))
    assert not list(results.rglob(".tmp-*"))


@pytest.mark.parametrize("nohup", [False, True], ids=["terminal", "nohup"])
def test_sighup_stops_the_driver_like_ctrl_c(tmp_path, nohup):
    """A closed terminal stops the driver like Ctrl-C; under ``nohup`` (SIGHUP ignored by the parent)
    the hangup is ignored and the driver finishes (the old code put its handler over nohup's ignore)."""
    suite = write_suite(tmp_path, methods=("test-sleep",), seeds=6, params="{ test-sleep = { seconds = 0.3 } }")
    results, log = tmp_path / "results", tmp_path / "log.txt"
    driver = _start(suite, results, log, "serial", ignored=(signal.SIGHUP,) if nohup else ())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and driver.poll() is None and not FINISHED.search(log.read_text()):
        time.sleep(0.02)
    os.kill(driver.pid, signal.SIGHUP)
    assert driver.wait(timeout=120) == (0 if nohup else 130), log.read_text()
    assert _manifest_statuses(results)[-1] == ("finished" if nohup else "interrupted")
    assert (len(store.read_table(results, "runs")) == 6) == nohup
    assert _temp_files(results) == [] and not list((results / "claims").glob("*"))


@pytest.mark.parametrize("mangled", ["driver:raise", "driver:swallow", "fit:raise", "fit:swallow"])
def test_a_signal_a_library_mangled_still_stops_the_driver(tmp_path, mangled):
    """A SIGHUP whose KeyboardInterrupt a library turned into an error of its own (pyarrow, importing
    zoneinfo inside the driver's read of the runs, gave ArrowInvalid: exit 2, invocation `finished`)
    or swallowed whole (the driver carried on) still stops the driver: exit 130, `interrupted`;
    what it reported is stored, and nothing that ended after the signal is recorded (the old code
    stored the fit's mangled interrupt as a `failed` run and ran the rest)."""
    suite = write_suite(tmp_path, methods=("test-sleep",), seeds=6, params="{ test-sleep = { seconds = 0.3 } }")
    plan = plan_runs(load_suite(suite))
    ids = {(r.spec.task, r.spec.model, r.spec.method, r.spec.seed, r.spec.fold): r.run_id for r in plan}
    results, log, marker = tmp_path / "results", tmp_path / "log.txt", tmp_path / "inside-the-library"
    driver = _start(suite, results, log, "serial", env={"EBM_TEST_MANGLED_INTERRUPT": f"{mangled},{marker}"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and driver.poll() is None and not marker.exists():
        time.sleep(0.02)
    assert marker.exists(), log.read_text()
    os.kill(driver.pid, signal.SIGHUP)
    assert driver.wait(timeout=120) == 130, log.read_text()
    assert _manifest_statuses(results)[-1] == "interrupted"
    runs = store.read_table(results, "runs") if (results / "runs").exists() else None
    stored = {} if runs is None else dict(zip(runs["run_id"], runs["status"]))
    assert set(stored.values()) <= {"ok"}, stored
    assert _reported(log, ids) <= set(stored) and len(stored) < len(ids)
    assert _temp_files(results) == [] and not list((results / "claims").glob("*"))


def test_an_error_that_ends_the_driver_is_recorded_failed(tmp_path):
    """An error out of the driver (here its results folder broken under it while a run trains:
    ``runs`` made a file) ends the invocation ``failed`` with that error (the old code recorded it
    ``finished``), and leaves no claim behind."""
    import threading

    from harness.commands.run import RunOptions, run_suite

    suite = write_suite(tmp_path, methods=("test-sleep",), seeds=3, params="{ test-sleep = { seconds = 1.0 } }")
    results = tmp_path / "results"

    def break_the_folder() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list((results / "claims").glob("*.claim")):
            time.sleep(0.01)
        (results / "runs").write_text("not a folder")

    breaker = threading.Thread(target=break_the_folder)
    breaker.start()
    with pytest.raises(FileExistsError):
        run_suite(suite, options=RunOptions(results_dir=results, executor="serial", progress=False))
    breaker.join()
    entry = json.loads((results / "manifest.json").read_text())["invocations"][-1]
    assert entry["status"] == "failed" and entry["error"].startswith("FileExistsError:") and "runs" in entry["error"]
    assert not list((results / "claims").glob("*.claim"))


def _session_commands(session: int) -> list[str]:
    """Command lines of the live processes of ``session`` (Linux /proc: a driver started with
    ``start_new_session`` leads its own, and every Ray process it starts belongs to it)."""
    commands = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            state, _ppid, _pgrp, sid = text[text.rindex(")") + 2:].split()[:4]
            if int(sid) == session and state != "Z":
                commands.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, ValueError):
            continue
    return commands


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the driver's processes from /proc")
@pytest.mark.parametrize("moment", ["raylet", "ray::_call"], ids=["inside-ray-init", "workers-warming"])
def test_sigterm_while_ray_starts_is_an_interrupt(tmp_path, moment):
    """SIGTERM the moment the driver's local Ray instance has a raylet (inside ``ray.init``, whose own
    handlers exit with status 1 or 15) or its workers run the warm-up: exit 130, the invocation
    recorded ``interrupted``, nothing left behind (no temp file, no claim, no Ray process but, inside
    ``ray.init``, the two agents the raylet started: Ray's own head-node handler, which runs there, kills
    the processes it started itself and not those, as of Ray 2.60)."""
    suite = write_suite(tmp_path, methods=("test-sleep",), seeds=4, params="{ test-sleep = { seconds = 0.2 } }")
    results, log = tmp_path / "results", tmp_path / "log.txt"
    driver = _start(suite, results, log, "ray")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.poll() is None and \
                not any(moment in command for command in _session_commands(driver.pid)):
            time.sleep(0.005)
        assert driver.poll() is None, ("the driver ended before Ray reached the moment", log.read_text())
        os.kill(driver.pid, signal.SIGTERM)
        assert driver.wait(timeout=120) == 130, log.read_text()
        assert "interrupted" in log.read_text() and _manifest_statuses(results)[-1] == "interrupted", log.read_text()
        assert _temp_files(results) == [] and not list((results / "claims").glob("*.claim"))
        allowed = ("ray::DashboardAgent", "ray::RuntimeEnvAgent") if moment == "raylet" else ()

        def left() -> list[str]:
            return [c for c in _session_commands(driver.pid) if not c.startswith(allowed)]

        deadline = time.monotonic() + 30
        while left() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left() == []   # the driver took its Ray instance down with it
    finally:
        _stop_group(driver)


def test_a_run_compacts_when_it_ends_with_many_parts(tmp_path, monkeypatch):
    from harness.commands.run import RunOptions, run_suite

    monkeypatch.setattr(store, "COMPACT_AT", 3)
    suite = write_suite(tmp_path, methods=("test-constant",), seeds=5)
    results = tmp_path / "results"
    run_suite(suite, options=RunOptions(results_dir=results, executor="serial", progress=False))
    assert store.part_counts(results)["runs"] == 1
    assert sorted(store.read_table(results, "runs")["run_id"]) == sorted(r.run_id for r in plan_runs(load_suite(suite)))


def test_compact_writes_slices_of_bounded_size_in_row_order(tmp_path, monkeypatch):
    """A large table is merged into files of at most COMPACT_MAX_ROWS rows (committable sizes),
    named so that reading them back gives the merged rows in the same order."""
    import pyarrow.parquet as pq

    from harness.commands.run import RunOptions, run_suite

    suite = write_suite(tmp_path, methods=("test-constant",), seeds=5)
    results = tmp_path / "results"
    run_suite(suite, options=RunOptions(results_dir=results, executor="serial", progress=False))
    curves_before = store.read_arrow(results, "curves").to_pandas()
    monkeypatch.setattr(store, "COMPACT_MAX_ROWS", 7)
    store.compact(results)
    files = store.table_files(results, "curves")
    assert len(files) == -(-len(curves_before) // 7) > 1
    assert all(pq.read_metadata(f).num_rows <= 7 for f in files)
    assert store.read_arrow(results, "curves").to_pandas().equals(curves_before)
    store.compact(results)  # the slices of one compaction are left as they are: no rewrite, same names
    assert store.table_files(results, "curves") == files
    monkeypatch.setattr(store, "COMPACT_MAX_ROWS", 100_000)
    store.compact(results)
    assert store.table_files(results, "curves") == files
    # a new part: merged with the slices, named after it with one suffix (names never grow)
    newest = store.append_rows(results, "curves", curves_before.tail(3).to_dict("records"))
    store.compact(results)
    (whole,) = store.table_files(results, "curves")
    assert whole.name == newest.name.removesuffix(".parquet") + whole.name[-len("-c01234567-000.parquet"):]
    monkeypatch.setattr(store, "COMPACT_MAX_ROWS", 7)
    store.compact(results)  # one oversized file alone is split too
    assert len(store.table_files(results, "curves")) == -(-(len(curves_before) + 3) // 7)
    assert all(re.fullmatch(r"part-\d{8}T\d{12}Z-[0-9a-f]{12}-c[0-9a-f]{8}-\d{3}\.parquet", f.name)
               for f in store.table_files(results, "curves"))  # one suffix
    assert len(store.read_arrow(results, "curves")) == len(curves_before) + 3
    assert len(store.read_table(results, "runs")) == 5


def test_stop_after_ends_the_driver_with_nothing_to_redo(tmp_path):
    """``--stop-after``: a real driver told to start nothing after 1.5 s, on 6 runs of 0.5 s each,
    ends with exit status 3 and its invocation ``stopped``; every run it started is stored (the
    running one finished), nothing is left claimed or half-written, and the same command without
    the limit runs exactly the rest (how many the first one started depends on this machine's
    speed; the in-flight job's finishing is pinned in-process by
    tests/test_harness_dispatch.py::test_past_the_stop_time_nothing_starts_and_the_running_job_is_recorded)."""
    runs = 6
    suite = write_suite(tmp_path, methods=("test-sleep",), seeds=runs, params="{ test-sleep = { seconds = 0.5 } }")
    results = tmp_path / "results"
    command = [*CLI, "run", "--suite", str(suite), "--executor", "serial", "--results-dir", str(results),
               "--no-leaderboard", "--no-progress"]
    first = subprocess.run([*command, "--stop-after", "1.5s"], cwd=ROOT, capture_output=True, text=True,
                           check=False, timeout=300)
    assert first.returncode == 3, first.stderr
    assert "stopped at --stop-after" in first.stderr, first.stderr
    stored = store.read_arrow(results, "runs", on_corrupt="raise") if (results / "runs").is_dir() else None
    done = [] if stored is None else stored["run_id"].to_pylist()
    assert len(done) < runs  # 3 s of runs cannot all start within 1.5 s
    assert stored is None or set(stored["status"].to_pylist()) == {"ok"}
    assert _manifest_statuses(results) == ["stopped"]
    assert _temp_files(results) == [] and not list((results / "claims").glob("*.claim"))

    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"{len(done)} already in" in second.stderr and f"{runs - len(done)} run: ok {runs - len(done)}" \
        in second.stderr, second.stderr
    raw = store.read_arrow(results, "runs", on_corrupt="raise")["run_id"].to_pylist()
    assert len(raw) == len(set(raw)) == runs
    assert _manifest_statuses(results) == ["stopped", "finished"]
