"""The compact table: one grade word a cell, so the matrix fits on a screen.

The wide table (runner/report/render.py: `VERDICT: reason` in every cell) is the full story and
stays in report.md and `report --wide`. This one is what a reader sees first: README, the end of a
run, `python -m runner report`. One table per scenario (the watch table is the headline), one row
per client entry (a folder's default, then its variants as `↳ name`, or `↳ …-suffix` when the name
extends the default's), one column per cluster, each
cell the grade only. A cell that has something to say beyond "every round seen" carries a numbered
mark; the notes under the table give its reason, and cells whose reasons are the same share one note.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tabulate import tabulate

from runner.model import CellResult, RunResult, Verdict
from runner.report.render import Format, ordered_entries, table_cell, table_notes

_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def mark(n: int) -> str:
    return str(n).translate(_SUPERSCRIPT)


def says_something(c: CellResult) -> bool:
    """Whether a cell's reason adds to its grade: anything but a plain PASS. A PASS that re-watched
    without reset or error is still plain: the grade already says every round was seen."""
    return c.verdict is not Verdict.PASS


def scenarios(cells: Iterable[CellResult]) -> list[str]:
    return list(dict.fromkeys(c.scenario for c in cells))


def clusters(cells: Iterable[CellResult]) -> list[str]:
    return list(dict.fromkeys(c.cluster for c in cells))


def short_label(name: str, cells: list[CellResult], defaults: Mapping[str, str]) -> str:
    """An entry's row label: its name; for a variant under its folder's default (`defaults`: folder →
    the default entry's name) `↳ name`, the default's name elided when the variant's starts with
    it (`↳ …-timeout` under `kubernetes-asyncio`), so that long variant names do not widen every row.
    What the variant changes is left to the wide table and the HTML index's client list."""
    first = cells[0]
    parent = defaults.get(first.folder)
    if not first.is_variant or parent is None:
        return name
    return f"↳ …{name[len(parent):]}" if name.startswith(f"{parent}-") else f"↳ {name}"


def render_compact(run: RunResult, fmt: Format) -> str:
    """The compact tables, their notes, then profiles, legend and mitigations as the wide table has."""
    notes: dict[str, int] = {}
    defaults = {c.folder: c.client for c in run.cells if not c.is_variant}
    out: list[str] = []
    many = len(scenarios(run.cells)) > 1
    for scenario in scenarios(run.cells):
        cells = [c for c in run.cells if c.scenario == scenario]
        cols = clusters(cells)
        rows = []
        for name, entry in ordered_entries(cells):
            by_cluster = {c.cluster: c for c in entry}
            row = [short_label(name, entry, defaults)]
            for cluster in cols:
                c = by_cluster.get(cluster)
                if c is None:
                    row.append("—")
                    continue
                grade = c.verdict.value
                if says_something(c) and c.reason:
                    key = f"{c.verdict.value}: {c.reason}"
                    grade += mark(notes.setdefault(key, len(notes) + 1))
                row.append(grade)
            rows.append([table_cell(text, fmt) for text in row])
        if many:
            out += [f"**{scenario}**" if fmt == "github" else f"{scenario}:", ""]
        headers = ["client", *(table_cell(cl, fmt) for cl in cols)]
        out += [tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True) if rows else "(no cells)", ""]
    if notes:
        out += [f"- {mark(n)} {table_cell(text, fmt)}" for text, n in notes.items()]
        out.append("")
    out += table_notes(run, fmt)
    return "\n".join(out).rstrip("\n") + "\n"
