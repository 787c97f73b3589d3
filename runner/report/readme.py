"""README's section of a run: which run, the compact table with its notes, and two example timelines."""

from __future__ import annotations

from runner.contract import WATCH
from runner.model import CellResult, RunResult, Verdict
from runner.report.compact import render_compact
from runner.report.render import utc_time
from runner.text import markdown_text


def readme_examples(run: RunResult) -> dict[str, CellResult]:
    """One FAIL-SILENT and one PASS watch cell (the first of each), whose timelines the README shows."""
    out: dict[str, CellResult] = {}
    for c in run.cells:
        if c.scenario == WATCH and c.verdict in (Verdict.FAIL_SILENT, Verdict.PASS):
            out.setdefault(c.verdict.value, c)
    return out


def render_readme_section(run: RunResult, images: dict[str, str] | None = None) -> str:
    """The README's part: which run, the table with profiles, legend and mitigations, and the
    example timelines (`images`: verdict -> repo-relative SVG path); no per-cell detail."""
    head = (f"From run `{run.run_id}` of `{run.matrix}` ({utc_time(run.finished)}; "
            f"{run.machine.get('cpus', '?')} CPUs, kernel {run.machine.get('kernel', '?')}). "
            "Each cell's evidence is in `results/<run-id>/cells/`; `report.md` there has every round.")
    if run.interrupted:
        head += " **This run was interrupted.**"
    # One grade a cell, so the table fits a screen; report.md has the reasons.
    parts = [head, "", render_compact(run, "github").rstrip(), ""]
    examples = readme_examples(run)
    for verdict, path in sorted((images or {}).items(), key=lambda kv: kv[0] != "FAIL-SILENT"):
        c = examples[verdict]
        parts += [f"**{verdict}**: `{c.cell_id}`: {markdown_text(c.reason)}", "",
                  f"![{verdict} timeline of {c.cell_id}]({path})", ""]
    return "\n".join(parts)
