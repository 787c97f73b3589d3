"""Verdict rules as a table of cases, and the round-matching windows.

The capture facts come from a small stand-in for runner.evidence.pcap.ConnFacts carrying only the fields
the verdict reads: these are unit tests of pure logic over recorded evidence.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from runner.evidence.lb_events import LbFlow, lb_flows, summarize_lb_events
from runner.evidence.watcher_log import count_stderr_errors, parse_watcher_log, summarize_watcher
from runner.model import CaptureFacts, Cut, LbSummary, ProfileFacts, Verdict
from runner.verdict import CellInputs, Update, idle_before, judge_cell, judge_rounds, verdict

IDLE = 45.0
DETECT = 10.0
AZURE_QUICK = ProfileFacts(name="azure-slb-quick", mode="rst-both-ways", idle_timeout=IDLE, front="tcp-proxy",
                           scaled_from="azure-slb", scaled_from_timeout=240.0)
DIRECT = ProfileFacts(name="direct", mode="none", idle_timeout=240.0, front="none")
#: A capture that ran until the runner stopped it and lost nothing.
CAPTURE_OK = CaptureFacts(ran_to_end=True, exit_code=0, dropped=0, size=4096, limit=64 << 20)


@dataclass
class Conn:
    """Stand-in for runner.evidence.pcap.ConnFacts (only the fields verdicts.py depends on)."""

    opened_at: float | None
    closed_at: float | None = None
    #: The pod's end ("ip:port"), what the LB's per-flow record names.
    client: str = "198.18.1.2:40000"
    close_kind: str | None = None
    keepalive_client: list[float] = field(default_factory=list)
    keepalive_server: list[float] = field(default_factory=list)
    small_records_client: list[tuple[float, int]] = field(default_factory=list)
    small_records_server: list[tuple[float, int]] = field(default_factory=list)
    rsts: list[tuple[float, str]] = field(default_factory=list)
    fins: list[tuple[float, str]] = field(default_factory=list)
    data_client: list[float] = field(default_factory=list)
    data_server: list[float] = field(default_factory=list)

    def idle_gaps(self, min_gap: float) -> list[tuple[float, float]]:
        times = sorted(
            [
                *([] if self.opened_at is None else [self.opened_at]),
                *self.data_client,
                *self.data_server,
                *self.keepalive_client,
                *self.keepalive_server,
                *(t for t, _ in self.rsts),
            ]
        )
        return [(a, b) for a, b in itertools.pairwise(times) if b - a >= min_gap]


@dataclass
class Pcap:
    connections: list[Conn]


def line(ts: float, event: str, **kw: Any) -> dict[str, Any]:
    return {"ts": ts, "event": event, **kw}


STARTED = line(0.0, "started", client="client-x", library="lib", version="1.2.3", style="watch")


def seen(ts: float, value: str, name: str = "trigger") -> dict[str, Any]:
    return line(ts, "event-seen", type="MODIFIED", name=name, value=value, resourceVersion="1")


def kept_alive_conn() -> Conn:
    # Client keepalive every 30 s: the flow is never idle for the LB's 45 s.
    return Conn(
        opened_at=0.5,
        data_client=[0.6],
        data_server=[1.0, 100.05, 200.05],
        keepalive_client=[30.0 * k for k in range(1, 7)],
    )


def idle_conn(**kw: Any) -> Conn:
    # No keepalive: 99 s of silence before the first update.
    return Conn(opened_at=0.5, data_client=[0.6], data_server=[1.0, 100.05, 200.05], **kw)


def watch_pass() -> CellInputs:
    """A watch cell every rule agrees is PASS; each case below changes one thing."""
    return CellInputs(
        scenario="watch",
        detection_timeout=DETECT,
        expected_rounds=2,
        profile=AZURE_QUICK,
        updates=[Update(100.0, "v1"), Update(200.0, "v2")],
        watcher_lines=[STARTED, line(1.0, "watch-opened", resourceVersion="5"), seen(100.05, "v1"), seen(200.05, "v2")],
        watcher_exit=0,
        watcher_stderr="",
        pcap=Pcap([kept_alive_conn()]),
        lb=LbSummary(),
        expected_version="1.2.3",
        capture=CAPTURE_OK,
    )


def with_(**changes: Any) -> Callable[[], CellInputs]:
    return lambda: dataclasses.replace(watch_pass(), **changes)


def lines_plus(*extra: dict[str, Any], drop_seen: bool = False) -> list[dict[str, Any]]:
    base = [ln for ln in watch_pass().watcher_lines or [] if not (drop_seen and ln["event"] == "event-seen")]
    return sorted([*base, *extra], key=lambda ln: ln["ts"])


def reset_then_rewatch() -> CellInputs:
    # Azure-style: RST at 45 s of idle, the library re-watches on a new connection, events arrive.
    first = Conn(
        opened_at=0.5, data_server=[1.0], closed_at=46.0, close_kind="rst-from-server", rsts=[(46.0, "server")]
    )
    second = Conn(
        opened_at=47.0,
        data_server=[47.5, 100.05],
        closed_at=146.0,
        close_kind="rst-from-server",
        rsts=[(146.0, "server")],
    )
    third = Conn(opened_at=147.0, data_server=[147.5, 200.05])
    return dataclasses.replace(
        watch_pass(),
        pcap=Pcap([first, second, third]),
        lb=LbSummary(expired=2, rst_to_client=2, rst_to_server=2),
        watcher_lines=lines_plus(
            line(46.0, "error", message="Connection reset by peer"),
            line(46.5, "reconnect", reason="stream ended"),
            line(47.0, "watch-opened"),
            line(146.0, "error", message="Connection reset by peer"),
            line(146.5, "reconnect", reason="stream ended"),
            line(147.0, "watch-opened"),
        ),
    )


def silent_drop_missed() -> CellInputs:
    # GCP-style: flow forgotten at 45 s, the update's event never reaches the pod, nothing is said.
    conn = Conn(opened_at=0.5, data_client=[0.6], data_server=[1.0])
    return dataclasses.replace(
        watch_pass(),
        pcap=Pcap([conn]),
        lb=LbSummary(expired=1, dropped_after_expiry=4),
        watcher_lines=lines_plus(drop_seen=True),
    )


def missed_with_error() -> CellInputs:
    return dataclasses.replace(
        silent_drop_missed(),
        watcher_lines=lines_plus(line(300.0, "error", message="read timed out"), drop_seen=True),
    )


def lb_reset_silent_rewatch() -> CellInputs:
    """reset_then_rewatch as a library that re-watches by itself (an informer): the LB's per-flow
    record owns both RSTs, the watcher prints the re-watches and no error."""
    inp = reset_then_rewatch()
    assert inp.pcap is not None
    conns = [dataclasses.replace(c, client=f"198.18.1.2:4000{i}") for i, c in enumerate(inp.pcap.connections)]
    return dataclasses.replace(
        inp,
        pcap=Pcap(conns),
        watcher_lines=[ln for ln in inp.watcher_lines or [] if ln["event"] != "error"],
        lb_flows=[LbFlow(client="198.18.1.2:40000", expired_at=46.0, last_activity=1.0, rst_to_client=1),
                  LbFlow(client="198.18.1.2:40001", expired_at=146.0, last_activity=100.05, rst_to_client=1)],
    )


def direct_idle_close(fins: list[tuple[float, str]], rst: tuple[float, str], *, lb: LbSummary | None = None,
                      profile: ProfileFacts | None = DIRECT) -> CellInputs:
    """idle-request in the `direct` control column (no LB at all; the embedded cluster still keeps
    an LB record, all zeros): the pooled connection is closed at kube-apiserver's 90 s idle timer
    with `fins` and `rst`, and the request after the idle period goes out on a fresh connection."""
    first = min(t for t, _ in [*fins, rst])
    kind = min([*[(t, f"fin-{w}") for t, w in fins], (rst[0], f"rst-from-{rst[1]}")])[1]
    pooled = Conn(opened_at=0.5, data_client=[1.0], data_server=[1.05], closed_at=first, close_kind=kind,
                  fins=fins, rsts=[rst])
    fresh = Conn(opened_at=270.0, client="198.18.1.2:40001", data_client=[270.0], data_server=[270.05],
                 closed_at=270.1, close_kind="fin-client", fins=[(270.1, "client")])
    inp = idle_request(req(1, 1.0, 1.1) + req(1, 270.0, 270.1), rounds=1)
    return dataclasses.replace(inp, profile=profile, lb=lb, pcap=Pcap([pooled, fresh]))


def _with_alerts(inp: CellInputs, *, client: float | None, server: float | None) -> CellInputs:
    """The pooled connection of `inp` with TLS 1.3 alert records (24-byte payloads) at those times."""
    assert inp.pcap is not None
    pooled, *rest = inp.pcap.connections
    pooled = dataclasses.replace(pooled, small_records_client=[(client, 24)] if client is not None else [],
                                 small_records_server=[(server, 24)] if server is not None else [])
    return dataclasses.replace(inp, pcap=Pcap([pooled, *rest]))


def read_timeout_loop_direct() -> CellInputs:
    """java-plain-apiclient behind `direct`: OkHttp's 10 s read timeout ends every watch, the
    library raises, and the watcher's loop (the application) prints `error`, `reconnect`, and
    watches again a second later. No LB acts, nothing is reset: the client closes each connection."""
    conns, lines = [], [STARTED]
    t, port = 0.5, 40000
    while t < 210.0:
        conns.append(Conn(opened_at=t, client=f"198.18.1.2:{port}", data_client=[t + 0.1], data_server=[t + 0.5],
                          closed_at=t + 10.5, close_kind="fin-client", fins=[(t + 10.5, "client"),
                                                                              (t + 10.501, "server")]))
        lines.append(line(t + 0.5, "watch-opened"))
        lines.append(line(t + 10.5, "error", message="java.net.SocketTimeoutException: timeout"))
        lines.append(line(t + 10.5, "reconnect", reason="exception"))
        t, port = t + 11.5, port + 1
    for at in (100.05, 200.05):
        next(c for c in conns if c.opened_at <= at <= (c.closed_at or 0.0)).data_server.append(at)
    lines += [seen(100.05, "v1"), seen(200.05, "v2")]
    return dataclasses.replace(watch_pass(), profile=DIRECT, lb=LbSummary(), pcap=Pcap(conns),
                               watcher_lines=sorted(lines, key=lambda ln: ln["ts"]))


# (case id, inputs, expected verdict, substrings the reason must contain)
CASES: list[tuple[str, Callable[[], CellInputs], Verdict, tuple[str, ...]]] = [
    ("pass", watch_pass, Verdict.PASS, ("2/2 rounds seen", "flow idle 30 s < 45 s")),
    (
        "harness error outranks a pass",
        with_(harness_errors=["nft table vanished"]),
        Verdict.ERROR,
        ("nft table vanished",),
    ),
    ("harness error outranks skipped", with_(harness_errors=["boom"], skipped="no java"), Verdict.ERROR, ("boom",)),
    (
        "harness error outranks a failure",
        lambda: dataclasses.replace(silent_drop_missed(), harness_errors=["x"]),
        Verdict.ERROR,
        ("x",),
    ),
    ("skipped", with_(skipped="java not on PATH"), Verdict.SKIPPED, ("java not on PATH",)),
    ("no watcher log", with_(watcher_lines=None), Verdict.ERROR, ("no watcher log",)),
    (
        "no started line",
        with_(watcher_lines=[seen(100.05, "v1"), seen(200.05, "v2")]),
        Verdict.ERROR,
        ("no `started` line",),
    ),
    ("watcher crashed", with_(watcher_exit=1), Verdict.ERROR, ("exit code 1",)),
    ("watcher killed by a signal", with_(watcher_exit=-9), Verdict.ERROR, ("exit code -9",)),
    ("no exit code", with_(watcher_exit=None), Verdict.ERROR, ("no watcher exit code",)),
    ("no capture facts", with_(pcap=None), Verdict.ERROR, ("no capture facts",)),
    ("capture without connections", with_(pcap=Pcap([])), Verdict.ERROR, ("no connection",)),
    ("no LB log behind an LB", with_(lb=None), Verdict.ERROR, ("no LB event log",)),
    (
        "a provider's LB (kubernetes cluster) needs no LB log",
        with_(lb=None, profile=None),
        Verdict.PASS,
        ("2/2 rounds seen",),
    ),
    (
        "the control profile may idle as long as it likes",
        with_(lb=None, profile=DIRECT, pcap=Pcap([idle_conn()])),
        Verdict.PASS,
        ("2/2 rounds seen",),
    ),
    (
        "a capture that began mid-connection still counts",
        with_(pcap=Pcap([dataclasses.replace(kept_alive_conn(), opened_at=None)])),
        Verdict.PASS,
        ("flow idle 30 s",),
    ),
    ("LB helper died", with_(lb_helper_died=True), Verdict.ERROR, ("LB helper died",)),
    ("apiserver died", with_(apiserver_died=True), Verdict.ERROR, ("kube-apiserver died",)),
    ("a missing update never passes", with_(updates=[Update(100.0, "v1")]), Verdict.ERROR, ("1 of 2 updates",)),
    ("wrong library version loaded", with_(expected_version="9.9.9"), Verdict.ERROR, ("pins 9.9.9",)),
    ("unknown scenario", with_(scenario="stream"), Verdict.ERROR, ("unknown scenario",)),
    (
        "missing evidence also beats a failure",
        lambda: dataclasses.replace(silent_drop_missed(), pcap=None),
        Verdict.ERROR,
        ("no capture facts",),
    ),
    (
        "reset by the LB (its record), the library re-watched by itself",
        lb_reset_silent_rewatch,
        Verdict.RECOVERED,
        ("2/2 rounds seen", "2 RSTs received from the LB (its record)", "reconnected 2×"),
    ),
    (
        "reset, an error line, then the application's loop re-watched",
        reset_then_rewatch,
        Verdict.APP_RECOVERED,
        ("2/2 rounds seen", "re-watched 2× after errors the library raised",
         "first: 'Connection reset by peer'", "2 RSTs received from the LB"),
    ),
    (
        "an RST on a flow the LB's record says expired first: caused by the LB",
        lambda: dataclasses.replace(lb_reset_silent_rewatch(), lb=LbSummary(expired=2), lb_flows=[
            LbFlow(client="198.18.1.2:40000", expired_at=45.5, last_activity=1.0),
            LbFlow(client="198.18.1.2:40001", expired_at=145.5, last_activity=100.05)]),
        Verdict.RECOVERED,
        ("2 RSTs received from the LB (its record)",),
    ),
    (
        "an error no re-watch followed, after an LB reset: not RECOVERED",
        lambda: dataclasses.replace(lb_reset_silent_rewatch(),
                                    watcher_lines=lines_plus(line(150.0, "error", message="eh"))),
        Verdict.ERROR,
        ("1 error nothing explains (no re-watch followed)",),
    ),
    (
        "direct: the client's FIN first, the server's RST within a millisecond: an endpoint's close",
        lambda: direct_idle_close([(91.0, "client"), (91.0004, "server")], (91.0008, "server"), lb=LbSummary()),
        Verdict.PASS,
        ("1/1 rounds seen", "1 RST at an endpoint's close (a FIN or close_notify just before), not a reset"),
    ),
    (
        "direct: the server's FIN first, the client's RST: still an endpoint's close",
        lambda: direct_idle_close([(91.0, "server")], (91.002, "client"), lb=LbSummary()),
        Verdict.PASS,
        ("1 RST at an endpoint's close",),
    ),
    (
        "direct: the server's own FIN, then its RST after the window: the tail of its close",
        lambda: direct_idle_close([(91.0, "server")], (95.0, "server"), lb=LbSummary()),
        Verdict.PASS,
        ("1 RST at an endpoint's close",),
    ),
    (
        "direct: both close_notify alerts cross, the server closes with the client's unread and resets",
        lambda: _with_alerts(direct_idle_close([], (1.2547, "server"), lb=LbSummary()),
                             client=1.2543, server=1.2545),
        Verdict.PASS,
        ("1/1 rounds seen", "1 RST at an endpoint's close (a FIN or close_notify just before)"),
    ),
    (
        "direct: a 24-byte record 2 s before the RST closes nothing",
        lambda: _with_alerts(direct_idle_close([], (91.0, "server"), lb=LbSummary()), client=None, server=89.0),
        Verdict.ERROR,
        ("who reset the connection is unknown",),
    ),
    (
        "direct: an RST with no FIN before it while the LB's record says it did not act: not PASS",
        lambda: direct_idle_close([], (91.0, "server"), lb=LbSummary()),
        Verdict.ERROR,
        ("1 RST received (first at 91.000 on flow 198.18.1.2:40000)", "does not show it sending or causing"),
    ),
    (
        "direct: the client's FIN 2 s before the server's RST is no close of that RST",
        lambda: direct_idle_close([(89.0, "client")], (91.0, "server"), lb=LbSummary()),
        Verdict.ERROR,
        ("who reset the connection is unknown",),
    ),
    (
        "kubernetes cluster (no LB record): an RST of unknown origin is a cut, never PASS",
        lambda: direct_idle_close([], (91.0, "server"), lb=None, profile=None),
        Verdict.RECOVERED,
        ("1 RST received, RST of unknown origin (no LB record here)", "1 new connection after the reset"),
    ),
    (
        "kubernetes cluster (no LB record): an endpoint's close is still no reset",
        lambda: direct_idle_close([(91.0, "client")], (91.0008, "server"), lb=None, profile=None),
        Verdict.PASS,
        ("1 RST at an endpoint's close",),
    ),
    (
        "read timeouts and re-watches after errors on a provider's LB: no claim that no LB acted",
        lambda: dataclasses.replace(read_timeout_loop_direct(), profile=None, lb=None),
        Verdict.APP_RECOVERED,
        ("re-watched 18× after errors", "no RST seen"),
    ),
    (
        "java-plain-apiclient behind direct: read timeouts, errors, the watcher's loop re-watches",
        read_timeout_loop_direct,
        Verdict.APP_RECOVERED,
        ("2/2 rounds seen", "re-watched 18× after errors the library raised (18 errors, first: "
         "'java.net.SocketTimeoutException: timeout')", "no RST and no LB act: not the LB's doing"),
    ),
    (
        "reset seen in the capture without a reconnect line",
        lambda: dataclasses.replace(reset_then_rewatch(), watcher_lines=lines_plus()),
        Verdict.RECOVERED,
        ("2 RSTs received", "new connections after the reset"),
    ),
    (
        "silent reconnect after an idle gap",
        with_(pcap=Pcap([idle_conn()]), watcher_lines=lines_plus(line(60.0, "reconnect", reason="timeout"))),
        Verdict.RECOVERED,
        ("reconnected 1×", "no RST seen"),
    ),
    (
        "routine re-watch with no reset, error or idle gap",
        with_(
            watcher_lines=lines_plus(
                line(60.0, "reconnect", reason="server closed the watch"), line(60.1, "watch-opened")
            )
        ),
        Verdict.PASS,
        ("re-watched 1× without reset or error",),
    ),
    (
        "idle past the timeout yet nothing reset: unknown, not PASS",
        with_(pcap=Pcap([idle_conn()])),
        Verdict.ERROR,
        ("flow idle 100 s > 45 s", "LB did not act"),
    ),
    ("LB log and capture disagree: not PASS", with_(lb=LbSummary(expired=1)), Verdict.ERROR, ("LB log shows",)),
    (
        "unexplained library error: not PASS",
        with_(watcher_lines=lines_plus(line(50.0, "error", message="eh"))),
        Verdict.ERROR,
        ("1 error nothing explains",),
    ),
    (
        "error after the last deadline does not spoil a pass",
        with_(watcher_lines=lines_plus(line(400.0, "error", message="shutting down"))),
        Verdict.PASS,
        (),
    ),
    (
        "missed with nothing said",
        silent_drop_missed,
        Verdict.FAIL_SILENT,
        (
            "no event in time for 2/2 rounds",
            "no RST seen",
            "LB dropped 4 packets after expiry",
            "flow idle 199 s > 45 s",
        ),
    ),
    (
        "missed with an error line",
        missed_with_error,
        Verdict.FAIL_LOUD,
        ("no event in time for 2/2 rounds", "error: 'read timed out'"),
    ),
    (
        "missed with a library error on stderr",
        lambda: dataclasses.replace(
            silent_drop_missed(), watcher_stderr="E1125 12:00:00 reflector.go:1] watch failed\n"
        ),
        Verdict.FAIL_LOUD,
        ("1 error line on stderr",),
    ),
    (
        "one of two rounds missed",
        with_(pcap=Pcap([kept_alive_conn()]), watcher_lines=[*lines_plus(drop_seen=True), seen(100.05, "v1")]),
        Verdict.FAIL_SILENT,
        ("1/2 rounds",),
    ),
    (
        "RST to the server only (next-packet LB)",
        lambda: dataclasses.replace(silent_drop_missed(), lb=LbSummary(expired=1, rst_to_server=1)),
        Verdict.FAIL_SILENT,
        ("no RST seen", "LB reset the server side only"),
    ),
    # -- a capture that did not run to the end is missing evidence (issue 13) --------------------
    ("no record of how the capture ended", with_(capture=None), Verdict.ERROR, ("no record of how the capture",)),
    (
        "tcpdump died before the cell ended, even with the LB saying it reset the flow",
        lambda: dataclasses.replace(reset_then_rewatch(), capture=CAPTURE_OK.model_copy(update=dict(ran_to_end=False))),
        Verdict.ERROR,
        ("the capture stopped before the cell ended",),
    ),
    (
        "tcpdump exited non-zero",
        with_(capture=CAPTURE_OK.model_copy(update=dict(exit_code=1))),
        Verdict.ERROR,
        ("tcpdump exited with code 1",),
    ),
    (
        "tcpdump killed",
        with_(capture=CAPTURE_OK.model_copy(update=dict(ran_to_end=False, exit_code=-9, dropped=None))),
        Verdict.ERROR,
        ("stopped before the cell ended", "code -9"),
    ),
    (
        "tcpdump dropped packets",
        with_(capture=CAPTURE_OK.model_copy(update=dict(dropped=3))),
        Verdict.ERROR,
        ("3 packets dropped by the kernel",),
    ),
    (
        "tcpdump gave no packet counts",
        with_(capture=CAPTURE_OK.model_copy(update=dict(dropped=None))),
        Verdict.ERROR,
        ("no packet counts",),
    ),
    (
        "capture cut at its size cap",
        with_(capture=CAPTURE_OK.model_copy(update=dict(size=64 << 20, ran_to_end=False, exit_code=-25))),
        Verdict.ERROR,
        ("capture cut at 64 MiB",),
    ),
    # -- the LB's own record held against the capture, in every branch ---------------------------
    (
        "the LB says it reset the pod but no RST arrived: not PASS",
        with_(pcap=Pcap([idle_conn()]), lb=LbSummary(expired=1, rst_to_client=1, rst_to_server=1)),
        Verdict.ERROR,
        ("LB log says it sent 1 RST to the pod", "capture shows no RST arriving"),
    ),
    (
        "the LB says it reset the pod but no RST arrived: not FAIL-SILENT either",
        lambda: dataclasses.replace(silent_drop_missed(), lb=LbSummary(expired=1, rst_to_client=1)),
        Verdict.ERROR,
        ("LB log says it sent 1 RST to the pod",),
    ),
    (
        "the LB says it reset a flow the capture never shows",
        lambda: dataclasses.replace(
            reset_then_rewatch(), lb_flows=[LbFlow(client="198.18.1.2:49999", expired_at=46.0, rst_to_client=1)]
        ),
        Verdict.ERROR,
        ("flow 198.18.1.2:49999", "no such connection"),
    ),
    (
        "the LB says it dropped a flow's packets, the capture shows data coming through",
        lambda: dataclasses.replace(
            silent_drop_missed(),
            pcap=Pcap([Conn(opened_at=0.5, data_client=[0.6], data_server=[1.0, 150.0])]),
            lb_flows=[LbFlow(client="198.18.1.2:40000", expired_at=46.0, last_activity=1.0, first_drop_at=100.0,
                             drops=4)],
        ),
        Verdict.ERROR,
        ("dropped 4 packets of flow 198.18.1.2:40000 after expiry from 100.000", "data arriving on it at 150.000"),
    ),
    (
        "the LB says a flow idled out, the capture shows it busy",
        lambda: dataclasses.replace(
            silent_drop_missed(),
            lb_flows=[LbFlow(client="198.18.1.2:40000", expired_at=46.0, last_activity=1.0)],
            pcap=Pcap([Conn(opened_at=0.5, data_client=[0.6, 30.0], data_server=[1.0])]),
        ),
        Verdict.ERROR,
        ("was idle from 1.000 until it expired at 46.000", "packet on it at 30.000"),
    ),
    (
        "the LB's record says it forgot a flow after another idle time than the cell's profile",
        lambda: dataclasses.replace(
            silent_drop_missed(),
            lb_flows=[LbFlow(client="198.18.1.2:40000", expired_at=31.0, last_activity=1.0)],
        ),
        Verdict.ERROR,
        ("forgot flow 198.18.1.2:40000 after 30 s idle", "forgets flows after 45 s"),
    ),
    (
        "the LB's record per flow agrees with the capture",
        lambda: dataclasses.replace(
            silent_drop_missed(),
            lb_flows=[LbFlow(client="198.18.1.2:40000", expired_at=46.0, last_activity=1.0, first_drop_at=100.0,
                             drops=4)],
        ),
        Verdict.FAIL_SILENT,
        ("no event in time for 2/2 rounds",),
    ),
    # -- credentials refused inside the cell are no verdict about the LB --------------------------
    (
        "401 after the first success",
        lambda: dataclasses.replace(
            silent_drop_missed(),
            watcher_lines=lines_plus(seen(100.05, "v1"), line(150.0, "error", message="(401) Unauthorized"),
                                     drop_seen=True),
        ),
        Verdict.ERROR,
        ("refused the watcher's credentials after its first success", "Unauthorized"),
    ),
    (
        "403 before any success",
        lambda: dataclasses.replace(
            silent_drop_missed(),
            watcher_lines=lines_plus(line(2.0, "error", message='configmaps is forbidden: User "x" cannot watch'),
                                     drop_seen=True),
        ),
        Verdict.ERROR,
        ("refused the watcher's credentials before any success",),
    ),
    (
        "a port number with 403 in it is no refusal",
        lambda: dataclasses.replace(
            missed_with_error(),
            watcher_lines=lines_plus(line(300.0, "error", message="dial tcp 10.0.0.1:4030: i/o timeout"),
                                     drop_seen=True),
        ),
        Verdict.FAIL_LOUD,
        ("4030",),
    ),
    (
        "a refusal only stderr shows (the library logged it and went on): the credentials, not the LB",
        lambda: dataclasses.replace(
            silent_drop_missed(),
            watcher_stderr="W1201 12:00:01.403 reflector.go:561] failed to list *v1.ConfigMap: Unauthorized\n",
        ),
        Verdict.ERROR,
        ("stderr shows the API server refusing its credentials", "Unauthorized"),
    ),
    (
        "a log line's milliseconds (01.403) on stderr are no refusal",
        lambda: dataclasses.replace(
            silent_drop_missed(), watcher_stderr="I1201 12:00:01.403 watch.go:12] watching configmaps\n",
        ),
        Verdict.FAIL_SILENT,
        ("no event in time for 2/2 rounds",),
    ),
    # -- what the runner cut from the evidence ----------------------------------------------------
    (
        "a watcher line cut at the line cap",
        with_(cuts=[Cut(file="watcher.jsonl", long_lines=1)]),
        Verdict.ERROR,
        ("watcher.jsonl: 1 line(s) longer than the cap cut", "lines are incomplete"),
    ),
    (
        "the watcher's stdout stopped at its size cap",
        with_(cuts=[Cut(file="watcher.jsonl", capped_at=16 << 20)]),
        Verdict.ERROR,
        ("stopped at 16 MiB",),
    ),
    (
        "a cut stderr cannot prove a failure silent",
        lambda: dataclasses.replace(silent_drop_missed(), cuts=[Cut(file="watcher.stderr", capped_at=16 << 20)]),
        Verdict.ERROR,
        ("watcher.stderr: stopped at 16 MiB", "unknown"),
    ),
    (
        "a cut stderr does not spoil a pass",
        with_(cuts=[Cut(file="watcher.stderr", long_lines=2)]),
        Verdict.PASS,
        ("2/2 rounds seen",),
    ),
]


@pytest.mark.parametrize(("make", "expected", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_verdict_rules(make: Callable[[], CellInputs], expected: Verdict, needles: tuple[str, ...]) -> None:
    got, reason = verdict(make())
    assert got is expected, reason
    for needle in needles:
        assert needle in reason


def test_fail_silent_reason_reads_like_the_table() -> None:
    _, reason = verdict(silent_drop_missed())
    assert reason == (
        "no event in time for 2/2 rounds, no RST seen, LB dropped 4 packets after expiry, flow idle 199 s > 45 s"
    )


def test_a_chain_is_judged_by_its_first_expiry_not_its_last_hop() -> None:
    """issue 17: a nat hop before the last may forget the flow first (Cloud NAT at 45 s before a
    firewall at 112 s); the reason and the idle-out rules read the path's first expiry."""
    last_hop = AZURE_QUICK.model_copy(update={"name": "gke-cloudnat-quick", "mode": "silent-drop",
                                              "idle_timeout": 112.0})
    single = dataclasses.replace(silent_drop_missed(), profile=last_hop)
    chain = dataclasses.replace(single, path_expiry=45.0)
    assert verdict(single)[1].endswith("flow idle 199 s > 112 s")
    assert chain.idle_timeout == 45.0 and verdict(chain)[1].endswith("flow idle 199 s > 45 s")


