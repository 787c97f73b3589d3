"""What happened in a cell, as short sentences read from its evidence: the text of a cell page's story.

A sentence is a list of `Span`s, plain data the page template turns into markup
(runner/report/templates/story.html.j2): our own words, values read from the run or its evidence,
and the few words coloured as good or bad news. Nothing here is HTML; the template escapes every span.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from runner.contract import WATCH
from runner.evidence.pcap import ConnFacts
from runner.model import CellResult, Verdict, fmt_secs
from runner.report.render import rel_time
from runner.report.timeline import Evidence, LbFlow
from runner.text import plural

#: "words": this module's wording, numbers and times; "value": text read from the run or its
#: evidence (names, messages, problems); "code": a value shown monospace; "ok"/"bad": good or bad news.
SpanKind = Literal["words", "value", "code", "ok", "bad"]


@dataclass(frozen=True)
class Span:
    text: str
    kind: SpanKind = "words"


Sentence = list[Span]


def _w(text: str) -> Span:
    return Span(text, "words")


def _v(text: object) -> Span:
    return Span(str(text), "value")


def _ok(text: str) -> Span:
    return Span(text, "ok")


def _bad(text: str) -> Span:
    return Span(text, "bad")


def _code(text: object) -> Span:
    return Span(str(text), "code")


def port(endpoint: str) -> str:
    return ":" + endpoint.rpartition(":")[2]


def longest_silence(c: ConnFacts, until: float | None) -> float | None:
    gaps = c.idle_gaps(0.0, until=until)
    return max((b - a for a, b in gaps), default=None)


def _server_packets(conns: Iterable[ConnFacts], start: float, end: float) -> int:
    return sum(1 for c in conns for t in c.data_server if start <= t <= end)


def story(cell: CellResult, ev: Evidence) -> list[Sentence]:
    """What happened, as sentences read from the evidence: the wire, then the LB, then each round,
    then the watcher, i.e. from cause to effect.

    Each sentence names its source (the capture, the LB's log, the harness, the watcher), so a
    reader can check it against the timeline and the files below.
    """
    last_deadline = max((r.deadline for r in cell.rounds), default=None)
    return [
        *_wire(cell, ev, last_deadline),
        *_lb(cell, ev, last_deadline),
        *_rounds(cell, ev),
        *_watcher(cell, ev),
        *([_w("Harness problem: "), _v(e)] for e in cell.errors),
    ]


def _wire(cell: CellResult, ev: Evidence, last_deadline: float | None) -> list[Sentence]:
    """Did a connection sit idle for as long as the LB forgets flows after?"""
    o = cell.started
    p = cell.profile
    timeout = p.idle_timeout if p is not None and p.acts else None
    out: list[Sentence] = []
    conns = list(ev.pcap.connections) if ev.pcap is not None else []
    last_ts = ev.pcap.last_ts if ev.pcap is not None else None
    if ev.pcap is None:
        out.append([_w("The pod's capture could not be read ("), _v(ev.pcap_problem or "missing"), _w(").")])
    elif not conns:
        out.append([_w("The pod's capture holds no connection to the API server.")])
    for c in conns:
        name = _v(f"{port(c.client)} → {c.server}")
        if timeout is not None:
            gaps = c.idle_gaps(timeout, until=last_ts)
            for a, b in gaps:
                out.append([
                    _w("Capture: the pod's connection "), name, _w(" "),
                    _bad(f"carried no packet either way for {fmt_secs(b - a)}"),
                    _w(f" from {rel_time(a, o)} to {rel_time(b, o)},"
                       f" at least the LB's idle timeout of {fmt_secs(timeout)}."),
                ])
            if not gaps:
                silence = longest_silence(c, last_ts)
                longest = f" (longest silence {fmt_secs(silence)})" if silence is not None else ""
                out.append([_w("Capture: the pod's connection "), name, _w(" "), _ok("never sat idle"),
                            _w(f" for the LB's {fmt_secs(timeout)}"), _v(longest), _w(".")])
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
            out.append([_w("Capture: on "), name, _w(": "), _v("; ".join(kinds)), _w(".")])
    return out


def _lb(cell: CellResult, ev: Evidence, last_deadline: float | None) -> list[Sentence]:
    """Did the LB forget the flow, and did it tell either end?"""
    p = cell.profile
    out: list[Sentence] = []
    if p is None:
        out.append([_w("The LB is the provider's ("), _v(cell.cluster), _w("), not emulated: no LB event log.")])
    elif not p.acts:
        out.append([_w("No LB acts on idle flows in profile "), _v(p.name), _w(" (the control).")])
    elif not ev.lb_flows:
        out.append([_w("The LB's event log records no flow of this pod.")])
    out += [_lb_sentence(f, cell.started, last_deadline) for f in ev.lb_flows]
    return out


def _lb_sentence(f: LbFlow, o: float | None, last_deadline: float | None) -> Sentence:
    name = port(f.client)
    if f.expired_at is None:
        end = f" and saw it closed at {rel_time(f.closed_at, o)}" if f.closed_at is not None else ""
        return [_w("LB: tracked flow "), _v(name), _w(f" from {rel_time(f.opened_at, o)}{end}; it "),
                _ok("never expired it"), _w(".")]
    idle = f" after {fmt_secs(f.expired_at - f.last_activity)} idle" if f.last_activity is not None else ""
    out = [_w("LB: "), _bad(f"expired flow {name}{idle} at {rel_time(f.expired_at, o)} and forgot it")]
    sent = sorted({"the pod" if to == "client" else "the server" for _, to in f.rst_sent})
    out.append(_w(f"; it sent an RST to {' and '.join(sent)}" if sent else "; it sent no RST to either end"))
    dropped = [(t, s) for t, s, a in f.after_expiry if a != "reset"]
    resets = [(t, s) for t, s, a in f.after_expiry if a == "reset"]
    # Split at the last deadline: what the rounds were exposed to, and what teardown caused after.
    during = [(t, s) for t, s in dropped if last_deadline is None or t <= last_deadline]
    later = len(dropped) - len(during)
    if during:
        by = Counter("the server" if s == "server" else "the pod" for _, s in during)
        parts = ", ".join(f"{n} from {who}" for who, n in sorted(by.items()))
        out += [_w("; afterwards it "), _bad(f"dropped {plural(len(during), 'packet')}"), _w(f" ({parts})")]
    if later:
        out.append(_w(f"; {plural(later, 'more packet')} dropped after the last round's deadline"))
    for t, s in resets:
        who = "the pod" if s == "client" else "the server"
        out.append(_w(f"; a late packet from {who} at {rel_time(t, o)} drew an RST"))
    return [*out, _w(".")]


def _rounds(cell: CellResult, ev: Evidence) -> list[Sentence]:
    """The harness's update, and whether the watcher saw it in time."""
    o = cell.started
    conns = list(ev.pcap.connections) if ev.pcap is not None else []
    out: list[Sentence] = []
    for r in cell.rounds:
        if cell.scenario == WATCH:
            did = [_w(f"Harness: round {r.index} set the trigger to "), _code(r.expected),
                   _w(f" at {rel_time(r.update_at, o)}")]
        else:
            did = [_w(f"Watcher: round {r.index} sent its request after the idle period at {rel_time(r.update_at, o)}")]
        if r.ok and r.seen_at is not None:
            res = _ok(f"seen after {r.seen_at - r.update_at:.2f} s")
        else:
            what = "no matching event-seen" if cell.scenario == WATCH else "no answer"
            res = _bad(f"{what} by the deadline {rel_time(r.deadline, o)}")
        wire: Sentence = []
        if ev.pcap is not None:
            arrived = _server_packets(conns, r.update_at, r.deadline)
            if arrived:
                wire = [_w(f"; {plural(arrived, 'data packet')} from the server reached the pod in that window")]
            else:
                wire = [_w("; "), _bad("not one data packet from the server reached the pod"), _w(" in that window")]
        out.append([*did, _w(": "), res, *wire, _w(".")])
    return out


def _watcher(cell: CellResult, ev: Evidence) -> list[Sentence]:
    """Did the library say anything?"""
    lines = ev.watcher
    if not lines:
        return [[_w("Watcher: no JSON line at all.")]]
    errors = [ln for ln in lines if ln.get("event") == "error"]
    reconnects = [ln for ln in lines if ln.get("event") == "reconnect"]
    if errors or reconnects:
        counts = _w(f"Watcher: {plural(len(errors), 'error')} and {plural(len(reconnects), 'reconnect')}")
        first = errors[0].get("message") if errors else None
        if isinstance(first, str):
            return [[counts, _w(" (first: "), _v(first), _w(").")]]
        return [[counts, _w(".")]]
    last = lines[-1]
    passed = cell.verdict in (Verdict.PASS, Verdict.RECOVERED, Verdict.APP_RECOVERED)
    return [[_w("Watcher: "), Span("no error and no reconnect", "ok" if passed else "bad"),
             _w("; its last line was "), _code(last.get("event")),
             _w(f" at {rel_time(float(last['ts']), cell.started)}.")]]


__all__ = ["Sentence", "Span", "longest_silence", "port", "story"]
