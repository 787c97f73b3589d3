"""Pure logic of the LB agent: packet parsing, sequence tracking, the hand-built RST."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from runner.embedded.lbagent import SEQ_MOD, _advance, parse, rst_packet


def test_rst_packet_matches_scapys_build_byte_for_byte() -> None:
    for seq in (0, 1, 123456789, SEQ_MOD - 1):
        ours = rst_packet("198.18.2.8", "198.18.2.130", 6443, 40000, seq)
        ref = bytes(IP(src="198.18.2.8", dst="198.18.2.130", id=0, flags="DF", ttl=64)
                    / TCP(sport=6443, dport=40000, flags="R", seq=seq, ack=0, window=0))
        assert ours == ref


def test_parse_reads_seq_and_payload_length() -> None:
    frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                  / IP(src="198.18.2.130", dst="198.18.2.8") / TCP(sport=40000, dport=6443, flags="PA", seq=1000)
                  / (b"x" * 37))
    src, dst, sport, dport, seq, _flags, seq_len = parse(frame)
    assert (src, dst, sport, dport, seq, seq_len) == ("198.18.2.130", "198.18.2.8", 40000, 6443, 1000, 37)
    syn = bytes(Ether() / IP(src="198.18.2.130", dst="198.18.2.8") / TCP(flags="S", seq=5))
    assert parse(syn)[-1] == 1  # a SYN takes one sequence number


def test_advance_never_moves_backwards_and_wraps() -> None:
    assert _advance(None, 10, 5) == 15
    assert _advance(15, 5, 5) == 15  # a retransmission or keepalive probe does not move it back
    assert _advance(SEQ_MOD - 2, SEQ_MOD - 2, 4) == 2  # wraps around 2^32


def _agent(mode: str = "silent-drop", timeout: float = 5.0):
    import io
    import ipaddress

    from runner.embedded.lbagent import Agent

    a = Agent.__new__(Agent)  # no sockets: only the packet logic is under test
    a.mode, a.timeout, a.vip = mode, timeout, "198.18.2.8"
    a.pod_nets = [ipaddress.ip_network("198.18.2.128/25")]
    a.backends = {6443: ("198.18.1.16", 6443)}
    a.out, a.flows, a._pod_cache = io.StringIO(), {}, {}
    return a


def _frame(src: str, dst: str, sport: int, dport: int, flags: str, seq: int, ack: int = 0) -> bytes:
    return bytes(Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack))


def test_a_flow_closed_with_fin_from_both_sides_never_expires() -> None:
    a = _agent()
    pod, vip = "198.18.2.130", "198.18.2.8"
    a.on_packet("pod", _frame(pod, vip, 40000, 6443, "S", 100), 0.0)
    a.on_packet("pod", _frame(vip, pod, 6443, 40000, "SA", 500), 0.001)
    a.on_packet("pod", _frame(pod, vip, 40000, 6443, "FA", 101), 1.0)
    a.on_packet("pod", _frame(vip, pod, 6443, 40000, "FA", 501), 1.5)
    a.expire_due(100.0)
    events = [line for line in a.out.getvalue().splitlines() if '"expired"' in line]
    assert events == []


def test_an_idle_open_flow_expires_at_last_activity_plus_timeout() -> None:
    import json

    a = _agent()
    pod, vip = "198.18.2.130", "198.18.2.8"
    a.on_packet("pod", _frame(pod, vip, 40001, 6443, "S", 100), 10.0)
    a.on_packet("pod", _frame(vip, pod, 6443, 40001, "SA", 500), 10.5)
    assert a.next_deadline() == 15.5
    a.expire_due(15.6)
    (expired,) = [json.loads(x) for x in a.out.getvalue().splitlines() if '"expired"' in x]
    assert expired["ts"] == 15.5 and expired["idle"] == 5.0


def test_a_backend_inside_a_client_network_is_still_the_server() -> None:
    """A Service LB's backend is the node's address, which sits inside the node's pod CIDR (a client
    network when pods hairpin through the LB): its replies must count as the server's."""
    import ipaddress

    a = _agent("rst-both-ways", 45.0)
    a.vip = "198.18.3.8"
    a.pod_nets = [ipaddress.ip_network("198.18.3.128/25"), ipaddress.ip_network("198.18.16.0/24")]
    a.backends = {9001: ("198.18.16.1", 32119)}
    a.on_packet("pod", _frame("198.18.16.3", "198.18.3.8", 40000, 9001, "S", 100), 0.0)
    a.on_packet("backend", _frame("198.18.16.3", "198.18.16.1", 40000, 32119, "S", 100), 0.0)
    a.on_packet("backend", _frame("198.18.16.1", "198.18.16.3", 32119, 40000, "SA", 500), 0.1)
    flow = a.flows[("198.18.16.3", 40000)]
    assert (flow.client_next, flow.server_next) == (101, 501)