def test_no_evidence_is_never_pass() -> None:
    # Strip each piece of evidence from a passing cell in turn: none may still PASS.
    for change in (
        {"watcher_lines": None},
        {"watcher_lines": []},
        {"watcher_exit": None},
        {"pcap": None},
        {"lb": None},
        {"updates": []},
        {"expected_rounds": 0, "updates": []},
    ):
        got, reason = verdict(dataclasses.replace(watch_pass(), **change))
        assert got is Verdict.ERROR, (change, reason)


def test_error_outranks_everything() -> None:
    assert Verdict.worst(Verdict) is Verdict.ERROR
    assert Verdict.worst([Verdict.PASS, Verdict.SKIPPED]) is Verdict.SKIPPED
    assert Verdict.worst([Verdict.FAIL_LOUD, Verdict.FAIL_SILENT, Verdict.RECOVERED]) is Verdict.FAIL_SILENT
    assert Verdict.worst([]) is None
    assert all(v.legend for v in Verdict)


def test_judgement_carries_rounds_and_watcher_facts() -> None:
    j = judge_cell(reset_then_rewatch())
    assert [r.ok for r in j.rounds] == [True, True]
    assert j.watcher is not None
    assert (j.watcher.errors, j.watcher.reconnects, j.watcher.watch_opened) == (2, 2, 3)
    assert j.watcher.first_error == "Connection reset by peer"


