"""Facts about TCP connections read out of one pcap: the evidence the verdicts rest on.

A pcap here is a capture of ONE side of a load balancer (a pod's leg, or the server's leg). For
each TCP connection it says who opened it, who ended it and how (FIN or RST, and who sent the
RST), when each side sent data, small records (HTTP/2 PINGs or small TLS records look like this),
TCP keepalive probes, retransmissions, and the idle gaps in between.

TCP keepalive probes are told apart from data by their sequence number. Linux sends a probe as a
zero-length ACK whose sequence number is one below the next one it would send (snd_una - 1, which
the peer has already acknowledged), so the peer must answer with an ACK. Other stacks send the
last byte again (a 1-byte "garbage" probe) with the same sequence number. So a segment with ACK,
no SYN/FIN/RST, 0 or 1 byte of payload and seq == (highest ACK the peer has sent) - 1 is a probe.
The peer's answer is a bare ACK, and bare ACKs are never data. A zero-window probe has the same
shape, so a segment sent while the peer advertises a zero window is not counted as keepalive.

Timestamps are the pcap's own (absolute Unix seconds as floats), so they can be set side by side
with the watcher's JSON lines and the LB's event log.

The file is read in one streaming pass (scapy's PcapReader), after a cheap pass over the record
framing. That pass is there because scapy reads a file cut off in the middle of a record as if it
had ended cleanly, and evidence from a half-written capture must not pass for a complete one.

Why one long module: one parser from packets to connection facts; its parts share the same
per-connection state.
"""

from __future__ import annotations

import itertools
import re
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from runner.text import plural

if TYPE_CHECKING:
    from scapy.packet import Packet

SMALL_RECORD_MAX = 100
"""Payload bytes at or below which a data segment counts as a small record (HTTP/2 PING is 17
bytes in clear, about 40 inside TLS 1.3; watch events of a ConfigMap are larger)."""

BURST_GAP = 1.0
"""Small records closer together than this are one burst when the summary estimates their period:
a request/response exchange of small frames is one event, not many."""

_SEQ_MOD = 1 << 32
_SEQ_HALF = 1 << 31

# TCP flag bits
_FIN, _SYN, _RST, _ACK = 0x01, 0x02, 0x04, 0x10


class PcapError(ValueError):
    """The pcap is missing, empty, truncated or not a capture: its facts cannot be trusted."""


@dataclass
class ConnFacts:
    client: str
    """"ip:port" of the side that sent the SYN; without a SYN in the capture, the side whose port
    is not a server port (server_ports, else the higher port)."""
    server: str
    opened_at: float | None
    """Time of the first SYN, None if the capture started mid-connection."""
    closed_at: float | None
    """Time of the first FIN or RST from either side."""
    close_kind: str | None
    """"fin-client", "fin-server", "rst-from-client" or "rst-from-server": the first FIN or RST."""
    data_client: list[float] = field(default_factory=list)
    """Times of segments with payload from the client, keepalive probes excluded."""
    data_server: list[float] = field(default_factory=list)
    small_records_client: list[tuple[float, int]] = field(default_factory=list)
    """(time, payload length) of client data segments of at most SMALL_RECORD_MAX bytes."""
    small_records_server: list[tuple[float, int]] = field(default_factory=list)
    keepalive_client: list[float] = field(default_factory=list)
    """Times of TCP keepalive probes sent by the client."""
    keepalive_server: list[float] = field(default_factory=list)
    rsts: list[tuple[float, str]] = field(default_factory=list)
    """(time, "client" | "server"): the sender of each RST."""
    fins: list[tuple[float, str]] = field(default_factory=list)
    """(time, "client" | "server"): the sender of each FIN (a retransmitted FIN is listed again).
    The verdict reads them to tell an RST that belongs to an endpoint's orderly close (one side's
    FIN, then the other's RST within moments) from a reset of a live connection."""
    retransmissions_client: int = 0
    """Client data segments starting below the highest sequence number already sent."""
    retransmissions_server: int = 0
    last_packet_at: float | None = None
    packet_times: list[float] = field(default_factory=list, repr=False)
    """Time of every packet of the connection, both directions (what activity() returns)."""

    def activity(self) -> list[float]:
        """Sorted times of every packet of this connection: data, keepalive probes, bare ACKs."""
        return sorted(self.packet_times)

    def idle_gaps(self, min_gap: float, until: float | None = None) -> list[tuple[float, float]]:
        """(start, end) of every stretch of at least min_gap seconds with no packet either way.

        With `until` (e.g. the capture's last_ts), a connection that never closed also reports the
        silence from its last packet to `until`: a flow that went quiet and stayed quiet.
        """
        times = self.activity()
        gaps = [(a, b) for a, b in itertools.pairwise(times) if b - a >= min_gap]
        if until is not None and self.closed_at is None and times and until - times[-1] >= min_gap:
            gaps.append((times[-1], until))
        return gaps

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("packet_times")
        data["packets"] = len(self.packet_times)
        return _rounded(data)  # type: ignore[return-value]


