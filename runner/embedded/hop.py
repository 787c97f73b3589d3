"""A `nat` hop of a chain: one network namespace that masquerades the pods' flows toward the next hop.

    pods ──br0 [hop 0: SNAT to its out0 address] out0──in0 [hop 1 ...] out0──in0 [last hop: the LB] ── api
    (on a local cluster the first hop meets the node over node0 instead: runner/embedded/clientside.py)

It stands for an outbound rule of an Azure Standard LB, a NAT gateway, a Private Link Service: a box
that rewrites the source, keeps a conntrack entry per flow and forgets it after its own idle timer,
with the behaviour of runner/embedded/lb.py's modes (the same `ct timeout` object and `expired`
chain, plus `rst-inside-only`: an AWS NAT gateway resets only the hosts behind it). The same agent
(runner/embedded/lbagent.py, with `--hop` and `--snat`) writes the hop's own event log and does what
the kernel cannot (RST both ways; an ordered timer's exact cut). Both legs are captured.

Evidence names: `hop-<name>-events.jsonl`, `hop-<name>-pod-leg.pcap`, `hop-<name>-server-leg.pcap`,
`hop-<name>-agent.log`, so that the last hop keeps today's `lb-*` names.
"""

from __future__ import annotations

from pathlib import Path

from runner.config.paths import Hop
from runner.embedded.clientside import ClientSide, PodBridge
from runner.embedded.cluster import APISERVER_PORT, EmbeddedCluster
from runner.embedded.lb import TIMER_PORTS, AgentSpec, expired_chain, start_agent, timeout_chains
from runner.evidence.lb_events import LbProblem
from runner.host.capture import Capture, stop_captures
from runner.host.commands import in_netns
from runner.host.netns import Topology
from runner.host.procs import Child

#: Every port a client may dial on the VIP: the ports the hop's agent follows flows on.
PORTS = (APISERVER_PORT, *TIMER_PORTS)


def agent_cuts(hop: Hop) -> bool:
    """Whether the hop's agent forgets flows itself: an ordered timer, finer than conntrack's whole seconds."""
    return hop.order_ms > 0 and hop.mode not in ("none", "rst-both-ways")


def nat_hop_ruleset(*, table: str, hop: Hop, vip: str, inside: str, snat: str) -> str:
    """A nat hop's whole nftables ruleset, as text for `nft -f -`."""
    timeouts = timeout_chains(mode=hop.mode, idle_timeout=hop.idle_timeout, vip=vip, cut=agent_cuts(hop))
    return f"""table ip {table} {{
{timeouts}{expired_chain(hop.mode, inside)}  chain nat_post {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "out0" snat to {snat}
  }}
  chain rst_out {{
    # The agent's and the kernel's own RSTs leave as built: tracked, the server-side one (from the
    # masquerade address) would be a new flow clashing with the live one and get another port.
    type filter hook output priority raw; policy accept;
    tcp flags & rst == rst notrack
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct state new iifname "{inside}" ip daddr {vip} accept
    counter drop
  }}
  chain input {{
    type filter hook input priority filter; policy drop;
    ct state established,related accept
  }}
}}
"""


