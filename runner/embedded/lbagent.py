"""The LB agent: a small user-space helper that runs inside one LB namespace.

It watches both legs of the LB (the pods' bridge and the link to the backends) with AF_PACKET
sockets and keeps, per flow, the time of the last packet and both sides' next sequence numbers.
It writes the LB's event log (JSON lines): flow opened/closed, expired (at last activity + idle
timeout), packets seen after expiry and what the LB did with them, RSTs it sent.

In `rst-both-ways` mode it also acts: at the deadline it deletes the flow's conntrack entry and
sends an RST to each end with exactly the sequence number that end expects next. The kernel
cannot do this itself: an RST is honoured only at the exact sequence number, anything else draws
a challenge ACK and the connection survives (docs/facts.md). Checksums are computed in software, since
injected packets with bad checksums vanish on veth.

The other modes are the kernel's (conntrack timeout + nftables); there the agent only observes, so
every profile has the same event log. The runner supervises this process: if it dies, every cell
behind the profile is ERROR, never a silent change of behaviour.

A hop of a chain (runner/embedded/chain.py) runs one agent too, with three more settings:
`--hop NAME` puts the hop's name in every record; `--snat ADDR` says the hop masquerades its
clients to ADDR (a `nat` hop): the server's SYN-ACK to ADDR:PORT acknowledging the flow's initial
sequence number (NAT keeps sequence numbers; a packet socket bound to IP sees a leg's incoming
packets only) ties PORT to the flow, recorded as a `snat` event (how the next hop names the flow),
and the server-side RST leaves from ADDR:PORT;
`--cut` makes the agent forget the flow itself at
last activity + idle timeout + `--offset-ms` (it deletes the conntrack entry, the kernel's timeout
being longer), for an order between equal timers finer than the kernel's whole seconds. Mode
`rst-inside-only` (an AWS NAT gateway) is the kernel's: silent, then an RST to a client-side sender.

Run: python -m runner.embedded.lbagent --mode M --idle-timeout S --pod-iface br0 --pod-net CIDR [--pod-net CIDR]
       --backend-iface back0 --vip A --map VPORT=HOST:PORT ... --events FILE
       [--hop NAME] [--snat ADDR] [--offset-ms MS] [--cut]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import IO

ETH_P_IP = 0x0800
#: Linux's SO_TIMESTAMPNS (asm-generic/socket.h; also its control message type), unnamed in Python 3.11.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SEQ_MOD = 1 << 32
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10


@dataclass
class Flow:
    pod: str
    pod_port: int
    vport: int
    opened_at: float
    last: float
    client_next: int | None = None
    server_next: int | None = None
    expired_at: float | None = None
    closed: bool = False
    packets: int = 0
    after_expiry: dict[str, int] = field(default_factory=lambda: {"client": 0, "server": 0})
    fins: set[str] = field(default_factory=set)
    #: A nat hop's source port for this flow past its masquerade (None until the server's SYN-ACK).
    snat_port: int | None = None
    #: The client's initial sequence number (its SYN's), which ties the flow to its port past a NAT.
    isn: int | None = None

    @property
    def name(self) -> str:
        return f"{self.pod}:{self.pod_port}>{self.vport}"


def _advance(cur: int | None, seq: int, length: int) -> int:
    """The next sequence number after a segment, never moving backwards (mod 2^32)."""
    nxt = (seq + length) % SEQ_MOD
    if cur is None:
        return nxt
    return nxt if ((nxt - cur) % SEQ_MOD) < (1 << 31) else cur


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def rst_packet(src: str, dst: str, sport: int, dport: int, seq: int) -> bytes:
    """An IPv4 TCP RST with both checksums computed in software (bad ones vanish on veth).

    Built by hand rather than with scapy because it runs at the deadline, where scapy's ~2 ms per
    packet would show in the cut's precision; tests check it byte for byte against scapy's build.
    """
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq % SEQ_MOD, 0, 5 << 4, RST, 0, 0, 0)
    tcp = tcp[:16] + struct.pack("!H", _checksum(s + d + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, s, d)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return ip + tcp


def ack_number(frame: bytes) -> int:
    """The acknowledgment number of an Ethernet/IPv4/TCP frame that parse() accepted."""
    ihl = (frame[14] & 0x0F) * 4
    return int(struct.unpack("!I", frame[14 + ihl + 8:14 + ihl + 12])[0])


def parse(frame: bytes) -> tuple[str, str, int, int, int, int, int] | None:
    """(src, dst, sport, dport, seq, flags, seq_len) of an Ethernet/IPv4/TCP frame, else None."""
    if len(frame) < 14 + 20 + 20 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[9] != 6:
        return None
    total = struct.unpack("!H", ip[2:4])[0]
    tcp = ip[ihl:]
    sport, dport, seq = struct.unpack("!HHI", tcp[:8])
    doff = (tcp[12] >> 4) * 4
    flags = tcp[13]
    payload = max(0, total - ihl - doff)
    seq_len = payload + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    return socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20]), sport, dport, seq, flags, seq_len


#: `conntrack -D` takes milliseconds; one that hangs must not hold up the loop (every later cut of
#: this LB would land late).
CONNTRACK_TIMEOUT = 5.0


class Agent:
    #: A chain hop's settings (configure_hop); these defaults are today's single LB.
    hop: str | None = None
    snat: str | None = None
    offset: float = 0.0
    cut: bool = False

    def __init__(self, args: argparse.Namespace, out: IO[str]):
        self.mode: str = args.mode
        self.timeout: float | None = float(args.idle_timeout) if args.mode != "none" else None
        # Several client networks: a Service LB has outside clients and the node's pods hairpinning.
        self.pod_nets = [ipaddress.ip_network(n) for n in args.pod_net]
        self.vip: str = args.vip
        self.backends: dict[int, tuple[str, int]] = {}
        for m in args.map:
            vport, target = m.split("=")
            host, port = target.rsplit(":", 1)
            self.backends[int(vport)] = (host, int(port))
        self.out = out
        self.flows: dict[tuple[str, int], Flow] = {}
        self._pod_cache: dict[str, bool] = {}
        self.socks = {self._bind(args.pod_iface): "pod", self._bind(args.backend_iface): "backend"}
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.stop = False
        self.configure_hop(args)

    def configure_hop(self, args: argparse.Namespace) -> None:
        """A chain hop's settings (module docstring); the defaults are today's single LB."""
        self.hop = args.hop
        self.snat = args.snat
        self.offset = float(args.offset_ms) / 1000
        # rst-both-ways always cuts itself; the other modes when asked (an ordered timer).
        self.cut = self.mode == "rst-both-ways" or (bool(args.cut) and self.timeout is not None)
        self._snat_ports: dict[int, tuple[str, int]] = {}
        # A SYN-ACK seen past the masquerade before its flow's SYN on the pod leg (the two legs'
        # sockets are read in either order): the client's initial sequence number -> port.
        self._early_syns: dict[int, int] = {}

    def _is_pod(self, addr: str) -> bool:
        # Cached: the same few addresses come back on every packet, and this is the hot path.
        hit = self._pod_cache.get(addr)
        if hit is None:
            ip = ipaddress.ip_address(addr)
            # A backend is never a client, even inside a client network: a node's address sits in
            # its pods' CIDR, and a Service LB's backends are node ports (runner/local/lbservice.py).
            hit = self._pod_cache[addr] = any(ip in net for net in self.pod_nets) and \
                all(addr != host for host, _ in self.backends.values())
        return hit

    @staticmethod
    def _bind(iface: str) -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
        # Each frame carries the kernel's time of it: the agent's clock must be the one conntrack
        # ran on, not when this process got a CPU to read the frame (late on a busy machine,
        # which moved a flow's deadline past the kernel's and hid what happened after it).
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.bind((iface, 0))
        s.setblocking(False)
        return s

    def emit(self, event: str, ts: float | None = None, **fields: object) -> None:
        rec = {"ts": round(ts if ts is not None else time.time(), 6), "event": event, **fields}
        if self.hop:
            rec["hop"] = self.hop
        self.out.write(json.dumps(rec, sort_keys=True) + "\n")
        self.out.flush()

    # -- packets ------------------------------------------------------------------------------
    def on_packet(self, leg: str, frame: bytes, now: float) -> None:
        p = parse(frame)
        if p is None:
            return
        src, dst, sport, dport, seq, flags, seq_len = p
        snat = self.snat
        if snat and leg == "backend" and snat in (src, dst):
            # Past a nat hop's masquerade: the client's port names the flow (module docstring).
            self._on_snat_packet(src == snat, sport if src == snat else dport, p, now, frame)
            return
        if self._is_pod(src):
            side, key, vport = "client", (src, sport), dport
        elif self._is_pod(dst):
            side, key, vport = "server", (dst, dport), sport
        else:
            return
        if leg == "backend":
            # On the backend leg the service port is the backend's; map it back to the VIP port.
            vport = next((vp for vp, (_, bp) in self.backends.items() if bp == vport), vport)
        if vport not in self.backends:
            return
        flow = self.flows.get(key)
        if flags & SYN and not flags & ACK and side == "client":
            if flow is None or flow.closed or flow.expired_at is not None or flow.client_next != (seq + 1) % SEQ_MOD:
                flow = Flow(pod=key[0], pod_port=key[1], vport=vport, opened_at=now, last=now, isn=seq)
                self.flows[key] = flow
                self.emit("flow-opened", now, flow=flow.name, client=f"{src}:{sport}")
                early = self._early_syns.pop(seq, None) if self.snat else None
                if early is not None:
                    self._tie(key, flow, early)
        self._track(flow, leg, side, flags, seq, seq_len, now)

    def _on_snat_packet(self, from_client: bool, port: int, p: tuple[str, str, int, int, int, int, int],
                        now: float, frame: bytes) -> None:
        """A backend-leg packet of a nat hop, between its masquerade address and the server."""
        _, _, _, _, seq, flags, seq_len = p
        key = self._snat_ports.get(port)
        if not from_client and flags & SYN and flags & ACK:
            isn = (ack_number(frame) - 1) % SEQ_MOD
            learned = self._learn_snat_port(port, isn)
            if learned is None:
                if len(self._early_syns) > 1024:
                    self._early_syns.clear()  # bounded: SYN-ACKs whose flow never opened here
                self._early_syns[isn] = port
            key = learned or key
        if key is None:
            return
        self._track(self.flows.get(key), "backend", "client" if from_client else "server", flags, seq, seq_len, now)

    def _learn_snat_port(self, port: int, seq: int) -> tuple[str, int] | None:
        """The flow whose SYN this is (same initial sequence number), now known by `port` past the NAT."""
        for key, flow in self.flows.items():
            # By the initial sequence number: the client may have sent data since its SYN.
            if flow.snat_port is None and not flow.closed and flow.isn == seq:
                self._tie(key, flow, port)
                return key
        return None

    def _tie(self, key: tuple[str, int], flow: Flow, port: int) -> None:
        flow.snat_port = port
        self._snat_ports[port] = key
        self.emit("snat", flow=flow.name, to=f"{self.snat}:{port}")

    def _track(self, flow: Flow | None, leg: str, side: str, flags: int, seq: int, seq_len: int, now: float) -> None:
        """One packet of a known flow: its activity, sequence numbers, closes, or what befell it after expiry."""
        if flow is None or flow.closed:
            return
        if flow.expired_at is not None:
            # The LB forgot this flow: the kernel drops or rejects this packet (or the agent did).
            if leg == "pod" and side == "server" and flags & RST:
                return  # our own or the kernel's reset leaving toward the pod
            if leg == "backend" and side == "client" and flags & RST:
                return
            flow.after_expiry[side] += 1
            if flow.after_expiry[side] <= 20:
                action = {"silent-drop": "dropped", "rst-on-next-packet": "reset"}.get(self.mode, "dropped")
                if self.mode == "rst-inside-only" and side == "client":
                    action = "reset"  # the kernel rejects a client-side sender only
                self.emit("after-expiry", now, flow=flow.name, side=side, leg=leg, action=action,
                          since_expiry=round(now - flow.expired_at, 3))
            return
        flow.packets += 1
        flow.last = now
        if side == "client":
            flow.client_next = _advance(flow.client_next, seq, seq_len)
        else:
            flow.server_next = _advance(flow.server_next, seq, seq_len)
        if flags & RST:
            flow.closed = True
            self.emit("flow-closed", now, flow=flow.name, by=side, kind="rst", leg=leg)
        elif flags & FIN and side not in flow.fins:
            # A FIN half-closes; the flow is over (nothing left to expire) once both ends sent one.
            flow.fins.add(side)
            self.emit("fin", now, flow=flow.name, by=side, kind="fin", leg=leg)
            if len(flow.fins) == 2:
                flow.closed = True
                self.emit("flow-closed", now, flow=flow.name, by=side, kind="fin", leg=leg)

    # -- deadlines -----------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        if self.timeout is None:
            return None
        live = [f.last + self.timeout + self.offset for f in self.flows.values()
                if not f.closed and f.expired_at is None]
        return min(live) if live else None

    def expire_due(self, now: float) -> None:
        assert self.timeout is not None
        for flow in list(self.flows.values()):
            if flow.closed or flow.expired_at is not None:
                continue
            deadline = flow.last + self.timeout + self.offset
            if now < deadline:
                continue
            flow.expired_at = deadline
            if self.mode == "rst-both-ways":
                self.reset_both(flow)
            elif self.cut:
                self.forget(flow)
            self.emit("expired", deadline, flow=flow.name, last_activity=round(flow.last, 6),
                      idle=self.timeout, late=round(now - deadline, 6))

    def reset_both(self, flow: Flow) -> None:
        """RSTs first (the cut must land at the deadline), then forget the conntrack entry.

        Sending before the delete is safe: neither RST matches the entry's tuples (the client's
        is from the VIP, the server's is to the backend's real address), so conntrack leaves
        them alone.
        """
        host, bport = self.backends[flow.vport]
        # A nat hop's server knows the client by the masquerade address (same port).
        client_addr = self.snat or flow.pod
        sent = []
        if flow.server_next is not None:
            self.raw.sendto(rst_packet(self.vip, flow.pod, flow.vport, flow.pod_port, flow.server_next), (flow.pod, 0))
            sent.append(("client", flow.server_next, time.time()))
        if flow.client_next is not None:
            sport = flow.snat_port if self.snat and flow.snat_port is not None else flow.pod_port
            self.raw.sendto(rst_packet(client_addr, host, sport, bport, flow.client_next), (host, 0))
            sent.append(("server", flow.client_next, time.time()))
        for to, seq, ts in sent:
            self.emit("rst-sent", ts, flow=flow.name, to=to, seq=seq)
        self.forget(flow)

    def forget(self, flow: Flow) -> None:
        """Delete the flow's conntrack entry: from now on the kernel treats its packets as expired."""
        argv = ["conntrack", "-D", "-p", "tcp", "--orig-src", flow.pod, "--orig-dst", self.vip,
                "--orig-port-src", str(flow.pod_port), "--orig-port-dst", str(flow.vport)]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=CONNTRACK_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.emit("conntrack-delete", flow=flow.name, argv=argv, rc=-1,
                      error=f"timed out after {CONNTRACK_TIMEOUT:.0f} s")
            return
        self.emit("conntrack-delete", flow=flow.name, argv=argv, rc=proc.returncode)

    # -- loop ----------------------------------------------------------------------------------
    def run(self) -> None:
        extra = {"offset_ms": round(self.offset * 1000, 3), "cut": self.cut} if self.hop else {}
        self.emit("ready", mode=self.mode, idle_timeout=self.timeout, vip=self.vip,
                  backends={str(k): f"{h}:{p}" for k, (h, p) in self.backends.items()}, **extra)
        while not self.stop:
            deadline = self.next_deadline()
            wait = 0.5 if deadline is None else wait_toward(deadline - time.time())
            ready, _, _ = select.select(list(self.socks), [], [], wait)
            for s in ready:
                leg = self.socks[s]
                while True:
                    try:
                        frame, anc, _, _ = s.recvmsg(65535, 64)
                    except BlockingIOError:
                        break
                    self.on_packet(leg, frame, kernel_time(anc))
            if self.timeout is not None:
                self.expire_due(time.time())
        self.emit("stopped", flows=len(self.flows))


