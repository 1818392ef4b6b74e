"""The run display: one rich progress bar (done / failed / running, ETA) on a terminal,
one plain line per finished run otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any

from harness.records import Status

OK_STATUSES = (Status.OK,)


class RunProgress:
    def __init__(self, total: int, *, title: str = "runs", enabled: bool = True, stream=None,
                 problems: list | None = None) -> None:
        self.total, self.title, self.enabled = total, title, enabled
        #: non-ok runs (status, method, task, model, error) are appended here (tuning trials are not)
        self.problems = problems
        self.stream = stream or sys.stderr
        self.counts: Counter[str] = Counter()
        self.running = 0
        self.done = 0
        self.started = time.monotonic()
        self._progress = None
        self._task = None
        if enabled and total and self.stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                                      TextColumn("ETA"), TimeRemainingColumn(),
                                      console=Console(file=self.stream), transient=False)
            self._progress.start()
            self._task = self._progress.add_task(title, total=total, detail="")

    def _detail(self) -> str:
        failed = sum(v for k, v in self.counts.items() if k not in OK_STATUSES)
        parts = [f"ok {self.counts.get(Status.OK, 0)}", f"failed {failed}", f"running {self.running}"]
        return " · ".join(parts)

    def started_one(self) -> None:
        self.running += 1
        self._refresh()

    def finished_one(self, row: dict) -> None:
        self.running = max(0, self.running - 1)
        self.done += 1
        status = row.get("status", "?")
        self.counts[status] += 1
        if self.problems is not None and status not in OK_STATUSES and row.get("trial") is None:
            self.problems.append((status, row.get("method"), row.get("task"), row.get("model"), row.get("error")))
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1)
            if status not in OK_STATUSES:
                self._progress.console.print(f"  {status}: {_label(row)}: {(row.get('error') or '')[:160]}")
        elif self.enabled:
            elapsed = time.monotonic() - self.started
            eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
            error = f" — {(row.get('error') or '')[:160]}" if status not in OK_STATUSES else ""
            print(f"[{self.done}/{self.total}] {status:<8} {_label(row)}{error}  "
                  f"({self._detail()}, ETA {eta:.0f} s)", file=self.stream, flush=True)
        self._refresh()

    def _refresh(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, detail=self._detail())

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def _label(row: dict) -> str:
    where = f"{row.get('task')}/{row.get('model')}/{row.get('method')}"
    if row.get("trial") is not None:  # a tuning trial (seed 0, fold 0 by construction)
        return f"{where} tuning trial {row['trial']}"
    return f"{where} seed {row.get('seed')} fold {row.get('fold')}"


class Phases:
    """What the driver is doing before the first run starts (planning → starting Ray → warming
    workers → loading data): a live status line on a terminal, one plain line per phase
    otherwise. Call it with each new phase; :meth:`done` clears it (the run bar takes over)."""

    def __init__(self, *, enabled: bool = True, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.started = time.monotonic()
        self._status: Any = None
        self._last: str | None = None

    def __call__(self, text: str) -> None:
        if not self.enabled or text == self._last:
            return
        self._last = text
        if self.stream.isatty():
            if self._status is None:
                from rich.console import Console

                self._status = Console(file=self.stream).status(text)
                self._status.start()
            else:
                self._status.update(text)
        else:
            print(f"ebm-bench: {text} ({time.monotonic() - self.started:.0f} s)", file=self.stream, flush=True)

    def done(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


# ----------------------------------------------------------------------------- end-of-run summary

#: how many (status, method, task, reason) groups the summary lists before "… and N more"
MAX_PROBLEM_LINES = 20


def problem_lines(problems, *, limit: int = MAX_PROBLEM_LINES) -> list[str]:
    """Group non-ok outcomes ``(status, method, task, model, reason)`` by status, method and
    reason (first line): ``"skipped 5: exact-mle on cal500, delicious (pairwise) — |Y| … exceeds …"``.
    Most frequent first within a status; statuses in a fixed order (failures before skips)."""
    order = ("failed", "timeout", "diverged", "pruned", "skipped", "unsupported")
    groups: dict[tuple, list] = {}
    for status, method, task, model, reason in problems:
        first = (str(reason or "").strip().splitlines() or ["(no reason recorded)"])[0]
        first = first if len(first) <= 160 else first[:157] + "…"
        entry = groups.setdefault((str(status), method, first), [0, {}, {}])
        entry[0] += 1
        entry[1][task] = None
        entry[2][model] = None
    ranked = sorted(groups.items(), key=lambda item: (
        order.index(item[0][0]) if item[0][0] in order else len(order), -item[1][0], item[0]))
    lines = [f"{status} {count}: {method} on {_names(tasks)} ({_names(models)}) — {reason}"
             for (status, method, reason), (count, tasks, models) in ranked[:limit]]
    if len(ranked) > limit:
        lines.append(f"… and {len(ranked) - limit} more groups "
                     "(ebm-bench query \"select task, model, method, status, error from runs where status != 'ok'\")")
    return lines


def _names(names, shown: int = 4) -> str:
    names = [str(n) for n in names]
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
