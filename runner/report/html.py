"""The run as web pages a person can read: the matrix, and one page per cell with its timeline.

`write_extras(run, run_dir)` is the one entry point the runner calls after `write_reports`. It
writes `index.html` (the matrix as a grid of coloured grades in report.md's rows and columns, one
grade a cell as the compact table has it, each linking to its page, its reason on hover and in the
numbered notes under the grid; sticky headers, a CSS-only filter by grade and by client; then the
clients, the profiles' real numbers, the legend), one `cells/<client>/<cluster>/<scenario>/index.html`
per cell next to that cell's evidence, each cell's `timeline.svg` (runner/report/timeline.py), and
`junit.xml` (runner/report/junit.py).

A cell's page puts first what happened, as short sentences read from the evidence files
(runner/report/story.py), so a FAIL-SILENT cell says without opening a log that the flow idled past
the LB's timeout, the LB forgot it, the update was written and nothing reached the watcher. Then the
timeline, expected vs observed per round, the packet facts, the LB events, the tail of the watcher's
log, links to every evidence file (pcaps included) and the one command that reruns only this cell.

This module collects plain data (strings, numbers, small dataclasses) and renders it with the jinja2
templates in `templates/`, autoescape on: no markup is built here, so no value can reach a page
unescaped by being forgotten. Pages are self-contained: inline CSS, the timeline linked by a
relative path (an `<img>`, where an SVG's scripts never run), no script, no web font. The index's
filters are radio buttons and `:has()` rules; the ids and classes those rules name are made from
the verdicts and row positions (grid.py), never from a name in the results. Like report.py,
everything is a function of the RunResult and the evidence files, so rendering twice gives the same bytes.
"""

from __future__ import annotations

import html
import json
import multiprocessing
import os
import shlex
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import jinja2
from markupsafe import Markup

from runner.contract import WATCH
from runner.evidence import lb_events
from runner.host.safefiles import write_atomic
from runner.model import CellResult, RunResult, Verdict, fmt_secs
from runner.report.grid import VERDICT_CLASS, HeadCell, Option, grid
from runner.report.junit import write_junit

# The matrix's rows, columns and labels are report.py's, so the page and the text table always agree.
from runner.report.render import (
    cell_facts,
    mitigation_lines,
    profiles_used,
    rel_time,
    table_columns,
    utc_time,
)
from runner.report.story import longest_silence, story
from runner.report.timeline import Evidence, draw_timeline, read_evidence
from runner.text import plural

#: Lines of the watcher's log shown on a cell's page (the whole file is linked).
WATCHER_TAIL = 40
STDERR_TAIL = 20
TIMELINE_FILE = "timeline.svg"

def _escape(value: object) -> object:
    """Every `{{ value }}` of the templates, escaped as html.escape does (quotes included).

    Autoescape alone would escape too, with markupsafe's `&#34;`/`&#39;` for quotes; html.escape's
    `&quot;`/`&#x27;` keep the pages byte-identical to the ones written before the templates. A value
    that is already markup (a macro's output) passes through as autoescape would pass it.
    """
    if hasattr(value, "__html__"):
        return value
    return Markup(html.escape(str(value), quote=True))


def _words(text: str) -> Markup:
    """The story's own wording (story.Span "words"), escaped but for its quotes ("the pod's"): it only
    ever sits in element content, where quotes are plain text, and the pages kept them unescaped."""
    return Markup(html.escape(text, quote=False))


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("runner.report", "templates"),
    autoescape=True,
    finalize=_escape,
    # The templates write one line of output per line; these drop the lines holding only a tag.
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)
_ENV.filters["words"] = _words


def _href(path: str) -> str:
    """A relative link from path segments, each percent-encoded (the template escapes it for the attribute)."""
    return "/".join(quote(part) for part in path.split("/"))


def cell_page_path(cell: CellResult) -> str:
    """The cell page's path relative to the run dir: `cells/<client>/<cluster>/<scenario>/index.html`."""
    return f"cells/{cell.cell_id}/index.html"


