"""``DIR/manifest.json``: what produced a results directory.

One file per results directory, updated (read-modify-write under an ``flock``, then an atomic
replace) at the start and the end of every ``run``/``tune`` invocation: the git sha of the
checkout, package versions, hardware, the command line, and per invocation the planned and
finished counts. The last ``MAX_INVOCATIONS`` invocations are kept.

How each ``run`` invocation ended is its ``status``: ``running`` while it runs (with its
``host`` and ``pid``), then ``finished``, ``interrupted`` (Ctrl-C, SIGTERM, SIGHUP), ``stopped``
(``--stop-after``: its running jobs finished, nothing lost) or ``failed``
(an error ended it: its ``error``); a driver killed outright (SIGKILL, power loss) cannot say
so, so the next start finds its entry still ``running`` with a dead holder
(:mod:`harness.claims`: its pid is gone on this host, or its heartbeat is older than the
claims' ttl) and records it as ``killed``.

A damaged manifest (not UTF-8 JSON, not a JSON object, a directory) is moved aside to
``manifest.json.damaged-<time>`` with a warning naming it, and a new one is started.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import socket
import subprocess
import sys
import warnings
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


def _damaged(path: Path) -> str | None:
    """Why ``path`` is not a usable manifest, or None."""
    if path.is_dir():
        return "it is a directory"
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        return "it is not UTF-8 text"
    except json.JSONDecodeError as exc:
        return f"it is not valid JSON ({exc})"
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    if not isinstance(doc, dict):
        return f"it holds a JSON {type(doc).__name__}, not an object"
    if not isinstance(doc.get("invocations", []), list):
        return "its 'invocations' is not a list"
    return None


def read_manifest(results_dir: str | os.PathLike, *, move_aside: bool = False) -> dict[str, Any]:
    """The manifest as a dict ({} when there is none). A damaged one is warned about (naming
    it) and read as {}; with ``move_aside`` (a writer about to replace it) it is renamed to
    ``manifest.json.damaged-<time>`` first, so nothing is lost."""
    path = Path(results_dir) / MANIFEST
    if not path.exists():
        return {}
    why = _damaged(path)
    if why is None:
        return json.loads(path.read_text(encoding="utf-8"))
    if move_aside:
        from harness.store import utc_now

        aside = path.with_name(f"{MANIFEST}.damaged-{utc_now().strftime('%Y%m%dT%H%M%S%fZ')}")
        os.replace(path, aside)
        warnings.warn(f"damaged manifest {path} ({why}); moved aside to {aside.name}, starting a new one",
                      RuntimeWarning, stacklevel=2)
    else:
        warnings.warn(f"damaged manifest {path} ({why}); ignored", RuntimeWarning, stacklevel=2)
    return {}


def record_invocation(results_dir: str | os.PathLike, invocation_id: str, **fields: Any) -> dict[str, Any]:
    """Create or update this invocation's entry (and the top-level summary) in the manifest."""
    from harness.store import HOST, utc_now, write_json_atomic

    results_dir = Path(results_dir)
    with _locked(results_dir):
        manifest = read_manifest(results_dir, move_aside=True)
        now = utc_now().isoformat()
        manifest.setdefault("created_at", now)
        manifest.update(updated_at=now, git_sha=git_sha(), versions=package_versions(), hardware=hardware())
        from harness.store import SCHEMA_VERSION

        manifest["schema_version"] = SCHEMA_VERSION
        invocations = manifest.setdefault("invocations", [])
        entry = next((e for e in invocations if isinstance(e, dict) and e.get("id") == invocation_id), None)
        if entry is None:
            entry = {"id": invocation_id, "started_at": now, "command_line": sys.argv[:],
                     "cwd": os.getcwd(), "git_sha": manifest["git_sha"], "host": HOST, "pid": os.getpid()}
            invocations.append(entry)
        entry.update(fields)
        manifest["invocations"] = invocations[-MAX_INVOCATIONS:]
        write_json_atomic(results_dir / MANIFEST, manifest)
    return manifest


def settle_stale_invocations(results_dir: str | os.PathLike, *, ttl: float | None = None,
                             found_by: str = "") -> list[str]:
    """Mark ``killed`` every invocation still ``running`` whose driver is gone (module doc);
    returns their ids. Their leftover heartbeat files are removed."""
    from harness import claims
    from harness.store import HOST, pid_alive, utc_now, write_json_atomic

    ttl = claims.DEFAULT_TTL if ttl is None else ttl
    results_dir = Path(results_dir)
    if not (results_dir / MANIFEST).exists():
        return []
    killed = []
    with _locked(results_dir):
        manifest = read_manifest(results_dir, move_aside=True)
        for entry in manifest.get("invocations", []):
            if not isinstance(entry, dict) or entry.get("status") != "running":
                continue
            holder = claims.driver_holder(results_dir, str(entry.get("id")))
            if holder is not None:
                dead = holder.stale(ttl)
            elif entry.get("host") == HOST and isinstance(entry.get("pid"), int):
                dead = not pid_alive(entry["pid"])
            else:  # no heartbeat and another host (or an old entry): judge by its last update
                dead = True
            if dead:
                entry.update(status="killed", found_stale_at=utc_now().isoformat(), found_stale_by=found_by)
                killed.append(str(entry.get("id")))
                (results_dir / claims.CLAIMS_DIR / f"driver-{entry.get('id')}.json").unlink(missing_ok=True)
        if killed:
            write_json_atomic(results_dir / MANIFEST, manifest)
    return killed