# --- judge_rounds windows -------------------------------------------------------------------------


def test_late_event_does_not_count() -> None:
    rounds = judge_rounds("watch", [seen(110.5, "v1")], DETECT, updates=[Update(100.0, "v1")])
    assert not rounds[0].ok
    assert rounds[0].seen_at is None
    assert "past the 10 s deadline" in rounds[0].note


def test_event_at_the_deadline_counts() -> None:
    rounds = judge_rounds("watch", [seen(110.0, "v1")], DETECT, updates=[Update(100.0, "v1")])
    assert rounds[0].ok
    assert rounds[0].seen_at == 110.0
    assert rounds[0].deadline == 110.0


def test_events_for_other_names_or_values_do_not_count() -> None:
    lines = [seen(100.1, "v1", name="other"), seen(100.2, "v0"), line(100.3, "event-seen", name="trigger", value=None)]
    rounds = judge_rounds("watch", lines, DETECT, updates=[Update(100.0, "v1")])
    assert not rounds[0].ok


def test_event_long_before_the_update_does_not_count_but_slack_does() -> None:
    up = [Update(100.0, "v1")]
    assert not judge_rounds("watch", [seen(90.0, "v1")], DETECT, updates=up)[0].ok
    assert judge_rounds("watch", [seen(99.8, "v1")], DETECT, updates=up)[0].ok