@dataclass
class PcapFacts:
    connections: list[ConnFacts]
    """Ordered by opened_at, or by first packet for connections whose SYN was not captured."""
    first_ts: float | None
    """Time of the capture's first packet (any protocol), None if it holds none."""
    last_ts: float | None
    packets: int = 0
    """Packets in the capture, of any protocol."""

    def keepalive_summary(self) -> str:
        """One line for a person, e.g. "TCP keepalive from client after 30 s idle (8 probes); small
        records from server after 60 s idle (5 bursts, 12 records)", or "none seen".

        "after N s idle" is the median silence on the connection before each probe or burst: the
        number to hold against an LB's idle timeout (a period between probes would also count the
        time the connection was busy)."""
        return "; ".join(str(s) for s in self.keepalive_signs()) or NONE_SEEN

    def keepalive_signs(self) -> list[KeepaliveSign]:
        """What `keepalive_summary` says, one sign a part."""
        signs: list[KeepaliveSign] = []
        for side in ("client", "server"):
            probes = [(c, t) for c in self.connections for t in getattr(c, f"keepalive_{side}")]
            if probes:
                idle = _median([_silence_before(c, t) for c, t in probes])
                signs.append(KeepaliveSign(f"TCP keepalive from {side}", _fmt_idle(idle), plural(len(probes), "probe")))
        for side in ("client", "server"):
            records = [(c, getattr(c, f"small_records_{side}")) for c in self.connections]
            count = sum(len(r) for _, r in records)
            if count:
                bursts = [(c, t) for c, r in records for t in _burst_starts([t for t, _ in r])]
                idles = [i for c, t in bursts if (i := _silence_before(c, t)) is not None and i >= 1.0]
                # A record right after other traffic (a reply, a request's tail) is no keepalive, and
                # neither is a lone one after a silence (a TLS close_notify): it must recur.
                idle = _median(idles) if len(idles) >= 2 else None
                signs.append(KeepaliveSign(f"small records from {side}", _fmt_idle(idle),
                                           f"{plural(len(bursts), 'burst')}, {plural(count, 'record')}"))
        return signs

    def to_dict(self) -> dict[str, object]:
        """Plain JSON types only; the caller sorts keys when it writes the file."""
        return _rounded(  # type: ignore[return-value]
            {
                "first_ts": self.first_ts,
                "last_ts": self.last_ts,
                "packets": self.packets,
                "keepalive_summary": self.keepalive_summary(),
                "connections": [c.to_dict() for c in self.connections],
            }
        )


#: The keepalive summary of a capture with no keepalive sign.
NONE_SEEN = "none seen"

_SIGN = re.compile(r"(?P<what>.+?)(?: after (?P<idle>\S+) s idle)? \((?P<count>[^()]*)\)")


@dataclass(frozen=True)
class KeepaliveSign:
    """One part of a keepalive summary: what was seen, the median silence before it ("30"), how many."""

    what: str
    idle: str | None
    count: str

    @property
    def periodic(self) -> bool:
        """Seen after a silence, again and again: traffic that keeps an idle flow alive."""
        return self.idle is not None

    def short(self) -> str:
        """Without the count, e.g. "TCP keepalive from client after 30 s idle"."""
        return self.what + (f" after {self.idle} s idle" if self.idle is not None else "")

    def __str__(self) -> str:
        return f"{self.short()} ({self.count})"

    @classmethod
    def parse(cls, summary: str) -> list[KeepaliveSign]:
        """The signs of a summary `keepalive_summary` wrote (results.json keeps only the text);
        "none seen", "" or a part in another form give none."""
        found = (_SIGN.fullmatch(part.strip()) for part in summary.split(";"))
        return [cls(m["what"], m["idle"], m["count"]) for m in found if m is not None]


