"""runner.evidence.pcap: facts read from pcaps that tcpdump recorded of real loopback connections.

The main tests record their own traffic: a Python server and client on 127.0.0.1, a random high
port, tcpdump on lo. The kernel produces the keepalive probes, RSTs and FINs, so the reader is
tested on what Linux really sends. Shapes Linux never sends (1-byte probes, zero-window probes)
are tested on small hand-built pcaps at the end.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import select
import shutil
import socket
import statistics
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.packet import Packet

from runner.evidence.pcap import ConnFacts, KeepaliveSign, PcapError, PcapFacts, read_pcap

needs_capture = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("tcpdump") is None,
    reason="recording a pcap needs root and tcpdump",
)


# -- recording helpers ----------------------------------------------------------------------------


def median_interval(times: list[float]) -> float | None:
    """Median of the gaps between consecutive times (sorted first); None for fewer than 2 times."""
    ordered = sorted(times)
    return statistics.median(b - a for a, b in itertools.pairwise(ordered)) if len(ordered) >= 2 else None


def listen_on_random_port() -> tuple[socket.socket, int]:
    """A listening socket on a random high port (random, so parallel runs don't share captures)."""
    for _ in range(50):
        port = random.randint(20000, 32000)  # below Linux's ephemeral range: no clash with clients
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        sock.listen(8)
        return sock, port
    raise RuntimeError("no free port found")


@contextlib.contextmanager
def capture(port: int, directory: Path) -> Iterator[Path]:
    """tcpdump on lo for one port (TCP, plus the UDP end marker); yields the pcap path, which is
    complete once the block exits."""
    path = directory / f"lo-{port}.pcap"
    proc = subprocess.Popen(
        # --immediate-mode: hand each packet over at once, so nothing is still in the kernel's ring
        # when tcpdump is stopped. -Z root: keep writing as root into pytest's private tmp dir.
        ["tcpdump", "-i", "lo", "-n", "-U", "--immediate-mode", "-Z", "root", "-w", str(path), f"port {port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 15
        seen = ""
        while "listening on" not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                raise RuntimeError(f"tcpdump did not start listening: {seen!r}")
            ready, _, _ = select.select([proc.stderr], [], [], left)
            if ready:
                seen += proc.stderr.readline()
        yield path
        wait_until_written(path, port)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def wait_until_written(path: Path, port: int) -> None:
    """Send a UDP marker to the captured port and wait until it is in the file.

    tcpdump drops whatever it has not read yet when it gets SIGTERM, so stopping it right after
    the last packet can lose that packet. Packets on lo reach tcpdump in order: once the marker is
    written, so is everything before it. pcapfacts ignores non-TCP packets.
    """
    marker = f"wd-capture-end-{random.getrandbits(64):016x}".encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(marker, ("127.0.0.1", port))
    deadline = time.monotonic() + 10
    while marker not in path.read_bytes():
        if time.monotonic() > deadline:
            raise RuntimeError("tcpdump did not write the end marker within 10 s")
        time.sleep(0.05)


def connect(port: int, *, keepalive: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one send, one segment
    if keepalive:
        set_fast_keepalive(sock)
    sock.connect(("127.0.0.1", port))
    return sock


def set_fast_keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    sock.settimeout(10)
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
    return data


def send_and_receive(sender: socket.socket, receiver: socket.socket, payload: bytes) -> None:
    sender.sendall(payload)
    assert recv_exactly(receiver, len(payload)) == payload


def rst_close(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER on, timeout 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def endpoint(sock: socket.socket) -> str:
    host, port = sock.getsockname()
    return f"{host}:{port}"


# -- recorded scenarios ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client_keepalive_pcap(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Connection 1: client keepalive 1 s/1 s, data, 3.5 s idle, three small records, client RST.
    Connection 2 (the reconnect): no keepalive, data, 1.6 s idle, client FIN."""
    if os.geteuid() != 0 or shutil.which("tcpdump") is None:
        pytest.skip("recording a pcap needs root and tcpdump")
    listener, port = listen_on_random_port()
    info: dict[str, object] = {"port": port}
    try:
        with capture(port, tmp_path_factory.mktemp("pcap")) as pcap:
            client = connect(port, keepalive=True)
            server, _ = listener.accept()
            try:
                info["client1"] = endpoint(client)
                send_and_receive(client, server, b"hello\n")
                send_and_receive(server, client, b"world\n")
                time.sleep(3.5)  # idle: only the client's keepalive probes cross the wire
                for i in range(3):
                    send_and_receive(client, server, f"small-{i}\n".encode())
                    time.sleep(0.2)
                rst_close(client)
                with pytest.raises(ConnectionResetError):
                    server.settimeout(10)
                    server.recv(100)
            finally:
                client.close()
                server.close()

            client = connect(port)
            server, _ = listener.accept()
            try:
                info["client2"] = endpoint(client)
                send_and_receive(client, server, b"again\n")
                time.sleep(1.6)  # idle without keepalive: a silent gap
                client.close()
                server.settimeout(10)
                assert server.recv(100) == b""
            finally:
                client.close()
                server.close()
        info["pcap"] = pcap
        info["facts"] = read_pcap(pcap)
    finally:
        listener.close()
    return info


@needs_capture
def test_client_keepalive_probes_are_found_and_attributed(client_keepalive_pcap: dict[str, object]) -> None:
    facts = client_keepalive_pcap["facts"]
    assert isinstance(facts, PcapFacts)
    first = facts.connections[0]
    assert first.client == client_keepalive_pcap["client1"]
    assert first.server == f"127.0.0.1:{client_keepalive_pcap['port']}"
    # KEEPIDLE=1, KEEPINTVL=1 over 3.5 s of idle: a probe about every second.
    assert 2 <= len(first.keepalive_client) <= 4, first.keepalive_client
    interval = median_interval(first.keepalive_client)
    assert interval is not None and 0.7 <= interval <= 1.5
    assert first.keepalive_server == []
    # The probes fall in the idle phase: after the server's reply, before the small records.
    assert all(first.data_server[0] < t < first.data_client[1] for t in first.keepalive_client)


@needs_capture
def test_data_and_small_records_exclude_probes_and_their_acks(
    client_keepalive_pcap: dict[str, object],
) -> None:
    facts = client_keepalive_pcap["facts"]
    assert isinstance(facts, PcapFacts)
    first = facts.connections[0]
    # Exactly what the test sent: hello + three small records from the client, world from the server.
    assert len(first.data_client) == 4
    assert len(first.data_server) == 1
    assert [n for _, n in first.small_records_client] == [6, 8, 8, 8]
    assert [n for _, n in first.small_records_server] == [6]
    assert first.retransmissions_client == 0
    assert first.retransmissions_server == 0
    # Every probe was answered by an ACK, which is activity but not data.
    activity = first.activity()
    assert activity == sorted(activity)
    assert len(activity) >= 2 * len(first.keepalive_client) + len(first.data_client) + len(first.data_server)


@needs_capture
def test_rst_from_client_and_reconnect(client_keepalive_pcap: dict[str, object]) -> None:
    facts = client_keepalive_pcap["facts"]
    assert isinstance(facts, PcapFacts)
    assert len(facts.connections) == 2
    first, second = facts.connections
    assert first.opened_at is not None and second.opened_at is not None
    assert first.opened_at < second.opened_at
    assert first.close_kind == "rst-from-client"
    assert first.rsts and first.rsts[0][1] == "client"
    assert all(sender == "client" for _, sender in first.rsts)
    assert first.closed_at == first.rsts[0][0]
    assert first.last_packet_at is not None and first.closed_at <= first.last_packet_at

    assert second.client == client_keepalive_pcap["client2"]
    assert second.close_kind == "fin-client"
    assert second.rsts == []
    assert second.keepalive_client == [] and second.keepalive_server == []
    assert len(second.data_client) == 1 and second.data_server == []

    assert facts.first_ts is not None and facts.last_ts is not None
    assert facts.first_ts <= first.opened_at and facts.last_ts >= (second.last_packet_at or 0)


@needs_capture
def test_idle_gaps_keepalive_fills_the_silence(client_keepalive_pcap: dict[str, object]) -> None:
    facts = client_keepalive_pcap["facts"]
    assert isinstance(facts, PcapFacts)
    first, second = facts.connections
    # 3.5 s of idle application, but a probe (and its ACK) every second: never 1.5 s of silence.
    assert first.idle_gaps(1.5) == []
    # The reconnect had no keepalive: its 1.6 s idle is one silent gap on the wire.
    gaps = second.idle_gaps(1.5)
    assert len(gaps) == 1
    start, end = gaps[0]
    assert second.data_client[0] <= start < end


@needs_capture
def test_summary_filter_and_json(client_keepalive_pcap: dict[str, object]) -> None:
    facts = client_keepalive_pcap["facts"]
    pcap = client_keepalive_pcap["pcap"]
    port = client_keepalive_pcap["port"]
    assert isinstance(facts, PcapFacts) and isinstance(pcap, Path) and isinstance(port, int)
    summary = facts.keepalive_summary()
    assert summary.startswith("TCP keepalive from client after 1 s idle"), summary
    assert "TCP keepalive from server" not in summary
    assert "small records from client" in summary
    signs = KeepaliveSign.parse(summary)
    assert "; ".join(str(s) for s in signs) == summary == "; ".join(str(s) for s in facts.keepalive_signs())

    text = json.dumps(facts.to_dict(), sort_keys=True)
    assert json.dumps(read_pcap(pcap).to_dict(), sort_keys=True) == text  # deterministic
    assert json.loads(text)["connections"][0]["close_kind"] == "rst-from-client"

    assert len(read_pcap(pcap, server_ports={port}).connections) == 2
    assert read_pcap(pcap, server_ports={port + 1}).connections == []


@needs_capture
def test_server_side_keepalive(tmp_path: Path) -> None:
    listener, port = listen_on_random_port()
    try:
        with capture(port, tmp_path) as pcap:
            client = connect(port)
            server, _ = listener.accept()
            try:
                set_fast_keepalive(server)
                send_and_receive(client, server, b"request\n")
                send_and_receive(server, client, b"response\n")
                time.sleep(2.6)
                server.close()  # the server ends it with a FIN
                client.settimeout(10)
                assert client.recv(100) == b""
            finally:
                client.close()
                server.close()
    finally:
        listener.close()

    facts = read_pcap(pcap)
    assert len(facts.connections) == 1
    conn = facts.connections[0]
    assert conn.server == f"127.0.0.1:{port}"
    assert 2 <= len(conn.keepalive_server) <= 3, conn.keepalive_server
    assert conn.keepalive_client == []
    assert len(conn.data_client) == 1 and len(conn.data_server) == 1
    assert conn.close_kind == "fin-server"
    assert conn.idle_gaps(1.5) == []
    assert facts.keepalive_summary().startswith("TCP keepalive from server after 1 s idle")


# -- bad files ------------------------------------------------------------------------------------

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)


def test_missing_empty_and_garbage_files_raise(tmp_path: Path) -> None:
    with pytest.raises(PcapError, match="no such pcap"):
        read_pcap(tmp_path / "absent.pcap")
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    with pytest.raises(PcapError, match="empty"):
        read_pcap(empty)
    garbage = tmp_path / "garbage.pcap"
    garbage.write_bytes(b"this is not a capture at all")
    with pytest.raises(PcapError, match="not a pcap"):
        read_pcap(garbage)
    short = tmp_path / "short.pcap"
    short.write_bytes(PCAP_HEADER[:10])
    with pytest.raises(PcapError, match="truncated"):
        read_pcap(short)


def test_truncated_pcap_raises(tmp_path: Path) -> None:
    whole = tmp_path / "whole.pcap"
    write_pcap(whole, [*handshake(), client_pkt(1.0, "PA", 1001, 5001, b"hello")])
    assert len(read_pcap(whole).connections) == 1
    data = whole.read_bytes()
    cut_in_data = tmp_path / "cut-data.pcap"
    cut_in_data.write_bytes(data[:-3])
    with pytest.raises(PcapError, match="truncated after 3 packets"):
        read_pcap(cut_in_data)
    cut_in_header = tmp_path / "cut-header.pcap"
    cut_in_header.write_bytes(data + b"\x00" * 7)
    with pytest.raises(PcapError, match="truncated after 4 packets"):
        read_pcap(cut_in_header)


def test_header_only_capture_has_no_connections(tmp_path: Path) -> None:
    # tcpdump that ran and saw nothing writes just the header: a valid, empty observation.
    path = tmp_path / "nothing.pcap"
    path.write_bytes(PCAP_HEADER)
    facts = read_pcap(path)
    assert facts.connections == [] and facts.first_ts is None and facts.packets == 0
    assert facts.keepalive_summary() == "none seen"


# -- hand-built packets: shapes Linux does not send -----------------------------------------------

CLIENT = ("198.18.0.10", 40000)
SERVER = ("198.18.0.20", 443)
# Explicit MACs: with Ether() left blank scapy would ARP for the destination while building the
# frame. These packets only ever go into a file.
CLIENT_MAC, SERVER_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:14"


def client_pkt(t: float, flags: str, seq: int, ack: int, payload: bytes = b"", window: int = 65535) -> Packet:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    pkt = (
        Ether(src=CLIENT_MAC, dst=SERVER_MAC)
        / IP(src=CLIENT[0], dst=SERVER[0])
        / TCP(sport=CLIENT[1], dport=SERVER[1], flags=flags, seq=seq, ack=ack, window=window)
    )
    if payload:
        pkt = pkt / payload
    pkt.time = t
    return pkt


def server_pkt(t: float, flags: str, seq: int, ack: int, payload: bytes = b"", window: int = 65535) -> Packet:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    pkt = (
        Ether(src=SERVER_MAC, dst=CLIENT_MAC)
        / IP(src=SERVER[0], dst=CLIENT[0])
        / TCP(sport=SERVER[1], dport=CLIENT[1], flags=flags, seq=seq, ack=ack, window=window)
    )
    if payload:
        pkt = pkt / payload
    pkt.time = t
    return pkt


def handshake(client_isn: int = 1000, server_isn: int = 5000, t: float = 0.0) -> list[Packet]:
    return [
        client_pkt(t + 0.0, "S", client_isn, 0),
        server_pkt(t + 0.001, "SA", server_isn, client_isn + 1),
        client_pkt(t + 0.002, "A", client_isn + 1, server_isn + 1),
    ]


def write_pcap(path: Path, packets: list[Packet]) -> None:
    from scapy.utils import wrpcap

    wrpcap(str(path), packets)


def only_conn(path: Path, server_ports: set[int] | None = None) -> ConnFacts:
    facts = read_pcap(path, server_ports)
    assert len(facts.connections) == 1
    return facts.connections[0]


def test_one_byte_garbage_probe_is_keepalive_not_data(tmp_path: Path) -> None:
    path = tmp_path / "garbage-probe.pcap"
    write_pcap(
        path,
        [
            *handshake(),
            client_pkt(1.0, "PA", 1001, 5001, b"hello"),  # client snd_nxt = 1006
            server_pkt(1.001, "A", 5001, 1006),
            client_pkt(31.0, "A", 1005, 5001, b"o"),  # last byte again: a 1-byte probe
            server_pkt(31.001, "A", 5001, 1006),  # its ACK
            client_pkt(61.0, "A", 1005, 5001),  # a Linux-style zero-length probe
            server_pkt(61.001, "A", 5001, 1006),
        ],
    )
    conn = only_conn(path)
    assert conn.keepalive_client == [31.0, 61.0]
    assert conn.data_client == [1.0]
    assert conn.retransmissions_client == 0
    assert conn.data_server == [] and conn.keepalive_server == []


def test_zero_window_probe_is_not_keepalive(tmp_path: Path) -> None:
    path = tmp_path / "zero-window.pcap"
    write_pcap(
        path,
        [
            *handshake(),
            client_pkt(1.0, "PA", 1001, 5001, b"hello"),
            server_pkt(1.001, "A", 5001, 1006, window=0),  # server's buffer is full
            client_pkt(1.3, "A", 1005, 5001),  # zero-window probe, same shape as keepalive
        ],
    )
    conn = only_conn(path)
    assert conn.keepalive_client == []
    assert conn.data_client == [1.0]


def test_retransmission_counted_once(tmp_path: Path) -> None:
    path = tmp_path / "retrans.pcap"
    write_pcap(
        path,
        [
            *handshake(),
            server_pkt(1.0, "PA", 5001, 1001, b"x" * 200),
            server_pkt(1.2, "PA", 5001, 1001, b"x" * 200),  # not acked: sent again
            client_pkt(1.201, "A", 1001, 5201),
            server_pkt(2.0, "PA", 5201, 1001, b"y" * 50),
        ],
    )
    conn = only_conn(path)
    assert conn.retransmissions_server == 1
    assert conn.data_server == [1.0, 1.2, 2.0]
    assert conn.small_records_server == [(2.0, 50)]


def test_sequence_wraparound(tmp_path: Path) -> None:
    isn = 2**32 - 3  # data crosses the 32-bit wrap
    path = tmp_path / "wrap.pcap"
    write_pcap(
        path,
        [
            *handshake(client_isn=isn),
            client_pkt(1.0, "PA", isn + 1, 5001, b"hello"),
            server_pkt(1.001, "A", 5001, (isn + 6) % 2**32),
            client_pkt(2.0, "A", (isn + 5) % 2**32, 5001),  # probe: seq = acked - 1, after the wrap
            server_pkt(2.001, "A", 5001, (isn + 6) % 2**32),
            client_pkt(3.0, "PA", (isn + 6) % 2**32, 5001, b"more"),
        ],
    )
    conn = only_conn(path)
    assert conn.keepalive_client == [2.0]
    assert conn.data_client == [1.0, 3.0]
    assert conn.retransmissions_client == 0


def test_mid_flow_capture_uses_server_ports_then_lower_port(tmp_path: Path) -> None:
    path = tmp_path / "mid-flow.pcap"
    # No handshake: the capture starts with the server's data.
    write_pcap(
        path,
        [
            server_pkt(1.0, "PA", 5001, 1001, b"event"),
            client_pkt(1.001, "A", 1001, 5006),
            client_pkt(9.0, "R", 1001, 0),
        ],
    )
    conn = only_conn(path, server_ports={443})
    assert conn.client == "198.18.0.10:40000" and conn.server == "198.18.0.20:443"
    assert conn.opened_at is None
    assert conn.close_kind == "rst-from-client" and conn.rsts == [(9.0, "client")]
    assert only_conn(path).server == "198.18.0.20:443"  # lower port when no hint is given


def test_fins_are_recorded_per_side_for_an_endpoint_close_then_rst(tmp_path: Path) -> None:
    """kube-apiserver's 90 s idle close as seen in the `direct` column: the client's FIN first, the
    server's FIN a moment later, and the server's RST answering the client's late close_notify. The
    verdict needs every FIN's time and sender, not only the first close, to read that RST as part of
    the close."""
    path = tmp_path / "fin-then-rst.pcap"
    write_pcap(
        path,
        [
            *handshake(),
            client_pkt(90.0, "FA", 1001, 5001),
            server_pkt(90.0004, "FA", 5001, 1002),
            client_pkt(90.0006, "PA", 1002, 5002, b"x" * 24),
            server_pkt(90.0008, "R", 5002, 0),
        ],
    )
    conn = only_conn(path)
    assert conn.close_kind == "fin-client" and conn.closed_at == 90.0
    assert conn.fins == [(90.0, "client"), (90.0004, "server")]
    assert conn.rsts == [(90.0008, "server")]
    assert conn.to_dict()["fins"] == [[90.0, "client"], [90.0004, "server"]]


def test_port_reuse_is_a_new_connection_and_trailing_silence(tmp_path: Path) -> None:
    path = tmp_path / "reuse.pcap"
    write_pcap(
        path,
        [
            *handshake(client_isn=1000),
            client_pkt(1.0, "PA", 1001, 5001, b"a"),
            server_pkt(1.001, "A", 5001, 1002),
            *handshake(client_isn=90000, server_isn=70000, t=100.0),  # same ports, new ISN, no close seen
            client_pkt(101.0, "PA", 90001, 70001, b"b"),
        ],
    )
    facts = read_pcap(path)
    assert len(facts.connections) == 2
    old, new = facts.connections
    assert old.closed_at is None and old.opened_at == 0.0 and new.opened_at == 100.0
    assert old.idle_gaps(10) == []
    # The old flow went quiet and never closed: with `until`, that silence is a gap.
    assert old.idle_gaps(10, until=facts.last_ts) == [(1.001, 101.0)]


def test_keepalive_signs_parse() -> None:
    summary = "TCP keepalive from client after 30 s idle (8 probes); small records from server (2 bursts, 3 records)"
    signs = KeepaliveSign.parse(summary)
    assert [str(s) for s in signs] == summary.split("; ")
    assert [s.short() for s in signs if s.periodic] == ["TCP keepalive from client after 30 s idle"]
    assert KeepaliveSign.parse("none seen") == KeepaliveSign.parse("") == []
