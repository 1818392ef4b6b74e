"""Benchmark data files: verify what is on disk (``check``) and download what is not (``fetch``).

The manifest (``harness/data/manifest.json``, shipped with the package) lists every public
data file ebm-bench reads: its path relative to the data directory, its sha256, its size and
the raw GitHub URL of the blob it is a byte-for-byte copy of. ``fetch`` can read from a mirror
instead (``--mirror URL``: the file ``PATH`` is fetched from ``URL/PATH``; ``file://`` works,
which is how the tests run without a network).

Confinement (checked for every entry before anything is downloaded): a manifest path must be
relative, without ``..`` and resolve inside the destination (``--to``), or the whole manifest
is refused naming the entry; a manifest URL must be ``https`` (``http`` only with
``allow_http`` / ``--allow-http``); the sha256 (64 hex digits) is mandatory. A ``--mirror`` is
chosen by the user on the command line, so a local folder or ``file://`` URL is allowed there.

Guarantees of ``fetch``: every byte is verified against the manifest's sha256 before the file
takes its final name (download to a temporary file in the same directory, fsync, ``os.replace``),
so an interrupted or corrupted download never leaves a file that looks good; and a file already
present with the right sha256 is never downloaded nor overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_PATH = Path(__file__).with_name("data") / "manifest.json"
DATA_ENV = "EBM_BENCH_DATA"
_CHUNK = 1 << 20


class DataError(RuntimeError):
    """A data file is missing, cannot be downloaded, or does not match its sha256."""


@dataclass(frozen=True)
class ManifestFile:
    """One file of the manifest: ``path`` is relative to the data directory (POSIX separators)."""

    path: str
    sha256: str
    bytes: int
    url: str


@dataclass(frozen=True)
class FileStatus:
    """The state of one manifest file in a data directory.

    ``status`` is ``ok`` (present, sha256 verified), ``missing`` or ``mismatch`` (present, wrong
    content); for ``fetch`` also ``fetched`` (downloaded and verified) or ``failed``.
    """

    path: str
    status: str
    expected_sha256: str
    actual_sha256: str | None = None
    message: str = ""


def load_manifest(manifest: str | os.PathLike | dict | None = None) -> list[ManifestFile]:
    """The files of a manifest given as a path, an already-parsed dict, or None (the packaged one)."""
    if manifest is None or isinstance(manifest, (str, os.PathLike)):
        path = Path(manifest) if manifest is not None else MANIFEST_PATH
        try:
            parsed = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise DataError(f"data manifest not found: {path}") from exc
        except json.JSONDecodeError as exc:
            raise DataError(f"data manifest {path} is not valid JSON: {exc}") from exc
    else:
        parsed = manifest
    try:
        entries = [ManifestFile(f["path"], f["sha256"].lower(), int(f["bytes"]), f["url"]) for f in parsed["files"]]
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise DataError(f"malformed data manifest: every file needs path, sha256, bytes and url ({exc!r})") from exc
    for entry in entries:
        _check_entry(entry)
    return entries


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _check_entry(entry: ManifestFile) -> None:
    """A relative path without ``..`` and a 64-hex-digit sha256, or DataError naming the entry."""
    from pathlib import PurePosixPath

    if not isinstance(entry.path, str) or not entry.path.strip():
        raise DataError(f"data manifest entry {entry.path!r}: the path must be a non-empty relative path")
    path = PurePosixPath(entry.path)
    if path.is_absolute() or entry.path.startswith(("~", "\\")) or re.match(r"^[A-Za-z]:", entry.path):
        raise DataError(f"data manifest entry {entry.path!r}: absolute paths are refused "
                        "(paths are relative to the data directory)")
    if ".." in path.parts or "\\" in entry.path:
        raise DataError(f"data manifest entry {entry.path!r}: '..' (or a backslash) in a path is refused "
                        "(every file must stay inside the data directory)")
    if not isinstance(entry.sha256, str) or not _SHA256.fullmatch(entry.sha256):
        raise DataError(f"data manifest entry {entry.path!r}: sha256 must be 64 hex digits, got {entry.sha256!r}")


def _inside(root: Path, entry: ManifestFile) -> Path:
    """``root / entry.path``, checked to resolve inside ``root`` (symlinks included)."""
    target = root / entry.path
    resolved_root = root.resolve()
    if not target.resolve().is_relative_to(resolved_root):
        raise DataError(f"data manifest entry {entry.path!r} resolves to {target.resolve()}, outside {resolved_root}; "
                        "refused")
    return target


def _check_url(entry: ManifestFile, allow_http: bool) -> None:
    from urllib.parse import urlsplit

    scheme = urlsplit(entry.url).scheme.lower() if isinstance(entry.url, str) else ""
    if scheme == "https" or (scheme == "http" and allow_http):
        return
    hint = " (pass --allow-http to accept plain http)" if scheme == "http" else ""
    raise DataError(f"data manifest entry {entry.path!r}: URL scheme {scheme or 'none'!r} is refused, only "
                    f"https{hint}: {entry.url}")


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``data_dir`` if given, else ``$EBM_BENCH_DATA``; a clear error when neither is set."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_ENV)
        if not data_dir:
            raise DataError(f"no data directory: pass --data-dir or set {DATA_ENV}")
    return Path(data_dir).expanduser()


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _status_on_disk(entry: ManifestFile, root: Path) -> FileStatus:
    target = _inside(root, entry)
    if not target.is_file():
        return FileStatus(entry.path, "missing", entry.sha256)
    actual = sha256_of(target)
    if actual != entry.sha256:
        return FileStatus(entry.path, "mismatch", entry.sha256, actual, "sha256 differs from the manifest")
    return FileStatus(entry.path, "ok", entry.sha256, actual)


def check(data_dir: str | os.PathLike | None = None,
          manifest: str | os.PathLike | dict | None = None) -> list[FileStatus]:
    """One :class:`FileStatus` per manifest file: present and verified (``ok``), ``missing`` or ``mismatch``."""
    root = resolve_data_dir(data_dir)
    return [_status_on_disk(entry, root) for entry in load_manifest(manifest)]


def _source_url(entry: ManifestFile, mirror: str | None) -> str:
    if mirror is None:
        return entry.url
    if "://" not in mirror:  # a bare local folder is a file:// mirror
        mirror = Path(mirror).resolve().as_uri()
    return mirror.rstrip("/") + "/" + entry.path


def _download_verified(entry: ManifestFile, url: str, target: Path, timeout: float) -> str:
    """Stream ``url`` into a temp file next to ``target``, hashing as it goes; rename only if
    the sha256 matches. Returns the sha256 of what was received."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for block in iter(lambda: response.read(_CHUNK), b""):
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual == entry.sha256:
            os.replace(tmp_name, target)
        return actual
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def fetch(
    manifest: str | os.PathLike | dict | None,
    to_dir: str | os.PathLike,
    *,
    mirror: str | None = None,
    timeout: float = 60.0,
    strict: bool = True,
    allow_http: bool = False,
) -> list[FileStatus]:
    """Download every manifest file that ``to_dir`` lacks (or holds with a wrong sha256).

    Files already present and verified are left untouched (status ``ok``). Each download is
    verified before it takes its final name (``fetched``); a download whose sha256 differs, or
    that fails, leaves nothing behind and gets status ``failed`` with the reason. With
    ``strict`` (the default) a :class:`DataError` naming every failed file is raised at the end,
    after all other files were attempted. Every entry is confined (module doc) before the first
    download: one bad entry refuses the whole manifest with a :class:`DataError` naming it.
    """
    root = Path(to_dir).expanduser()
    entries = load_manifest(manifest)
    for entry in entries:
        _inside(root, entry)
        if mirror is None:
            _check_url(entry, allow_http)
    if mirror is not None and "://" in mirror:
        scheme = mirror.split("://", 1)[0].lower()
        if scheme not in ("https", "file") and not (scheme == "http" and allow_http):
            raise DataError(f"mirror URL scheme {scheme!r} is refused: use https, a local folder or file://, "
                            "or plain http with --allow-http")
    results: list[FileStatus] = []
    for entry in entries:
        present = _status_on_disk(entry, root)
        if present.status == "ok":
            results.append(present)
            continue
        url = _source_url(entry, mirror)
        try:
            actual = _download_verified(entry, url, _inside(root, entry), timeout)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            results.append(FileStatus(entry.path, "failed", entry.sha256, None, f"cannot download {url}: {reason}"))
            continue
        if actual != entry.sha256:
            message = f"sha256 mismatch for {url}: expected {entry.sha256}, got {actual}; file not written"
            results.append(FileStatus(entry.path, "failed", entry.sha256, actual, message))
        else:
            results.append(FileStatus(entry.path, "fetched", entry.sha256, actual))
    failed = [r for r in results if r.status == "failed"]
    if strict and failed:
        lines = "\n".join(f"  {r.path}: {r.message}" for r in failed)
        raise DataError(f"{len(failed)} of {len(results)} data files could not be fetched:\n{lines}")
    return results


def status_rows(statuses: list[FileStatus]) -> list[dict[str, Any]]:
    """Plain dicts (for tables and JSON output)."""
    return [
        {"path": s.path, "status": s.status, "sha256": s.actual_sha256 or "", "message": s.message} for s in statuses
    ]