class NatHop:
    """One nat hop of a slot's chain; `start()` builds it, `close()` stops what runs in it."""

    def __init__(self, cluster: EmbeddedCluster, slot: int, index: int, hop: Hop, evidence_dir: Path,
                 previous: NatHop | None, clients: ClientSide | None = None):
        """`cluster` gives the run's topology, log, block and id (an EmbeddedCluster or a stand-in);
        `clients` the first hop's client side (runner/embedded/clientside.py; default: the slot's pod bridge)."""
        self.topo, self.log, self.block = cluster.topology, cluster.log, cluster.block
        self.slot, self.index, self.hop, self.previous = slot, index, hop, previous
        self.clients: ClientSide = clients or PodBridge.of_slot(self.block, slot)
        self.evidence_dir = evidence_dir
        self.table = f"watchdrop_{cluster.run_id}"
        self.vip = self.block.vip(slot)
        self.netns = ""
        self.agent: Child | None = None
        self.captures: list[Capture] = []
        self.events_path = evidence_dir / f"hop-{hop.name}-events.jsonl"

    @property
    def inside(self) -> str:
        """The interface toward the pods: the client side on the first hop, else the link from the previous hop."""
        return self.clients.iface if self.previous is None else "in0"

    @property
    def snat(self) -> str:
        """The address this hop masquerades to: its end of the link to the next hop."""
        return self.block.chain_link(self.slot, self.index)[0]

    @property
    def next_hop(self) -> str:
        return self.block.chain_link(self.slot, self.index)[1]

    @property
    def client_net(self) -> str:
        """Where this hop's clients come from: the pods, or the previous hop's masquerade address."""
        return self.clients.net if self.previous is None else f"{self.previous.snat}/32"

    def start(self) -> NatHop:
        """The namespace and its client side; the rest comes with `link_next`, once the next hop exists."""
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        self.evidence_dir.mkdir(parents=True, exist_ok=True)
        self.netns = ns = self.topo.add_ns(f"lb{self.slot}h{self.index}")
        if self.previous is None:
            self.clients.attach(self.topo, ns, self.vip)
        # A later hop's in0 comes with the previous hop's link_next.
        self.topo.sysctl(ns, "net.ipv4.ip_forward", "1")
        self.topo.sysctl(ns, "net.netfilter.nf_conntrack_tcp_loose", "0")
        self.topo.sysctl(ns, "net.netfilter.nf_conntrack_tcp_be_liberal", "1")

    def link_next(self, next_ns: str) -> None:
        """The link to the next hop, the route to the VIP over it, the rules, captures and agent."""
        try:
            self._link_next(next_ns)
        except BaseException:
            self.close()
            raise

    def _link_next(self, next_ns: str) -> None:
        link_hops(self.topo, self.netns, next_ns, self.snat, self.next_hop)
        self.topo.run_in(self.netns, ["ip", "route", "add", f"{self.vip}/32", "via", self.next_hop])
        self.log.run(in_netns(self.netns, ["nft", "-f", "-"]), input_text=nat_hop_ruleset(
            table=self.table, hop=self.hop, vip=self.vip, inside=self.inside, snat=self.snat))
        prefix = f"hop-{self.hop.name}"
        self.captures = [
            Capture(self.netns, self.inside, self.evidence_dir / f"{prefix}-pod-leg.pcap", self.log).start(),
            Capture(self.netns, "out0", self.evidence_dir / f"{prefix}-server-leg.pcap", self.log).start(),
        ]
        spec = AgentSpec(mode=self.hop.mode, idle_timeout=self.hop.idle_timeout, pod_iface=self.inside,
                         client_nets=(self.client_net,), backend_iface="out0", vip=self.vip,
                         maps=tuple(f"{p}={self.vip}:{p}" for p in PORTS), events=self.events_path,
                         hop=self.hop.name, snat=self.snat, order_ms=self.hop.order_ms, cut=agent_cuts(self.hop))
        self.agent = start_agent(f"hop agent {self.slot}/{self.hop.name}", self.netns, spec.argv(),
                                 self.evidence_dir / f"{prefix}-agent.log", self.events_path, self.log,
                                 f"hop {self.hop.name}")

    def problems(self) -> list[LbProblem]:
        out = []
        if self.agent is not None and not self.agent.alive():
            out.append(LbProblem("agent", f"the agent of hop {self.hop.name} died (exit {self.agent.returncode})"))
        out += [LbProblem("capture", f"the capture {c.pcap.name} of hop {self.hop.name} stopped")
                for c in self.captures if not c.alive()]
        return out

    def close(self) -> None:
        """Stop the agent and captures, drop the table (the namespace goes with the topology)."""
        if self.agent is not None:
            self.agent.stop(grace=5)
        stop_captures(self.captures)
        if self.netns and self.netns in self.topo.namespaces:
            self.log.run(in_netns(self.netns, ["nft", "delete", "table", "ip", self.table]), check=False)


def link_hops(topo: Topology, from_ns: str, to_ns: str, from_addr: str, to_addr: str) -> None:
    """The /30 between two hops: `out0` in the pod-side one, `in0` in the server-side one."""
    topo.veth(from_ns, "out0", to_ns, "in0")
    topo.addr(from_ns, "out0", f"{from_addr}/30")
    topo.addr(to_ns, "in0", f"{to_addr}/30")