def test_each_round_matches_its_own_value() -> None:
    lines = [seen(100.1, "v1"), seen(105.0, "v1"), seen(200.2, "v2")]
    rounds = judge_rounds("watch", lines, DETECT, updates=[Update(100.0, "v1"), Update(200.0, "v2")])
    assert [(r.index, r.ok, r.seen_at) for r in rounds] == [(1, True, 100.1), (2, True, 200.2)]


def test_idle_before_uses_the_last_packet_on_open_connections() -> None:
    conns = [
        Conn(opened_at=0.0, data_server=[10.0], closed_at=20.0, close_kind="fin-server"),
        Conn(opened_at=21.0, keepalive_client=[40.0], data_server=[99.0]),
    ]
    assert idle_before(conns, 60.0) == pytest.approx(20.0)
    assert idle_before(conns, 15.0) == pytest.approx(5.0)
    assert idle_before([], 15.0) is None
    rounds = judge_rounds("watch", [], DETECT, updates=[Update(60.0, "v")], connections=conns)
    assert rounds[0].idle_before == pytest.approx(20.0)


# --- idle-request ---------------------------------------------------------------------------------


def idle_request(lines: list[dict[str, Any]], *, rounds: int = 2, conn: Conn | None = None) -> CellInputs:
    return CellInputs(
        scenario="idle-request",
        detection_timeout=DETECT,
        expected_rounds=rounds,
        profile=AZURE_QUICK,
        watcher_lines=[STARTED, *lines],
        watcher_exit=0,
        pcap=Pcap([conn or Conn(opened_at=0.5, data_client=[1.0, 60.0, 61.0, 120.0], keepalive_client=[30.0, 90.0])]),
        lb=LbSummary(),
        capture=CAPTURE_OK,
    )