def _safe_cell_dir(run_dir: Path, cell: CellResult) -> Path | None:
    """The cell's folder, or None when its id would leave `cells/` (a name like `..`)."""
    parts = cell.cell_id.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return run_dir / "cells" / Path(*parts)


@dataclass(frozen=True)
class RunIds:
    """What a cell's page says of its run: known at its start, so a page can be written early."""

    run_id: str
    matrix: str


def reproduce_command(run: RunIds | RunResult, cell: CellResult) -> str:
    """The one command that reruns only this cell."""
    return shlex.join([
        "python", "-m", "runner", run.matrix,
        "--only", f"client={cell.client}", "--only", f"cluster={cell.cluster}", "--only", f"scenario={cell.scenario}",
    ])


# --- index.html -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LegendEntry:
    css: str
    value: str
    legend: str


@dataclass(frozen=True)
class FileLink:
    href: str
    name: str
    what: str


_RUN_FILES = (("results.json", "every cell's verdict and evidence facts"),
              ("report.md", "the same as Markdown, every round"),
              ("junit.xml", "one test case per cell, for CI"))


def render_index(run: RunResult, linkable: set[str]) -> str:
    """index.html: run facts, the grid of grades with links to the cell pages and filters, the notes
    with each cell's reason, the clients, profiles, legend, mitigations."""
    columns = table_columns(run.cells)
    clusters = list(dict.fromkeys(cl for cl, _ in columns))
    scenarios = list(dict.fromkeys(sc for _, sc in columns))
    many = len(scenarios) > 1
    counts = Counter(c.verdict for c in run.cells)
    g = grid(run, columns, lambda c: _href(cell_page_path(c)) if c.cell_id in linkable else None)
    return _ENV.get_template("index.html.j2").render(
        title=f"watchdrop run {run.run_id}",
        run_id=run.run_id,
        matrix=run.matrix,
        started=utc_time(run.started),
        finished=utc_time(run.finished),
        machine=sorted(run.machine.items()),
        interrupted=run.interrupted,
        n_cells=len(run.cells),
        summary=", ".join(f"{counts[v]} {v.value}" for v in Verdict if counts[v]),
        # Several scenarios: a row of clusters over a row of scenarios; one: the clusters alone.
        column_heads=[HeadCell(cl, len(scenarios)) for cl in clusters],
        scenario_heads=[sc for _, sc in columns] if many else [],
        group_size=len(scenarios),
        rows=g.rows,
        notes=g.notes,
        clients=g.clients,
        grade_options=[Option(key=v.value.lower(), css=VERDICT_CLASS[v], label=v.value, count=counts[v])
                       for v in Verdict if counts[v]],
        client_options=g.client_options,
        profiles=profiles_used(run),
        legend=[LegendEntry(VERDICT_CLASS[v], v.value, v.legend) for v in Verdict],
        mitigations=mitigation_lines(run),
        files=[FileLink(_href(name), name, what) for name, what in _RUN_FILES],
    )


# --- a cell's page --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineView:
    #: The SVG's link next to the page, or None with `missing` saying why there is none.
    src: str | None
    alt: str = ""
    started: str = ""
    missing: str = ""


@dataclass(frozen=True)
class RoundRow:
    css: str
    index: int
    update: str
    expected: str
    #: What was seen and when, or None when nothing arrived in time.
    seen: str | None
    deadline: str
    idle_before: str
    note: str


@dataclass(frozen=True)
class PacketFacts:
    #: Why there are no packet facts, or None when the capture was read.
    problem: str | None
    keepalive: str = ""
    count: str = ""
    heads: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class LbEventRow:
    css: str
    when: str
    event: str
    flow: str
    details: str


@dataclass(frozen=True)
class LogTail:
    title: str
    name: str
    #: "last 40 of 90 lines" / "3 lines", or None when the file is empty or missing.
    shown: str | None
    text: str


@dataclass(frozen=True)
class EvidenceLink:
    href: str
    path: str
    kind: str