def _fmt_idle(idle: float | None) -> str | None:
    return _fmt_seconds(idle) if idle is not None else None


def read_pcap(path: Path, server_ports: set[int] | None = None) -> PcapFacts:
    """Read one capture into per-connection facts.

    server_ports: when given, only connections with one end on one of these ports are kept, and a
    connection whose SYN was not captured has its server on that end.
    Raises PcapError if the file is missing, empty, cut off mid-record or not a pcap/pcapng file.
    A well-formed capture holding no packets gives PcapFacts with no connections.
    """
    path = Path(path)
    _check_framing(path)
    tracker = _Tracker(server_ports)
    first_ts: float | None = None
    last_ts: float | None = None
    packets = 0
    for ts, segment in _segments(path):
        packets += 1
        if first_ts is None:
            first_ts = ts
        last_ts = ts if last_ts is None else max(last_ts, ts)
        if segment is not None:
            tracker.add(ts, segment)
    return PcapFacts(connections=tracker.connections(), first_ts=first_ts, last_ts=last_ts, packets=packets)


def read_pcap_or_error(path: Path, server_ports: frozenset[int] | None = None) -> PcapFacts | Exception:
    """read_pcap for a pool of reader processes: a capture that cannot be read comes back as its
    error, for the verdict to judge, instead of failing the whole batch. Lives here, not beside the
    pool, so a spawned reader imports this module only."""
    try:
        return read_pcap(path, set(server_ports) if server_ports is not None else None)
    except (PcapError, OSError) as exc:
        return exc


# -- reading --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Segment:
    src: tuple[str, int]
    dst: tuple[str, int]
    seq: int
    ack: int
    flags: int
    window: int
    payload_len: int


def _segments(path: Path) -> Iterator[tuple[float, _Segment | None]]:
    """(timestamp, TCP segment or None for anything else) for each packet, streaming."""
    # Imported here so that importing this module (e.g. for the dataclasses) stays cheap.
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.utils import PcapReader

    try:
        reader = PcapReader(str(path))
    except Exception as exc:  # scapy raises Scapy_Exception and friends for non-captures
        raise PcapError(f"{path}: not a readable pcap/pcapng file: {exc}") from exc
    with reader:
        for pkt in _packets(reader, path):
            ts = float(pkt.time)
            if TCP not in pkt:
                yield ts, None
                continue
            tcp = pkt[TCP]
            header = tcp.dataofs * 4 if tcp.dataofs else 20
            if IP in pkt:
                ip = pkt[IP]
                src_ip, dst_ip = ip.src, ip.dst
                # From the IP length field, not from the bytes captured: Ethernet padding of tiny
                # frames is not payload, and a short snaplen must not hide payload.
                payload_len = ip.len - ip.ihl * 4 - header
            elif IPv6 in pkt:
                ip6 = pkt[IPv6]
                src_ip, dst_ip = ip6.src, ip6.dst
                if ip6.nh == 6:
                    payload_len = ip6.plen - header
                else:  # extension headers: fall back to the captured bytes
                    payload_len = len(bytes(tcp.payload))
            else:
                yield ts, None
                continue
            yield (
                ts,
                _Segment(
                    src=(src_ip, tcp.sport),
                    dst=(dst_ip, tcp.dport),
                    seq=tcp.seq,
                    ack=tcp.ack,
                    flags=int(tcp.flags),
                    window=tcp.window,
                    payload_len=max(0, payload_len),
                ),
            )


def _packets(reader: Iterator[Packet], path: Path) -> Iterator[Packet]:
    try:
        yield from reader
    except (OSError, struct.error) as exc:
        raise PcapError(f"{path}: unreadable after the header: {exc}") from exc


