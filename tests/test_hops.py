"""Chains of hops on the real kernel datapath (runner/embedded/chain.py, hop.py), with plain TCP sockets.

No kube-apiserver: an echo server (tests/hopserver.py) sits in the api namespace on the timer
address, each chain's last hop DNATs its VIP's timer ports to it, and a client (tests/hopclient.py)
in a pod namespace talks through the chain. Each test checks what each end got (data, an RST, or
nothing) and when, against its hop's timer: the time is read from the hop agent's record of the
flow's last packet, so a miss of more than TOLERANCE is a failure, not noise.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from runner.config.paths import Hop, NetPath
from runner.embedded.chain import ChainLb
from runner.evidence.lb_events import chain_events
from runner.host.commands import CommandLog, in_netns
from runner.host.netns import Block, Topology, list_project_netns, new_run_id
from runner.host.procs import Child, wait_until
from tests.conftest import needs_root_tools

pytestmark = [needs_root_tools("ip", "nft", "conntrack", "tcpdump", "chrt"), pytest.mark.slow]

T = 3
TOLERANCE = 0.005
PORT = 8600
SERVER = Path(__file__).with_name("hopserver.py")
CLIENT = Path(__file__).with_name("hopclient.py")
ESTABLISHED = 1


@dataclass
class BareCluster:
    """What a chain needs of a cluster, without etcd or kube-apiserver: the run's topology, block,
    log, work dir and api namespace (runner/embedded/cluster.EmbeddedCluster has the same names)."""

    run_id: str
    topology: Topology
    log: CommandLog
    block: Block
    api_ns: str
    workdir: Path
    pki: None = None


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    ev = tmp_path_factory.mktemp("hops")
    run_id = new_run_id()
    log = CommandLog(ev / "commands.log")
    topo = Topology(run_id, log)
    topo.claim()
    server: Child | None = None
    try:
        block = topo.allocate()
        api_ns = topo.add_ns("api")
        topo.run_in(api_ns, ["ip", "addr", "add", f"{block.timer}/32", "dev", "lo"])
        server = Child("hop echo server", in_netns(api_ns, [sys.executable, SERVER, block.timer, PORT]),
                       stdout=ev / "server.jsonl", stderr=ev / "server.stderr", log=log)
        wait_until(lambda: "listening" in (ev / "server.jsonl").read_text(), server, 10, "listening")
        yield BareCluster(run_id, topo, log, block, api_ns, ev), ev
    finally:
        if server is not None:
            server.stop(2)
        problems = topo.close()
    assert not problems, problems
    assert not [n for n in list_project_netns() if run_id in n]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert run_id not in tables


_slots = iter(range(13))


#: A TCP flow of its own through the chain, one echo every millisecond, from a pod of its own. Why:
#: on this VM a code path idle for a second runs its first packet 5 to 20 ms slow (caches lost to
#: the host's other tenants: a loopback sendto after 3 s idle took 9 ms, after 10 ms idle 0.2 ms),
#: which a two-flow test would measure instead of the hop. A matrix run keeps every LB busy; this
#: flow keeps the hop's forwarding, its agent and both TCP stacks as warm. It is busy, so no hop
#: ever forgets it, and every check reads the probed flows by their own ports.
WARM = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
end = time.time() + float(sys.argv[3])
while time.time() < end:
    s.sendall(b"ping\\n")
    s.recv(64)
    time.sleep(0.001)
"""


@pytest.fixture
def chain(net):
    cluster, ev = net
    made: list[ChainLb] = []
    warmers: list[subprocess.Popen] = []

    def make(*hops: Hop) -> ChainLb:
        slot = next(_slots)
        lb = ChainLb(cluster, slot, NetPath(f"test-{slot}", hops), ev / f"slot{slot}")  # type: ignore[arg-type]
        made.append(lb.start())
        warm = lb.add_pod()
        warmers.append(subprocess.Popen(in_netns(warm.netns, [sys.executable, "-c", WARM, lb.vip, str(PORT), "60"])))
        return lb

    yield make
    for w in warmers:
        w.kill()
        w.wait()
    for lb in made:
        assert lb.problems() == []
        lb.close()


