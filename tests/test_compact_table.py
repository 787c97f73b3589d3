"""The compact table (runner/report/compact.py): one grade a cell, notes for what a grade cannot say,
and a README table that fits a screen for the default matrix."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

from runner.config.descriptor import load_descriptor
from runner.config.matrix import load_matrix
from runner.config.plan import plan
from runner.harness import base_result
from runner.model import RunResult, Verdict
from runner.report.compact import render_compact
from runner.report.readme import render_readme_section
from runner.report.render import render_table

REPO = Path(__file__).resolve().parent.parent
LONG_REASON = ("no event in time for 2/2 rounds, no RST seen, LB dropped 13 packets after expiry, "
               "flow idle 828 s > 360 s")


def _full_run(matrix: str = "matrix.yaml") -> RunResult:
    """Every cell of a real matrix, with the widest grades and long reasons: the worst case for width."""
    clients = REPO / "clients"
    cells = plan(load_matrix(REPO / matrix, clients), clients)
    verdicts = itertools.cycle([Verdict.FAIL_SILENT, Verdict.RECOVERED, Verdict.PASS, Verdict.FAIL_LOUD,
                                Verdict.APP_RECOVERED])
    results = []
    for i, cell in enumerate(cells):
        verdict = next(verdicts)
        results.append(base_result(cell, load_descriptor(clients / cell.folder), verdict, f"{LONG_REASON} ({i})"))
    return RunResult(run_id="abc123", started=1.0, finished=2.0, matrix=matrix, machine={"cpus": "2"}, profiles=[],
                     cells=results)


def _table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def test_readme_table_of_the_default_matrix_fits_160_characters_a_row() -> None:
    run = _full_run()
    section = render_readme_section(run)
    rows = _table_lines(section)
    assert len(rows) > 20, "the default matrix has a row per client entry and scenario table"
    # APP-RECOVERED with a two-digit mark is the widest cell, the widest variant label elided.
    assert any("APP-RECOVERED" in r for r in rows) and any("↳ …-timeout" in r for r in rows)
    assert max(len(r) for r in rows) <= 160, max(rows, key=len)
    # The wide table (report.md) is the one that does not fit, which is why this one exists.
    assert max(len(r) for r in _table_lines(render_table(run, "github"))) > 400


def test_cells_hold_a_grade_and_a_mark_and_the_notes_hold_the_reasons() -> None:
    run = _full_run("matrix.quick.yaml")
    text = render_compact(run, "plain")
    assert LONG_REASON not in "\n".join(line for line in text.splitlines() if not line.startswith("- "))
    notes = [line for line in text.splitlines() if line.startswith("- ") and LONG_REASON in line]
    # Every cell that is not PASS has its own note here (the reasons differ by their index).
    assert len(notes) == sum(c.verdict is not Verdict.PASS for c in run.cells)
    assert notes[0].startswith("- ¹ FAIL-SILENT: ")
    assert "FAIL-SILENT¹" in text


def test_same_reason_shares_one_note() -> None:
    run = _full_run("matrix.quick.yaml")
    for c in run.cells:
        c.verdict, c.reason = Verdict.SKIPPED, "no .NET SDK on this machine"
    text = render_compact(run, "github")
    assert text.count("no .NET SDK on this machine") == 1
    assert "SKIPPED¹" in text and "SKIPPED²" not in text


def test_one_table_per_scenario_with_clusters_as_columns() -> None:
    text = render_compact(_full_run("matrix.quick.yaml"), "github")
    assert "**watch**" in text and "**idle-request**" in text
    header = next(line for line in text.splitlines() if line.startswith("| client"))
    assert "azure-slb-quick" in header and "·" not in header


def test_report_prints_compact_and_wide_on_request(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text(_full_run("matrix.quick.yaml").to_json())

    def report(*extra: str) -> str:
        return subprocess.run([sys.executable, "-m", "runner", "report", str(results), *extra], cwd=REPO,
                              capture_output=True, text=True, check=True, timeout=60).stdout

    compact, wide = report(), report("--wide")
    assert LONG_REASON in wide.splitlines()[2]  # the first row of the wide table has the reason in its cell
    assert max(len(line) for line in compact.splitlines() if "│" in line or line.startswith("client")) < 200
    assert "keepalive (observed)" in wide and "keepalive (observed)" not in compact