def req(round_: int, sent: float, done: float | None, ok: bool = True, **kw: Any) -> list[dict[str, Any]]:
    out = [line(sent, "request-sent", round=round_)]
    if done is not None:
        out.append(line(done, "request-done", round=round_, ok=ok, **kw))
    return out


def test_idle_request_pass() -> None:
    lines = req(1, 1.0, 1.1) + req(1, 60.0, 60.1) + req(2, 61.0, 61.1) + req(2, 120.0, 120.1)
    j = judge_cell(idle_request(lines))
    assert j.verdict is Verdict.PASS, j.reason
    assert [(r.index, r.update_at, r.ok) for r in j.rounds] == [(1, 60.0, True), (2, 120.0, True)]


def test_idle_request_slow_response_is_missed() -> None:
    rounds = judge_rounds("idle-request", [STARTED, *req(0, 1.0, 1.1), *req(0, 60.0, 75.0)], DETECT, expected_rounds=1)
    assert [r.index for r in rounds] == [0]
    assert not rounds[0].ok
    assert "took 15 s > 10 s" in rounds[0].note


def test_idle_request_failed_request_is_loud() -> None:
    lines = req(1, 1.0, 1.1) + req(1, 60.0, 60.2, ok=False, message="Connection reset by peer")
    got, reason = verdict(idle_request(lines, rounds=1))
    assert got is Verdict.FAIL_LOUD
    assert "request failed: 'Connection reset by peer'" in reason


