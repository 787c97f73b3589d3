"""A chain's hops' event logs read for one pod (runner/evidence/lb_events.chain_events): pure."""

from __future__ import annotations

from pathlib import Path

from runner.evidence.lb_events import chain_events, chain_lb_record

POD, NAT = "198.18.2.130", "198.18.2.17"


def _nat_log() -> list[dict]:
    # The NAT moved the pod's port 40000 to 40777 (another pod held it) and forgot the flow first.
    return [
        {"ts": 1.0, "event": "flow-opened", "flow": f"{POD}:40000>6443", "hop": "natgw"},
        {"ts": 1.0, "event": "snat", "flow": f"{POD}:40000>6443", "to": f"{NAT}:40777", "hop": "natgw"},
        {"ts": 1.0, "event": "flow-opened", "flow": "198.18.2.131:40000>6443", "hop": "natgw"},
        {"ts": 6.0, "event": "expired", "flow": f"{POD}:40000>6443", "last_activity": 1.0, "idle": 5.0,
         "hop": "natgw"},
        {"ts": 6.05, "event": "after-expiry", "flow": f"{POD}:40000>6443", "side": "server", "leg": "backend",
         "action": "dropped", "hop": "natgw"},
    ]


def _lb_log() -> list[dict]:
    return [
        {"ts": 1.0, "event": "flow-opened", "flow": f"{NAT}:40777>6443", "hop": "front"},
        {"ts": 1.0, "event": "flow-opened", "flow": f"{NAT}:40000>6443", "hop": "front"},  # the other pod's
        {"ts": 6.05, "event": "rst-sent", "flow": f"{NAT}:40777>6443", "to": "client", "seq": 1, "hop": "front"},
        {"ts": 6.05, "event": "rst-sent", "flow": f"{NAT}:40777>6443", "to": "server", "seq": 2, "hop": "front"},
        {"ts": 6.05, "event": "expired", "flow": f"{NAT}:40777>6443", "last_activity": 1.0, "idle": 5.0,
         "hop": "front"},
    ]


def test_flows_are_followed_past_the_nat_and_named_as_the_pods() -> None:
    events = chain_events([("natgw", _nat_log()), ("front", _lb_log())], POD)
    assert {e["flow"] for e in events} == {f"{POD}:40000>6443"}  # not the other pod's flow on 40000
    assert [(e["event"], e["hop"]) for e in events if e["event"].startswith("expired")] == \
        [("expired", "natgw"), ("expired-later", "front")]


def test_an_rst_toward_a_client_the_nat_forgot_is_lost_not_delivered() -> None:
    events = chain_events([("natgw", _nat_log()), ("front", _lb_log())], POD)
    sent = {(e["event"], e["to"]) for e in events if e["event"] in ("rst-sent", "rst-lost")}
    assert sent == {("rst-lost", "client"), ("rst-sent", "server")}


def test_the_record_names_the_first_hop_that_forgot(tmp_path: Path) -> None:
    import json

    logs = []
    for hop, events in (("natgw", _nat_log()), ("front", _lb_log())):
        path = tmp_path / f"{hop}.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in events))
        logs.append((hop, path))
    summary, flows = chain_lb_record(logs, POD, None, tmp_path / "cell-lb-events.jsonl")
    (flow,) = flows
    assert (flow.client, flow.hop, flow.expired_at, flow.idle) == (f"{POD}:40000", "natgw", 6.0, 5.0)
    assert flow.rst_to_client == 0  # the front's RST never reached the pod
    assert summary.rst_to_server == 1 and summary.expired == 1  # one connection, forgotten once
    lines = [json.loads(x) for x in (tmp_path / "cell-lb-events.jsonl").read_text().splitlines()]
    assert {x["hop"] for x in lines} == {"natgw", "front"}
