"""One cell's timeline as an SVG: what the wire, the LB, the harness and the watcher did, side by side.

Everything drawn comes from the cell's own evidence files, never from what the verdict concluded:
the pod's capture (`pod.pcap`, read with runner.evidence.pcap), the LB agent's event log
(`lb-events.jsonl`), the harness's log (`harness.log`) and the watcher's JSON lines
(`watcher.jsonl`). The rounds lane is the one exception: it draws the round records of
results.json (update time, deadline, seen time), which the harness itself measured.

Lanes, top to bottom, so a FAIL-SILENT cell reads as a story from cause to effect:
  TCP :port   one row per connection on the pod's leg: opened, data from either side (ticks above
              for the pod, below for the server), small records, TCP keepalive probes, RST, FIN.
  LB :port    the LB's record of the same flow: tracked and active, tracked but idle, expired and
              forgotten; RSTs the LB sent; packets it dropped or reset after forgetting the flow.
  harness     the updates it wrote (`round N: set trigger=V`) and its FAILURE lines.
  watcher     `event-seen` (with the value), `watch-opened`, `error`, `reconnect`, requests.
  rounds      per round, update → deadline, green when the watcher saw it in time, red when not.

Idle gaps on a connection at least as long as the profile's idle timeout are shaded across every
lane, so an update landing inside one is plain to see. The x-axis is seconds from the cell's start.

The output is deterministic: matplotlib's SVG ids are salted with a fixed string and the date is
left out, so rendering the same evidence twice gives the same bytes (reports are re-rendered and
compared byte for byte elsewhere). Text is drawn as paths, so the SVG needs no font.

Why one long module: one picture, its rows drawn by small functions that share the same axes.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.contract import API_PORT
from runner.evidence import harness_log, lb_events
from runner.evidence.harness_log import HarnessLine
from runner.evidence.pcap import ConnFacts, PcapError, PcapFacts, read_pcap
from runner.evidence.watcher_log import parse_watcher_log
from runner.host.safefiles import write_atomic
from runner.model import CellResult, fmt_secs

# matplotlib is imported where a picture is drawn: it takes about a second, and most processes
# that import this module never draw (the runner itself, its capture readers, `--plan`).
if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The API server's port on the VIP: the pod's capture is read for connections to it only.
SERVER_PORTS = {API_PORT}

#: Gaps between packets shorter than this count as "active" on the LB lane; at the scale of a
#: cell (minutes) a shorter gap is not visible anyway.
ACTIVE_GAP = 1.0

#: Salt for matplotlib's SVG element ids: any fixed string makes them stable across renders.
SVG_HASHSALT = "watchdrop-timeline"

# Colours: one meaning each, the same on every cell's timeline.
C_POD = "#1f5fbf"  # the pod (client) side
C_SERVER = "#6a3d9a"  # the server side
C_OK = "#2e8b3d"
C_BAD = "#c62828"
C_WARN = "#ef8a00"
C_MUTED = "#8a8a8a"
C_IDLE_SHADE = "#f7c948"
C_LB_ACTIVE = "#4f9d69"
C_LB_IDLE = "#cfe8d6"
C_LB_GONE = "#d9d9d9"


# --- reading the evidence -------------------------------------------------------------------------


@dataclass
class LbFlow:
    """One flow as the LB agent's event log tells it (runner/embedded/lbagent.py)."""

    name: str
    client: str  # "ip:port" of the pod's end, matching ConnFacts.client
    opened_at: float | None = None
    expired_at: float | None = None
    last_activity: float | None = None
    closed_at: float | None = None
    closed_by: str | None = None
    fins: list[tuple[float, str]] = field(default_factory=list)
    rst_sent: list[tuple[float, str]] = field(default_factory=list)  # (ts, to)
    after_expiry: list[tuple[float, str, str]] = field(default_factory=list)  # (ts, side, action)