def test_idle_request_whose_request_before_the_idle_failed_is_error() -> None:
    """Seen in a full run: a cold JVM on a loaded machine missed its 10 s connect timeout on the
    first request, before any idle; the round was FAIL-LOUD though no LB had done anything yet."""
    msg = "KubernetesClientException: The timeout of 10000 ms has been exceeded when getting a connection"
    lines = req(1, 1.0, 13.6, ok=False, message=msg) + req(1, 60.0, 60.1)
    got, reason = verdict(idle_request(lines, rounds=1))
    assert got is Verdict.ERROR, reason
    assert reason.startswith("round 1: the request before the idle period failed (request 1 failed after 13 s")
    assert "nothing about idle flows can be concluded" in reason


def test_idle_request_hang_then_never_sent_is_silent() -> None:
    # Round 1's second request never returns; the watcher is stuck and never starts round 2.
    lines = req(1, 1.0, 1.1) + req(1, 60.0, None)
    got, reason = verdict(idle_request(lines))
    assert got is Verdict.FAIL_SILENT
    assert "no response in time for 2/2 rounds" in reason


def test_idle_request_stopping_early_without_a_failure_is_error() -> None:
    lines = req(1, 1.0, 1.1) + req(1, 60.0, 60.1)
    got, reason = verdict(idle_request(lines))
    assert got is Verdict.ERROR
    assert "stopped before round 2" in reason


def test_idle_request_unplanned_round_is_error() -> None:
    lines = req(1, 1.0, 1.1) + req(1, 60.0, 60.1) + req(2, 61.0, 61.1)
    got, reason = verdict(idle_request(lines, rounds=1))
    assert got is Verdict.ERROR
    assert "ran 2 rounds, 1 planned" in reason


# --- watcher log parsing --------------------------------------------------------------------------


def test_parse_watcher_log_keeps_only_contract_lines() -> None:
    text = "\n".join(
        [
            '{"ts": 1.5, "event": "started", "version": "1"}',
            "plain log noise",
            '{"ts": "soon", "event": "error"}',
            '{"event": "error"}',
            "[1, 2]",
            '{"ts": 2, "event": "error", "message": "x"}',
            '{"ts": 3, "event": ',
        ]
    )
    lines = parse_watcher_log(text)
    assert [ln["event"] for ln in lines] == ["started", "error"]
    facts = summarize_watcher(lines, 0, "Traceback (most recent call last):\nok line\nWARNING nothing\n")
    assert (facts.started, facts.errors, facts.first_error, facts.stderr_errors) == (True, 1, "x", 1)
    assert facts.reported_version == "1"


def test_stderr_error_heuristic() -> None:
    assert count_stderr_errors("I1125 fine\nE1125 12:00 failed\nsomething Exception here\nall good\n") == 2


def test_works_on_real_pcapfacts_connections() -> None:
    # The stand-in above mirrors runner.evidence.pcap.ConnFacts; check the real class fits the same rules.
    pcapfacts = pytest.importorskip("runner.evidence.pcap")
    data = [1.0, 100.05, 200.05]
    keepalive = [30.0 * k for k in range(1, 7)]
    conn = pcapfacts.ConnFacts(
        client="198.18.1.2:40000",
        server="198.18.0.1:6443",
        opened_at=0.5,
        closed_at=None,
        close_kind=None,
        data_server=data,
        keepalive_client=keepalive,
        packet_times=sorted([0.5, *data, *keepalive]),
    )
    facts = pcapfacts.PcapFacts(connections=[conn], first_ts=0.5, last_ts=200.05)
    assert verdict(dataclasses.replace(watch_pass(), pcap=facts)) == (
        Verdict.PASS,
        "2/2 rounds seen, flow idle 30 s < 45 s",
    )
    quiet = dataclasses.replace(conn, keepalive_client=[], packet_times=[0.5, *data])
    facts = pcapfacts.PcapFacts(connections=[quiet], first_ts=0.5, last_ts=200.05)
    got, reason = verdict(dataclasses.replace(watch_pass(), pcap=facts))
    assert got is Verdict.ERROR, reason


def test_summarize_lb_events_counts_one_pods_flows_until_the_deadline() -> None:
    flow = "198.18.1.2:40000>443"
    events = [
        {"ts": 1.0, "event": "ready", "mode": "rst-both-ways"},
        {"ts": 1.5, "event": "flow-opened", "flow": flow, "client": "198.18.1.2:40000"},
        {"ts": 46.0, "event": "expired", "flow": flow, "idle": 45},
        {"ts": 46.001, "event": "rst-sent", "flow": flow, "to": "client"},
        {"ts": 46.002, "event": "rst-sent", "flow": flow, "to": "server"},
        {"ts": 50.0, "event": "after-expiry", "flow": flow, "side": "client", "action": "reset"},
        {"ts": 51.0, "event": "after-expiry", "flow": flow, "side": "server", "action": "dropped"},
        {"ts": 46.0, "event": "expired", "flow": "198.18.1.3:40000>443"},
        {"ts": 900.0, "event": "expired", "flow": flow},
    ]
    assert summarize_lb_events(events, pod_ip="198.18.1.2", until=200.0) == LbSummary(
        expired=1, rst_to_client=2, rst_to_server=1, dropped_after_expiry=1
    )
    assert summarize_lb_events(events).expired == 3


def test_idle_request_slow_first_request_is_warm_up_not_a_miss() -> None:
    """A cold process (a JVM) may take long for its first request; only the one after the idle
    period meets the stale pooled connection, so only its latency is judged."""
    rounds = judge_rounds("idle-request", [STARTED, *req(1, 1.0, 14.0), *req(1, 60.0, 60.1)], DETECT,
                          expected_rounds=1)
    assert rounds[0].ok, rounds[0].note


