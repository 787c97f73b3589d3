"""The run as web pages a person can read: the matrix, and one page per cell with its timeline.

`write_extras(run, run_dir)` is the one entry point the runner calls after `write_reports`. It
writes `index.html` (the matrix table in runner/report.render_table's layout, each cell linking to
its page, the profiles' real numbers, the legend), one `cells/<client>/<cluster>/<scenario>/index.html`
per cell next to that cell's evidence, each cell's `timeline.svg` (runner/report/timeline.py), and
`junit.xml` (runner/report/junit.py).

A cell's page puts first what happened, as short sentences read from the evidence files (the
capture, the LB's event log, the watcher's lines and the harness's rounds), so a FAIL-SILENT cell
says without opening a log that the flow idled past the LB's timeout, the LB forgot it, the update
was written and nothing reached the watcher. Then the timeline, expected vs observed per round, the
packet facts, the LB events, the tail of the watcher's log, links to every evidence file (pcaps
included) and the one command that reruns only this cell.

Pages are self-contained: inline CSS, the timeline linked by a relative path, no script, no web
font, every piece of text HTML-escaped. Like report.py, everything is a function of the RunResult
and the evidence files, so rendering twice gives the same bytes.
"""

from __future__ import annotations

import html
import json
import os
import shlex
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import quote

from runner.evidence.pcap import ConnFacts
from runner.files import write_atomic
from runner.model import CellResult, RunResult, Verdict, fmt_secs

# The matrix's rows, columns and labels are report.py's, so the page and the text table always
# agree; those helpers are module-private there, hence the underscores.
from runner.report.junit import write_junit
from runner.report.render import (
    cell_text,
    column_title,
    entry_label,
    keepalive_text,
    mitigation_lines,
    ordered_entries,
    profiles_used,
    rel_time,
    table_columns,
    utc_time,
)
from runner.report.timeline import Evidence, LbFlow, draw_timeline, read_evidence, read_jsonl
from runner.text import plural

#: Lines of the watcher's log shown on a cell's page (the whole file is linked).
WATCHER_TAIL = 40
STDERR_TAIL = 20
TIMELINE_FILE = "timeline.svg"