def _check_framing(path: Path) -> None:
    """Walk the record headers of a pcap or pcapng file and raise PcapError unless it ends cleanly."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise PcapError(f"{path}: no such pcap") from None
    except OSError as exc:
        raise PcapError(f"{path}: cannot read: {exc}") from exc
    if size == 0:
        raise PcapError(f"{path}: empty file (the capture never started or was never written)")
    with path.open("rb") as f:
        magic = f.read(4)
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            _walk_pcap(f, size, "<", path)
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            _walk_pcap(f, size, ">", path)
        elif magic == b"\x0a\x0d\x0d\x0a":
            _walk_pcapng(f, size, path)
        else:
            raise PcapError(f"{path}: not a pcap or pcapng file (magic {magic.hex()})")


def _walk_pcap(f: BinaryIO, size: int, endian: str, path: Path) -> None:
    if size < 24:
        raise PcapError(f"{path}: truncated pcap header ({size} bytes)")
    pos = 24
    count = 0
    while pos < size:
        f.seek(pos)
        header = f.read(16)
        if len(header) < 16:
            raise PcapError(f"{path}: truncated after {count} packets (partial record header at {pos})")
        caplen = struct.unpack(endian + "I", header[8:12])[0]
        pos += 16 + caplen
        if pos > size:
            raise PcapError(
                f"{path}: truncated after {count} packets (record at {pos - 16 - caplen} "
                f"needs {caplen} bytes, file ends at {size})"
            )
        count += 1


def _walk_pcapng(f: BinaryIO, size: int, path: Path) -> None:
    pos = 0
    endian = "<"
    while pos < size:
        f.seek(pos)
        header = f.read(12)
        if len(header) < 8:
            raise PcapError(f"{path}: truncated pcapng block header at {pos}")
        if header[:4] == b"\x0a\x0d\x0d\x0a":  # section header: carries the byte order
            if len(header) < 12:
                raise PcapError(f"{path}: truncated pcapng section header at {pos}")
            endian = "<" if header[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        length = struct.unpack(endian + "I", header[4:8])[0]
        if length < 12 or length % 4:
            raise PcapError(f"{path}: corrupt pcapng block length {length} at {pos}")
        pos += length
        if pos > size:
            raise PcapError(f"{path}: truncated pcapng block at {pos - length}")


# -- per-connection state -------------------------------------------------------------------------


class _Direction:
    """Sequence-space bookkeeping for what one side sends."""

    def __init__(self) -> None:
        self.ref: int | None = None  # last unwrapped sequence number, for unwrapping the next
        self.max_end: int | None = None  # highest unwrapped seq + length sent so far
        self.peer_ack: int | None = None  # highest ACK the other side sent for this stream
        self.window: int | None = None  # last receive window this side advertised

    def unwrap(self, seq: int) -> int:
        """Map a 32-bit number onto a running 64-bit one, so wrap-around never looks like a rewind."""
        if self.ref is None:
            self.ref = seq
            return seq
        delta = (seq - self.ref) % _SEQ_MOD
        if delta >= _SEQ_HALF:
            delta -= _SEQ_MOD
        value = self.ref + delta
        self.ref = max(self.ref, value)
        return value


class _Conn:
    def __init__(self, client: tuple[str, int], server: tuple[str, int], isn: int | None):
        self.client = client
        self.server = server
        self.isn = isn  # the client's SYN sequence number, to tell a new connection on the same ports
        self.dirs = {"client": _Direction(), "server": _Direction()}
        self.facts = ConnFacts(
            client=_fmt_endpoint(client),
            server=_fmt_endpoint(server),
            opened_at=None,
            closed_at=None,
            close_kind=None,
        )
        self.first_at: float | None = None

    def add(self, ts: float, seg: _Segment) -> None:
        facts = self.facts
        side = "client" if seg.src == self.client else "server"
        other = "server" if side == "client" else "client"
        mine, theirs = self.dirs[side], self.dirs[other]
        if self.first_at is None:
            self.first_at = ts
        facts.packet_times.append(ts)
        facts.last_packet_at = ts if facts.last_packet_at is None else max(facts.last_packet_at, ts)

        syn, fin, rst, ack = (bool(seg.flags & bit) for bit in (_SYN, _FIN, _RST, _ACK))
        if syn and not ack and facts.opened_at is None:
            facts.opened_at = ts
        if rst:
            facts.rsts.append((ts, side))
        if fin:
            facts.fins.append((ts, side))
        if (rst or fin) and facts.closed_at is None:
            facts.closed_at = ts
            facts.close_kind = f"rst-from-{side}" if rst else f"fin-{side}"

        seq = mine.unwrap(seg.seq)
        # What the peer has acknowledged; before any ACK is seen (capture started mid-flow), what
        # this side has sent.
        expected = mine.peer_ack if mine.peer_ack is not None else mine.max_end
        probe = (
            ack
            and not (syn or fin or rst)
            and seg.payload_len in (0, 1)
            and expected is not None
            and seq == expected - 1
            # A zero-window probe looks the same; it is flow control, not keepalive.
            and theirs.window != 0
        )
        if probe:
            getattr(facts, f"keepalive_{side}").append(ts)
        elif seg.payload_len > 0 and not rst:
            getattr(facts, f"data_{side}").append(ts)
            if seg.payload_len <= SMALL_RECORD_MAX:
                getattr(facts, f"small_records_{side}").append((ts, seg.payload_len))
            if mine.max_end is not None and seq < mine.max_end:
                setattr(facts, f"retransmissions_{side}", getattr(facts, f"retransmissions_{side}") + 1)

        end = seq + seg.payload_len + int(syn) + int(fin)
        if not probe:
            mine.max_end = end if mine.max_end is None else max(mine.max_end, end)
        if ack and not rst:
            acked = theirs.unwrap(seg.ack)
            theirs.peer_ack = acked if theirs.peer_ack is None else max(theirs.peer_ack, acked)
        if not rst:  # an RST's window field means nothing
            mine.window = seg.window

    def sort_key(self) -> tuple[float, float]:
        opened = self.facts.opened_at
        first = self.first_at if self.first_at is not None else 0.0
        return (opened if opened is not None else first, first)


class _Tracker:
    def __init__(self, server_ports: set[int] | None):
        self.server_ports = server_ports
        self.live: dict[tuple[tuple[str, int], tuple[str, int]], _Conn] = {}
        self.done: list[_Conn] = []

    def add(self, ts: float, seg: _Segment) -> None:
        if self.server_ports is not None and not (seg.src[1] in self.server_ports or seg.dst[1] in self.server_ports):
            return
        key = (min(seg.src, seg.dst), max(seg.src, seg.dst))
        conn = self.live.get(key)
        syn_only = bool(seg.flags & _SYN) and not seg.flags & _ACK
        if conn is not None and syn_only and seg.seq != conn.isn:
            # A new SYN with a new ISN on the same four-tuple: the port was reused by a reconnect.
            self.done.append(conn)
            conn = None
        if conn is None:
            conn = self._open(seg)
            self.live[key] = conn
        conn.add(ts, seg)

    def _open(self, seg: _Segment) -> _Conn:
        if seg.flags & _SYN and not seg.flags & _ACK:
            return _Conn(seg.src, seg.dst, seg.seq)
        if seg.flags & _SYN:  # SYN-ACK: the sender is the server
            return _Conn(seg.dst, seg.src, None)
        ports = self.server_ports or set()
        if seg.dst[1] in ports and seg.src[1] not in ports:
            return _Conn(seg.src, seg.dst, None)
        if seg.src[1] in ports and seg.dst[1] not in ports:
            return _Conn(seg.dst, seg.src, None)
        # No handshake seen and no hint: servers usually sit on the lower port.
        if seg.src[1] > seg.dst[1] or (seg.src[1] == seg.dst[1]):
            return _Conn(seg.src, seg.dst, None)
        return _Conn(seg.dst, seg.src, None)

    def connections(self) -> list[ConnFacts]:
        conns = sorted([*self.done, *self.live.values()], key=_Conn.sort_key)
        return [c.facts for c in conns]


# -- helpers --------------------------------------------------------------------------------------


def _fmt_endpoint(endpoint: tuple[str, int]) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _burst_starts(times: list[float]) -> list[float]:
    starts: list[float] = []
    last: float | None = None
    for t in sorted(times):
        if last is None or t - last >= BURST_GAP:
            starts.append(t)
        last = t
    return starts


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.2g}"



def _rounded(value: object) -> object:
    """Round floats to the microsecond a pcap records, so JSON output is stable across runs."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def _silence_before(conn: ConnFacts, t: float) -> float | None:
    """Seconds since the connection's previous packet (either direction) before time t."""
    earlier = [p for p in conn.packet_times if p < t - 1e-6]
    return t - max(earlier) if earlier else None


def _median(values: list[float | None]) -> float | None:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2