@dataclass
class Evidence:
    """What the cell's evidence files hold; each part is empty when its file is missing."""

    pcap: PcapFacts | None = None
    pcap_problem: str | None = None
    watcher: list[dict[str, Any]] = field(default_factory=list)
    lb_flows: list[LbFlow] = field(default_factory=list)
    harness: list[HarnessLine] = field(default_factory=list)

    def times(self) -> Iterator[float]:
        """Every timestamp in the evidence, to size the x-axis."""
        if self.pcap is not None:
            for t in (self.pcap.first_ts, self.pcap.last_ts):
                if t is not None:
                    yield t
        for line in self.watcher:
            yield float(line["ts"])
        for f in self.lb_flows:
            yield from (t for t in (f.opened_at, f.expired_at, f.closed_at) if t is not None)
            yield from (t for t, *_ in f.after_expiry)
            yield from (t for t, _ in f.rst_sent)
        for h in self.harness:
            yield h.ts


def read_harness_log(path: Path) -> list[HarnessLine]:
    """harness.log's JSON lines (runner/evidence/harness_log.py)."""
    return harness_log.read(path)


def lb_flows(events: Sequence[dict[str, Any]]) -> list[LbFlow]:
    """The LB event log folded into one record per flow, in order of first appearance."""
    flows: dict[str, LbFlow] = {}
    for ev in events:
        name = ev.get("flow")
        if not isinstance(name, str):
            continue  # "ready"/"stopped": about the agent, not a flow
        ts = float(ev["ts"])
        f = flows.setdefault(name, LbFlow(name=name, client=name.partition(">")[0]))
        kind = ev.get("event")
        if kind == "flow-opened":
            # A re-opened flow (same pod port after a reset) starts a new record: keep the first
            # opening for the row, later ones are rare and their packets still show on TCP rows.
            f.opened_at = ts if f.opened_at is None else f.opened_at
        elif kind == "expired":
            f.expired_at = ts
            la = ev.get("last_activity")
            f.last_activity = float(la) if isinstance(la, int | float) else None
        elif kind == "flow-closed":
            f.closed_at = ts if f.closed_at is None else f.closed_at
            f.closed_by = str(ev.get("by", "?"))
        elif kind == "fin":
            f.fins.append((ts, str(ev.get("by", "?"))))
        elif kind == "rst-sent":
            f.rst_sent.append((ts, str(ev.get("to", "?"))))
        elif kind == "after-expiry":
            f.after_expiry.append((ts, str(ev.get("side", "?")), str(ev.get("action", "?"))))
    return list(flows.values())


def read_evidence(cell_dir: Path) -> Evidence:
    ev = Evidence(
        watcher=parse_watcher_log(_read_text(cell_dir / "watcher.jsonl")),
        lb_flows=lb_flows(lb_events.read(cell_dir / "lb-events.jsonl")),
        harness=read_harness_log(cell_dir / "harness.log"),
    )
    pcap = cell_dir / "pod.pcap"
    if pcap.is_file():
        try:
            ev.pcap = read_pcap(pcap, server_ports=SERVER_PORTS)
        except PcapError as exc:
            # An unreadable capture is drawn as such: its lane says why instead of showing nothing.
            ev.pcap_problem = str(exc)
    else:
        ev.pcap_problem = "no pod.pcap"
    return ev


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""


# --- drawing --------------------------------------------------------------------------------------


def _port(endpoint: str) -> str:
    return ":" + endpoint.rpartition(":")[2]


def _active_spans(times: Sequence[float], start: float, end: float) -> list[tuple[float, float]]:
    """Stretches of [start, end] where packets are less than ACTIVE_GAP apart."""
    pts = sorted(t for t in times if start <= t <= end)
    spans: list[tuple[float, float]] = []
    for t in pts:
        if spans and t - spans[-1][1] < ACTIVE_GAP:
            spans[-1] = (spans[-1][0], t)
        else:
            spans.append((t, t))
    # A lone packet still shows as a sliver of activity.
    return [(a, max(b, a + 0.3)) for a, b in spans]


class _Lanes:
    """Rows of the chart, top to bottom; y of row i is -i so the first row sits on top."""

    def __init__(self) -> None:
        self.labels: list[str] = []

    def add(self, label: str) -> float:
        self.labels.append(label)
        return -float(len(self.labels) - 1)


def render_timeline(cell_dir: Path, cell: CellResult, out: Path) -> Path:
    """Draw the cell's timeline from the evidence in `cell_dir` into the SVG file `out`; returns `out`."""
    return draw_timeline(read_evidence(cell_dir), cell, out)