_VERDICT_CLASS = {v: "v-" + v.value.lower() for v in Verdict}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:1.2em 2em;color:#1d1d1d;
line-height:1.4;max-width:1500px}
h1{font-size:1.45em;margin:.2em 0 .4em}h2{font-size:1.15em;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.4em 0}th,td{border:1px solid #cfcfcf;padding:.3em .5em;vertical-align:top;
text-align:left}th{background:#f3f3f3;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.matrix td.cell{min-width:11em}.matrix td.cell a{font-weight:700;text-decoration:none;color:inherit}
.matrix td.cell a:hover{text-decoration:underline}.reason{display:block;font-size:.82em;color:#333}
.v-pass{background:#dff3e2}.v-recovered{background:#dcebfb}.v-fail-loud{background:#ffe3bf}
.v-fail-silent{background:#ffcfd2}.v-error{background:#e6dcf3}.v-skipped{background:#eeeeee}
.banner{padding:.6em .9em;border-radius:6px;margin:.5em 0 1em;font-size:1.05em}
.banner b{font-size:1.15em;margin-right:.4em}
.story li{margin:.25em 0}.story .bad{color:#b71c1c;font-weight:600}.story .ok{color:#1b5e20;font-weight:600}
pre{background:#f6f6f6;border:1px solid #e2e2e2;padding:.6em;overflow-x:auto;font-size:.85em;line-height:1.3}
code{font-family:ui-monospace,"DejaVu Sans Mono",monospace}
.muted{color:#666}.legend li{margin:.15em 0}.swatch{display:inline-block;min-width:8.5em;padding:0 .4em;
font-weight:700;border:1px solid #ccc;margin-right:.4em}
figure{margin:.5em 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
.missed{color:#b71c1c;font-weight:700}.seen{color:#1b5e20;font-weight:700}
nav{font-size:.9em;margin-bottom:.6em}.wide{overflow-x:auto;max-width:100%}
"""


def _e(text: object) -> str:
    """Text for HTML content or a quoted attribute, escaped (quotes included)."""
    return html.escape(str(text), quote=True)


def _href(path: str) -> str:
    """A relative link from path segments, each percent-encoded, then escaped for the attribute."""
    return _e("/".join(quote(part) for part in path.split("/")))


def _page(title: str, body: Sequence[str]) -> str:
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        *body,
        "</body>",
        "</html>",
        "",
    ])


def _write(path: Path, text: str) -> None:
    write_atomic(path, text)


def cell_page_path(cell: CellResult) -> str:
    """The cell page's path relative to the run dir: `cells/<client>/<cluster>/<scenario>/index.html`."""
    return f"cells/{cell.cell_id}/index.html"


def _safe_cell_dir(run_dir: Path, cell: CellResult) -> Path | None:
    """The cell's folder, or None when its id would leave `cells/` (a name like `..`)."""
    parts = cell.cell_id.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return run_dir / "cells" / Path(*parts)


def reproduce_command(run: RunResult, cell: CellResult) -> str:
    """The one command that reruns only this cell."""
    return shlex.join([
        "python", "-m", "runner", run.matrix,
        "--only", f"client={cell.client}", "--only", f"cluster={cell.cluster}", "--only", f"scenario={cell.scenario}",
    ])


# --- index.html -----------------------------------------------------------------------------------


def _legend() -> list[str]:
    out = ['<ul class="legend">']
    for v in Verdict:
        out.append(f'<li><span class="swatch {_VERDICT_CLASS[v]}">{_e(v.value)}</span> {_e(v.legend)}</li>')
    return [*out, "</ul>"]


def render_index(run: RunResult, linkable: set[str]) -> str:
    """index.html: run facts, the matrix with links to the cell pages, profiles, legend, mitigations."""
    entries = ordered_entries(run.cells)
    columns = table_columns(run.cells)
    many = len({sc for _, sc in columns}) > 1
    defaults = {c.folder: c for c in run.cells if not c.is_variant}
    body = [f"<h1>watchdrop run {_e(run.run_id)}</h1>"]
    facts = [
        f"matrix <code>{_e(run.matrix)}</code>",
        f"started {_e(utc_time(run.started))}, finished {_e(utc_time(run.finished))}",
        *(f"{_e(k)}: {_e(v)}" for k, v in sorted(run.machine.items())),
    ]
    body.append('<p class="muted">' + " · ".join(facts) + "</p>")
    if run.interrupted:
        body.append('<p class="banner v-error"><b>Interrupted:</b> the run was stopped early; '
                    "cells not reached are missing.</p>")
    counts = Counter(c.verdict for c in run.cells)
    if counts:
        summary = ", ".join(f"{counts[v]} {v.value}" for v in Verdict if counts[v])
        body.append(f"<p>{len(run.cells)} cells: {_e(summary)}.</p>")

    body.append('<div class="wide"><table class="matrix">')
    heads = ["client", "library", "keepalive (observed)", *(column_title(cl, sc, many) for cl, sc in columns)]
    body.append("<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in heads) + "</tr></thead>")
    body.append("<tbody>")
    for name, cells in entries:
        by_col = {(c.cluster, c.scenario): c for c in cells}
        first = cells[0]
        row = [
            f"<th>{_e(entry_label(name, cells, defaults))}</th>",
            f"<td>{_e(first.library)} {_e(first.library_version)}</td>",
            f"<td>{_e(keepalive_text(cells))}</td>",
        ]
        for col in columns:
            c = by_col.get(col)
            if c is None:
                row.append('<td class="cell">—</td>')
                continue
            verdict = _e(c.verdict.value)
            link = f'<a href="{_href(cell_page_path(c))}">{verdict}</a>' if c.cell_id in linkable else verdict
            row.append(f'<td class="cell {_VERDICT_CLASS[c.verdict]}" title="{_e(cell_text(c))}">{link}'
                       f'<span class="reason">{_e(c.reason)}</span></td>')
        body.append("<tr>" + "".join(row) + "</tr>")
    body.append("</tbody></table></div>")
    if not run.cells:
        body.append("<p>(no cells)</p>")

    profiles = profiles_used(run)
    if profiles:
        body.append("<h2>Profiles (real numbers)</h2><ul>")
        body += [f"<li>{_e(p)}</li>" for p in profiles]
        body.append("</ul>")
    body.append("<h2>Legend</h2>")
    body += _legend()
    mitigations = mitigation_lines(run)
    if mitigations:
        body.append("<h2>Mitigations</h2><ul>")
        body += [f"<li>{_e(m)}</li>" for m in mitigations]
        body.append("</ul>")
    body.append("<h2>Files</h2><ul>")
    for name, what in (("results.json", "every cell's verdict and evidence facts"),
                       ("report.md", "the same as Markdown, every round"),
                       ("junit.xml", "one test case per cell, for CI")):
        body.append(f'<li><a href="{_href(name)}">{_e(name)}</a>: {_e(what)}</li>')
    body.append("</ul>")
    return _page(f"watchdrop run {run.run_id}", body)


# --- a cell's page --------------------------------------------------------------------------------


def _port(endpoint: str) -> str:
    return ":" + endpoint.rpartition(":")[2]



def _b(text: str, cls: str) -> str:
    return f'<span class="{cls}">{_e(text)}</span>'


def story(cell: CellResult, ev: Evidence) -> list[str]:
    """What happened, as HTML sentences read from the evidence: the wire, then the LB, then each
    round, then the watcher, i.e. from cause to effect.

    Each sentence names its source (the capture, the LB's log, the harness, the watcher), so a
    reader can check it against the timeline and the files below.
    """
    o = cell.started
    p = cell.profile
    timeout = p.idle_timeout if p is not None and p.acts else None
    out: list[str] = []
    conns = list(ev.pcap.connections) if ev.pcap is not None else []
    last_ts = ev.pcap.last_ts if ev.pcap is not None else None
    last_deadline = max((r.deadline for r in cell.rounds), default=None)

    # 1. The wire: did a connection sit idle for as long as the LB forgets flows after?
    if ev.pcap is None:
        out.append(f"The pod's capture could not be read ({_e(ev.pcap_problem or 'missing')}).")
    elif not conns:
        out.append("The pod's capture holds no connection to the API server.")
    for c in conns:
        name = f"{_e(_port(c.client))} → {_e(c.server)}"
        if timeout is not None:
            gaps = c.idle_gaps(timeout, until=last_ts)
            for a, b in gaps:
                quiet = _b(f"carried no packet either way for {fmt_secs(b - a)}", "bad")
                out.append(
                    f"Capture: the pod's connection {name} {quiet}"
                    f" from {rel_time(a, o)} to {rel_time(b, o)},"
                    f" at least the LB's idle timeout of {fmt_secs(timeout)}.")
            if not gaps:
                silence = _longest_silence(c, last_ts)
                longest = f" (longest silence {fmt_secs(silence)})" if silence is not None else ""
                out.append(f"Capture: the pod's connection {name} {_b('never sat idle', 'ok')} for the LB's "
                           f"{fmt_secs(timeout)}{_e(longest)}.")
        kinds = []
        if c.keepalive_client or c.keepalive_server:
            kinds.append(f"{len(c.keepalive_client)} TCP keepalive probes from the pod, "
                         f"{len(c.keepalive_server)} from the server")
        if c.rsts:
            # The capture sees one leg: an RST "from the server" may be the LB speaking for it.
            senders = [f"{'the pod' if who == 'client' else 'the server side'} at {rel_time(t, o)}"
                       for t, who in c.rsts]
            kinds.append("RST from " + ", ".join(senders))
        if c.close_kind and not c.rsts:
            late = c.closed_at is not None and last_deadline is not None and c.closed_at > last_deadline
            kinds.append(f"closed by {c.close_kind} at {rel_time(c.closed_at, o)}"
                         + (" (after the last round's deadline)" if late else ""))
        if kinds:
            out.append(f"Capture: on {name}: {_e('; '.join(kinds))}.")

    # 2. The LB: did it forget the flow, and did it tell either end?
    if p is None:
        out.append(f"The LB is the provider's ({_e(cell.cluster)}), not emulated: no LB event log.")
    elif not p.acts:
        out.append(f"No LB acts on idle flows in profile {_e(p.name)} (the control).")
    elif not ev.lb_flows:
        out.append("The LB's event log records no flow of this pod.")
    for f in ev.lb_flows:
        out.append(_lb_sentence(f, o, last_deadline))

    # 3. The rounds: the harness's update, and whether the watcher saw it in time.
    for r in cell.rounds:
        arrived = _server_packets(conns, r.update_at, r.deadline)
        if cell.scenario == "watch":
            did = (f"Harness: round {r.index} set the trigger to <code>{_e(r.expected)}</code>"
                   f" at {rel_time(r.update_at, o)}")
        else:
            did = f"Watcher: round {r.index} sent its request after the idle period at {rel_time(r.update_at, o)}"
        if r.ok and r.seen_at is not None:
            res = _b(f"seen after {r.seen_at - r.update_at:.2f} s", "ok")
        else:
            what = "no matching event-seen" if cell.scenario == "watch" else "no answer"
            res = _b(f"{what} by the deadline {rel_time(r.deadline, o)}", "bad")
        wire = ""
        if ev.pcap is not None:
            wire = (f"; {plural(arrived, 'data packet')} from the server reached the pod in that window"
                    if arrived else "; " + _b("not one data packet from the server reached the pod", "bad")
                    + " in that window")
        out.append(f"{did}: {res}{wire}.")

    # 4. The watcher: did the library say anything?
    lines = ev.watcher
    if not lines:
        out.append("Watcher: no JSON line at all.")
    else:
        errors = [ln for ln in lines if ln.get("event") == "error"]
        reconnects = [ln for ln in lines if ln.get("event") == "reconnect"]
        last = lines[-1]
        if errors or reconnects:
            first = errors[0].get("message") if errors else None
            msg = f" (first: {_e(first)})" if isinstance(first, str) else ""
            out.append(f"Watcher: {plural(len(errors), 'error')} and {plural(len(reconnects), 'reconnect')}{msg}.")
        else:
            passed = cell.verdict in (Verdict.PASS, Verdict.RECOVERED)
            out.append("Watcher: " + _b("no error and no reconnect", "ok" if passed else "bad")
                       + f"; its last line was <code>{_e(last.get('event'))}</code>"
                       f" at {rel_time(float(last['ts']), o)}.")
    for e in cell.errors:
        out.append(f"Harness problem: {_e(e)}")
    return out


def _lb_sentence(f: LbFlow, o: float | None, last_deadline: float | None) -> str:
    name = _e(_port(f.client))
    if f.expired_at is None:
        end = f" and saw it closed at {rel_time(f.closed_at, o)}" if f.closed_at is not None else ""
        return f"LB: tracked flow {name} from {rel_time(f.opened_at, o)}{end}; it {_b('never expired it', 'ok')}."
    idle = f" after {fmt_secs(f.expired_at - f.last_activity)} idle" if f.last_activity is not None else ""
    text = f"LB: {_b(f'expired flow {name}{idle} at {rel_time(f.expired_at, o)} and forgot it', 'bad')}"
    sent = sorted({"the pod" if to == "client" else "the server" for _, to in f.rst_sent})
    text += f"; it sent an RST to {' and '.join(sent)}" if sent else "; it sent no RST to either end"
    dropped = [(t, s) for t, s, a in f.after_expiry if a != "reset"]
    resets = [(t, s) for t, s, a in f.after_expiry if a == "reset"]
    # Split at the last deadline: what the rounds were exposed to, and what teardown caused after.
    during = [(t, s) for t, s in dropped if last_deadline is None or t <= last_deadline]
    later = len(dropped) - len(during)
    if during:
        by = Counter("the server" if s == "server" else "the pod" for _, s in during)
        parts = ", ".join(f"{n} from {who}" for who, n in sorted(by.items()))
        count = plural(len(during), "packet")
        text += f"; afterwards it {_b(f'dropped {count}', 'bad')} ({parts})"
    if later:
        text += f"; {plural(later, 'more packet')} dropped after the last round's deadline"
    for t, s in resets:
        text += f"; a late packet from {'the pod' if s == 'client' else 'the server'} at {rel_time(t, o)} drew an RST"
    return text + "."


def _longest_silence(c: ConnFacts, until: float | None) -> float | None:
    gaps = c.idle_gaps(0.0, until=until)
    return max((b - a for a, b in gaps), default=None)


def _server_packets(conns: Iterable[ConnFacts], start: float, end: float) -> int:
    return sum(1 for c in conns for t in c.data_server if start <= t <= end)


def _rounds_table(cell: CellResult) -> list[str]:
    if not cell.rounds:
        return ["<p>No round ran.</p>"]
    o = cell.started
    watch = cell.scenario == "watch"
    out = ["<table>", "<thead><tr><th>round</th><th>" + ("update written" if watch else "request sent")
           + "</th><th>expected</th><th>observed</th><th>deadline</th><th>idle before</th><th>note</th></tr></thead>",
           "<tbody>"]
    for r in cell.rounds:
        if r.ok and r.seen_at is not None:
            after = f"(+{r.seen_at - r.update_at:.2f} s)"
            seen = ("event-seen " if watch else "answer ") + f"at {rel_time(r.seen_at, o)} {after}"
            observed = f'<span class="seen">{_e(seen)}</span>'
        else:
            observed = '<span class="missed">nothing in time</span>'
        expected = f"value <code>{_e(r.expected)}</code>" if watch else f"<code>{_e(r.expected)}</code>"
        out.append(
            f'<tr class="{"" if r.ok else "v-fail-silent"}"><td class="num">{r.index}</td>'
            f"<td>{_e(rel_time(r.update_at, o))}</td><td>{expected}</td><td>{observed}</td>"
            f"<td>{_e(rel_time(r.deadline, o))}</td>"
            f"<td>{_e('—' if r.idle_before is None else fmt_secs(r.idle_before))}</td><td>{_e(r.note)}</td></tr>")
    return [*out, "</tbody></table>"]


def _conn_table(cell: CellResult, ev: Evidence) -> list[str]:
    o = cell.started
    if ev.pcap is None:
        return [f"<p>No packet facts: {_e(ev.pcap_problem or 'no capture')}.</p>"]
    out = [f"<p>Keepalive observed: {_e(ev.pcap.keepalive_summary())}. "
           f"{_e(plural(ev.pcap.packets, 'packet'))} in the capture.</p>"]
    if not ev.pcap.connections:
        return out
    heads = ["connection (pod → server)", "opened", "first FIN/RST", "data pod / server", "small records pod / server",
             "keepalive probes pod / server", "RSTs", "retransmissions pod / server", "longest silence"]
    out += ["<table>", "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in heads) + "</tr></thead>", "<tbody>"]
    for c in ev.pcap.connections:
        silence = _longest_silence(c, ev.pcap.last_ts)
        closed = f"{rel_time(c.closed_at, o)} {c.close_kind}" if c.close_kind else "—"
        rsts = ", ".join(f"{who} {rel_time(t, o)}" for t, who in c.rsts) or "—"
        cells = [
            f"{c.client} → {c.server}", rel_time(c.opened_at, o), closed,
            f"{len(c.data_client)} / {len(c.data_server)}",
            f"{len(c.small_records_client)} / {len(c.small_records_server)}",
            f"{len(c.keepalive_client)} / {len(c.keepalive_server)}", rsts,
            f"{c.retransmissions_client} / {c.retransmissions_server}",
            "—" if silence is None else fmt_secs(silence),
        ]
        out.append("<tr>" + "".join(f"<td>{_e(x)}</td>" for x in cells) + "</tr>")
    return [*out, "</tbody></table>"]


def _lb_table(cell: CellResult, events: Sequence[dict[str, object]]) -> list[str]:
    if not events:
        return ["<p>No LB event for this pod.</p>"]
    o = cell.started
    out = ["<table>", "<thead><tr><th>time</th><th>event</th><th>flow</th><th>details</th></tr></thead>", "<tbody>"]
    for ev in events:
        ts = ev.get("ts")
        rest = {k: v for k, v in ev.items() if k not in ("ts", "event", "flow")}
        details = ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(rest.items()))
        flow = ev.get("flow")
        bad = ev.get("event") in ("expired", "rst-sent", "after-expiry")
        when = rel_time(ts if isinstance(ts, float | int) else None, o)
        out.append(
            f'<tr class="{"v-fail-silent" if bad else ""}"><td>{_e(when)}</td>'
            f"<td>{_e(ev.get('event'))}</td><td>{_e(flow if isinstance(flow, str) else '')}</td>"
            f"<td>{_e(details)}</td></tr>")
    return [*out, "</tbody></table>"]


def _tail(path: Path, n: int) -> tuple[list[str], int]:
    """The last `n` lines of a text file and how many lines it has."""
    if not path.is_file():
        return [], 0
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return lines[-n:], len(lines)


def _log_block(title: str, path: Path, n: int, origin: float | None, timed: str) -> list[str]:
    """A log's tail in <pre>, each line prefixed with its time from the cell's start when it has one."""
    lines, total = _tail(path, n)
    head = f"<h3>{_e(title)}</h3>"
    if not total:
        return [head, f"<p class=\"muted\">{_e(path.name)}: empty or missing.</p>"]
    shown = f"last {len(lines)} of {total} lines" if total > len(lines) else plural(total, "line")
    out = []
    for ln in lines:
        ts: float | None = None
        if timed == "json":
            try:
                obj = json.loads(ln)
                ts = float(obj["ts"]) if isinstance(obj, dict) and isinstance(obj.get("ts"), int | float) else None
            except ValueError:
                ts = None
        elif timed == "prefix":
            try:
                ts = float(ln.partition(" ")[0])
            except ValueError:
                ts = None
        prefix = f"{rel_time(ts, origin):>10}  " if ts is not None else ""
        out.append(_e(prefix + ln))
    return [head, f'<p class="muted">{_e(path.name)}, {_e(shown)}:</p>', "<pre>" + "\n".join(out) + "</pre>"]


def _evidence_links(run_dir: Path, page_dir: Path, cell: CellResult) -> list[str]:
    items: list[tuple[str, str]] = []
    for kind, rel in sorted(cell.evidence.items()):
        items.append((kind, rel))
    lb_dir = run_dir / "lbs" / cell.cluster
    if lb_dir.is_dir():
        # The LB's own captures of both legs: shared by every cell behind this LB.
        for pcap in sorted(lb_dir.glob("*.pcap")):
            items.append((f"LB {pcap.stem} (all pods behind {cell.cluster})", f"lbs/{cell.cluster}/{pcap.name}"))
    if not items:
        return ["<p>No evidence files.</p>"]
    out = ["<ul>"]
    for kind, rel in items:
        target = os.path.relpath(run_dir / rel, page_dir)
        out.append(f'<li><a href="{_href(target.replace(os.sep, "/"))}">{_e(rel)}</a> <span class="muted">'
                   f"({_e(kind)})</span></li>")
    return [*out, "</ul>"]


def _setup_facts(cell: CellResult) -> list[str]:
    t = cell.timings
    timings = [f"interval {fmt_secs(t.interval)}"] if t.interval is not None else []
    timings += [f"idle {fmt_secs(t.idle)}"] if t.idle is not None else []
    timings += [f"detection timeout {fmt_secs(t.detection_timeout)}", plural(t.rounds, "round")]
    facts = [
        ("library", f"{cell.library} {cell.library_version} ({cell.api_style})"),
        ("profile", cell.profile.describe() if cell.profile else f"the provider LB of {cell.cluster} (not emulated)"),
        ("timings", ", ".join(timings)),
        ("keepalive observed", cell.keepalive or "—"),
        ("started", utc_time(cell.started)),
        ("finished", utc_time(cell.finished)),
    ]
    if cell.variant_env:
        facts.append(("environment", ", ".join(f"{k}={v}" for k, v in sorted(cell.variant_env.items()))))
    if cell.build_env:
        facts.append(("build", ", ".join(f"{k}={v}" for k, v in sorted(cell.build_env.items()))))
    if cell.watcher is not None:
        w = cell.watcher
        facts.append(("watcher", f"{w.errors} error, {w.reconnects} reconnect, {w.watch_opened} watch-opened of "
                                 f"{plural(w.lines, 'line')}; {plural(w.stderr_errors, 'error line')} on stderr; "
                                 f"exit code {w.exit_code if w.exit_code is not None else '—'}"))
    if cell.lb is not None:
        lb = cell.lb
        facts.append(("LB summary", f"{lb.expired} expired, RST to client {lb.rst_to_client}, RST to server "
                                    f"{lb.rst_to_server}, {lb.dropped_after_expiry} dropped after expiry"))
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    return [f"<table>{rows}</table>"]


def render_cell_page(run: RunResult, run_dir: Path, cell: CellResult, ev: Evidence, timeline: str | None) -> str:
    """One cell's page; `timeline` is the SVG's file name next to the page, or a reason it is missing."""
    page_dir = run_dir / Path(cell_page_path(cell)).parent
    cell_dir = page_dir
    up = os.path.relpath(run_dir / "index.html", page_dir).replace(os.sep, "/")
    v = cell.verdict
    body = [
        f'<nav><a href="{_href(up)}">← the matrix of run {_e(run.run_id)}</a></nav>',
        f"<h1>{_e(cell.client)} · {_e(cell.cluster)} · {_e(cell.scenario)}</h1>",
        f'<div class="banner {_VERDICT_CLASS[v]}"><b>{_e(v.value)}</b>{_e(cell.reason)}'
        f'<br><span class="muted">{_e(v.value)}: {_e(v.legend)}</span></div>',
        "<h2>What happened</h2>",
        '<ol class="story">', *(f"<li>{s}</li>" for s in story(cell, ev)), "</ol>",
        "<h2>Timeline</h2>",
    ]
    if timeline is not None and (page_dir / timeline).is_file():
        alt = f"Timeline of {cell.cell_id}: TCP connections, LB flow state, harness updates, watcher events, rounds"
        body.append(f'<figure><img src="{_href(timeline)}" alt="{_e(alt)}" width="1200">'
                    f'<figcaption class="muted">Seconds from the cell\'s start ({_e(utc_time(cell.started))}). '
                    "Shaded: a connection idle at least as long as the LB's timeout.</figcaption></figure>")
    else:
        body.append(f"<p class=\"muted\">No timeline: {_e(timeline or 'no evidence recorded for this cell')}.</p>")
    body += ["<h2>Expected vs observed, per round</h2>", *_rounds_table(cell)]
    body += ["<h2>Reproduce this cell only</h2>", f"<pre><code>{_e(reproduce_command(run, cell))}</code></pre>"]
    body += ["<h2>Setup</h2>", *_setup_facts(cell)]
    body += ["<h2>Facts read from the packets</h2>", *_conn_table(cell, ev)]
    body += ["<h2>LB events</h2>", *_lb_table(cell, read_jsonl(cell_dir / "lb-events.jsonl"))]
    body += ["<h2>Logs</h2>"]
    body += _log_block("Watcher (stdout, JSON lines)", cell_dir / "watcher.jsonl", WATCHER_TAIL, cell.started, "json")
    body += _log_block("Watcher (stderr)", cell_dir / "watcher.stderr", STDERR_TAIL, cell.started, "none")
    body += _log_block("Harness", cell_dir / "harness.log", WATCHER_TAIL, cell.started, "prefix")
    if cell.errors:
        body += ["<h3>Harness errors</h3>", "<ul>", *(f"<li>{_e(e)}</li>" for e in cell.errors), "</ul>"]
    body += ["<h2>Evidence files</h2>", *_evidence_links(run_dir, page_dir, cell)]
    return _page(f"{cell.cell_id}: {v.value}", body)


# --- files ----------------------------------------------------------------------------------------


def _has_evidence(ev: Evidence) -> bool:
    return ev.pcap is not None or bool(ev.watcher or ev.lb_flows or ev.harness)


def write_html(run: RunResult, run_dir: Path) -> Path:
    """Write run_dir/index.html and each cell's page and timeline; returns index.html's path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    linkable: set[str] = set()
    for cell in run.cells:
        cell_dir = _safe_cell_dir(run_dir, cell)
        if cell_dir is None:
            continue
        ev = read_evidence(cell_dir)
        timeline: str | None
        if _has_evidence(ev):
            try:
                draw_timeline(ev, cell, cell_dir / TIMELINE_FILE)
                timeline = TIMELINE_FILE
            except (OSError, ValueError) as exc:
                # One cell's broken evidence must not cost the run its report: the page says why.
                timeline = f"drawing it failed: {exc}"
        else:
            timeline = None
        _write(cell_dir / "index.html", render_cell_page(run, run_dir, cell, ev, timeline))
        linkable.add(cell.cell_id)
    index = run_dir / "index.html"
    _write(index, render_index(run, linkable))
    return index


def write_extras(run: RunResult, run_dir: Path) -> None:
    """Everything beyond results.json and report.md: the HTML pages with timelines, and junit.xml."""
    write_html(run, run_dir)
    write_junit(run, run_dir)


__all__ = ["cell_page_path", "render_cell_page", "render_index", "reproduce_command", "story",
           "write_extras", "write_html"]