def test_a_nat_hop_tracks_its_flows_past_the_masquerade() -> None:
    """Behind `--snat` the backend leg shows the hop's address and the client's port: still the same flow."""
    a = _agent("rst-inside-only", 5.0)
    a.snat, a._snat_ports, a._early_syns, a.hop = "198.18.2.17", {}, {}, "natgw"
    a.backends = {6443: ("198.18.2.8", 6443)}
    pod, vip = "198.18.2.130", "198.18.2.8"
    a.on_packet("pod", _frame(pod, vip, 40002, 6443, "S", 100), 0.0)
    # The NAT moved the port (another pod held 40002): the SYN-ACK acknowledging the flow's initial
    # sequence number ties 40777 to it.
    a.on_packet("backend", _frame(vip, "198.18.2.17", 6443, 40777, "SA", 500, ack=101), 0.1)
    flow = a.flows[(pod, 40002)]
    assert (flow.client_next, flow.server_next, flow.last) == (101, 501, 0.1)
    a.expire_due(5.2)
    a.on_packet("backend", _frame(vip, "198.18.2.17", 6443, 40777, "PA", 501), 6.0)
    a.on_packet("pod", _frame(pod, vip, 40002, 6443, "PA", 101), 6.5)
    import json

    recs = [json.loads(x) for x in a.out.getvalue().splitlines()]
    assert {r["hop"] for r in recs} == {"natgw"}
    assert [r["to"] for r in recs if r["event"] == "snat"] == ["198.18.2.17:40777"]
    # An AWS NAT gateway: the server's late packet is dropped, the client's is answered with an RST.
    assert [(r["side"], r["action"]) for r in recs if r["event"] == "after-expiry"] == \
        [("server", "dropped"), ("client", "reset")]


def test_an_ordered_timer_moves_the_deadline_by_its_offset() -> None:
    a = _agent("silent-drop", 5.0)
    a.offset = 0.05
    pod, vip = "198.18.2.130", "198.18.2.8"
    a.on_packet("pod", _frame(pod, vip, 40003, 6443, "S", 100), 10.0)
    assert a.next_deadline() == 15.05


def test_a_nat_hop_ties_a_port_whose_syn_it_read_before_the_pods() -> None:
    """The two legs' sockets are read in either order: the SYN-ACK past the NAT may come first."""
    a = _agent("silent-drop", 5.0)
    a.snat, a._snat_ports, a._early_syns, a.hop = "198.18.2.17", {}, {}, "natgw"
    a.backends = {6443: ("198.18.2.8", 6443)}
    pod, vip = "198.18.2.130", "198.18.2.8"
    a.on_packet("backend", _frame(vip, "198.18.2.17", 6443, 40777, "SA", 500, ack=101), 0.1)
    a.on_packet("pod", _frame(pod, vip, 40002, 6443, "S", 100), 0.0)
    assert a.flows[(pod, 40002)].snat_port == 40777
    a.on_packet("backend", _frame(vip, "198.18.2.17", 6443, 40777, "A", 501, ack=101), 0.2)
    assert a.flows[(pod, 40002)].server_next == 501


def test_a_nat_hop_ties_the_port_even_after_the_client_sent_data() -> None:
    """The pod leg may be read up to the client's first data before the SYN-ACK past the NAT."""
    a = _agent("silent-drop", 5.0)
    a.snat, a._snat_ports, a._early_syns, a.hop = "198.18.2.17", {}, {}, "natgw"
    a.backends = {6443: ("198.18.2.8", 6443)}
    pod, vip = "198.18.2.130", "198.18.2.8"
    a.on_packet("pod", _frame(pod, vip, 40002, 6443, "S", 100), 0.0)
    a.on_packet("pod", bytes(Ether() / IP(src=pod, dst=vip) / TCP(sport=40002, dport=6443, flags="PA", seq=101)
                             / (b"x" * 7)), 0.01)
    a.on_packet("backend", _frame(vip, "198.18.2.17", 6443, 40002, "SA", 500, ack=101), 0.0)
    assert a.flows[(pod, 40002)].snat_port == 40002
