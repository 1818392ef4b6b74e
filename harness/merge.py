"""Combine results directories from several machines into one.

Rules (``merge_results(sources, into)``; ``into``'s own content counts as the first source):

* ``runs`` — one row per ``run_id``: the latest ``finished_at`` wins; on a tie, the source
  given later (as :func:`harness.store.dedupe_runs`).
* ``curves`` — only the curve rows of the kept run rows, taken from the same source as the
  kept row (a run executed on two machines has two different curves; the loser's is dropped)
  and of the same ``attempt`` (earlier attempts and exact duplicate points are dropped).
* ``trials``, ``perf`` — concatenated, exact duplicate rows dropped.
* ``leaderboard.parquet`` is recomputed; ``manifest.json`` keeps ``into``'s content and gains
  an invocation ``command = "merge"`` (sources with their git sha and host, counts).
  Optuna journals (``DIR/studies``) are not merged.

Crash safety: the merged tables are written as new part files first (atomically, by the
store), and only then are ``into``'s previous part files removed. A crash in between leaves
duplicates that readers dedupe, never a lost row. Corrupt part files, and part files whose
columns conflict with the schema, are skipped with a warning naming them (and left where
they are); ``on_corrupt="raise"`` (CLI ``--strict``) stops instead.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

TABLES = ("runs", "curves", "trials", "perf")
_SOURCE = "_merge_source"


@dataclass(frozen=True)
class MergeSummary:
    """Row counts of the merged directory, and how many run rows were superseded."""

    into: str
    sources: list[str]
    runs: int
    runs_superseded: int
    curves: int
    trials: int
    perf: int


def _records(frame: pd.DataFrame) -> list[dict]:
    """Row dicts with every missing value as None (the store reads NaN in a string column as "nan")."""
    frame = frame.drop(columns=[_SOURCE], errors="ignore")
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _read_all(directories: list[Path], table: str, on_corrupt: str) -> pd.DataFrame:
    from harness import store

    frames = [store.read_arrow(d, table, on_corrupt=on_corrupt).to_pandas().assign(**{_SOURCE: i})
              for i, d in enumerate(directories)]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def merge_results(sources: list[str | os.PathLike], into: str | os.PathLike, *,
                  on_corrupt: str = "warn") -> MergeSummary:
    """Merge ``sources`` into ``into`` by the rules of the module doc."""
    from harness import leaderboard, store

    into = store.check_writable(into)
    directories = [into]
    for source in map(Path, sources):
        if not source.is_dir():
            raise FileNotFoundError(f"merge source {source} is not a directory")
        if source.resolve() not in {d.resolve() for d in directories}:
            directories.append(source)
    previous = {table: store.table_files(into, table, on_corrupt="warn") for table in TABLES}

    runs = _read_all(directories, "runs", on_corrupt)
    kept = store.dedupe_runs(runs) if len(runs) else runs
    curves = _read_all(directories, "curves", on_corrupt)
    if len(curves):
        curves = curves.merge(kept[["run_id", _SOURCE]], on=["run_id", _SOURCE], how="inner")
        curves = store.kept_attempt_curves(curves, kept)  # one attempt per run, no duplicate points
    merged = {"runs": kept, "curves": curves}
    for table in ("trials", "perf"):
        frame = _read_all(directories, table, on_corrupt)
        merged[table] = frame.drop(columns=[_SOURCE]).drop_duplicates() if len(frame) else frame

    for table in TABLES:
        store.append_rows(into, table, _records(merged[table]))
    for paths in previous.values():
        for path in paths:
            path.unlink(missing_ok=True)
    if previous["perf"] or len(merged["perf"]):
        store.write_parquet_atomic(into / "perf.parquet", store.read_arrow(into, "perf"))
    leaderboard.write_leaderboard(into)

    summary = MergeSummary(str(into), [str(d) for d in directories[1:]], len(kept), len(runs) - len(kept),
                           len(curves), len(merged["trials"]), len(merged["perf"]))
    _record_in_manifest(into, summary, directories[1:])
    return summary


def _record_in_manifest(into: Path, summary: MergeSummary, sources: list[Path]) -> None:
    """A ``merge`` invocation in ``into``'s manifest, with each source's git sha and host."""
    import uuid

    from harness import manifest, store

    origins = []
    for source in sources:
        found = manifest.read_manifest(source)
        origins.append({"dir": str(source), "git_sha": found.get("git_sha"),
                        "host": (found.get("hardware") or {}).get("host")})
    manifest.record_invocation(into, f"merge-{uuid.uuid4().hex[:12]}", command="merge", sources=origins,
                               finished_at=store.utc_now().isoformat(), counts=asdict(summary))