def nat(mode: str, order_ms: int = 0, name: str = "nat") -> Hop:
    return Hop(name=name, kind="nat", idle_timeout=T, mode=mode, order_ms=order_ms)  # type: ignore[arg-type]


def lb(mode: str, order_ms: int = 0) -> Hop:
    return Hop(name="lb", kind="lb", idle_timeout=T, mode=mode, order_ms=order_ms)  # type: ignore[arg-type]


def run(lb_: ChainLb, steps: list, flows: int = 1) -> dict:
    pod = lb_.add_pod()
    plan = {"addr": lb_.vip, "port": PORT, "flows": flows, "steps": steps}
    # A real-time priority for the client alone, so its probes leave when they should on a busy machine.
    proc = subprocess.run(in_netns(pod.netns, ["chrt", "-f", "10", sys.executable, str(CLIENT), json.dumps(plan)]),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    time.sleep(0.3)  # the agents' and the server's last lines
    return json.loads(proc.stdout)


def events(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def server_events(net, port: int) -> list[dict]:
    _, ev = net
    return [e for e in events(ev / "server.jsonl") if e["port"] == port]


def expiry(path: Path, port: int) -> dict:
    """The hop's `expired` record of the client port's flow (its last packet and deadline)."""
    (rec,) = [e for e in events(path) if e["event"] == "expired" and e["flow"].split(">")[0].endswith(f":{port}")]
    return rec


def step(res: dict, flow: int, kind: str, nth: int = 0) -> dict:
    return [s for s in res["steps"] if s["flow"] == flow and s["step"] == kind][nth]


#: Where the probes are aimed, in ms from each flow's timer, around the kernel's expiry (within one
#: tick, 4 ms, before the timer): some well before and after it, some inside ±TOLERANCE. A probe
#: leaves late by up to a few ms on this VM, never early; where it lands is read at the hop.
AIMS_MS = (-15.0, -11.0, -8.0, -5.5, -3.0, 1.0, 5.0, 9.0)
SERVER_FLOW = len(AIMS_MS)


def pod_leg(lb_: ChainLb) -> Path:
    """The capture of the pods' side of the chain's first hop (where the probed timer runs)."""
    return lb_.upstream[0].captures[0].pcap if lb_.upstream else lb_.captures[0].pcap


def flow_packets(pcap: Path, port: int) -> list:
    """The packets of one client port in a capture, filtered by tcpdump (the warm flow makes the
    capture too long for scapy to read whole for every probe)."""
    from scapy.utils import rdpcap

    part = pcap.with_name(f"{pcap.stem}-{port}.pcap")
    subprocess.run(["tcpdump", "-r", str(pcap), "-w", str(part), f"tcp port {port}"], check=True,
                   capture_output=True, timeout=60)
    return list(rdpcap(str(part)))


def offset_at_hop(pcap: Path, port: int, payload: bytes) -> float:
    """When the first packet of the client port's flow carrying `payload` reached the hop, from the
    flow's previous packet there (either way), minus the timer: both times the kernel's, at the hop."""
    from scapy.layers.inet import TCP

    last = None
    for pkt in flow_packets(pcap, port):
        tcp = pkt.getlayer(TCP)
        if tcp is None or port not in (tcp.sport, tcp.dport):
            continue
        if tcp.sport == port and payload in bytes(tcp.payload):
            assert last is not None, f"no packet of port {port} before its probe in {pcap.name}"
            return float(pkt.time) - last - T
        last = float(pkt.time)
    raise AssertionError(f"no probe {payload!r} of port {port} in {pcap.name}")


def probe_flows(net, lb_: ChainLb) -> tuple[dict, dict, list[tuple[float, bool]]]:
    """One flow per aim in AIMS_MS sends a line at its timer plus the aim (all sent before any
    answer is awaited, so one probe's wait never delays the next); one more flow has its server
    speak half a second after the timer. Returns the client's result, the server's events by flow,
    and each probe's (offset from its flow's timer at the hop in seconds, whether it was answered)."""
    n = SERVER_FLOW + 1
    steps: list[list] = [[i, "echo", f"f{i}"] for i in range(n)]
    steps += [[SERVER_FLOW, "late", T + 0.5]]
    for i, aim in enumerate(AIMS_MS):
        steps += [[i, "at", T + aim / 1000], [i, "send", f"echo probe{i}"]]
    steps += [[i, "recv", 0.6] for i in range(n)]
    res = run(lb_, steps, flows=n)
    probes = []
    for i in range(len(AIMS_MS)):
        recv = step(res, i, "recv")
        answered = bool(recv["ok"]) and recv["data"] == f"probe{i}\n"
        probes.append((offset_at_hop(pod_leg(lb_), res["flows"][i]["port"], f"probe{i}".encode()), answered))
    servers = {i: [e["event"] for e in server_events(net, f["port"])] for i, f in enumerate(res["flows"])}
    return res, servers, probes


def assert_expiry_within_tolerance(probes: list[tuple[float, bool]]) -> None:
    """Nothing the probes saw contradicts an expiry within TOLERANCE of the timer: every answered
    probe reached the hop before timer + TOLERANCE, every unanswered one after timer - TOLERANCE;
    and the probes test both sides near it (an answered one within 2 x TOLERANCE before the timer,
    an unanswered one within 2 x TOLERANCE after it). Each flow has its own tick phase (the kernel
    forgets it up to 4 ms early), so probes of different flows need not sort by offset."""
    text = ", ".join(f"{o * 1000:+.2f} ms {'answered' if ok else 'unanswered'}" for o, ok in probes)
    late_answer = [o for o, ok in probes if ok and o > TOLERANCE]
    early_miss = [o for o, ok in probes if not ok and o < -TOLERANCE]
    assert not late_answer and not early_miss, text
    assert any(ok and o >= -2 * TOLERANCE for o, ok in probes), f"no answered probe near the timer: {text}"
    assert any(not ok and o <= 2 * TOLERANCE for o, ok in probes), f"no unanswered probe near the timer: {text}"
    print(f"probes at the hop: {text}")


def where_(chain, mode: str, where: str) -> tuple[ChainLb, Path]:
    """A chain whose `where` hop (a nat hop before a plain LB, or a one-hop chain's LB) has `mode`."""
    lb_ = chain(nat(mode), lb("none")) if where == "nat" else chain(lb(mode))
    return lb_, (lb_.upstream[0].events_path if where == "nat" else lb_.events_path)


def after_expiry(hop_events: Path, port: int) -> set[tuple[str, str]]:
    return {(e["side"], e["action"]) for e in events(hop_events)
            if e["event"] == "after-expiry" and e["flow"].split(">")[0].endswith(f":{port}")}


def hop_saw(hop_events: Path, res: dict, probes: list[tuple[float, bool]]) -> set[tuple[str, str]]:
    """What the hop's log says befell the unanswered probes. The agent stamps a packet when it reads
    it, a millisecond or more after the kernel saw it, so a probe just past the kernel's expiry may
    still count as activity in its log: the probes together must show the behaviour."""
    return set().union(*(after_expiry(hop_events, res["flows"][i]["port"])
                         for i, (_, ok) in enumerate(probes) if not ok))


def first_missed(probes: list[tuple[float, bool]]) -> int:
    return next(i for i, (_, ok) in enumerate(probes) if not ok)


@pytest.mark.parametrize("where", ["nat", "lb"])
def test_silent_drop_tells_nobody(net, chain, where: str) -> None:
    lb_, hop_ev = where_(chain, "silent-drop", where)
    res, server, probes = probe_flows(net, lb_)
    assert_expiry_within_tolerance(probes)
    late = first_missed(probes)
    assert step(res, late, "recv")["error"] == "timeout", res  # no answer, no RST
    assert res["flows"][late]["tcp_state"] == ESTABLISHED
    assert server[late] == ["accepted", "data"]  # the late line never arrived
    assert step(res, SERVER_FLOW, "recv")["error"] == "timeout", res  # the server's late data neither
    assert "sent" in server[SERVER_FLOW] and "reset" not in server[SERVER_FLOW]
    assert hop_saw(hop_ev, res, probes) == {("client", "dropped")}
    assert ("server", "dropped") in after_expiry(hop_ev, res["flows"][SERVER_FLOW]["port"])


@pytest.mark.parametrize("where", ["nat", "lb"])
def test_rst_on_next_packet_resets_the_sender_only(net, chain, where: str) -> None:
    lb_, hop_ev = where_(chain, "rst-on-next-packet", where)
    res, server, probes = probe_flows(net, lb_)
    assert_expiry_within_tolerance(probes)
    late = first_missed(probes)
    assert step(res, late, "recv")["error"] == "ConnectionResetError", res
    assert hop_saw(hop_ev, res, probes) == {("client", "reset")}
    assert "reset" not in server[late]
    assert step(res, SERVER_FLOW, "recv")["error"] == "timeout", res  # the server spoke: the client is not told
    assert res["flows"][SERVER_FLOW]["tcp_state"] == ESTABLISHED
    assert "reset" in server[SERVER_FLOW]


@pytest.mark.parametrize("where", ["nat", "lb"])
def test_rst_inside_only_resets_a_client_sender_only(net, chain, where: str) -> None:
    """An AWS NAT gateway resets the hosts behind it that speak; a server's late data vanishes."""
    lb_, hop_ev = where_(chain, "rst-inside-only", where)
    res, server, probes = probe_flows(net, lb_)
    assert_expiry_within_tolerance(probes)
    late = first_missed(probes)
    assert step(res, late, "recv")["error"] == "ConnectionResetError", res
    assert "reset" not in server[late]
    assert step(res, SERVER_FLOW, "recv")["error"] == "timeout", res
    assert res["flows"][SERVER_FLOW]["tcp_state"] == ESTABLISHED
    assert "sent" in server[SERVER_FLOW] and "reset" not in server[SERVER_FLOW]
    assert hop_saw(hop_ev, res, probes) == {("client", "reset")}
    # (and the client's FIN when it exits draws the hop's RST: it is a client-side sender)
    assert ("server", "dropped") in after_expiry(hop_ev, res["flows"][SERVER_FLOW]["port"])


def rst_at(pcap: Path, port: int, toward: str) -> float:
    """When the first RST of the client port's flow toward `toward` (client or server) crossed a capture."""
    from scapy.layers.inet import TCP

    for pkt in flow_packets(pcap, port):
        tcp = pkt.getlayer(TCP)
        if tcp is not None and tcp.flags & 0x04 and (tcp.dport if toward == "client" else tcp.sport) == port:
            return float(pkt.time)
    raise AssertionError(f"no RST toward the {toward} of port {port} in {pcap.name}")


def _cut_times(net, res: dict, lb_: ChainLb, hop_events: Path, flow: int = 0) -> tuple[float, float]:
    """(client's RST, server's RST) minus the hop's deadline (last packet + timer + order_ms), in
    seconds, timed where each end gets it: the pods' bridge and the link to the api namespace. The
    sockets say they got it (the client's recv error, the server's `reset`); the captures say when,
    without a busy machine's scheduling of two Python processes in the number."""
    port = res["flows"][flow]["port"]
    assert "reset" in [e["event"] for e in server_events(net, port)]
    deadline = expiry(hop_events, port)["ts"]  # last packet + timer (+ order_ms): the agent's deadline
    first = lb_.upstream[0].captures[0].pcap if lb_.upstream else lb_.captures[0].pcap
    return rst_at(first, port, "client") - deadline, rst_at(lb_.captures[1].pcap, port, "server") - deadline


@pytest.mark.parametrize("where", ["nat", "lb"])
def test_rst_both_ways_at_the_timer(net, chain, where: str) -> None:
    lb_ = chain(nat("rst-both-ways"), lb("none")) if where == "nat" else chain(lb("rst-both-ways"))
    hop_ev = lb_.upstream[0].events_path if where == "nat" else lb_.events_path
    res = run(lb_, [[0, "echo", "a"], [0, "recv", T + 2]])
    assert step(res, 0, "recv")["error"] == "ConnectionResetError", res
    client, server = _cut_times(net, res, lb_, hop_ev)
    print(f"rst-both-ways at a {where} hop: client {client * 1000:+.2f} ms, server {server * 1000:+.2f} ms")
    assert abs(client) <= TOLERANCE and abs(server) <= TOLERANCE, (client, server)
    assert {e["to"] for e in events(hop_ev) if e["event"] == "rst-sent"} == {"client", "server"}


def test_none_forgets_nothing(net, chain) -> None:
    lb_ = chain(nat("none"), lb("none"))
    res = run(lb_, [[0, "echo", "a"], [0, "at", T + 1], [0, "echo", "still"]])
    assert step(res, 0, "echo", 1)["data"] == "still\n"
    assert not [e for e in events(lb_.upstream[0].events_path) if e["event"] == "expired"]


ORDER_MS = 50


def test_race_nat_gateway_forgets_first(net, chain) -> None:
    """Equal timers, the NAT gateway first: the LB's RST toward the client meets a forgotten flow at
    the NAT and is dropped; the server is reset; the client hears nothing until it speaks, and then
    the NAT gateway resets it."""
    lb_ = chain(nat("rst-inside-only", name="natgw"), lb("rst-both-ways", order_ms=ORDER_MS))
    res = run(lb_, [[0, "echo", "a"], [0, "recv", T + 1], [0, "send", "echo late"], [0, "recv", 1]])
    assert step(res, 0, "recv")["error"] == "timeout", res  # the LB's RST never reached the client
    assert step(res, 0, "recv", 1)["error"] == "ConnectionResetError", res  # the NAT gateway's, when it spoke
    port = res["flows"][0]["port"]
    nat_exp, lb_exp = expiry(lb_.upstream[0].events_path, port), expiry(lb_.events_path, port)
    assert nat_exp["ts"] < lb_exp["ts"]
    assert "reset" in [e["event"] for e in server_events(net, port)]  # the server got it
    # ... at the LB's (ordered) timer, timed where it reaches the server's link, not when the
    # server's thread woke to read it.
    srv = rst_at(lb_.captures[1].pcap, port, "server")
    assert abs(srv - lb_exp["ts"]) <= TOLERANCE, srv - lb_exp["ts"]
    assert ("server", "dropped") in after_expiry(lb_.upstream[0].events_path, port)  # the LB's RST, at the NAT
    # Each hop's own event log, each record naming its hop.
    assert {e.get("hop") for e in events(lb_.upstream[0].events_path)} == {"natgw"}
    assert {e.get("hop") for e in events(lb_.events_path)} == {"lb"}
    assert [h for h, _ in lb_.hop_logs()] == ["natgw", "lb"]
    # Read for the pod as a cell's verdict reads it: the NAT forgot first, the LB's RST never reached the pod.
    flow = [e for e in chain_events([(h, events(p)) for h, p in lb_.hop_logs()], lb_.pods[-1].addr)
            if e["event"] in ("expired", "expired-later", "rst-lost", "snat")]
    assert [(e["event"], e["hop"]) for e in flow] == [("snat", "natgw"), ("expired", "natgw"), ("expired-later", "lb"),
                                                     ("rst-lost", "lb")]


def test_race_lb_forgets_first(net, chain) -> None:
    """Equal timers, the LB first: both ends get its RST at the timer, through the NAT that still
    holds the flow; the NAT gateway never expires it (the RST closed it)."""
    lb_ = chain(nat("rst-inside-only", order_ms=ORDER_MS, name="natgw"), lb("rst-both-ways"))
    res = run(lb_, [[0, "echo", "a"], [0, "recv", T + 1]])
    assert step(res, 0, "recv")["error"] == "ConnectionResetError", res
    client, server = _cut_times(net, res, lb_, lb_.events_path)
    print(f"race, LB first: client {client * 1000:+.2f} ms, server {server * 1000:+.2f} ms")
    assert abs(client) <= TOLERANCE and abs(server) <= TOLERANCE, (client, server)
    port = res["flows"][0]["port"]
    assert not [e for e in events(lb_.upstream[0].events_path)
                if e["event"] == "expired" and e["flow"].endswith(f":{port}>{PORT}")]
