"""junit.xml: the run as JUnit test results, so any CI that reads them shows each cell.

One <testcase> per cell: classname is the matrix entry (the client column key), name is
`cluster/scenario`. FAIL-LOUD and FAIL-SILENT become <failure>, ERROR becomes <error>, SKIPPED
becomes <skipped>, each with the cell's reason as `message` and the verdict as `type`; PASS,
RECOVERED and APP-RECOVERED pass (every round was seen), APP-RECOVERED with its legend in
<system-out>: a CI page should not turn red for a library that raised an error the watcher's loop
answered, but the note says the application's code must do the same. The body of a failure lists
the rounds, so a CI page shows what was missed without opening the run directory, and
<system-out> points at the cell's page and evidence.

The file follows the common JUnit report format that Jenkins, GitLab and others read;
docs/junit.xsd is a schema of it written for this project, and the tests validate against it.
Output is deterministic (no clock, no hostname), like the other reports.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

from runner.host.safefiles import write_atomic
from runner.model import CellResult, RunResult, Verdict, fmt_secs

_FAILURES = (Verdict.FAIL_LOUD, Verdict.FAIL_SILENT)

# XML 1.0 cannot carry most control characters at all, not even escaped; a library's error text
# can hold them (a stray ANSI colour, a NUL), and one would make the whole file unreadable.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _secs(x: float) -> str:
    return f"{max(x, 0.0):.3f}"


def _duration(cell: CellResult) -> float:
    if cell.started is None or cell.finished is None:
        return 0.0
    return cell.finished - cell.started


def _rounds_text(cell: CellResult) -> str:
    lines = []
    for r in cell.rounds:
        if r.ok and r.seen_at is not None:
            got = f"seen after {r.seen_at - r.update_at:.2f} s"
        else:
            got = "NOT seen by the deadline"
        idle = "" if r.idle_before is None else f", flow idle {fmt_secs(r.idle_before)} before"
        lines.append(f"round {r.index}: expected {r.expected!r}: {got}{idle}" + (f" ({r.note})" if r.note else ""))
    return "\n".join(lines)


def _testcase(cell: CellResult) -> ET.Element:
    case = ET.Element("testcase", {
        "classname": _clean(cell.client),
        "name": _clean(f"{cell.cluster}/{cell.scenario}"),
        "time": _secs(_duration(cell)),
    })
    v = cell.verdict
    attrs = {"message": _clean(cell.reason or v.value), "type": v.value}
    if v in _FAILURES:
        el = ET.SubElement(case, "failure", attrs)
        el.text = _clean(f"{v.value}: {v.legend}\n{_rounds_text(cell)}")
    elif v is Verdict.ERROR:
        el = ET.SubElement(case, "error", attrs)
        el.text = _clean("\n".join([f"{v.value}: {v.legend}", *cell.errors]))
    elif v is Verdict.SKIPPED:
        ET.SubElement(case, "skipped", attrs)
    out = [f"{v.value}: {cell.reason}", f"page: cells/{cell.cell_id}/index.html"]
    if v is Verdict.APP_RECOVERED:
        out.insert(1, f"note: {v.legend}")
    if cell.profile is not None:
        out.append(f"profile: {cell.profile.describe()}")
    if cell.keepalive:
        out.append(f"keepalive observed: {cell.keepalive}")
    out += [f"evidence: {rel}" for _, rel in sorted(cell.evidence.items())]
    ET.SubElement(case, "system-out").text = _clean("\n".join(out))
    return case


def render_junit(run: RunResult) -> str:
    """junit.xml's text: <testsuites> holding one <testsuite> for the run."""
    cells = run.cells
    failures = sum(c.verdict in _FAILURES for c in cells)
    errors = sum(c.verdict is Verdict.ERROR for c in cells)
    skipped = sum(c.verdict is Verdict.SKIPPED for c in cells)
    total = (run.finished - run.started) if run.finished is not None else sum(_duration(c) for c in cells)
    counts = {"tests": str(len(cells)), "failures": str(failures), "errors": str(errors)}
    root = ET.Element("testsuites", {"name": "watchdrop", **counts, "time": _secs(total)})
    suite = ET.SubElement(root, "testsuite", {
        "name": _clean(f"watchdrop {run.matrix}"),
        **counts,
        "skipped": str(skipped),
        "time": _secs(total),
        # The run's start, not the time of writing: re-rendering gives the same bytes.
        "timestamp": datetime.fromtimestamp(run.started, UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "id": _clean(run.run_id),
    })
    props = ET.SubElement(suite, "properties")
    facts = [("run_id", run.run_id), ("matrix", run.matrix), ("interrupted", str(run.interrupted).lower())]
    facts += [(f"machine.{k}", v) for k, v in sorted(run.machine.items())]
    facts += [(f"profile.{p.name}", p.describe()) for p in run.profiles]
    for name, value in facts:
        ET.SubElement(props, "property", {"name": _clean(name), "value": _clean(value)})
    for cell in cells:
        suite.append(_testcase(cell))
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(run: RunResult, run_dir: Path) -> Path:
    """Write run_dir/junit.xml; returns its path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "junit.xml"
    write_atomic(path, render_junit(run))  # 0644: read by CI's collector, which may run as another user
    return path