def wait_toward(remaining: float) -> float:
    """How long to sleep toward a deadline `remaining` seconds away. A quiet machine's timers fire
    late in proportion to the sleep (about 0.5 %, 5 ms late for a 1 s sleep, measured on this VM;
    on a busy one other interrupts catch them on time): a long wait is cut 2 % short and finished
    by shorter ones, and below 10 ms one is late by about 0.1 ms."""
    if remaining <= 0.01:
        return max(0.0, remaining)
    return min(0.5, remaining * 0.98)


def kernel_time(ancillary: list[tuple[int, int, bytes]]) -> float:
    """The kernel's receive time of a frame (its SO_TIMESTAMPNS control message), else now."""
    for level, kind, raw in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= 16:
            sec, nsec = struct.unpack("qq", raw[:16])
            return sec + nsec / 1e9
    return time.time()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runner.embedded.lbagent")
    p.add_argument("--mode", required=True,
                   choices=["none", "silent-drop", "rst-on-next-packet", "rst-both-ways", "rst-inside-only"])
    p.add_argument("--idle-timeout", type=float, required=True)
    p.add_argument("--pod-iface", required=True)
    p.add_argument("--pod-net", required=True, action="append", help="CIDR of clients; repeatable")
    p.add_argument("--backend-iface", required=True)
    p.add_argument("--vip", required=True)
    p.add_argument("--map", action="append", default=[], help="VPORT=HOST:PORT")
    p.add_argument("--events", required=True)
    p.add_argument("--hop", help="the chain hop's name, written in every record")
    p.add_argument("--snat", help="the address a nat hop masquerades its clients to")
    p.add_argument("--offset-ms", type=float, default=0.0, help="added to the idle timeout (orders equal timers)")
    p.add_argument("--cut", action="store_true", help="forget flows at the deadline (conntrack -D), not the kernel")
    args = p.parse_args(argv)
    with open(args.events, "a") as out:
        agent = Agent(args, out)

        def _stop(*_: object) -> None:
            agent.stop = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
