"""Verdicts from evidence: pure functions from what was recorded to PASS / RECOVERED / APP-RECOVERED /
FAIL / ERROR.

Inputs are only evidence: the harness's own update times, the watcher's JSON lines, its exit code and
stderr, the facts read from the pod's capture, and the LB emulator's event log. Nothing here looks at
a clock or a file, so every rule is unit-tested as a table of cases.

Every RST the pod received up to the last deadline is attributed first (_packets): to the LB when
its own record says it sent it or caused it on that flow (the flow expired there before); to an
endpoint's orderly close when its sender had already sent a FIN, or either side sent one at most
ENDPOINT_CLOSE_WINDOW before it (kube-apiserver's 90 s idle close: both ends send close_notify and
FIN within a millisecond, and one answers the other with an RST), or a TLS close_notify came just
before it (a socket closed with the peer's close_notify unread sends an RST, not a FIN); to an
unknown origin where no LB keeps a record (a provider's LB); and otherwise to nobody: the LB's
record says it did not act.

The rules, in order (the first that applies wins):

1. a harness problem or missing evidence (no watcher log, no `started` line, a crash, no capture
   facts, a capture that stopped early, was cut at its size limit or dropped packets, a watcher
   stdout cut at its limits, no LB log where an emulated LB acts, the LB helper or kube-apiserver
   died), an idle-request round whose request before the idle period already failed, evidence
   that contradicts the scenario (an idle-request round that did not idle WATCHDROP_IDLE by the
   watcher's stamps, or sent a request meanwhile by the capture), credentials refused (401/403),
   or the LB's own record disagreeing with the capture (lb_disagreements)                 -> ERROR;
2. the cell could not run here                                                          -> SKIPPED;
3. every round seen in time, and an RST reached the pod that neither the LB's record nor an
   endpoint's close explains while the LB's record says it did not act                  -> ERROR;
4. every round seen in time, and an `error` line came before a re-watch (a `reconnect`, or a
   `watch-opened` after the first): the library handed the application an error, and the
   watch went on only because the application's code handled it                         -> APP-RECOVERED;
5. every round seen in time, an error no re-watch followed                              -> ERROR;
6. every round seen in time after a cut: an RST from the LB (its record), an RST of unknown
   origin where no LB keeps a record, or a silent re-watch after an idle-out at the LB;
   no error reached the application                                                      -> RECOVERED;
7. every round seen in time, no RST but an endpoint's close, no idle gap reaching the LB's
   timeout (or only on a connection the LB says it forgot and no round needed), no error  -> PASS;
8. a round missed and the watcher printed `error` (or the library logged errors)        -> FAIL-LOUD;
9. a round missed and nothing said so                                                   -> FAIL-SILENT.

Every grade's legend (runner.model._LEGEND) holds for every cell the rules give it;
tests/test_verdicts.py checks that over its whole table.

Unknown outranks a pass (Jepsen): every round seen while the evidence disagrees with itself (the
flow idled past the LB's timeout yet nothing was reset, the LB log says it expired or reset a flow
the capture never shows, an RST nobody owns, the library reported errors nothing explains) is ERROR,
never PASS; an RST of unknown origin is judged a cut (RECOVERED at best), never passed over.

Pod-side naming: in the pod's capture the watcher is the `client` and whatever answers on the API
server address (kube-apiserver, the front, or the LB speaking for them) is the `server`. An RST
"from server" is therefore one the pod *received*.

Why one long module: the rules are one ladder, read top to bottom in one place and tested as one
table (tests/test_verdicts.py); what reads the evidence they need lives in runner/evidence/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from runner.contract import IDLE_REQUEST, SCENARIOS, TRIGGER, WATCH
from runner.evidence.lb_events import LbFlow
from runner.evidence.watcher_log import summarize_watcher
from runner.model import (
    CaptureFacts,
    Cut,
    LbSummary,
    ProfileFacts,
    RoundFailure,
    RoundResult,
    Verdict,
    WatcherFacts,
    fmt_secs,
)
from runner.text import plural

#: Watch events are accepted this many seconds *before* the recorded update time. The trigger's
#: value is unique to its round, so an event carrying it can only come from this round's write;
#: the slack only absorbs the harness taking its timestamp a little after the request left.
EARLY_SLACK = 1.0

#: The note of an idle-request round the watcher never started (update_at and deadline are 0 then).
NEVER_SENT = "the watcher never sent this round"

#: Starts the note of an idle-request round whose request *before* the idle period failed or got no
#: answer. That request runs on a fresh connection that no LB has forgotten, so its failure says
#: nothing about idle flows (a cold JVM on a loaded machine missing its 10 s connect timeout was
#: seen): the cell is ERROR, never FAIL.
BEFORE_IDLE = "the request before the idle period"

#: Seconds of clock slack when the LB's event log and the pod's capture are held together: both
#: use the host's clock, but a packet is logged by the LB and by tcpdump at slightly different times.
LB_SLACK = 1.0

#: An RST that follows a FIN (from either side) on its connection within this many seconds is
#: part of that endpoint close, not a reset. kube-apiserver's idle close of an HTTP/1.1 connection at
#: 90 s and client-go's own 90 s idle timer fire together: both ends send close_notify and FIN within
#: a millisecond, and the late close_notify reaching a closed socket draws an RST from it. A second
#: is generous for that and far too short for an LB, whose idle timer cannot fire within a second
#: of a packet that refreshed the flow.
ENDPOINT_CLOSE_WINDOW = 1.0
#: The TCP payload of one TLS 1.3 alert record (close_notify): 5 bytes of header, 2 of alert, 1 of
#: inner content type, 16 of AEAD tag. No HTTP/2 frame fits in it (a frame header alone is 9 bytes).
TLS13_ALERT_RECORD = 24

#: An idle-request round may idle this much less than WATCHDROP_IDLE (timer granularity, the
#: watcher taking its timestamp after the response); any shorter is a watcher that did not idle.
IDLE_SLACK = 1.0

#: An API error that refuses the watcher's credentials: HTTP 401/403 as a status or in a message.
_AUTH_REFUSED = re.compile(r"\b(401|403)\b|unauthori[sz]ed|forbidden", re.IGNORECASE)


class ConnLike(Protocol):
    """The parts of runner.evidence.pcap.ConnFacts the verdict reads (one TCP connection of the pod)."""

    @property
    def client(self) -> str: ...
    @property
    def opened_at(self) -> float | None: ...
    @property
    def closed_at(self) -> float | None: ...
    @property
    def close_kind(self) -> str | None: ...
    @property
    def keepalive_client(self) -> Sequence[float]: ...
    @property
    def keepalive_server(self) -> Sequence[float]: ...
    @property
    def small_records_client(self) -> Sequence[tuple[float, int]]: ...
    @property
    def small_records_server(self) -> Sequence[tuple[float, int]]: ...
    @property
    def rsts(self) -> Sequence[tuple[float, str]]: ...
    @property
    def fins(self) -> Sequence[tuple[float, str]]: ...
    @property
    def data_client(self) -> Sequence[float]: ...
    @property
    def data_server(self) -> Sequence[float]: ...
    def idle_gaps(self, min_gap: float) -> Sequence[tuple[float, float]]: ...


class PcapLike(Protocol):
    """The parts of runner.evidence.pcap.PcapFacts the verdict reads."""

    @property
    def connections(self) -> Sequence[ConnLike]: ...


@dataclass(frozen=True)
class Update:
    """One write of the trigger by the harness (watch scenario)."""

    #: Taken *before* the write request is sent, so a quick event can never precede it.
    at: float
    #: The unique `data.value` written.
    value: str


@dataclass
class CellInputs:
    """Everything recorded for one cell, as the collect step hands it over."""

    scenario: str
    detection_timeout: float
    expected_rounds: int
    #: The cell's LB profile; None on a kubernetes cluster (the provider's LB, not emulated).
    profile: ProfileFacts | None
    #: watch: the harness's writes in order. idle-request: unused (rounds come from the watcher).
    updates: Sequence[Update] = ()
    #: Parsed JSON lines (parse_watcher_log); None when there was no watcher log at all.
    watcher_lines: Sequence[Mapping[str, Any]] | None = None
    watcher_exit: int | None = None
    watcher_stderr: str = ""
    pcap: PcapLike | None = None
    lb: LbSummary | None = None
    lb_helper_died: bool = False
    apiserver_died: bool = False
    #: Harness problems, one line each; any makes the cell ERROR.
    harness_errors: Sequence[str] = ()
    #: Why the cell could not run here (missing tool, unsupported style); None when it ran.
    skipped: str | None = None
    #: The descriptor's pinned library version; a different `started.version` is ERROR.
    expected_version: str | None = None
    #: How the pod's capture ended; None (no record) is missing evidence.
    capture: CaptureFacts | None = None
    #: The LB's record per flow of this pod (lb_flows); () where no LB is emulated.
    lb_flows: Sequence[LbFlow] = ()
    #: idle-request: the WATCHDROP_IDLE the watcher was told to stay idle for.
    idle: float | None = None
    #: What the runner cut from the evidence files (runner.evidence.limits).
    cuts: Sequence[Cut] = ()
    #: On a chain of hops: when its first hop that acts forgets an idle flow (NetPath.first_expiry),
    #: which a nat hop before the last may do sooner than the last hop (the profile); None for one LB.
    path_expiry: float | None = None

    @property
    def idle_timeout(self) -> float | None:
        """The timeout the path forgets idle flows after; None when no emulated LB acts on them (the
        `none` control profile only uses its number to size idle waits)."""
        if self.path_expiry is not None:
            return self.path_expiry
        if self.profile is None or not self.profile.acts:
            return None
        return self.profile.idle_timeout


@dataclass
class Judgement:
    verdict: Verdict
    reason: str
    rounds: list[RoundResult] = field(default_factory=list)
    watcher: WatcherFacts | None = None


# --- watcher log ----------------------------------------------------------------------------------


# --- capture helpers ------------------------------------------------------------------------------


def _activity(conn: ConnLike) -> list[float]:
    """Packet times the capture attributes to the connection: any of them refreshes an LB flow."""
    times = [*conn.data_client, *conn.data_server, *conn.keepalive_client, *conn.keepalive_server]
    times += [t for t, _ in conn.small_records_client]
    times += [t for t, _ in conn.small_records_server]
    times += [t for t, _ in conn.rsts]
    if conn.opened_at is not None:
        times.append(conn.opened_at)
    return times


def _opened(conn: ConnLike) -> float | None:
    """The SYN time, or the first packet seen when the capture began mid-connection."""
    if conn.opened_at is not None:
        return conn.opened_at
    return min(_activity(conn), default=None)


def _open_at(conn: ConnLike, at: float) -> bool:
    opened = _opened(conn)
    return opened is not None and opened <= at and (conn.closed_at is None or conn.closed_at >= at)


def idle_before(connections: Sequence[ConnLike], at: float) -> float | None:
    """Seconds since the last packet, on any connection open at `at`, before `at`.

    The most recently active open connection is the one the watch streams on (or the pool hands
    back), so its silence is what the LB measured. None when no connection was open.
    """
    last: float | None = None
    for conn in connections:
        if not _open_at(conn, at):
            continue
        before = [t for t in _activity(conn) if t <= at]
        if before:
            last = max(before) if last is None else max(last, *before)
    return None if last is None else at - last


# --- rounds ---------------------------------------------------------------------------------------


def _ts(line: Mapping[str, Any]) -> float:
    return float(line["ts"])


def _same_value(seen: Any, expected: str) -> bool:
    if seen is None:
        return False
    return (seen if isinstance(seen, str) else json.dumps(seen)) == expected


def _judge_watch(
    lines: Sequence[Mapping[str, Any]], updates: Sequence[Update], timeout: float, conns: Sequence[ConnLike]
) -> list[RoundResult]:
    events = [ln for ln in lines if ln.get("event") == "event-seen" and ln.get("name") == TRIGGER]
    rounds = []
    for i, up in enumerate(updates, start=1):
        deadline = up.at + timeout
        matching = sorted(_ts(ln) for ln in events if _same_value(ln.get("value"), up.value))
        in_time = [t for t in matching if up.at - EARLY_SLACK <= t <= deadline]
        late = [t for t in matching if t > deadline]
        seen_at = in_time[0] if in_time else None
        if seen_at is not None:
            note = f"seen after {fmt_secs(max(0.0, seen_at - up.at))}"
        elif late:
            note = f"seen {fmt_secs(late[0] - up.at)} after the update, past the {fmt_secs(timeout)} deadline"
        else:
            note = f"no event within {fmt_secs(timeout)}"
        rounds.append(
            RoundResult(
                index=i,
                scenario=WATCH,
                update_at=up.at,
                expected=up.value,
                seen_at=seen_at,
                deadline=deadline,
                ok=seen_at is not None,
                idle_before=idle_before(conns, up.at),
                note=note,
            )
        )
    return rounds


def _round_key(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _idle_request_rounds(lines: Sequence[Mapping[str, Any]]) -> dict[int, list[Mapping[str, Any]]]:
    """The watcher's request-sent and request-done lines by the round number they carry."""
    by_round: dict[int, list[Mapping[str, Any]]] = {}
    for ln in lines:
        if ln.get("event") in ("request-sent", "request-done"):
            key = _round_key(ln.get("round"))
            if key is not None:
                by_round.setdefault(key, []).append(ln)
    return by_round


