"""Two runs side by side: `python -m runner report A/results.json --against B/results.json`.

Cells pair up where both runs ran the same client entry and scenario behind the same LB profile
(by the profile's name and the overrides it ran with; a cluster without an emulated LB pairs by its
cluster name). That sets a
local cluster's columns beside the embedded columns of the same profiles (README), or a run beside
its repeat. One table per scenario, one row per client entry, one column per profile; a cell shows
one grade where the runs agree and `A ≠ B` with a note where they do not, the note giving both
reasons, so a difference is explained from the evidence or stands out as one to explain.
"""

from __future__ import annotations

from collections.abc import Iterable

from tabulate import tabulate

from runner.config.profiles import canonical_front
from runner.model import CellResult, RunResult
from runner.report.compact import mark, scenarios
from runner.report.render import Format, ordered_entries, table_cell

Key = tuple[str, str, str]


def column(c: CellResult) -> str:
    """The column a cell pairs under: its LB profile's name with the overrides it ran with (a cell
    behind an `http` front is not paired with one behind a `tcp` front), or its cluster's name where
    no LB is emulated."""
    if c.profile is None:
        return c.cluster
    overrides = {k: str(canonical_front(v)) if k == "front" else v for k, v in c.profile.overrides.items()}
    if not overrides:
        return c.profile.name
    return f"{c.profile.name} [" + ", ".join(f"{k}={v}" for k, v in sorted(overrides.items())) + "]"


def _index(cells: Iterable[CellResult]) -> dict[Key, CellResult]:
    return {(c.client, c.scenario, column(c)): c for c in cells}


def differences(a: RunResult, b: RunResult) -> list[tuple[CellResult, CellResult]]:
    """Paired cells whose verdicts differ, in A's order."""
    theirs = _index(b.cells)
    return [(c, o) for c in a.cells if (o := theirs.get((c.client, c.scenario, column(c)))) is not None
            and o.verdict is not c.verdict]


def _where(run: RunResult, cells: Iterable[CellResult]) -> str:
    names = ", ".join(dict.fromkeys(c.cluster for c in cells))
    return f"run {run.run_id} ({run.matrix}; clusters {names})"


def render_compare(a: RunResult, b: RunResult, fmt: Format) -> str:
    ours, theirs = _index(a.cells), _index(b.cells)
    shared = [k for k in ours if k in theirs]
    if not shared:
        return (f"runs {a.run_id} and {b.run_id} share no client, scenario and LB profile: nothing to compare\n")
    cols = list(dict.fromkeys(k[2] for k in shared))
    left = [ours[k] for k in shared]
    out = [f"A: {_where(a, left)}", f"B: {_where(b, [theirs[k] for k in shared])}",
           "One grade where A and B agree; `A ≠ B` where they differ, with both reasons below.", ""]
    notes: list[str] = []
    for scenario in scenarios(left):
        rows = []
        for name, entry in ordered_entries(c for c in left if c.scenario == scenario):
            row = [name]
            for col in cols:
                key = (entry[0].client, scenario, col)
                mine, other = ours.get(key), theirs.get(key)
                if mine is None or other is None:
                    row.append("—")
                elif mine.verdict is other.verdict:
                    row.append(mine.verdict.value)
                else:
                    notes.append(f"{mine.client} · {scenario} · {col}: A {mine.verdict.value}: {mine.reason} "
                                 f"— B {other.verdict.value}: {other.reason}")
                    row.append(f"{mine.verdict.value} ≠ {other.verdict.value}{mark(len(notes))}")
            rows.append([table_cell(text, fmt) for text in row])
        out += [f"**{scenario}**" if fmt == "github" else f"{scenario}:", ""]
        out += [tabulate(rows, headers=["client", *(table_cell(c, fmt) for c in cols)], tablefmt=fmt,
                         disable_numparse=True), ""]
    out += [f"- {mark(n)} {table_cell(text, fmt)}" for n, text in enumerate(notes, 1)]
    agree = len(shared) - len(notes)
    out += ["", f"{agree} of {len(shared)} paired cells agree; differences: {len(notes)}."]
    return "\n".join(out).rstrip("\n") + "\n"