@dataclass
class _Layout:
    """The chart's rows: each TCP connection with its LB flow right under it, then LB flows with no
    captured connection, then harness, watcher, rounds."""

    lanes: _Lanes
    rows: list[tuple[float, ConnFacts | LbFlow]]
    #: The "TCP" row's y when there is no captured connection.
    no_capture: float | None
    harness: float
    watcher: float
    rounds: float


def _layout(conns: Sequence[ConnFacts], lb_flows: Sequence[LbFlow]) -> _Layout:
    lanes = _Lanes()
    flows_by_client = {f.client: f for f in lb_flows}
    rows: list[tuple[float, ConnFacts | LbFlow]] = []
    for c in conns:
        rows.append((lanes.add(f"TCP {_port(c.client)}"), c))
        f = flows_by_client.pop(c.client, None)
        if f is not None:
            rows.append((lanes.add(f"LB {_port(f.client)}"), f))
    no_capture = None if conns else lanes.add("TCP")
    for f in flows_by_client.values():
        rows.append((lanes.add(f"LB {_port(f.client)}"), f))
    return _Layout(lanes, rows, no_capture, harness=lanes.add("harness"), watcher=lanes.add("watcher"),
                   rounds=lanes.add("rounds"))


def _axes(lanes: _Lanes, span: float, origin: float) -> tuple[Figure, Any, float]:
    """A figure sized for the rows, its axes, and its height in inches."""
    n = len(lanes.labels)
    # Fixed margins in inches, so a cell with many connections grows taller instead of squeezing.
    top, lane_h, bottom = 0.8, 0.55, 1.15
    height = top + lane_h * n + bottom
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, height))
    # The Agg canvas, attached to this figure only: pyplot's global backend (and its state shared
    # between threads) is never touched, and no display is needed.
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.1, bottom / height, 0.88, lane_h * n / height))
    ax.set_ylim(-n + 0.4, 0.6)
    ax.set_xlim(-0.02 * span, span * 1.02)
    ax.set_yticks([-float(i) for i in range(n)], lanes.labels, fontsize=9)
    ax.set_xlabel(f"seconds since the cell started ({_utc(origin)})", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", color="#eeeeee", linewidth=0.6)
    ax.set_axisbelow(True)
    for i in range(n - 1):
        ax.axhline(-i - 0.5, color="#e0e0e0", linewidth=0.6)
    return fig, ax, height


def _shade_idle(ax: Any, ev: Evidence, layout: _Layout, timeout: float, x: Callable[[float], float]) -> None:
    """Idle gaps past the LB's timeout, shaded across every lane, labelled on the connection's row."""
    assert ev.pcap is not None
    n = len(layout.lanes.labels)
    for y, obj in layout.rows:
        if not isinstance(obj, ConnFacts):
            continue
        for a, b in obj.idle_gaps(timeout, until=ev.pcap.last_ts):
            ax.axvspan(x(a), x(b), color=C_IDLE_SHADE, alpha=0.18, linewidth=0)
            ax.plot([x(a + timeout)] * 2, [-n + 0.45, 0.55], color=C_WARN, linestyle=":", linewidth=1)
            _note(ax, x(a), y + 0.3, f"idle {fmt_secs(b - a)} ≥ {fmt_secs(timeout)} timeout",
                  fontsize=7.5, color="#8a5a00", va="center")


def _legend(fig: Figure) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Line2D([], [], color=C_POD, marker="|", linestyle="", markersize=9,
               label="data from pod (above) / server (below)"),
        Line2D([], [], color=C_POD, marker="o", linestyle="", markersize=4, label="small record (≤100 B)"),
        Line2D([], [], color=C_WARN, marker="D", linestyle="", markersize=5, label="TCP keepalive probe"),
        Line2D([], [], color=C_BAD, marker="X", linestyle="", markersize=7, label="RST"),
        Line2D([], [], color="black", marker="s", linestyle="", markersize=5, label="FIN"),
        Patch(color=C_LB_ACTIVE, label="LB: flow active"),
        Patch(color=C_LB_IDLE, label="LB: flow idle"),
        Patch(facecolor=C_LB_GONE, hatch="//", edgecolor="#9a9a9a", label="LB: flow forgotten"),
        Line2D([], [], color=C_MUTED, marker="x", linestyle="", markersize=6, label="LB dropped a packet"),
        Patch(color=C_IDLE_SHADE, alpha=0.35, label="idle ≥ LB timeout"),
        Line2D([], [], color=C_POD, marker="v", linestyle="", markersize=7, label="harness wrote an update"),
        Line2D([], [], color=C_BAD, marker="P", linestyle="", markersize=7, label="watcher error / harness FAILURE"),
        Line2D([], [], color=C_POD, marker=">", linestyle="", markersize=7, label="connection / watch opened"),
        Line2D([], [], color=C_WARN, marker="^", linestyle="", markersize=7, label="watcher reconnect"),
        Line2D([], [], color=C_OK, marker="o", linestyle="", markersize=6, label="event seen / round seen in time"),
        Line2D([], [], color=C_BAD, linewidth=4, label="round missed (update → deadline)"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=7.5, frameon=False,
               bbox_to_anchor=(0.5, 0.0))


def _save_svg(fig: Figure, out: Path) -> Path:
    # Written beside and renamed, so a page never links a half-written image; the hash salt and
    # the missing date keep the same evidence giving the same bytes.
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": SVG_HASHSALT, "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return write_atomic(out, buf.getvalue())


def draw_timeline(ev: Evidence, cell: CellResult, out: Path) -> Path:
    """render_timeline for evidence already read (the HTML page reads it once for both uses)."""
    conns = list(ev.pcap.connections) if ev.pcap is not None else []
    times = list(ev.times()) + [t for r in cell.rounds for t in (r.update_at, r.deadline)]
    origin = cell.started if cell.started is not None else min(times, default=0.0)
    end = max([*times, cell.finished or origin], default=origin)

    def x(t: float) -> float:
        return t - origin

    layout = _layout(conns, ev.lb_flows)
    fig, ax, height = _axes(layout.lanes, max(x(end), 1.0), origin)
    p = cell.profile
    timeout = p.idle_timeout if p is not None and p.acts else None
    fig.text(0.01, 1 - 0.12 / height, f"{cell.cell_id}: {cell.verdict.value}", fontsize=11, fontweight="bold",
             va="top")
    sub = p.describe() if p is not None else f"the provider LB of {cell.cluster} (not emulated)"
    fig.text(0.01, 1 - 0.42 / height, sub, fontsize=8.5, color="#444444", va="top")
    if timeout is not None and ev.pcap is not None:
        _shade_idle(ax, ev, layout, timeout, x)
    for y, obj in layout.rows:
        if isinstance(obj, ConnFacts):
            _draw_conn(ax, obj, y, x)
        else:
            _draw_lb_flow(ax, obj, y, x, end, conns)
    if layout.no_capture is not None:
        ax.text(0, layout.no_capture, f"  no capture of the pod's connections ({ev.pcap_problem or 'empty'})",
                fontsize=8, color=C_MUTED, va="center")
    _draw_harness(ax, ev.harness, layout.harness, x)
    _draw_watcher(ax, ev.watcher, layout.watcher, x)
    _draw_rounds(ax, cell, layout.rounds, x)
    _legend(fig)
    return _save_svg(fig, out)


def _note(ax: Any, at: float, y: float, text: str, **kw: Any) -> None:
    """A label just right of `at`, or just left of it when it would run off the right edge."""
    lo, hi = ax.get_xlim()
    pad = (hi - lo) * 0.004
    # Text width estimated from its length (about 0.55 em a character) against the axes' width in
    # points: exact enough to keep labels inside the frame without asking a renderer.
    width_pt = ax.get_position().width * ax.figure.get_figwidth() * 72
    est = len(text) * 0.55 * float(kw.get("fontsize", 8)) / width_pt * (hi - lo)
    right = at + pad + est > hi
    ax.text(at - pad if right else at + pad, y, text, ha="right" if right else "left", **kw)


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _draw_conn(ax: Any, c: ConnFacts, y: float, x: Any) -> None:
    act = c.activity()
    if not act:
        return
    start = c.opened_at if c.opened_at is not None else act[0]
    ax.plot([x(start), x(act[-1])], [y, y], color="#b0b0b0", linewidth=1.2, solid_capstyle="butt")
    if c.opened_at is not None:
        ax.plot([x(c.opened_at)], [y], marker=">", color=C_POD, markersize=7, linestyle="")
    small_c = {t for t, _ in c.small_records_client}
    small_s = {t for t, _ in c.small_records_server}
    big_c = [x(t) for t in c.data_client if t not in small_c]
    big_s = [x(t) for t in c.data_server if t not in small_s]
    ax.plot(big_c, [y + 0.17] * len(big_c), marker="|", color=C_POD, markersize=9, linestyle="")
    ax.plot(big_s, [y - 0.17] * len(big_s), marker="|", color=C_SERVER, markersize=9, linestyle="")
    ax.plot([x(t) for t in small_c], [y + 0.17] * len(small_c), marker="o", color=C_POD, markersize=3.5,
            linestyle="")
    ax.plot([x(t) for t in small_s], [y - 0.17] * len(small_s), marker="o", color=C_SERVER, markersize=3.5,
            linestyle="")
    ax.plot([x(t) for t in c.keepalive_client], [y + 0.17] * len(c.keepalive_client), marker="D",
            color=C_WARN, markersize=5, linestyle="")
    ax.plot([x(t) for t in c.keepalive_server], [y - 0.17] * len(c.keepalive_server), marker="D",
            color=C_WARN, markersize=5, linestyle="")
    for t, who in c.rsts:
        dy = 0.17 if who == "client" else -0.17
        ax.plot([x(t)], [y + dy], marker="X", color=C_BAD, markersize=8, linestyle="")
    if c.close_kind and c.close_kind.startswith("fin") and c.closed_at is not None:
        dy = 0.17 if c.close_kind == "fin-client" else -0.17
        ax.plot([x(c.closed_at)], [y + dy], marker="s", color="black", markersize=5, linestyle="")
    _note(ax, x(start), y - 0.38, f"{c.client} → {c.server}", fontsize=6.5, color="#666666", va="center")


def _draw_lb_flow(ax: Any, f: LbFlow, y: float, x: Any, end: float, conns: Sequence[ConnFacts]) -> None:
    opened = f.opened_at
    if opened is None:
        # The log began after the flow did (agent restarted): draw only what it recorded.
        opened = min([t for t in (f.expired_at, f.closed_at) if t is not None], default=None)
        if opened is None:
            return
    tracked_until = f.expired_at if f.expired_at is not None else (f.closed_at or end)
    h = 0.34
    ax.broken_barh([(x(opened), tracked_until - opened)], (y - h / 2, h), color=C_LB_IDLE)
    # Active stretches from the capture of the same flow: before expiry every packet the LB
    # forwarded crossed the pod's leg too, so the pod's capture is the LB's activity.
    conn = next((c for c in conns if c.client == f.client), None)
    spans = _active_spans(conn.activity(), opened, tracked_until) if conn is not None else []
    if spans:
        ax.broken_barh([(x(a), b - a) for a, b in spans], (y - h / 2, h), color=C_LB_ACTIVE)
    if f.expired_at is not None:
        gone_until = max(end, f.expired_at)
        ax.broken_barh([(x(f.expired_at), gone_until - f.expired_at)], (y - h / 2, h), facecolor=C_LB_GONE,
                       hatch="//", edgecolor="#9a9a9a", linewidth=0)
        ax.plot([x(f.expired_at)] * 2, [y - 0.3, y + 0.3], color=C_BAD, linewidth=1.5)
        idle = f" after {fmt_secs(f.expired_at - f.last_activity)} idle" if f.last_activity is not None else ""
        sent = sorted({"pod" if to == "client" else to for _, to in f.rst_sent})
        rst = f", sent RST to {' and '.join(sent)}" if sent else ", sent no RST"
        _note(ax, x(f.expired_at), y + 0.3, f"expired{idle}: LB forgot the flow{rst}", fontsize=7.5,
                color=C_BAD, va="center")
    # RSTs the LB sent itself: toward the pod above the bar, toward the server below, as on TCP rows.
    for t, to in f.rst_sent:
        ax.plot([x(t)], [y + (0.17 if to == "client" else -0.17)], marker="X", color=C_BAD, markersize=8,
                linestyle="")
    dropped = [(t, side) for t, side, action in f.after_expiry if action != "reset"]
    resets = [(t, side) for t, side, action in f.after_expiry if action == "reset"]
    for side, dy in (("client", 0.09), ("server", -0.09)):
        ts = [x(t) for t, s in dropped if s == side]
        ax.plot(ts, [y + dy] * len(ts), marker="x", color="#555555", markersize=6, linestyle="")
    if dropped:
        sides = sorted({"from pod" if s == "client" else "from server" for _, s in dropped})
        _note(ax, x(dropped[0][0]), y - 0.33, f"{len(dropped)} dropped ({', '.join(sides)})", fontsize=6.5,
                color="#555555", va="center")
    for t, side in resets:
        ax.plot([x(t)], [y], marker="X", color=C_BAD, markersize=8, linestyle="")
        _note(ax, x(t), y - 0.3, f"RST → {'pod' if side == 'client' else 'server'} (late packet)",
                fontsize=6.5, color=C_BAD, va="center")
    if f.closed_at is not None:
        ax.plot([x(f.closed_at)], [y], marker="|", color="black", markersize=12, linestyle="")


def _draw_harness(ax: Any, lines: Sequence[HarnessLine], y: float, x: Any) -> None:
    for h in lines:
        k = h.kind
        if k == "update":
            ax.plot([x(h.ts)], [y], marker="v", color=C_POD, markersize=8, linestyle="")
            _note(ax, x(h.ts), y + 0.25, f"set {h.value}", fontsize=7, color=C_POD, va="center")
        elif k == "failure":
            ax.plot([x(h.ts)], [y], marker="P", color=C_BAD, markersize=8, linestyle="")
            _note(ax, x(h.ts), y - 0.25, "FAILURE", fontsize=7, color=C_BAD, va="center")
        elif k == "seen":
            ax.plot([x(h.ts)], [y], marker=".", color=C_OK, markersize=5, linestyle="")
        else:
            ax.plot([x(h.ts)], [y], marker=".", color=C_MUTED, markersize=4, linestyle="")


def _draw_watcher(ax: Any, lines: Sequence[dict[str, Any]], y: float, x: Any) -> None:
    seen = [ln for ln in lines if ln.get("event") == "event-seen"]
    label_values = len(seen) <= 24  # beyond that the labels would overlap into a smear
    for ln in lines:
        t, kind = x(float(ln["ts"])), ln.get("event")
        if kind == "event-seen":
            ax.plot([t], [y], marker="o", color=C_OK, markersize=6, linestyle="")
            if label_values:
                _note(ax, t, y + 0.25, str(ln.get("value")), fontsize=7, color=C_OK, va="center")
        elif kind == "watch-opened":
            ax.plot([t], [y], marker=">", color=C_POD, markersize=7, linestyle="")
        elif kind == "error":
            ax.plot([t], [y], marker="P", color=C_BAD, markersize=8, linestyle="")
            _note(ax, t, y - 0.25, "error", fontsize=7, color=C_BAD, va="center")
        elif kind == "reconnect":
            ax.plot([t], [y], marker="^", color=C_WARN, markersize=7, linestyle="")
        elif kind == "request-sent":
            ax.plot([t], [y], marker="|", color=C_POD, markersize=10, linestyle="")
            _note(ax, t, y + 0.25, f"request {ln.get('request', '')}".strip(), fontsize=7, color=C_POD, va="center")
        elif kind == "request-done":
            ok = ln.get("ok") is True
            ax.plot([t], [y], marker="o" if ok else "X", color=C_OK if ok else C_BAD, markersize=6, linestyle="")
        elif kind == "started":
            # No label: it sits right before watch-opened/event-seen and their labels matter more.
            ax.plot([t], [y], marker="s", color=C_MUTED, markersize=5, linestyle="")


def _draw_rounds(ax: Any, cell: CellResult, y: float, x: Any) -> None:
    for r in cell.rounds:
        color = C_OK if r.ok else C_BAD
        ax.plot([x(r.update_at), x(r.deadline)], [y, y], color=color, linewidth=5 if not r.ok else 3,
                solid_capstyle="butt")
        if r.seen_at is not None:
            ax.plot([x(r.seen_at)], [y], marker="o", color=color, markersize=6, linestyle="")
        label = f"r{r.index} seen" if r.ok else f"r{r.index} MISSED"
        _note(ax, x(r.update_at), y - 0.3, label, fontsize=7.5, color=color, va="center",
                fontweight="bold" if not r.ok else "normal")