def _judge_requests(
    sent: Sequence[Mapping[str, Any]], dones: list[Mapping[str, Any]], timeout: float
) -> tuple[list[str], list[str], float | None]:
    """Each request of a round paired with the next done: the problems of the request after the idle
    period (the last), those of the requests before it, and when the last was answered in time."""
    problems: list[str] = []
    control: list[str] = []
    last_done: float | None = None
    for n, s in enumerate(sent, start=1):
        t_sent = _ts(s)
        later = [d for d in dones if _ts(d) >= t_sent]
        if not later:
            (problems if n == len(sent) else control).append(f"request {n}: no response")
            continue
        done = later[0]
        dones.remove(done)
        took = _ts(done) - t_sent
        if done.get("ok") is not True:
            msg = done.get("message", done.get("status", ""))
            (problems if n == len(sent) else control).append(f"request {n} failed after {fmt_secs(took)}: {msg}")
        elif took > timeout and n == len(sent):
            # Only the request after the idle period meets the stale pooled connection; the
            # first one may include the process's own warm-up (a cold JVM), so only its
            # success counts.
            problems.append(f"request {n} took {fmt_secs(took)} > {fmt_secs(timeout)}")
        elif n == len(sent):
            last_done = _ts(done)
    return problems, control, last_done


def _judge_idle_request(
    lines: Sequence[Mapping[str, Any]], expected_rounds: int, timeout: float, conns: Sequence[ConnLike]
) -> list[RoundResult]:
    # A round is "list, stay idle, list again": it may print several request-sent lines with the
    # same `round`. Each sent is paired with the next done of that round; the round is judged on the
    # request after the idle period (its last sent), and every request of it must succeed in time.
    by_round = _idle_request_rounds(lines)
    # The contract does not fix the first round's number; follow what the watcher printed.
    first = min(by_round, default=1)
    first = first if first in (0, 1) else 1
    wanted = list(range(first, first + expected_rounds))
    extra = sorted(k for k in by_round if k not in wanted)
    rounds = []
    for key in [*wanted, *extra]:
        evs = sorted(by_round.get(key, []), key=_ts)
        sent = [e for e in evs if e.get("event") == "request-sent"]
        if not sent:
            rounds.append(
                RoundResult(
                    index=key,
                    scenario=IDLE_REQUEST,
                    update_at=0.0,
                    expected="ok",
                    seen_at=None,
                    deadline=0.0,
                    ok=False,
                    idle_before=None,
                    note=NEVER_SENT,
                ).failed_as(RoundFailure.NEVER_SENT)
            )
            continue
        dones = [e for e in evs if e.get("event") == "request-done"]
        problems, control, last_done = _judge_requests(sent, dones, timeout)
        if control:
            problems.insert(0, f"{BEFORE_IDLE} failed ({'; '.join(control)})")
        update_at = _ts(sent[-1])
        ok = not problems and last_done is not None
        if key in extra:
            problems.append(f"round {key} was not planned ({expected_rounds} rounds planned)")
        note = (
            f"answered after {fmt_secs(last_done - update_at)}"
            if ok and last_done is not None
            else ("; ".join(problems))
        )
        rounds.append(
            RoundResult(
                index=key,
                scenario=IDLE_REQUEST,
                update_at=update_at,
                expected="ok",
                seen_at=last_done if ok else None,
                deadline=update_at + timeout,
                ok=ok,
                idle_before=idle_before(conns, update_at),
                note=note,
            ).failed_as(RoundFailure.BEFORE_IDLE if control else None)
        )
    return rounds