_CONN_HEADS = ("connection (pod → server)", "opened", "first FIN/RST", "data pod / server",
               "small records pod / server", "keepalive probes pod / server", "RSTs",
               "retransmissions pod / server", "longest silence")


def _round_rows(cell: CellResult) -> list[RoundRow]:
    o = cell.started
    watch = cell.scenario == WATCH
    rows = []
    for r in cell.rounds:
        seen = None
        if r.ok and r.seen_at is not None:
            seen = (("event-seen " if watch else "answer ") + f"at {rel_time(r.seen_at, o)} "
                    f"(+{r.seen_at - r.update_at:.2f} s)")
        rows.append(RoundRow(
            css="" if r.ok else "v-fail-silent", index=r.index, update=rel_time(r.update_at, o), expected=r.expected,
            seen=seen, deadline=rel_time(r.deadline, o),
            idle_before="—" if r.idle_before is None else fmt_secs(r.idle_before), note=r.note))
    return rows


def _packet_facts(cell: CellResult, ev: Evidence) -> PacketFacts:
    o = cell.started
    if ev.pcap is None:
        return PacketFacts(problem=ev.pcap_problem or "no capture")
    rows = []
    for c in ev.pcap.connections:
        silence = longest_silence(c, ev.pcap.last_ts)
        rows.append((
            f"{c.client} → {c.server}", rel_time(c.opened_at, o),
            f"{rel_time(c.closed_at, o)} {c.close_kind}" if c.close_kind else "—",
            f"{len(c.data_client)} / {len(c.data_server)}",
            f"{len(c.small_records_client)} / {len(c.small_records_server)}",
            f"{len(c.keepalive_client)} / {len(c.keepalive_server)}",
            ", ".join(f"{who} {rel_time(t, o)}" for t, who in c.rsts) or "—",
            f"{c.retransmissions_client} / {c.retransmissions_server}",
            "—" if silence is None else fmt_secs(silence),
        ))
    return PacketFacts(problem=None, keepalive=ev.pcap.keepalive_summary(), count=plural(ev.pcap.packets, "packet"),
                       heads=_CONN_HEADS, rows=tuple(rows))


def _lb_rows(cell: CellResult, events: list[dict[str, object]]) -> list[LbEventRow]:
    rows = []
    for ev in events:
        ts = ev.get("ts")
        rest = {k: v for k, v in ev.items() if k not in ("ts", "event", "flow")}
        flow = ev.get("flow")
        rows.append(LbEventRow(
            css="v-fail-silent" if ev.get("event") in ("expired", "rst-sent", "after-expiry") else "",
            when=rel_time(ts if isinstance(ts, float | int) else None, cell.started),
            event=str(ev.get("event")),
            flow=flow if isinstance(flow, str) else "",
            details=", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(rest.items())),
        ))
    return rows


def _tail(path: Path, n: int) -> tuple[list[str], int]:
    """The last `n` lines of a text file and how many lines it has."""
    if not path.is_file():
        return [], 0
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return lines[-n:], len(lines)


def _line_time(line: str, timed: str) -> float | None:
    """A log line's own timestamp: a JSON line's `ts` ("json", "harness"), or a leading number
    ("prefix"); else None."""
    if timed in ("json", "harness"):
        try:
            obj = json.loads(line)
        except ValueError:
            return None
        return float(obj["ts"]) if isinstance(obj, dict) and isinstance(obj.get("ts"), int | float) else None
    if timed == "prefix":
        try:
            return float(line.partition(" ")[0])
        except ValueError:
            return None
    return None


def _shown(line: str, timed: str) -> str:
    """harness.log's lines are JSON (runner/evidence/harness_log.py): a person reads their `text`."""
    if timed != "harness":
        return line
    try:
        obj = json.loads(line)
    except ValueError:
        return line
    return str(obj.get("text", line)) if isinstance(obj, dict) else line


