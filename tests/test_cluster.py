"""Cluster hygiene, with real processes: ``--address`` fails in bounded time with a message
naming the address, whether its port answered and the token-authentication setting; the local
Ray instance advertises the loopback address; ``--max-retries`` must be >= 0."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from harness_fixtures import write_suite

ROOT = Path(__file__).resolve().parent.parent
#: the CLI with the test fixture methods registered (tests/fixture_cli.py), in a real process
CLI = [sys.executable, str(ROOT / "tests" / "fixture_cli.py")]


def _python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=timeout)


def test_address_with_nothing_listening_fails_at_once_naming_it(tmp_path):
    with socket.socket() as probe:  # a free port: nothing answers there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    out = subprocess.run([*CLI, "run", "--suite", str(write_suite(tmp_path)),
                          "--address", f"127.0.0.1:{port}", "--results-dir", str(tmp_path / "r"),
                          "--no-progress"], cwd=ROOT, capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 2 and time.monotonic() - started < 60
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "did not answer" in lines[0]


def test_address_whose_port_answers_but_is_no_cluster_times_out_naming_auth(tmp_path):
    """A port that accepts connections but never speaks Ray: the connection attempt is bounded
    (here 5 s; 30 s by default) and the message says the port answered and names RAY_AUTH_MODE."""
    code = """
import socket, time, ray
from harness.executors import connect_to_cluster, ClusterConnectError
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(8)
address = "127.0.0.1:%d" % server.getsockname()[1]
started = time.monotonic()
try:
    connect_to_cluster(ray, address, {"address": address, "logging_level": "ERROR"}, timeout=5)
except ClusterConnectError as exc:
    print("ELAPSED", round(time.monotonic() - started, 1))
    print("MESSAGE", exc)
"""
    out = _python(code)
    message = next(line for line in out.stdout.splitlines() if line.startswith("MESSAGE"))
    elapsed = float(next(line for line in out.stdout.splitlines() if line.startswith("ELAPSED")).split()[1])
    assert elapsed < 20, out.stdout
    assert "127.0.0.1:" in message and "port answered" in message and "RAY_AUTH_MODE" in message


def test_local_instance_listens_on_loopback_only():
    """Every listening socket of the local Ray instance (driver, GCS, raylet, workers, agents)
    is on 127.0.0.1 (or its IPv4-mapped IPv6 form), and the node advertises 127.0.0.1."""
    code = """
import os, ray
import psutil  # vendored by ray (importable once ray is)
from harness.executors import RayExecutor
executor = RayExecutor(num_cpus=1)
print("NODE", ray.nodes()[0]["NodeManagerAddress"])
pids = {p.pid for p in psutil.Process().children(recursive=True)} | {os.getpid()}
for c in psutil.net_connections(kind="inet"):
    if c.status == psutil.CONN_LISTEN and c.pid in pids:
        print("LISTEN", c.laddr.ip, c.laddr.port)
executor.close()
"""
    out = _python(code, timeout=240)
    assert "NODE 127.0.0.1" in out.stdout, out.stdout + out.stderr
    listening = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("LISTEN")]
    assert listening and set(listening) <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, listening


def test_negative_max_retries_is_refused(tmp_path):
    out = subprocess.run([*CLI, "run", "--suite", str(write_suite(tmp_path)),
                          "--max-retries", "-1", "--results-dir", str(tmp_path / "r")],
                         cwd=ROOT, capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 2 and "--max-retries must be >= 0" in out.stderr and "Traceback" not in out.stderr
