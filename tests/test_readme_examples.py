"""Every `ebm-bench ...` line in README.md's code blocks runs as written, against a tiny
budget: the flags below are *appended* (argparse keeps the last value, so `--seeds 1` after
the README's `--seeds 3` wins). Lines that need what a test cannot have are listed in SKIP
with the reason; a README line this test does not know how to shrink fails it, so a new
example cannot go untested."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TINY_RUN = ["--max-steps", "5", "--seeds", "1", "--executor", "serial", "--no-progress"]

#: (a substring of the README line) → why the line is not run here
SKIP = {
    "pip install": "creates a virtual environment and installs packages (CI runs command 2 itself)",
    "--address auto": "joins a running Ray cluster (`ray start --head` first)",
    "data fetch": "downloads the datasets from the network",
}


def readme_commands() -> list[str]:
    """Each `ebm-bench` command in a fenced code block (a `$ ` prompt stripped), in order."""
    commands, in_block = [], False
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        text = line.strip().removeprefix("$ ")
        if in_block and re.search(r"(^|&& )ebm-bench ", text):
            commands.append(text)
    return commands


def shrink(args: list[str], data: bool) -> list[str] | str:
    """The arguments to run (tiny budget), or the reason the line cannot run here."""
    command = args[0]
    if command == "run":
        if "--suite" in args and args[args.index("--suite") + 1] in ("paper", "full"):
            return args + TINY_RUN + ["--dry-run"]  # hundreds of tuned runs: the plan is what we check
        return args + TINY_RUN
    if command == "tune":
        if not data:
            return "the paper suite's tasks need EBM_BENCH_DATA"
        return args + TINY_RUN + ["--tasks", "lr-iris", "--models", "permutahedron", "--methods", "exact-mle",
                                  "--tune-trials", "2"]
    if command == "perf":
        return args + ["--benchmarks", "flops"]  # all of --quick takes minutes; one benchmark runs the command
    if command in ("tasks", "methods", "leaderboard", "query", "plot", "report", "merge", "data", "compare",
                   "compact"):
        return args
    raise AssertionError(f"README line `ebm-bench {shlex.join(args)}`: teach tests/test_readme_examples.py "
                         "how to run it on a tiny budget")


#: commands given EBM_BENCH_DATA (when present): the others run on the bundled tasks only, as
#: on a fresh clone, so that the test stays minutes long (a named task without data is `skipped`)
WITH_DATA = ("tune", "data")


@pytest.mark.timeout(2400)
def test_every_readme_command_runs(tmp_path):
    # absolute: the commands run in tmp_path, and the README's command 2 sets a relative path
    # (EBM_BENCH_DATA=../shared/datasets, relative to the repository root where pytest starts)
    data_dir = str(Path(os.environ.get("EBM_BENCH_DATA") or ROOT.parent / "shared" / "datasets").resolve())
    data = Path(data_dir).is_dir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "80"}
    env.pop("EBM_BENCH_DATA", None)
    commands = readme_commands()
    assert len(commands) >= 20, commands
    ran, skipped = [], []
    for line in commands:
        reason = next((why for key, why in SKIP.items() if key in line), None)
        if reason:
            skipped.append((line, reason))
            continue
        args = shlex.split(line[line.index("ebm-bench ") + len("ebm-bench "):], comments=True)
        shrunk = shrink(args, data)
        if isinstance(shrunk, str):
            skipped.append((line, shrunk))
            continue
        if args[0] == "merge":  # two machines' results dirs, as the example assumes
            for host in ("host1", "host2"):
                shutil.copytree(tmp_path / "results", tmp_path / host / "results", dirs_exist_ok=True)
        if "results/paper" in args:  # the committed paper reproduction, copied: the line rewrites its report
            shutil.copytree(ROOT / "results" / "paper", tmp_path / "results" / "paper", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("studies", "claims", "*.png"))
        if args[0] in WITH_DATA and not data:
            skipped.append((line, "needs EBM_BENCH_DATA (the line above it in the README sets it)"))
            continue
        command_env = {**env, "EBM_BENCH_DATA": data_dir} if args[0] in WITH_DATA else env
        out = subprocess.run([sys.executable, "-m", "harness.cli", *shrunk], cwd=tmp_path, env=command_env,
                             capture_output=True, text=True, timeout=1200)
        assert out.returncode == 0, f"`{line}` exited {out.returncode}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        assert "Traceback" not in out.stderr, f"`{line}`:\n{out.stderr[-3000:]}"
        ran.append(line)
    assert (tmp_path / "results" / "REPORT.md").is_file() and list((tmp_path / "results" / "plots").glob("*.png"))
    # the skips are the ones listed above (with their reasons), nothing else
    assert {reason for _, reason in skipped} <= set(SKIP.values()) | {
        "the paper suite's tasks need EBM_BENCH_DATA", "needs EBM_BENCH_DATA (the line above it in the README sets it)"}
    print(f"ran {len(ran)} README commands; skipped {len(skipped)}: " + "; ".join(f"{c} ({r})" for c, r in skipped))
