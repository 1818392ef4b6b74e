"""Plain-text tables for every command that prints one (tasks, methods, query, leaderboard, perf).

Rich folds cells to fit 80 columns when stdout is not a terminal, which turns a task
listing piped into ``less`` or a log into confetti. We size the console to the table's
natural width instead, so a row always stays on one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from io import StringIO


def terminal_width() -> int:
    """Columns of the terminal stdout writes to (``COLUMNS`` when set; 80 when unknown): rich's rule."""
    from rich.console import Console

    return Console().width


def render_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    title: str | None = None,
    caption: str | None = None,
    right: Iterable[str] = (),
    wrap: Iterable[str] = (),
    wrap_width: int = 56,
    max_width: int | None = None,
) -> str:
    """Render ``rows`` (already formatted cells; None prints empty) under ``columns``;
    columns named in ``right`` are right-aligned (numbers); those in ``wrap`` (prose) wrap
    at ``wrap_width`` characters, every other cell stays on one line. Cells are literal
    text: square brackets are not rich markup.

    ``max_width`` (a terminal's width): when the boxed table is wider, it is drawn without
    vertical rules (two spaces between columns); if that is still too wide, the left-aligned
    text columns are cut with an ellipsis, so that no row ever wraps."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    right, wrap = set(right), set(wrap)
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    natural = natural_width(columns, cells, wrap=wrap, wrap_width=wrap_width)
    compact = max_width is not None and natural > max_width
    if compact:  # no vertical rules: 2 characters between columns instead of 3, none at the edges
        natural = natural_width(columns, cells, wrap=wrap, wrap_width=wrap_width, compact=True)
    cut = compact and max_width is not None and natural > max_width
    if compact:
        table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False,
                      show_edge=False)
    else:
        table = Table(title=title, caption=caption)
    for i, column in enumerate(columns):
        # cut: the text columns may give way (ellipsis), so rich shrinks them rather than every column
        table.add_column(str(column), justify="right" if column in right else "left",
                         no_wrap=column not in wrap and not (cut and column not in right),
                         max_width=wrap_width if column in wrap else None,
                         overflow="ellipsis" if cut and column not in right else "fold",
                         # numbers are never cut: the names give way
                         min_width=max([len(str(column))] + [len(r[i]) for r in cells]) if cut and column in right
                         else None)
    for row in cells:
        table.add_row(*map(escape, row))
    width = max(natural, len(title or ""), len(caption or ""), 40)
    if max_width is not None:  # rich lays the table out within the terminal (at its natural width when it fits)
        width = max_width
    buffer = StringIO()
    Console(file=buffer, width=width, color_system=None, soft_wrap=False).print(table)
    return buffer.getvalue()


def natural_width(columns: Sequence[str], cells: Sequence[Sequence[str]], *, wrap: Iterable[str] = (),
                  wrap_width: int = 56, compact: bool = False) -> int:
    """Characters per line of :func:`render_table`'s table of these cells: boxed (3 between
    columns and 2 at the edges) or ``compact`` (2 between columns, none at the edges)."""
    wrap = set(wrap)

    def column_width(i: int, column: str) -> int:
        longest = max([len(str(column))] + [len(str(r[i])) for r in cells])
        return min(longest, wrap_width) if column in wrap else longest

    content = sum(column_width(i, c) for i, c in enumerate(columns))
    return content + 2 * (len(columns) - 1) if compact else content + 3 * len(columns) + 1