def judge_rounds(
    scenario: str,
    lines: Sequence[Mapping[str, Any]],
    detection_timeout: float,
    *,
    updates: Sequence[Update] = (),
    expected_rounds: int | None = None,
    connections: Sequence[ConnLike] = (),
) -> list[RoundResult]:
    """Which rounds were seen within the detection timeout.

    watch: one round per harness update; ok when an `event-seen` for the trigger carrying the
    round's value arrived between the update and update + detection_timeout (late or other-name
    events do not count). idle-request: one round per expected round number (default: the rounds
    the watcher printed); ok when every request of the round got `request-done` with ok true
    within detection_timeout of its `request-sent`. `connections` (the pod's capture) fills in
    `idle_before`.
    """
    if scenario == WATCH:
        return _judge_watch(lines, updates, detection_timeout, connections)
    if scenario == IDLE_REQUEST:
        if expected_rounds is None:
            printed = {_round_key(ln.get("round")) for ln in lines if ln.get("event") == "request-sent"}
            expected_rounds = len(printed - {None})
        return _judge_idle_request(lines, expected_rounds, detection_timeout, connections)
    raise ValueError(f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")


# --- evidence held against evidence ---------------------------------------------------------------


def lb_disagreements(inp: CellInputs, conns: Sequence[ConnLike]) -> list[str]:
    """Where the LB's own record and the pod's capture tell different stories, one line each with
    both facts. Either the LB emulator or the capture is wrong then, and no verdict can rest on them."""
    out: list[str] = []
    received = [t for c in conns for t, who in c.rsts if who == "server"]
    if not inp.lb_flows and inp.lb is not None and inp.lb.rst_to_client and not received:
        out.append(f"the LB log says it sent {plural(inp.lb.rst_to_client, 'RST')} to the pod, but the pod's "
                   "capture shows no RST arriving")
    for f in inp.lb_flows:
        mine = [c for c in conns if c.client == f.client]
        if not mine:
            out.append(f"the LB log records what it did to flow {f.client}, but the pod's capture shows no such "
                       "connection")
            continue
        if f.rst_to_client and not any(who == "server" for c in mine for _, who in c.rsts):
            out.append(f"the LB log says it sent {plural(f.rst_to_client, 'RST')} to the pod on flow {f.client}, "
                       "but the pod's capture shows no RST arriving on it")
        if f.first_drop_at is not None:
            through = sorted(t for c in mine for t in c.data_server if t > f.first_drop_at + LB_SLACK)
            if through:
                out.append(f"the LB log says it dropped {plural(f.drops, 'packet')} of flow {f.client} after "
                           f"expiry from {f.first_drop_at:.3f} on, but the pod's capture shows the server's data "
                           f"arriving on it at {through[0]:.3f}")
        if f.expired_at is not None and f.last_activity is not None:
            busy = sorted(t for c in mine for t in _activity(c)
                          if f.last_activity + LB_SLACK < t < f.expired_at - LB_SLACK)
            if busy:
                out.append(f"the LB log says flow {f.client} was idle from {f.last_activity:.3f} until it expired "
                           f"at {f.expired_at:.3f}, but the pod's capture shows a packet on it at {busy[0]:.3f}")
            # The grades read "idle X > timeout": the LB must have forgotten the flow after the
            # profile's timeout, not after some other one its agent happened to run with.
            idled = f.expired_at - f.last_activity
            # On a chain the first hop to forget may not be the last one, whose timer the profile holds.
            timer = f.idle if f.hop is not None and f.idle is not None else inp.idle_timeout
            if timer is not None and inp.idle_timeout is not None and abs(idled - timer) > LB_SLACK:
                where = f"hop {f.hop}" if f.hop is not None else "the cell's LB profile"
                out.append(f"the LB log says it forgot flow {f.client} after {fmt_secs(idled)} idle, but "
                           f"{where} forgets flows after {fmt_secs(timer)}")
    return out


def _message(line: Mapping[str, Any]) -> str:
    parts = [line.get("status"), line.get("message")]
    return " ".join(p if isinstance(p, str) else json.dumps(p) for p in parts if p is not None)


def auth_refusal(lines: Sequence[Mapping[str, Any]], until: float) -> str | None:
    """The first refusal of the watcher's credentials (401/403) up to `until`, said as a reason: a
    token that expired or was revoked inside the cell is a fault of the harness, not the LB's."""
    success: float | None = None
    for ln in sorted(lines, key=_ts):
        t, kind = _ts(ln), ln.get("event")
        if t > until:
            break
        if kind == "event-seen" or (kind == "request-done" and ln.get("ok") is True):
            success = t if success is None else success
            continue
        if kind == "error" or (kind == "request-done" and ln.get("ok") is not True):
            text = _message(ln)
            if _AUTH_REFUSED.search(text):
                when = "after its first success" if success is not None else "before any success"
                return (f"the API server refused the watcher's credentials {when} ({_short(text)!r}): the "
                        "credentials, not the LB, ended the cell")
    return None


#: stderr has no timestamps and carries log lines with milliseconds ("01.403"): only the words count there.
_AUTH_REFUSED_STDERR = re.compile(r"\b(unauthori[sz]ed|forbidden)\b", re.IGNORECASE)


def stderr_auth_refusal(stderr: str) -> str | None:
    """A refusal of the watcher's credentials that only its stderr shows (a library that logs the
    401/403 and goes on, no `error` line): ERROR too, since the credentials may have ended the cell."""
    for text in stderr.splitlines():
        if m := _AUTH_REFUSED_STDERR.search(text):
            near = text[max(0, m.start() - 40):]  # the refusal itself, not the log line's prefix
            return (f"the watcher's stderr shows the API server refusing its credentials ({_short(near)!r}): "
                    "the credentials, not the LB, may have ended the cell")
    return None


def idle_problems(lines: Sequence[Mapping[str, Any]], idle: float, conns: Sequence[ConnLike]) -> list[str]:
    """idle-request: every round must idle WATCHDROP_IDLE between its last two requests, by the
    watcher's own timestamps, and the capture must show no request from the pod in that time."""
    out: list[str] = []
    by_round: dict[int, list[Mapping[str, Any]]] = {}
    for ln in lines:
        key = _round_key(ln.get("round"))
        if key is not None and ln.get("event") in ("request-sent", "request-done"):
            by_round.setdefault(key, []).append(ln)
    for key in sorted(by_round):
        evs = sorted(by_round[key], key=_ts)
        sent = [_ts(e) for e in evs if e.get("event") == "request-sent"]
        dones = [e for e in evs if e.get("event") == "request-done"]
        if len(sent) < 2:
            if sent and any(_ts(d) >= sent[0] for d in dones):
                out.append(f"round {key}: the watcher sent one request and no second one after an idle period")
            continue
        before = [d for d in dones if sent[-2] <= _ts(d) <= sent[-1]]
        if not before:
            continue  # the request before the idle never returned: judged as such by the rounds
        quiet_from, quiet_to = _ts(before[0]), sent[-1]
        if quiet_to - quiet_from < idle - IDLE_SLACK:
            out.append(f"round {key}: the watcher idled {fmt_secs(quiet_to - quiet_from)} between its requests, "
                       f"not the {fmt_secs(idle)} WATCHDROP_IDLE asks for")
            continue
        # Requests are large records; keepalives, PINGs and TLS close_notify are small ones.
        busy = sorted(t for c in conns for t in c.data_client
                      if quiet_from + LB_SLACK < t < quiet_to - LB_SLACK
                      and t not in {st for st, _ in c.small_records_client})
        if busy:
            out.append(f"round {key}: the watcher says it idled from {quiet_from:.3f} to {quiet_to:.3f}, but the "
                       f"capture shows it sending data at {busy[0]:.3f}")
    return out


# --- the verdict ----------------------------------------------------------------------------------


def _lost_evidence(inp: CellInputs) -> list[str]:
    """Evidence the capture or the runner's caps lost: said with any ERROR, a harness fault's too."""
    problems = [] if inp.capture is None else inp.capture.problems()
    for cut in inp.cuts:
        if cut.file == "watcher.jsonl" and (cut.long_lines or cut.capped_at is not None):
            problems.append(f"{cut.describe()}: the watcher's lines are incomplete")
    return problems


def _missing_evidence(inp: CellInputs, facts: WatcherFacts | None) -> list[str]:
    problems: list[str] = []
    if inp.scenario not in SCENARIOS:
        problems.append(f"unknown scenario {inp.scenario!r}")
    if inp.apiserver_died:
        problems.append("kube-apiserver died during the cell")
    if inp.lb_helper_died:
        problems.append("the LB helper died during the cell")
    if facts is None:
        problems.append("no watcher log")
    else:
        if not facts.started:
            problems.append("the watcher printed no `started` line")
        if facts.exit_code is None:
            problems.append("no watcher exit code recorded")
        elif facts.exit_code != 0:
            problems.append(f"the watcher crashed (exit code {facts.exit_code}, see stderr)")
        if (
            inp.expected_version is not None
            and facts.reported_version is not None
            and facts.reported_version.lstrip("v") != inp.expected_version.lstrip("v")
        ):
            problems.append(
                f"the watcher loaded version {facts.reported_version}, the descriptor pins {inp.expected_version}"
            )
    if inp.pcap is None:
        problems.append("no capture facts")
    elif not list(inp.pcap.connections):
        # The watcher cannot have talked to the API server without a connection in its capture.
        problems.append("the capture shows no connection from the pod")
    if inp.pcap is not None and inp.capture is None:
        problems.append("no record of how the capture ended")
    problems += _lost_evidence(inp)
    if inp.profile is not None and inp.profile.acts and inp.lb is None:
        problems.append("no LB event log")
    if inp.expected_rounds < 1:
        problems.append("no rounds planned")
    if inp.scenario == WATCH and len(inp.updates) != inp.expected_rounds:
        problems.append(f"the harness recorded {len(inp.updates)} of {inp.expected_rounds} updates")
    return problems


@dataclass
class _Packets:
    """The pod's RSTs up to the last deadline, each attributed to who sent or caused it."""

    #: RSTs the pod received that the LB's record says it sent or caused (its flow expired first).
    rst_lb: int
    #: RSTs the pod received where no LB keeps a record (a provider's LB): origin unknown.
    rst_unknown: int
    #: RSTs the pod received that the LB's record does not explain and no endpoint's close does:
    #: (time, the pod's end) of each. The evidence then contradicts itself.
    rst_unexplained: list[tuple[float, str]]
    #: RSTs (either way) that are part of an endpoint's orderly close (a FIN or close_notify just before).
    rst_endpoint: int
    #: RSTs the pod itself sent on a live connection (e.g. exiting with unread data).
    rst_sent: int
    #: Longest silence between two packets of one connection that ended inside the judged window.
    longest_gap: float
    #: When the first cut (an RST from the LB or of unknown origin) reached the pod; None: no cut.
    first_cut: float | None = None

    @property
    def rst_received(self) -> int:
        """Received RSTs that reset a live connection (whoever sent them)."""
        return self.rst_lb + self.rst_unknown + len(self.rst_unexplained)


def _fins(c: ConnLike) -> list[tuple[float, str]]:
    """Every FIN of the connection; a stand-in without `fins` gives its first close if it was a FIN."""
    fins = list(getattr(c, "fins", ()) or ())
    if not fins and c.close_kind in ("fin-client", "fin-server") and c.closed_at is not None:
        fins = [(c.closed_at, c.close_kind.removeprefix("fin-"))]
    return fins


def _endpoint_close(c: ConnLike, t: float, who: str) -> bool:
    """An RST that belongs to an orderly close, not a reset of a live connection: its sender had
    already sent its own FIN (late data, such as the peer's TLS close_notify, reaching a closed
    socket), or either side sent a FIN at most ENDPOINT_CLOSE_WINDOW before it. Seen when
    client-go's and kube-apiserver's 90 s idle timers on an HTTP/1.1 connection fire together:
    whichever FIN went first, the other side's close drew an RST, and repeated runs split between
    PASS and RECOVERED on that alone. The `direct` column (no LB at all) showed both orders."""
    if any((side == who and ft <= t) or (0.0 <= t - ft <= ENDPOINT_CLOSE_WINDOW) for ft, side in _fins(c)):
        return True
    # An endpoint that closes its socket with the peer's bytes still unread (the peer's own
    # close_notify, in flight) sends an RST instead of a FIN: node-fetch's `Connection: close`
    # requests against kube-apiserver end that way when the two close_notify alerts cross. The
    # alert, sent just before, says the close was orderly.
    records = [*c.small_records_client, *c.small_records_server]
    return any(n == TLS13_ALERT_RECORD and 0.0 <= t - rt <= ENDPOINT_CLOSE_WINDOW for rt, n in records)


def _lb_caused(inp: CellInputs, c: ConnLike, t: float) -> bool:
    """Whether the LB's record says it sent or caused an RST the pod received on `c` at `t`: it
    sent RSTs to the pod on that flow, or had forgotten the flow before (a packet of a forgotten flow
    reaches a server that no longer knows it, which answers with an RST). A record without per-flow
    detail (lb_flows empty) speaks for all the pod's flows."""
    if inp.lb is None:
        return False
    if not inp.lb_flows:
        return bool(inp.lb.rst_to_client or inp.lb.expired)
    return any(f.client == c.client and (f.rst_to_client or (f.expired_at is not None and f.expired_at <= t + LB_SLACK))
               for f in inp.lb_flows)


def _packets(inp: CellInputs, conns: Sequence[ConnLike], window_end: float) -> _Packets:
    """Attribute every RST up to `window_end`: to the LB (its own record), to an endpoint's close
    (a FIN or TLS close_notify just before), or, left over, to nobody the evidence names (unknown where no LB keeps a
    record, a contradiction where one does and says it did not act)."""
    lb = unknown = endpoint = sent = 0
    unexplained: list[tuple[float, str]] = []
    cuts: list[float] = []
    longest = 0.0
    for c in conns:
        for t, who in c.rsts:
            if t > window_end:
                continue
            if who == "server" and _lb_caused(inp, c, t):
                lb += 1
                cuts.append(t)
            elif _endpoint_close(c, t, who):
                endpoint += 1
            elif who == "client":
                sent += 1
            elif inp.lb is None:
                unknown += 1
                cuts.append(t)
            else:
                unexplained.append((t, c.client))
        # Only gaps that ended before the last deadline were tested by some round; a gap that
        # runs into teardown says nothing about the rounds.
        for start, end in c.idle_gaps(0.0):
            if end <= window_end:
                longest = max(longest, end - start)
    return _Packets(lb, unknown, unexplained, endpoint, sent, longest, min(cuts, default=None))


def _idle_text(rounds: Sequence[RoundResult], idle_timeout: float | None, gap: float) -> str | None:
    idles = [r.idle_before for r in rounds if r.idle_before is not None]
    longest = max([*idles, gap], default=0.0)
    if idle_timeout is None or (not idles and not gap):
        return None
    op = ">" if longest > idle_timeout else ("=" if longest == idle_timeout else "<")
    return f"flow idle {fmt_secs(longest)} {op} {fmt_secs(idle_timeout)}"


def _rst_text(p: _Packets, lb: LbSummary | None) -> str:
    parts = []
    if p.rst_received:
        parts.append(f"{plural(p.rst_received, 'RST')} received")
    if p.rst_sent:
        parts.append(f"pod sent {plural(p.rst_sent, 'RST')}")
    if not parts:
        parts.append("no RST seen")
    if p.rst_endpoint:
        parts.append(f"{plural(p.rst_endpoint, 'RST')} at an endpoint's close")
    if p.rst_unknown:
        parts.append(_UNKNOWN_ORIGIN)
    if p.rst_unexplained:
        parts.append(f"{plural(len(p.rst_unexplained), 'RST')} the LB's record does not show it sending")
    if lb is not None and lb.dropped_after_expiry:
        parts.append(f"LB dropped {plural(lb.dropped_after_expiry, 'packet')} after expiry")
    if lb is not None and lb.rst_to_server and not p.rst_received:
        parts.append("LB reset the server side only")
    return ", ".join(parts)


#: Said of an RST the pod received where no LB keeps a record (a provider's LB on a kubernetes
#: cluster): it may be the LB's, a proxy's or the server's, and nothing here can tell.
_UNKNOWN_ORIGIN = "RST of unknown origin (no LB record here)"


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def judge_cell(inp: CellInputs) -> Judgement:
    """Apply the rules in the module docstring; returns the verdict, its reason and the rounds.

    In order: evidence that is missing or was never there (ERROR, SKIPPED); the rounds, and whether
    the watcher ran them as planned; doubts about the evidence itself (ERROR); then the grade, from
    every round seen (PASS or RECOVERED) or some missed (FAIL-LOUD or FAIL-SILENT)."""
    lines = inp.watcher_lines
    facts = None if lines is None else summarize_watcher(lines, inp.watcher_exit, inp.watcher_stderr)
    refused = _refusal(inp, facts)
    if refused is not None:
        return refused
    assert lines is not None and facts is not None and inp.pcap is not None
    conns = list(inp.pcap.connections)
    rounds = judge_rounds(inp.scenario, lines, inp.detection_timeout, updates=inp.updates,
                          expected_rounds=inp.expected_rounds, connections=conns)
    why = _rounds_problem(inp, rounds)
    window_end = max((r.deadline for r in rounds), default=0.0)
    why = why or "; ".join(_doubts(inp, lines, conns, window_end))
    if why:
        return Judgement(Verdict.ERROR, why, rounds=rounds, watcher=facts)
    facts_ = _Facts.read(inp, lines, facts, conns, rounds, window_end)
    return _judge_all_seen(inp, facts_) if not facts_.missed else _judge_missed(inp, facts_)


def _refusal(inp: CellInputs, facts: WatcherFacts | None) -> Judgement | None:
    """ERROR or SKIPPED before any round is looked at: a harness fault, or evidence that is missing."""
    if inp.harness_errors:
        return Judgement(Verdict.ERROR, "; ".join([*inp.harness_errors, *_lost_evidence(inp)]))
    if inp.skipped is not None:
        return Judgement(Verdict.SKIPPED, inp.skipped)
    problems = _missing_evidence(inp, facts)
    if problems or inp.watcher_lines is None or facts is None or inp.pcap is None:
        return Judgement(Verdict.ERROR, "; ".join(problems), watcher=facts)
    return None


def _rounds_problem(inp: CellInputs, rounds: Sequence[RoundResult]) -> str:
    """Why the rounds cannot be judged as the plan ran them ("" when they can)."""
    if len(rounds) != inp.expected_rounds:
        return f"the watcher ran {len(rounds)} rounds, {inp.expected_rounds} planned"
    # A round the watcher never sent is the library's doing only if an earlier round hung or failed
    # (the watcher was stuck in it); after rounds that all went well it is a broken watcher.
    for i, r in enumerate(rounds):
        if r.failure is RoundFailure.NEVER_SENT and all(prev.ok for prev in rounds[:i]):
            return f"the watcher stopped before round {r.index} with no failed round"
    for r in rounds:
        if r.failure is RoundFailure.BEFORE_IDLE:
            return f"round {r.index}: {r.note}: a fresh connection failed, so nothing about idle flows can be concluded"
    return ""


def _doubts(inp: CellInputs, lines: Sequence[Mapping[str, Any]], conns: Sequence[ConnLike],
            window_end: float) -> list[str]:
    """Every grade rests on these: the parameters the watcher was given, its credentials, and the
    LB's record must all agree with what the capture and the lines show."""
    doubts = []
    if inp.scenario == IDLE_REQUEST and inp.idle is not None:
        doubts += idle_problems(lines, inp.idle, conns)
    refused = auth_refusal(lines, window_end) or stderr_auth_refusal(inp.watcher_stderr)
    if refused:
        doubts.append(refused)
    return doubts + lb_disagreements(inp, conns)


def rewatches_after_error(lines: Sequence[Mapping[str, Any]], window_end: float) -> int:
    """How many re-watches (a `reconnect`, or a `watch-opened` after the first) had an `error` line
    before them, since the previous re-watch, counting errors up to `window_end` (the re-watch that
    answers an error just before the last deadline may come after it)."""
    count, pending, opened = 0, False, False
    for ln in sorted(lines, key=_ts):
        kind = ln.get("event")
        if kind == "error" and _ts(ln) <= window_end:
            pending = True
        elif kind == "reconnect" or (kind == "watch-opened" and opened):
            count += pending
            pending = False
        if kind == "watch-opened":
            opened = True
    return count


@dataclass(frozen=True)
class _Facts:
    """What the grade is read from, once the evidence is known to be whole and consistent."""

    lines: Sequence[Mapping[str, Any]]
    watcher: WatcherFacts
    conns: Sequence[ConnLike]
    rounds: Sequence[RoundResult]
    missed: Sequence[RoundResult]
    window_end: float
    packets: _Packets
    idle_text: str | None
    idled_out: bool
    errors_in_window: int
    reconnects: int
    #: Re-watches (a `reconnect`, or a `watch-opened` after the first) that an `error` line came
    #: before, since the previous re-watch: the library handed the application an error on the way.
    rewatches_after_error: int

    @classmethod
    def read(cls, inp: CellInputs, lines: Sequence[Mapping[str, Any]], watcher: WatcherFacts,
             conns: Sequence[ConnLike], rounds: Sequence[RoundResult], window_end: float) -> _Facts:
        pk = _packets(inp, conns, window_end)
        missed = [r for r in rounds if not r.ok]
        idled_out = inp.idle_timeout is not None and (
            pk.longest_gap >= inp.idle_timeout
            or any(r.idle_before is not None and r.idle_before >= inp.idle_timeout for r in rounds)
        )
        in_window = [ln for ln in lines if _ts(ln) <= window_end]
        reconnects = sum(1 for ln in in_window if ln.get("event") == "reconnect")
        if inp.scenario == WATCH:
            # Some watchers cannot hook a library's internal re-watch except as a new `watch-opened`;
            # others print both lines for one re-watch, so take the larger count, not the sum.
            reopened = sum(1 for ln in in_window if ln.get("event") == "watch-opened") - 1
            reconnects = max(reconnects, reopened)
        return cls(lines=lines, watcher=watcher, conns=conns, rounds=rounds, missed=missed, window_end=window_end,
                   packets=pk, idle_text=_idle_text(missed or rounds, inp.idle_timeout, pk.longest_gap),
                   idled_out=idled_out,
                   errors_in_window=sum(1 for ln in in_window if ln.get("event") == "error"),
                   reconnects=reconnects, rewatches_after_error=rewatches_after_error(lines, window_end))

    def judged(self, v: Verdict, *parts: str | None) -> Judgement:
        return Judgement(v, ", ".join(p for p in parts if p), rounds=list(self.rounds), watcher=self.watcher)


def _judge_all_seen(inp: CellInputs, f: _Facts) -> Judgement:
    """Every round seen. APP-RECOVERED when an `error` line came before a re-watch (the library
    handed the application an error: whoever re-watched, the application's code had to handle it);
    RECOVERED when a connection was cut (an RST the LB's record owns, an RST of unknown origin where
    no LB keeps a record, or an idle-out at the LB) and the library carried on with no error; PASS
    only if every other piece of evidence agrees. An RST that is part of an endpoint's own close is
    no cut; one that nothing explains while the LB's record says it did not act is ERROR."""
    pk, rounds, conns, reconnects = f.packets, f.rounds, f.conns, f.reconnects
    seen = f"{len(rounds)}/{len(rounds)} rounds seen"
    endpoint = f"{plural(pk.rst_endpoint, 'RST')} at an endpoint's close (a FIN or close_notify just before), " \
               "not a reset" \
        if pk.rst_endpoint else None
    if pk.rst_unexplained:
        t, flow = pk.rst_unexplained[0]
        return f.judged(Verdict.ERROR, seen,
                        f"{plural(len(pk.rst_unexplained), 'RST')} received (first at {t:.3f} on flow {flow}) that "
                        "the LB's record does not show it sending or causing and no FIN came just before: who "
                        "reset the connection is unknown")
    # Only an RST the pod *received* can be a cut; an RST the pod sent is the client closing
    # abruptly (e.g. the process exiting with unread data).
    rst_text = None
    if pk.rst_lb or pk.rst_unknown:
        rst_text = ", ".join(p for p in (
            f"{plural(pk.rst_lb, 'RST')} received from the LB (its record)" if pk.rst_lb else None,
            f"{plural(pk.rst_unknown, 'RST')} received, {_UNKNOWN_ORIGIN}" if pk.rst_unknown else None,
            f"pod sent {plural(pk.rst_sent, 'RST')}" if pk.rst_sent else None,
        ) if p)
    if f.rewatches_after_error:
        n = f.rewatches_after_error
        facts = f.watcher
        first = f"first: {_short(facts.first_error)!r}" if facts.first_error else None
        counted = ", ".join(p for p in (plural(f.errors_in_window, "error"), first) if p)
        said = f"re-watched {n}× after {'an error' if n == 1 else 'errors'} the library raised ({counted})"
        lb = inp.lb
        if rst_text:
            cause = rst_text
        elif lb is not None and not (lb.expired or lb.rst_to_client or lb.rst_to_server or lb.dropped_after_expiry):
            # Only an LB that keeps a record can say it did nothing; a provider's LB may have
            # dropped the flow silently, and the library's timer found out.
            cause = "no RST and no LB act: not the LB's doing"
        else:
            cause = "no RST seen"
        return f.judged(Verdict.APP_RECOVERED, seen, said, cause, endpoint, f.idle_text)
    if f.errors_in_window:
        # An error no re-watch answered: the library said something went wrong, yet the watch went
        # on; nothing here tells what, so it is no pass of any kind.
        return f.judged(Verdict.ERROR, seen, f"library reported {plural(f.errors_in_window, 'error')} nothing explains "
                        "(no re-watch followed)", rst_text, f.idle_text)
    if rst_text:
        first_reset = pk.first_cut if pk.first_cut is not None else f.window_end
        newer = sum(1 for c in conns if (_opened(c) or 0.0) > first_reset)
        if reconnects:
            again = f"reconnected {reconnects}×"
        elif newer:
            again = f"{plural(newer, 'new connection')} after the reset"
        else:
            again = "no reconnect"
        return f.judged(Verdict.RECOVERED, seen, rst_text, again, endpoint, f.idle_text)
    if reconnects and f.idled_out:
        return f.judged(Verdict.RECOVERED, seen, f"reconnected {reconnects}×", "no RST seen", endpoint, f.idle_text)
    lb = inp.lb
    if f.idled_out:
        if lb is not None and lb.expired:
            # The LB forgot an idle connection (in silent modes nothing is reset), yet every
            # round was seen: that connection carried no round (a pooled or list connection).
            return f.judged(Verdict.PASS, seen, f.idle_text,
                            f"LB forgot {plural(lb.expired, 'idle connection')} no round depended on", endpoint)
        return f.judged(Verdict.ERROR, seen, f.idle_text, "yet nothing was reset: the LB did not act (check its log)")
    if lb is not None and (lb.expired or lb.rst_to_client or lb.rst_to_server):
        return f.judged(
            Verdict.ERROR,
            seen,
            f"LB log shows {lb.expired} expired, {lb.rst_to_client}+{lb.rst_to_server} RSTs "
            "but the capture shows no idle gap or reset",
        )
    rewatch = f"re-watched {reconnects}× without reset or error" if reconnects else None
    return f.judged(Verdict.PASS, seen, f.idle_text, rewatch, endpoint)


def _judge_missed(inp: CellInputs, f: _Facts) -> Judgement:
    """A round was missed: LOUD if the library said anything at all, at any time. In idle-request a
    request that returned with ok false is the library raising to the application, too."""
    noun = "event" if inp.scenario == WATCH else "response"
    missed_text = f"no {noun} in time for {len(f.missed)}/{len(f.rounds)} rounds"
    facts = f.watcher
    failed = [ln for ln in f.lines if ln.get("event") == "request-done" and ln.get("ok") is not True]
    if facts.errors or facts.stderr_errors or failed:
        if facts.first_error is not None:
            said = f"error: {_short(facts.first_error)!r}"
            if facts.errors > 1:
                said = f"{facts.errors} errors, first {said}"
        elif failed:
            msg = failed[0].get("message", failed[0].get("status", ""))
            said = f"request failed: {_short(str(msg))!r}"
        else:
            said = f"{plural(facts.stderr_errors, 'error line')} on stderr"
        return f.judged(Verdict.FAIL_LOUD, missed_text, said, _rst_text(f.packets, inp.lb), f.idle_text)
    cut = [c for c in inp.cuts if c.file == "watcher.stderr" and (c.long_lines or c.capped_at is not None)]
    if cut:
        # SILENT rests on stderr holding no error; a cut stderr cannot show that.
        return f.judged(Verdict.ERROR, missed_text, f"{cut[0].describe()}: whether the library logged an error is "
                        "unknown")
    return f.judged(Verdict.FAIL_SILENT, missed_text, _rst_text(f.packets, inp.lb), f.idle_text)


def verdict(cell_inputs: CellInputs) -> tuple[Verdict, str]:
    """The cell's verdict and its one-line reason (without the verdict prefix)."""
    j = judge_cell(cell_inputs)
    return j.verdict, j.reason
