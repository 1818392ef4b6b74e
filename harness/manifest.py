"""``DIR/manifest.json``: what produced a results directory.

One file per results directory, updated (read-modify-write under an ``flock``, then an atomic
replace) at the start and the end of every ``run``/``tune`` invocation: the git sha of the
checkout, package versions, hardware, the command line, and per invocation the planned and
finished counts. The last ``MAX_INVOCATIONS`` invocations are kept.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
MAX_INVOCATIONS = 50
PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "pandas", "pyarrow", "duckdb", "ray", "optuna", "ebm-bench")


def git_sha(root: str | os.PathLike | None = None) -> str | None:
    """The checkout's commit (with ``-dirty`` when it has uncommitted changes), or None."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"host": socket.gethostname(), "platform": platform.platform(),
                            "machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if "torch" in sys.modules:  # only report CUDA when torch is loaded anyway
        torch = sys.modules["torch"]
        info["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
            if torch.cuda.is_available() else []
    return info


@contextmanager
def _locked(results_dir: Path):
    with open(results_dir / ".manifest.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_manifest(results_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(results_dir) / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def record_invocation(results_dir: str | os.PathLike, invocation_id: str, **fields: Any) -> dict[str, Any]:
    """Create or update this invocation's entry (and the top-level summary) in the manifest."""
    from harness.store import utc_now, write_json_atomic

    results_dir = Path(results_dir)
    with _locked(results_dir):
        manifest = read_manifest(results_dir)
        now = utc_now().isoformat()
        manifest.setdefault("created_at", now)
        manifest.update(updated_at=now, git_sha=git_sha(), versions=package_versions(), hardware=hardware())
        from harness.store import SCHEMA_VERSION

        manifest["schema_version"] = SCHEMA_VERSION
        invocations = manifest.setdefault("invocations", [])
        entry = next((e for e in invocations if e.get("id") == invocation_id), None)
        if entry is None:
            entry = {"id": invocation_id, "started_at": now, "command_line": sys.argv[:],
                     "cwd": os.getcwd(), "git_sha": manifest["git_sha"]}
            invocations.append(entry)
        entry.update(fields)
        manifest["invocations"] = invocations[-MAX_INVOCATIONS:]
        write_json_atomic(results_dir / MANIFEST, manifest)
    return manifest
