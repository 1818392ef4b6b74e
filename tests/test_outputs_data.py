"""data check / fetch through a file:// mirror built in tmp_path (no network), incl. a sha256
mismatch; and the packaged manifest against the shared datasets when they are available."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from harness import data

SHARED = Path(os.environ.get("EBM_BENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
SMALL = ["label_ranking/iris_dense.xarff", "multilabel/yeast/yeast.xml", "multilabel/scene/scene.xml"]


def _packaged(paths):
    entries = {f["path"]: f for f in json.loads(data.MANIFEST_PATH.read_text())["files"]}
    return {"files": [entries[p] for p in paths]}


@pytest.fixture
def mirror(tmp_path):
    if not all((SHARED / p).is_file() for p in SMALL):
        pytest.skip(f"shared datasets not found at {SHARED} (set EBM_BENCH_DATA)")
    root = tmp_path / "mirror"
    for rel in SMALL:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SHARED / rel, root / rel)
    return root


def test_packaged_manifest_is_well_formed():
    files = data.load_manifest(None)
    assert len(files) == 47 and len({f.path for f in files}) == 47
    for f in files:
        assert re.fullmatch(r"[0-9a-f]{64}", f.sha256) and f.bytes > 0
        assert re.fullmatch(r"https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{40}/\S+", f.url), f.url


@pytest.mark.data
def test_check_shared_datasets_all_ok():
    if not SHARED.is_dir():
        pytest.skip("shared datasets not available")
    statuses = data.check(SHARED)
    assert [s.path for s in statuses if s.status != "ok"] == []


def test_fetch_verifies_and_never_overwrites(mirror, tmp_path):
    manifest = _packaged(SMALL)
    dest = tmp_path / "dest"
    assert {s.status for s in data.check(dest, manifest)} == {"missing"}
    result = data.fetch(manifest, dest, mirror=mirror.as_uri())
    assert [s.status for s in result] == ["fetched"] * len(SMALL)
    for rel in SMALL:
        assert hashlib.sha256((dest / rel).read_bytes()).hexdigest() == hashlib.sha256(
            (SHARED / rel).read_bytes()).hexdigest()
    assert [s.status for s in data.check(dest, manifest)] == ["ok"] * len(SMALL)
    # a good file is left alone even when the mirror now serves something else
    (mirror / SMALL[0]).write_bytes(b"tampered")
    before = (dest / SMALL[0]).stat().st_mtime_ns
    assert [s.status for s in data.fetch(manifest, dest, mirror=str(mirror))] == ["ok"] * len(SMALL)
    assert (dest / SMALL[0]).stat().st_mtime_ns == before


def test_sha_mismatch_is_a_clear_error_and_leaves_nothing(mirror, tmp_path):
    manifest = _packaged(SMALL)
    (mirror / SMALL[1]).write_bytes(b"<labels>not the real file</labels>")
    dest = tmp_path / "dest"
    with pytest.raises(data.DataError, match=re.escape(SMALL[1]) + ".*sha256 mismatch"):
        data.fetch(manifest, dest, mirror=mirror.as_uri())
    assert not (dest / SMALL[1]).exists()
    assert (dest / SMALL[0]).is_file() and (dest / SMALL[2]).is_file()  # the others were fetched
    assert not [p for p in dest.rglob("*") if p.name.endswith(".part")]
    statuses = {s.path: s.status for s in data.check(dest, manifest)}
    assert statuses[SMALL[1]] == "missing"


def test_bad_local_file_is_replaced_and_reported_by_check(mirror, tmp_path):
    manifest = _packaged(SMALL[:1])
    dest = tmp_path / "dest"
    (dest / SMALL[0]).parent.mkdir(parents=True)
    (dest / SMALL[0]).write_bytes(b"half a download")
    assert data.check(dest, manifest)[0].status == "mismatch"
    assert data.fetch(manifest, dest, mirror=mirror.as_uri())[0].status == "fetched"
    assert data.check(dest, manifest)[0].status == "ok"


def test_unreachable_source_names_the_file(tmp_path):
    manifest = _packaged(SMALL[:1])
    with pytest.raises(data.DataError, match="cannot download"):
        data.fetch(manifest, tmp_path / "dest", mirror=(tmp_path / "empty-mirror").as_uri())


def test_no_data_dir_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    with pytest.raises(data.DataError, match="--data-dir"):
        data.check(None)


def test_cli_check_and_fetch(mirror, tmp_path, capsys):
    from harness.commands import data as command

    manifest_path = tmp_path / "manifest.json"
    manifest_path.write_text(json.dumps(_packaged(SMALL)))
    dest = tmp_path / "dest"
    check = argparse.Namespace(data_dir=str(dest), manifest=str(manifest_path), format="csv")
    assert command.run_check(check) == 1
    assert capsys.readouterr().out.count("missing") == len(SMALL)
    fetch = argparse.Namespace(to=str(dest), mirror=mirror.as_uri(), manifest=str(manifest_path))
    assert command.run_fetch(fetch) == 0
    assert f"{len(SMALL)} fetched" in capsys.readouterr().out
    assert command.run_check(check) == 0
    (mirror / SMALL[2]).write_bytes(b"x")
    (dest / SMALL[2]).unlink()
    assert command.run_fetch(fetch) == 1
    assert "sha256 mismatch" in capsys.readouterr().err


def _traversal_setup(tmp_path, bad_path, url=None):
    """A mirror with two files and a manifest whose first entry is good and second is ``bad_path``."""
    mirror = tmp_path / "mirror"
    (mirror / "sub").mkdir(parents=True)
    payload = b"payload\n"
    (mirror / "good.txt").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    entries = [{"path": "good.txt", "sha256": digest, "bytes": len(payload), "url": "https://example.org/good.txt"},
               {"path": bad_path, "sha256": digest, "bytes": len(payload), "url": url or "https://example.org/x"}]
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"files": entries}))
    return mirror, manifest


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("bad_path, expected", [
    ("../x", "'..'"),
    ("/tmp/ebm-bench-absolute-x", "absolute"),
    ("a/../../b", "'..'"),
])
def test_traversal_manifests_are_refused_before_any_download(tmp_path, capsys, bad_path, expected):
    """Each manifest path that would land outside --to is refused naming the entry, before any
    file (even the good one listed first) is downloaded; nothing is written inside or outside."""
    from harness.commands import data as command

    mirror, manifest = _traversal_setup(tmp_path, bad_path)
    dest = tmp_path / "work" / "dest"
    dest.mkdir(parents=True)
    before = _tree(tmp_path)
    args = argparse.Namespace(to=str(dest), mirror=str(mirror), manifest=str(manifest), allow_http=False)
    assert command.run_fetch(args) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and repr(bad_path) in err and expected in err, err
    assert _tree(tmp_path) == before and not Path("/tmp/ebm-bench-absolute-x").exists()
    with pytest.raises(data.DataError, match=re.escape(repr(bad_path))):
        data.check(dest, manifest)


@pytest.mark.parametrize("url, flag, message", [
    ("file:///etc/hostname", False, "scheme 'file' is refused"),
    ("ftp://example.org/x", False, "scheme 'ftp' is refused"),
    ("http://example.org/x", False, "--allow-http"),
])
def test_only_https_urls_are_fetched(tmp_path, capsys, url, flag, message):
    from harness.commands import data as command

    _, manifest = _traversal_setup(tmp_path, "data/x.txt", url=url)
    dest = tmp_path / "dest"
    args = argparse.Namespace(to=str(dest), mirror=None, manifest=str(manifest), allow_http=flag)
    assert command.run_fetch(args) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "'data/x.txt'" in err, err
    assert not dest.exists() or _tree(dest) == []


def test_sha256_is_mandatory(tmp_path):
    _, manifest = _traversal_setup(tmp_path, "x.txt")
    doc = json.loads(manifest.read_text())
    doc["files"][1]["sha256"] = ""
    manifest.write_text(json.dumps(doc))
    with pytest.raises(data.DataError, match="'x.txt': sha256 must be 64 hex digits"):
        data.fetch(manifest, tmp_path / "dest")


def test_symlink_out_of_the_destination_is_refused(tmp_path):
    mirror, manifest = _traversal_setup(tmp_path, "link/x.txt")
    dest = tmp_path / "dest"
    dest.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (dest / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(data.DataError, match="outside"):
        data.fetch(manifest, dest, mirror=str(mirror))
    assert list((tmp_path / "elsewhere").iterdir()) == []
