"""The run display: one rich progress bar (done / failed / running, ETA) on a terminal,
one plain line per finished run otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time
from collections import Counter

from harness.records import Status

OK_STATUSES = (Status.OK,)


class RunProgress:
    def __init__(self, total: int, *, title: str = "runs", enabled: bool = True, stream=None) -> None:
        self.total, self.title, self.enabled = total, title, enabled
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
    return f"{row.get('task')}/{row.get('model')}/{row.get('method')} seed {row.get('seed')} fold {row.get('fold')}"