def test_an_idle_side_connection_the_lb_forgot_is_no_error_when_every_round_was_seen() -> None:
    """An informer's idle list connection (or a pooled one) expires in a silent mode: nothing is
    reset, the LB log shows the expiry, the capture the gap, and every round was seen."""
    side = Conn(opened_at=0.4, data_client=[0.45], data_server=[0.5, 70.0])
    inp = dataclasses.replace(watch_pass(), pcap=Pcap([kept_alive_conn(), side]), lb=LbSummary(expired=1))
    j = judge_cell(inp)
    assert j.verdict is Verdict.PASS, j.reason
    assert "LB forgot 1 idle connection" in j.reason
    # Without the LB's word for it, the same gap stays an ERROR: the evidence would disagree.
    j = judge_cell(dataclasses.replace(inp, lb=LbSummary()))
    assert j.verdict is Verdict.ERROR


def test_an_rst_after_the_senders_own_fin_is_the_tail_of_a_close_not_a_reset() -> None:
    """client-go over HTTP/1.1 and kube-apiserver both close an idle connection after 90 s. In one
    full run the server's FIN went first and the client's late TLS close drew an RST from it (read
    as RECOVERED); in the next the client's FIN went first (PASS). Both are one orderly close."""
    for first, rst_from in (("server", "server"), ("client", "client")):
        pooled = Conn(opened_at=0.5, data_client=[1.0], data_server=[1.05], closed_at=91.0,
                      close_kind=f"fin-{first}", rsts=[(91.002, rst_from)])
        fresh = Conn(opened_at=270.0, data_client=[270.0], data_server=[270.05], closed_at=270.1,
                     close_kind="fin-client")
        lines = req(1, 1.0, 1.1) + req(1, 270.0, 270.1)
        inp = dataclasses.replace(idle_request(lines, rounds=1), profile=None, lb=None,
                                  pcap=Pcap([pooled, fresh]))
        got, reason = verdict(inp)
        assert got is Verdict.PASS, (first, reason)
    # An RST with no FIN from its sender before it is a reset, as before.
    reset = Conn(opened_at=0.5, data_client=[1.0], data_server=[1.05], closed_at=91.0,
                 close_kind="rst-from-server", rsts=[(91.0, "server")])
    inp = dataclasses.replace(idle_request(req(1, 1.0, 1.1) + req(1, 270.0, 270.1), rounds=1), profile=None,
                              lb=None, pcap=Pcap([reset, Conn(opened_at=270.0, data_client=[270.0])]))
    got, reason = verdict(inp)
    assert got is Verdict.RECOVERED, reason
    assert "RST of unknown origin (no LB record here)" in reason


# --- idle-request: the watcher must really idle (issue 13) -------------------------------------------


def honest_idle_request() -> CellInputs:
    """Two rounds, each request - 58.9 s idle - request on one pooled connection kept alive by TCP."""
    lines = req(1, 1.0, 1.1) + req(1, 60.0, 60.1) + req(2, 61.0, 61.1) + req(2, 120.0, 120.1)
    return dataclasses.replace(idle_request(lines), idle=58.0)


def test_idle_request_that_really_idled_passes() -> None:
    j = judge_cell(honest_idle_request())
    assert j.verdict is Verdict.PASS, j.reason


def test_idle_request_watcher_that_did_not_idle_is_error() -> None:
    """A broken or hostile watcher that sleeps 2 s instead of WATCHDROP_IDLE: no PASS "flow idle 2 s"."""
    lines = req(1, 1.0, 1.1) + req(1, 3.1, 3.2) + req(2, 4.0, 4.1) + req(2, 6.1, 6.2)
    conn = Conn(opened_at=0.5, data_client=[1.0, 3.1, 4.0, 6.1])
    got, reason = verdict(dataclasses.replace(idle_request(lines, conn=conn), idle=58.0))
    assert got is Verdict.ERROR, reason
    assert "round 1: the watcher idled 2.0 s between its requests, not the 58 s WATCHDROP_IDLE asks for" in reason


def test_idle_request_watcher_that_sends_during_its_idle_is_error() -> None:
    """The watcher's stamps say it idled; the capture shows a request in the middle."""
    conn = Conn(opened_at=0.5, data_client=[1.0, 30.0, 60.0, 61.0, 120.0], small_records_client=[(90.0, 40)])
    inp = dataclasses.replace(honest_idle_request(), pcap=Pcap([conn]))
    got, reason = verdict(inp)
    assert got is Verdict.ERROR, reason
    assert "round 1: the watcher says it idled from 1.100 to 60.000, but the capture shows it sending data at 30.000" \
        in reason


def test_idle_request_small_records_during_the_idle_are_keepalives_not_requests() -> None:
    conn = Conn(opened_at=0.5, data_client=[1.0, 30.0, 60.0, 61.0, 90.0, 120.0],
                small_records_client=[(30.0, 40), (90.0, 40)])
    got, reason = verdict(dataclasses.replace(honest_idle_request(), pcap=Pcap([conn])))
    assert got is Verdict.PASS, reason


def test_idle_request_round_without_a_second_request_is_error() -> None:
    lines = req(1, 1.0, 1.1) + req(2, 61.0, 61.1)
    got, reason = verdict(dataclasses.replace(idle_request(lines), idle=58.0))
    assert got is Verdict.ERROR, reason
    assert "round 1: the watcher sent one request and no second one after an idle period" in reason


def test_request_done_with_status_403_is_error() -> None:
    lines = req(1, 1.0, 1.1) + req(1, 60.0, 60.1, ok=False, status=403)
    got, reason = verdict(dataclasses.replace(idle_request(lines, rounds=1), idle=58.0))
    assert got is Verdict.ERROR, reason
    assert "refused the watcher's credentials after its first success ('403')" in reason


def test_lb_flows_are_read_per_pod_flow_until_the_deadline() -> None:
    flow = "198.18.1.2:40000>443"
    events = [
        {"ts": 1.5, "event": "flow-opened", "flow": flow, "client": "198.18.1.2:40000"},
        {"ts": 46.0, "event": "expired", "flow": flow, "idle": 45, "last_activity": 1.0},
        {"ts": 46.001, "event": "rst-sent", "flow": flow, "to": "client"},
        {"ts": 46.002, "event": "rst-sent", "flow": flow, "to": "server"},
        {"ts": 50.0, "event": "after-expiry", "flow": flow, "side": "server", "action": "dropped"},
        {"ts": 51.0, "event": "after-expiry", "flow": flow, "side": "client", "action": "dropped"},
        {"ts": 52.0, "event": "after-expiry", "flow": "198.18.1.2:40001>443", "side": "client", "action": "reset"},
        {"ts": 46.0, "event": "expired", "flow": "198.18.1.3:40000>443"},
        {"ts": 900.0, "event": "expired", "flow": "198.18.1.2:40002>443"},
        {"ts": 2.0, "event": "flow-opened", "flow": "198.18.1.2:40003>443"},
    ]
    assert lb_flows(events, pod_ip="198.18.1.2", until=200.0) == [
        LbFlow(client="198.18.1.2:40000", expired_at=46.0, last_activity=1.0, rst_to_client=1, first_drop_at=50.0,
               drops=2),
        LbFlow(client="198.18.1.2:40001", rst_to_client=1),
    ]


