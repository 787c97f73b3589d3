"""The LB emulator's event log (runner/embedded/lbagent.py) read for one pod: counts and per-flow records.

Both backends read it the same way (`chain_lb_record`: every hop's log of a chain, or the one LB's):
the embedded one for its pod namespaces, the kubernetes one when the cluster's provider put an
emulated LB or chain in the pods' path (a `local` cluster) and hands it over as a `RecordingLb`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from runner.config.profiles import Profile
from runner.evidence.jsonl import read_timed
from runner.model import LbSummary


@dataclass(frozen=True)
class LbProblem:
    """One reason the LB can no longer vouch for its cells. A dead agent is its own kind: the
    verdict rules treat it apart (nothing the LB did after it died is on record)."""

    kind: Literal["agent", "front", "capture"]
    text: str


class RecordingLb(Protocol):
    """An emulated LB that keeps a record: its profile, its event log, and why it can no longer vouch."""

    profile: Profile
    events_path: Path

    def hop_logs(self) -> list[tuple[str, Path]]:
        """Each hop's event log by name, pod side first (one for a single LB, chain_lb_record reads them)."""
        ...

    def problems(self) -> list[LbProblem]: ...


@dataclass(frozen=True)
class LbFlow:
    """What the LB's event log says it did to one of the pod's flows (lb_flows), to hold against the
    capture's record of the same connection."""

    #: The pod's end, "ip:port": the `client` of the capture's connection.
    client: str
    #: When the LB forgot the flow, and the last packet it had seen before.
    expired_at: float | None = None
    last_activity: float | None = None
    #: RSTs the LB sent (or had the kernel send) to the pod on this flow.
    rst_to_client: int = 0
    #: The first packet the LB says it dropped after expiry, and how many it logged.
    first_drop_at: float | None = None
    drops: int = 0
    #: On a chain of hops (chain_lb_record): the hop that forgot the flow first, and its timer.
    hop: str | None = None
    idle: float | None = None


def summarize_lb_events(
    events: Sequence[Mapping[str, Any]], *, pod_ip: str | None = None, until: float | None = None
) -> LbSummary:
    """Count what the LB agent's event log (runner/embedded/lbagent.py) says it did to one pod's flows.

    `pod_ip` keeps only that pod's flows (flow names are `ip:port>vport`); `until` (the last round's
    deadline) drops what happened during teardown, which no round was exposed to. In
    rst-on-next-packet mode the kernel sends the RST, which the log records as an `after-expiry`
    packet with action `reset` from the side that gets it. The agent logs at most 20 after-expiry
    packets per flow and side, so those counts are capped there.
    """
    out = {"expired": 0, "rst_to_client": 0, "rst_to_server": 0, "dropped_after_expiry": 0}
    for ev in events:
        flow = ev.get("flow")
        if not isinstance(flow, str) or (pod_ip is not None and not flow.startswith(f"{pod_ip}:")):
            continue
        ts = ev.get("ts")
        if until is not None and isinstance(ts, int | float) and ts > until:
            continue
        kind = ev.get("event")
        if kind == "expired":
            out["expired"] += 1
        elif kind == "rst-sent" and ev.get("to") in ("client", "server"):
            out[f"rst_to_{ev['to']}"] += 1
        elif kind == "after-expiry":
            if ev.get("action") == "reset" and ev.get("side") in ("client", "server"):
                out[f"rst_to_{ev['side']}"] += 1
            elif ev.get("action") == "dropped":
                out["dropped_after_expiry"] += 1
    return LbSummary(**out)


def lb_flows(
    events: Sequence[Mapping[str, Any]], *, pod_ip: str | None = None, until: float | None = None
) -> list[LbFlow]:
    """The LB's record per flow (the same events and window as summarize_lb_events), for flows the LB
    acted on: expired, reset toward the pod, or dropped packets of."""
    flows: dict[str, dict[str, Any]] = {}
    for ev in events:
        flow = ev.get("flow")
        if not isinstance(flow, str) or (pod_ip is not None and not flow.startswith(f"{pod_ip}:")):
            continue
        ts = ev.get("ts")
        if not isinstance(ts, int | float) or isinstance(ts, bool) or (until is not None and ts > until):
            continue
        kind = ev.get("event")
        f = flows.setdefault(flow.split(">")[0], {})
        if kind == "expired":
            f.setdefault("expired_at", float(ts))
            if isinstance(ev.get("hop"), str) and isinstance(ev.get("idle"), int | float):
                f.setdefault("hop", ev["hop"])
                f.setdefault("idle", float(ev["idle"]))
            last = ev.get("last_activity")
            if isinstance(last, int | float) and not isinstance(last, bool):
                f.setdefault("last_activity", float(last))
        elif kind == "rst-sent" and ev.get("to") == "client":
            f["rst_to_client"] = f.get("rst_to_client", 0) + 1
        elif kind == "after-expiry":
            if ev.get("action") == "reset" and ev.get("side") == "client":
                f["rst_to_client"] = f.get("rst_to_client", 0) + 1
            elif ev.get("action") == "dropped":
                f.setdefault("first_drop_at", float(ts))
                f["drops"] = f.get("drops", 0) + 1
    return [LbFlow(client=k, **v) for k, v in flows.items() if v]