def _log_tail(title: str, path: Path, n: int, origin: float | None, timed: str) -> LogTail:
    """A log's tail as text, each line prefixed with its time from the cell's start when it has one."""
    lines, total = _tail(path, n)
    if not total:
        return LogTail(title, path.name, None, "")
    shown = f"last {len(lines)} of {total} lines" if total > len(lines) else plural(total, "line")
    out = []
    for ln in lines:
        ts = _line_time(ln, timed)
        out.append((f"{rel_time(ts, origin):>10}  " if ts is not None else "") + _shown(ln, timed))
    return LogTail(title, path.name, shown, "\n".join(out))


def _evidence_links(run_dir: Path, page_dir: Path, cell: CellResult) -> list[EvidenceLink]:
    items = sorted(cell.evidence.items())
    lb_dir = run_dir / "lbs" / cell.cluster
    if lb_dir.is_dir():
        # The LB's own captures of both legs: shared by every cell behind this LB.
        for pcap in sorted(lb_dir.glob("*.pcap")):
            items.append((f"LB {pcap.stem} (all pods behind {cell.cluster})", f"lbs/{cell.cluster}/{pcap.name}"))
    return [EvidenceLink(href=_href(os.path.relpath(run_dir / rel, page_dir).replace(os.sep, "/")), path=rel, kind=kind)
            for kind, rel in items]


#: The page's order of render.cell_facts, and its names where they differ from report.md's.
_PAGE_FACTS = ("library", "profile", "timings", "keepalive observed", "started", "finished", "environment", "build",
               "watcher", "LB")
_PAGE_NAMES = {"LB": "LB summary"}


def _setup_facts(cell: CellResult) -> list[tuple[str, str]]:
    facts = cell_facts(cell)
    return [(_PAGE_NAMES.get(name, name), facts[name]) for name in _PAGE_FACTS if name in facts]


def _timeline_view(cell: CellResult, page_dir: Path, timeline: str | None) -> TimelineView:
    # The SVG is linked, not inlined, so no markup of its own reaches the page. It does carry text from
    # the evidence (watcher values, the cell id): matplotlib draws it as paths and keeps the string
    # only in an XML comment it escapes, and an SVG shown through <img> runs no script either way.
    if timeline is not None and (page_dir / timeline).is_file():
        alt = f"Timeline of {cell.cell_id}: TCP connections, LB flow state, harness updates, watcher events, rounds"
        return TimelineView(src=_href(timeline), alt=alt, started=utc_time(cell.started))
    return TimelineView(src=None, missing=timeline or "no evidence recorded for this cell")


def render_cell_page(run: RunIds | RunResult, run_dir: Path, cell: CellResult, ev: Evidence,
                     timeline: str | None) -> str:
    """One cell's page; `timeline` is the SVG's file name next to the page, or a reason it is missing."""
    page_dir = run_dir / Path(cell_page_path(cell)).parent
    return _ENV.get_template("cell.html.j2").render(
        title=f"{cell.cell_id}: {cell.verdict.value}",
        run_id=run.run_id,
        up=_href(os.path.relpath(run_dir / "index.html", page_dir).replace(os.sep, "/")),
        cell=cell,
        verdict_css=VERDICT_CLASS[cell.verdict],
        story=story(cell, ev),
        timeline=_timeline_view(cell, page_dir, timeline),
        watch=cell.scenario == WATCH,
        rounds=_round_rows(cell),
        reproduce=reproduce_command(run, cell),
        setup=_setup_facts(cell),
        packets=_packet_facts(cell, ev),
        lb_events=_lb_rows(cell, lb_events.read(page_dir / "lb-events.jsonl")),
        logs=[
            _log_tail("Watcher (stdout, JSON lines)", page_dir / "watcher.jsonl", WATCHER_TAIL, cell.started, "json"),
            _log_tail("Watcher (stderr)", page_dir / "watcher.stderr", STDERR_TAIL, cell.started, "none"),
            _log_tail("Harness", page_dir / "harness.log", WATCHER_TAIL, cell.started, "harness"),
        ],
        evidence=_evidence_links(run_dir, page_dir, cell),
    )