# --- every legend line holds for every cell that carries its grade (issue 16 §3) -------------------


def _re_watch_after_error(lines: list[dict[str, Any]], until: float) -> bool:
    """An `error` line (up to `until`) with a re-watch after it: `reconnect`, or a `watch-opened`
    that is not the first."""
    ordered = sorted(lines, key=lambda ln: ln["ts"])
    opened = [ln["ts"] for ln in ordered if ln["event"] == "watch-opened"][1:]
    rewatches = [ln["ts"] for ln in ordered if ln["event"] == "reconnect"] + opened
    return any(e["event"] == "error" and e["ts"] <= until and any(r >= e["ts"] for r in rewatches) for e in ordered)


def _fin_just_before(conn: Any, t: float, who: str) -> bool:
    """An endpoint's close: a FIN (the sender's own, or either within 1 s), or a TLS 1.3 alert
    record (24-byte payload: close_notify) within 1 s before the RST."""
    alerts = [rt for rt, n in [*conn.small_records_client, *conn.small_records_server] if n == 24]
    return (any((side == who and ft <= t) or 0.0 <= t - ft <= 1.0 for ft, side in conn.fins)
            or any(0.0 <= t - rt <= 1.0 for rt in alerts))


def _lb_owns(inp: CellInputs, conn: Any, t: float) -> bool:
    if inp.lb is None:
        return False
    if not inp.lb_flows:
        return bool(inp.lb.rst_to_client or inp.lb.expired)
    return any(f.client == conn.client and (f.rst_to_client or (f.expired_at or 1e18) <= t + 1.0)
               for f in inp.lb_flows)


def legend_breaches(inp: CellInputs, v: Verdict, reason: str) -> list[str]:
    """What in the evidence contradicts the legend of `v`, read straight from the inputs (not from
    the verdict module's own helpers, so a rule that drifts from its legend shows here)."""
    if v is Verdict.SKIPPED:
        return [] if inp.skipped else ["SKIPPED without a reason to skip"]
    if v is Verdict.ERROR:
        return [] if reason else ["ERROR without a reason"]
    lines = list(inp.watcher_lines or [])
    rounds = judge_cell(inp).rounds
    until = max((r.deadline for r in rounds), default=0.0)
    errors = [ln for ln in lines if ln["event"] == "error" and ln["ts"] <= until]
    conns = list(inp.pcap.connections) if inp.pcap else []
    received = [(c, t) for c in conns for t, who in c.rsts if who == "server" and t <= until]
    cuts = [(c, t) for c, t in received if not _fin_just_before(c, t, "server")]
    idle = inp.idle_timeout
    idled_out = idle is not None and (
        any(b - a >= idle for c in conns for a, b in c.idle_gaps(0.0) if b <= until)
        or any(r.idle_before is not None and r.idle_before >= idle for r in rounds))
    out = []
    all_seen = bool(rounds) and all(r.ok for r in rounds)
    if v in (Verdict.PASS, Verdict.RECOVERED, Verdict.APP_RECOVERED) and not all_seen:
        out.append("not every round was seen")
    if v is Verdict.PASS:
        if errors:
            out.append("an error reached the application")
        if cuts:
            out.append("a connection was reset outside an endpoint's close")
        if idled_out and not (inp.lb is not None and inp.lb.expired):
            out.append("a connection idled out")
    if v is Verdict.RECOVERED:
        if errors:
            out.append("an error reached the application")
        by_lb = any(_lb_owns(inp, c, t) for c, t in cuts)
        unknown = inp.lb is None and bool(cuts)
        if not (by_lb or unknown or idled_out):
            out.append("no cut: no RST the LB owns, no RST of unknown origin, no idle-out")
        if cuts and inp.lb is not None and not by_lb:
            out.append("an RST the LB's record does not own")
    if v is Verdict.APP_RECOVERED and not _re_watch_after_error(lines, until):
        out.append("no error line before a re-watch")
    if v in (Verdict.FAIL_LOUD, Verdict.FAIL_SILENT) and all_seen:
        out.append("every round was seen")
    said = bool(summarize_watcher(lines, inp.watcher_exit, inp.watcher_stderr).errors) or bool(
        count_stderr_errors(inp.watcher_stderr)) or any(
        ln["event"] == "request-done" and ln.get("ok") is not True for ln in lines)
    if v is Verdict.FAIL_LOUD and not said:
        out.append("the library said nothing")
    if v is Verdict.FAIL_SILENT and said:
        out.append("the library raised an error")
    return out


def _legend_cells() -> list[tuple[str, CellInputs]]:
    cells = [(name, make()) for name, make, _, _ in CASES]
    cells += [("idle-request pass", honest_idle_request()),
              ("idle-request failed request", idle_request(req(1, 1.0, 1.1) + req(1, 60.0, 60.2, ok=False,
                                                                                   message="reset"), rounds=1)),
              ("idle-request hang", idle_request(req(1, 1.0, 1.1) + req(1, 60.0, None)))]
    return cells


def test_every_legend_line_holds_for_every_cell_that_carries_it() -> None:
    """Each grade's legend (runner.model._LEGEND) is a claim about the evidence of every cell that
    carries it: checked over the whole verdict table, and every grade must occur in it."""
    carried: dict[Verdict, list[str]] = {}
    for name, inp in _legend_cells():
        j = judge_cell(inp)
        carried.setdefault(j.verdict, []).append(name)
        assert not legend_breaches(inp, j.verdict, j.reason), (name, j.verdict, j.reason, j.verdict.legend)
    assert set(carried) == set(Verdict), f"grades no case carries: {set(Verdict) - set(carried)}"


def test_legends_hold_for_the_fixture_results() -> None:
    """The recorded results keep no raw evidence, only their facts: what of each legend those show."""
    from pathlib import Path

    from runner.model import RunResult

    fixtures = sorted((Path(__file__).parent / "fixtures" / "results").glob("*.results.json"))
    assert fixtures
    for path in fixtures:
        run = RunResult.from_dict(__import__("json").loads(path.read_text()))
        for c in run.cells:
            seen_all = all(r.ok for r in c.rounds)
            if c.verdict in (Verdict.PASS, Verdict.RECOVERED, Verdict.APP_RECOVERED):
                assert seen_all, c.cell_id
            if c.verdict in (Verdict.FAIL_LOUD, Verdict.FAIL_SILENT) and c.rounds:
                assert not seen_all, c.cell_id
            if c.verdict is Verdict.RECOVERED:
                assert c.watcher is None or c.watcher.errors == 0, c.cell_id
                assert "RST" in c.reason or "reconnected" in c.reason, c.cell_id
                assert c.lb is None or c.lb.expired or c.lb.rst_to_client, c.cell_id
            if c.verdict is Verdict.APP_RECOVERED:
                assert c.watcher is not None and c.watcher.errors and (c.watcher.reconnects
                                                                       or c.watcher.watch_opened > 1), c.cell_id
            if c.verdict is Verdict.SKIPPED or c.verdict is Verdict.ERROR:
                assert c.reason, c.cell_id
