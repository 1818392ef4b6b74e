"""Run claims: which driver is running which run, so that two drivers on one results directory
never run the same run twice, and a dead driver's runs are taken over.

A driver claims a run before it starts it: ``DIR/claims/<sha of run_id>.claim``, a small JSON
file (``run_id``, ``host``, ``pid``, ``invocation``, ``claimed_at``) that appears atomically:
written and fsynced under a temp name, then hard-linked to its final name (``link`` fails if
the name exists, like ``open(O_CREAT | O_EXCL)``, and the file is never seen half-written).
Another driver that finds the claim skips the run. The claim is removed once the run's row is
on disk (see :class:`harness.store.ResultWriter`), or when the driver stops.

A claim is **stale** — and taken over — when its holder is a process of this host that no
longer runs (a SIGKILLed driver), or, for a holder on another host, when it has not been
renewed for ``ttl`` seconds (a driver that died or lost the filesystem). A live driver renews its claims'
modification time every ``ttl / 4`` seconds (:meth:`Claims.renew`, called while it waits for
runs). Takeover happens under an exclusive lock (``DIR/claims/.lock``), so two drivers cannot
both take over one stale claim.

The driver's own liveness for the manifest (``finished`` / ``interrupted`` / ``killed``) uses
the same two signals: ``DIR/claims/driver-<invocation>.json`` holds its host and pid and is
renewed with the claims.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: seconds after which an unrenewed claim (or driver heartbeat) is stale
DEFAULT_TTL = 600.0
CLAIMS_DIR = "claims"


@dataclass(frozen=True)
class Holder:
    """Who holds a claim (or is a driver): read from its file."""

    host: str
    pid: int
    invocation: str
    renewed: float  # the file's mtime

    def stale(self, ttl: float, *, now: float | None = None) -> bool:
        """On this host: its process is gone (exact, whatever the run's length; a reused pid
        keeps a dead holder's claim until that process ends too). Elsewhere: not renewed for
        ``ttl`` seconds (the only sign another host gives)."""
        from harness.store import HOST, pid_alive

        if self.host == HOST:
            return not pid_alive(self.pid)
        now = time.time() if now is None else now
        return now - self.renewed > ttl


def read_holder(path: Path) -> Holder | None:
    """The holder recorded in ``path``; None if the file is gone. A file that cannot be parsed
    (damaged by hand) counts as a holder on no host that renewed it at its mtime."""
    try:
        stat = path.stat()
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return Holder("?", -1, "?", 0.0)
    try:
        doc = json.loads(text)
        return Holder(str(doc["host"]), int(doc["pid"]), str(doc.get("invocation", "")), stat.st_mtime)
    except (ValueError, KeyError, TypeError):
        return Holder("?", -1, "?", stat.st_mtime)


def _link_new(path: Path, content: dict) -> bool:
    """Create ``path`` with ``content`` atomically; False if it already exists."""
    from harness.store import temp_path

    tmp = temp_path(path.parent, ".claim")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(content, handle)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


class Claims:
    """The claims of one driver invocation on one results directory."""

    def __init__(self, results_dir: str | os.PathLike, invocation: str, *, ttl: float = DEFAULT_TTL) -> None:
        from harness.store import HOST

        self.dir = Path(results_dir) / CLAIMS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.invocation, self.ttl = invocation, float(ttl)
        self.identity = {"host": HOST, "pid": os.getpid(), "invocation": invocation}
        self.held: dict[str, Path] = {}
        self.skipped = 0  # runs found claimed by another live driver
        self.taken_over = 0
        self._last_renew = time.monotonic()
        self.heartbeat = self.dir / f"driver-{invocation}.json"
        from harness.store import write_json_atomic

        write_json_atomic(self.heartbeat, {**self.identity, "started_at": time.time()})

    def path(self, run_id: str) -> Path:
        return self.dir / f"{hashlib.sha256(run_id.encode()).hexdigest()[:32]}.claim"

    @contextmanager
    def _locked(self):
        with open(self.dir / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def try_claim(self, run_id: str) -> bool:
        """Claim ``run_id``; False if another live driver holds it (a stale claim is taken over)."""
        if run_id in self.held:
            return True
        path = self.path(run_id)
        content = {**self.identity, "run_id": run_id, "claimed_at": time.time()}
        if _link_new(path, content):
            self.held[run_id] = path
            return True
        with self._locked():
            holder = read_holder(path)
            if holder is not None and not holder.stale(self.ttl):
                self.skipped += 1
                return False
            path.unlink(missing_ok=True)
            if not _link_new(path, content):  # cannot happen under the lock unless a driver ignores it
                self.skipped += 1
                return False
        self.taken_over += 1
        self.held[run_id] = path
        return True

    def release(self, run_id: str) -> None:
        path = self.held.pop(run_id, None)
        if path is not None:
            path.unlink(missing_ok=True)

    def renew(self, *, force: bool = False) -> None:
        """Touch every held claim and the driver heartbeat (at most every ``ttl / 4`` seconds)."""
        if not force and time.monotonic() - self._last_renew < self.ttl / 4:
            return
        self._last_renew = time.monotonic()
        for path in [*self.held.values(), self.heartbeat]:
            try:
                os.utime(path)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        """Release every claim and remove the heartbeat (the driver stops)."""
        for run_id in list(self.held):
            self.release(run_id)
        self.heartbeat.unlink(missing_ok=True)


def driver_holder(results_dir: str | os.PathLike, invocation: str) -> Holder | None:
    return read_holder(Path(results_dir) / CLAIMS_DIR / f"driver-{invocation}.json")


def clean_stale(results_dir: str | os.PathLike, *, ttl: float = DEFAULT_TTL) -> int:
    """Remove stale claims and driver heartbeats (a dead driver's); returns how many. Under the
    claims lock, so a claim being taken over meanwhile is not removed."""
    folder = Path(results_dir) / CLAIMS_DIR
    if not folder.is_dir():
        return 0
    removed = 0
    with open(folder / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for path in [*folder.glob("*.claim"), *folder.glob("driver-*.json")]:
                holder = read_holder(path)
                if holder is not None and holder.stale(ttl):
                    path.unlink(missing_ok=True)
                    removed += 1
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return removed