# --- files ----------------------------------------------------------------------------------------


def _has_evidence(ev: Evidence) -> bool:
    return ev.pcap is not None or bool(ev.watcher or ev.lb_flows or ev.harness)


def draw_cell_timeline(cell_dir: Path, cell: CellResult, ev: Evidence | None = None) -> str | None:
    """Draw the cell's timeline from its evidence; what its page shows in the timeline's place: the
    file's name, why drawing failed, or None (no evidence to draw)."""
    ev = read_evidence(cell_dir) if ev is None else ev
    if not _has_evidence(ev):
        return None
    try:
        draw_timeline(ev, cell, cell_dir / TIMELINE_FILE)
    except (OSError, ValueError) as exc:
        # One cell's broken evidence must not cost the run its report: the page says why.
        return f"drawing it failed: {exc}"
    return TIMELINE_FILE


def _write_cell_pages(run: RunResult, run_dir: Path, cell_ids: list[str],
                      done: frozenset[str] = frozenset()) -> list[str]:
    """Draw the timeline and write the page of each of `cell_ids`, unless `done` says the page was
    written while the run went on; returns those that have a page."""
    written = []
    for cell in (c for c in run.cells if c.cell_id in set(cell_ids)):
        cell_dir = _safe_cell_dir(run_dir, cell)
        if cell_dir is None:
            continue
        if cell.cell_id not in done or not (cell_dir / "index.html").exists():
            _write_cell_page(run, run_dir, cell_dir, cell)
        written.append(cell.cell_id)
    return written


def _write_cell_page(run: RunIds | RunResult, run_dir: Path, cell_dir: Path, cell: CellResult) -> None:
    ev = read_evidence(cell_dir)  # once for both: parsing the capture is most of a page's cost
    timeline = draw_cell_timeline(cell_dir, cell, ev)
    write_atomic(cell_dir / "index.html", render_cell_page(run, run_dir, cell, ev, timeline))


def write_early(run_dir: Path, run: RunIds, cell: CellResult) -> bool:
    """A judged cell's timeline and page (runner/report/early.py), the bytes the report would write:
    its evidence is complete once collected. True when written."""
    cell_dir = _safe_cell_dir(run_dir, cell)
    if cell_dir is None:
        return False
    _write_cell_page(run, run_dir, cell_dir, cell)
    return True


def write_html(run: RunResult, run_dir: Path, workers: int | None = None, drawn: frozenset[str] = frozenset()
               ) -> Path:
    """Write run_dir/index.html and each cell's page and timeline; returns index.html's path.

    Drawing the timelines is most of a report's time and each page stands alone, so the cells are
    split across one process per CPU (the pages are the same bytes as drawn one by one). `drawn`:
    cells whose page and timeline were written while the run went on (runner/report/early.py)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ids = [c.cell_id for c in run.cells]
    if workers is None:  # a process is worth its start-up (imports) from a few cells to draw on
        workers = min(os.cpu_count() or 1, len([i for i in ids if i not in drawn]) // 8)
    workers = max(1, min(workers, len(ids)))
    if workers == 1:
        linkable = set(_write_cell_pages(run, run_dir, ids, drawn))
    else:
        # spawn, not fork: the runner has threads (progress, signal handling) a fork would copy mid-state.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = pool.map(_write_cell_pages, [run] * workers, [run_dir] * workers,
                             [ids[i::workers] for i in range(workers)], [drawn] * workers)
            linkable = {cell_id for part in parts for cell_id in part}
    index = run_dir / "index.html"
    write_atomic(index, render_index(run, linkable))
    return index


def write_extras(run: RunResult, run_dir: Path, drawn: frozenset[str] = frozenset()) -> None:
    """Everything beyond results.json and report.md: the HTML pages with timelines, and junit.xml;
    `drawn` as for write_html."""
    write_html(run, run_dir, drawn=drawn)
    write_junit(run, run_dir)


__all__ = ["cell_page_path", "render_cell_page", "render_index", "reproduce_command", "write_extras", "write_html"]
