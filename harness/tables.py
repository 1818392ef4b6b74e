"""Plain-text tables for every command that prints one (tasks, methods, query, leaderboard, perf).

Rich folds cells to fit 80 columns when stdout is not a terminal, which turns a task
listing piped into ``less`` or a log into confetti. We size the console to the table's
natural width instead, so a row always stays on one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from io import StringIO


def render_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    title: str | None = None,
    caption: str | None = None,
    right: Iterable[str] = (),
    wrap: Iterable[str] = (),
    wrap_width: int = 56,
) -> str:
    """Render ``rows`` (already formatted cells; None prints empty) under ``columns``;
    columns named in ``right`` are right-aligned (numbers); those in ``wrap`` (prose) wrap
    at ``wrap_width`` characters, every other cell stays on one line. Cells are literal
    text: square brackets are not rich markup."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    right, wrap = set(right), set(wrap)
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    table = Table(title=title, caption=caption)
    for column in columns:
        table.add_column(str(column), justify="right" if column in right else "left", no_wrap=column not in wrap,
                         max_width=wrap_width if column in wrap else None)
    for row in cells:
        table.add_row(*map(escape, row))

    def column_width(i: int, column: str) -> int:
        longest = max([len(str(column))] + [len(r[i]) for r in cells])
        return min(longest, wrap_width) if column in wrap else longest

    natural = sum(column_width(i, c) + 3 for i, c in enumerate(columns)) + 1
    width = max(natural, len(title or ""), len(caption or ""), 40)
    buffer = StringIO()
    Console(file=buffer, width=width, color_system=None, soft_wrap=False).print(table)
    return buffer.getvalue()
