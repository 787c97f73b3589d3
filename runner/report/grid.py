"""The HTML index's grid as plain data: one grade a cell, its reason in a numbered note, the filters' options.

The rows and columns are report.md's (runner/report/render.py), the grade and its note the compact
table's (runner/report/compact.py): a cell that says something beyond a plain PASS carries the number
of a note, and cells with the same text share one. runner/report/html.py renders it with
templates/index.html.j2; nothing here is markup.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from runner.model import CellResult, RunResult, Verdict
from runner.report.compact import says_something, short_label
from runner.report.render import cell_text, entry_label, keepalive_text, ordered_entries

#: A verdict's CSS class on every page (its colour in base.html.j2).
VERDICT_CLASS = {v: "v-" + v.value.lower() for v in Verdict}


@dataclass(frozen=True)
class GridCell:
    """One cell of the index's grid: its grade only; the reason is the hover text (`title`), its note
    under the grid and the cell's page."""

    verdict: str
    css: str
    #: `VERDICT: reason`, the whole text (shown on hover).
    title: str
    #: The cell page's link, or None when the cell got no page.
    href: str | None
    #: The number of the note under the grid that gives its reason, or None for a plain PASS.
    note: int | None


@dataclass(frozen=True)
class GridRow:
    #: The compact label: the entry's name, `↳ name` for a variant under its default.
    label: str
    #: The full label (what a variant changes) and its library, on hover.
    title: str
    #: The client folder's position among the filter's options (the row's class `client-N`).
    group: int
    #: One per column; None where this entry has no cell.
    cells: list[GridCell | None]


@dataclass(frozen=True)
class ClientRow:
    label: str
    library: str
    keepalive: str


@dataclass(frozen=True)
class Note:
    number: int
    text: str


@dataclass(frozen=True)
class Option:
    """One choice of the grid's filters: `key` goes into ids and CSS (made here from an enum or a
    position, never from a name in the results); `label` is the text a person reads."""

    key: str
    css: str
    label: str
    count: int


@dataclass(frozen=True)
class HeadCell:
    text: str
    span: int


@dataclass(frozen=True)
class Grid:
    #: report.md's rows and columns, one grade a cell.
    rows: list[GridRow]
    #: The notes the cells' numbers point to, numbered in reading order.
    notes: list[Note]
    #: Each row's full label, library and the keepalive its capture showed.
    clients: list[ClientRow]
    #: The client filter's options, one per client folder (a default and its variants).
    client_options: list[Option]


def grid(run: RunResult, columns: list[tuple[str, str]], href: Callable[[CellResult], str | None]) -> Grid:
    """The grid of `run` over `columns` ((cluster, scenario) pairs); `href` gives a cell's page link,
    or None when it has no page."""
    defaults = {c.folder: c for c in run.cells if not c.is_variant}
    notes: dict[str, int] = {}
    folders: dict[str, int] = {}
    rows, clients = [], []
    for name, cells in ordered_entries(run.cells):
        by_col = {(c.cluster, c.scenario): c for c in cells}
        row_cells: list[GridCell | None] = []
        for col in columns:
            c = by_col.get(col)
            if c is None:
                row_cells.append(None)
                continue
            text = cell_text(c)
            note = notes.setdefault(text, len(notes) + 1) if says_something(c) and c.reason else None
            row_cells.append(GridCell(verdict=c.verdict.value, css=VERDICT_CLASS[c.verdict], title=text,
                                      href=href(c), note=note))
        first = cells[0]
        label = entry_label(name, cells, defaults)
        library = f"{first.library} {first.library_version}"
        group = folders.setdefault(first.folder, len(folders) + 1)
        parents = {f: c.client for f, c in defaults.items()}
        rows.append(GridRow(label=short_label(name, cells, parents), title=f"{label} · {library}",
                            group=group, cells=row_cells))
        clients.append(ClientRow(label=label, library=library, keepalive=keepalive_text(cells)))
    per_folder = Counter(r.group for r in rows)
    options = [Option(key=str(n), css=f"client-{n}", label=folder, count=per_folder[n])
               for folder, n in folders.items()]
    return Grid(rows, [Note(n, text) for text, n in notes.items()], clients, options)


__all__ = ["VERDICT_CLASS", "ClientRow", "Grid", "GridCell", "GridRow", "HeadCell", "Note", "Option", "grid"]