def read(path: Path) -> list[dict[str, Any]]:
    """The event log's lines (a half-written last one is skipped)."""
    return read_timed(path)


def pod_lb_record(events_path: Path, pod_ip: str | None, until: float | None, out: Path
                  ) -> tuple[LbSummary, list[LbFlow]]:
    """The LB's record of one pod's flows up to `until` (the last round's deadline), its events also
    written to `out` (the cell's lb-events.jsonl). No pod address: nothing is the pod's."""
    events = [e for e in read(events_path)
              if pod_ip is not None and str(e.get("flow", "")).startswith(pod_ip + ":")]
    out.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in events))
    # Already the pod's events: the summaries need not filter them again.
    return summarize_lb_events(events, until=until), lb_flows(events, until=until)


def chain_events(logs: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], pod_ip: str) -> list[dict[str, Any]]:
    """One pod's events across a chain's hops (runner/embedded/chain.py), pod side first, in time order.

    Past a nat hop the next hop knows a flow by the hop's address and port, which the nat hop's
    `snat` event records; every flow is renamed to the pod's own `ip:port>vport`, every record
    carries its hop's name. An RST a later hop sends toward the client after an earlier hop forgot
    the flow never reaches the pod (that hop drops it, its own log says so): it is kept as
    `rst-lost`, not as an RST the pod was told of. In time order, the first `expired` record of a
    flow is the first hop that forgot it; a later hop's is kept as `expired-later`.
    """
    merged: list[dict[str, Any]] = []
    alias: dict[str, str] = {}
    forgot: dict[str, float] = {}  # pod flow -> when a hop before the current one forgot it
    for index, (hop, events) in enumerate(logs):
        next_alias: dict[str, str] = {}
        mine = []
        for ev in events:
            flow = ev.get("flow")
            if not isinstance(flow, str):
                continue
            client, _, vport = flow.partition(">")
            own = client if index == 0 and client.startswith(pod_ip + ":") else alias.get(client)
            if own is None:
                continue
            rec = {**ev, "flow": f"{own}>{vport}", "hop": ev.get("hop", hop)}
            if ev.get("event") == "snat" and isinstance(ev.get("to"), str):
                next_alias[ev["to"]] = own
            ts = ev.get("ts")
            lost_at = forgot.get(rec["flow"])
            if ev.get("event") == "rst-sent" and ev.get("to") == "client" and lost_at is not None \
                    and isinstance(ts, int | float) and ts >= lost_at:
                rec["event"] = "rst-lost"
            mine.append(rec)
        for rec in mine:
            if rec.get("event") == "expired" and isinstance(rec.get("ts"), int | float):
                forgot[rec["flow"]] = min(forgot.get(rec["flow"], rec["ts"]), rec["ts"])
        merged += mine
        alias = next_alias
    merged.sort(key=lambda e: e["ts"] if isinstance(e.get("ts"), int | float) else 0.0)
    # A flow is forgotten once, by the first hop: a later hop's expiry is kept as `expired-later`,
    # so counts (LbSummary.expired) speak of the pod's connections, not of hops.
    seen: set[str] = set()
    for rec in merged:
        if rec.get("event") == "expired":
            if rec["flow"] in seen:
                rec["event"] = "expired-later"
            seen.add(rec["flow"])
    return merged


def chain_lb_record(logs: Sequence[tuple[str, Path]], pod_ip: str | None, until: float | None, out: Path
                    ) -> tuple[LbSummary, list[LbFlow]]:
    """pod_lb_record for a chain of hops: every hop's record of the pod's flows (chain_events), also
    written to `out` (each line names its hop); a single hop is pod_lb_record exactly."""
    if len(logs) == 1:
        return pod_lb_record(logs[0][1], pod_ip, until, out)
    events = [] if pod_ip is None else chain_events([(hop, read(path)) for hop, path in logs], pod_ip)
    out.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in events))
    return summarize_lb_events(events, until=until), lb_flows(events, until=until)
