"""The load-balancer emulator: one namespace per profile, the kernel's conntrack and nftables.

    pod netns ──veth── [br0  LB netns  back0] ──veth── api netns (front, kube-apiserver, timer)
      198.18.x.130+      VIP .8, DNAT only        service addresses on lo

The LB only DNATs (like Azure's Standard LB, backends see the pod's real address) and forgets a
flow after `idle_timeout` seconds without a packet, as the profile's mode says:

* silent-drop / rst-on-next-packet: conntrack's established timeout is set to the idle timeout
  with a `ct timeout` object (applied at priority -160: at raw priority it is a silent no-op,
  docs/facts.md). `nf_conntrack_tcp_loose=0` and an explicit rule make every later packet "invalid"
  or "new non-SYN", which is dropped, or answered with an RST that only its sender hears.
* rst-both-ways: the conntrack timeout is longer, and the LB agent (runner/embedded/lbagent.py) cuts the
  flow at the deadline with exact-sequence RSTs to both ends.
* none: plain forwarding, the control.

Behind the LB sits the profile's front (runner/embedded/front.py, docs/facts.md "Fronts"): a real
HAProxy in TCP mode (`tcp`, as the provider's TCP front end: the API server's own 3-minute TCP
keepalives end at it instead of keeping the client's flow alive), in HTTP mode (`http`, an L7 front
with its own TLS, client connections and pool: the API server's 90 s idle close ends at it too), or
nothing (`passthrough`: the VIP's DNAT goes straight to kube-apiserver).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from runner.config.profiles import Profile
from runner.credentials import pki
from runner.embedded.clientside import ClientSide, PodBridge
from runner.embedded.cluster import APISERVER_PORT, EmbeddedCluster
from runner.embedded.front import FrontTls, haproxy_config
from runner.errors import ClusterError
from runner.evidence.jsonl import read_timed
from runner.evidence.lb_events import LbProblem
from runner.host.capture import Capture, stop_captures
from runner.host.commands import CommandLog, in_netns
from runner.host.procs import Child, stop_together, wait_until

TIMER_PORTS = (8005, 8600)
#: rst-both-ways: the kernel must not forget the flow before the agent cuts it.
RST_BOTH_WAYS_MARGIN = 60


@dataclass(frozen=True)
class Pod:
    """A watcher's network namespace behind one LB."""

    netns: str
    addr: str
    iface: str = "eth0"


def timeout_chains(*, mode: str, idle_timeout: int, vip: str, cut: bool = False) -> str:
    """The `ct timeout` object and the chain that applies it to new flows toward `vip` (empty for `none`).

    When the agent cuts the flow itself (rst-both-ways, or an ordered timer: `cut`), the kernel's
    timeout is longer by RST_BOTH_WAYS_MARGIN, so the kernel never forgets the flow first."""
    if mode == "none":
        return ""
    est = idle_timeout + (RST_BOTH_WAYS_MARGIN if mode == "rst-both-ways" or cut else 0)
    return (
        "  ct timeout lbidle {\n    protocol tcp;\n    l3proto ip;\n"
        f"    policy = {{ established: {est}, close_wait: {est} }}\n  }}\n"
        "  chain ct_timeout {\n    type filter hook prerouting priority -160; policy accept;\n"
        f"    ct state new ip daddr {vip} ct timeout set \"lbidle\"\n  }}\n"
    )


def expired_chain(mode: str, inside_iface: str = "br0") -> str:
    """What the hop does with a packet of a flow it forgot: drop it, or answer with an RST that only
    its sender hears (rst-on-next-packet), or only when the sender is on the client side
    (`inside_iface`, rst-inside-only: an AWS NAT gateway resets the hosts behind it, no one else)."""
    rules = []
    for match in ("ct state invalid", "ct state new tcp flags & (fin|syn|rst|ack) != syn"):
        if mode == "rst-inside-only":
            rules.append(f"{match} iifname \"{inside_iface}\" counter reject with tcp reset")
            rules.append(f"{match} counter drop")
        else:
            rules.append(f"{match} counter {'reject with tcp reset' if mode == 'rst-on-next-packet' else 'drop'}")
    body = "".join(f"    {r}\n" for r in rules)
    return f"  chain expired {{\n    type filter hook prerouting priority -150; policy accept;\n{body}  }}\n"


def nft_ruleset(*, table: str, profile: Profile, vip: str, api_target: str, timer: str,
                dnat: str | None = None, inside_iface: str = "br0", cut: bool = False) -> str:
    """The LB namespace's whole nftables ruleset, as text for `nft -f -`; `dnat` replaces the
    VIP's DNAT rules (a Service LB's: VIP ports to NodePorts, runner/local/lbservice.py).
    `inside_iface` is the client side (rst-inside-only), `cut` an agent-timed expiry (timeout_chains)."""
    ports = " ".join(
        f"ip daddr {vip} tcp dport {p} dnat to {timer}:{p}\n" for p in TIMER_PORTS
    )
    api = f"ip daddr {vip} tcp dport {APISERVER_PORT} dnat to {api_target}:{APISERVER_PORT}\n"
    nat = dnat if dnat is not None else f"{api}    {ports}"
    timeouts = timeout_chains(mode=profile.mode, idle_timeout=profile.idle_timeout, vip=vip, cut=cut)
    return f"""table ip {table} {{
{timeouts}{expired_chain(profile.mode, inside_iface)}  chain nat_pre {{
    type nat hook prerouting priority dstnat; policy accept;
    {nat}  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct state new ct status dnat accept
    counter drop
  }}
  chain input {{
    type filter hook input priority filter; policy drop;
    ct state established,related accept
  }}
}}
"""


@dataclass(frozen=True)
class AgentSpec:
    """What one agent (runner/embedded/lbagent.py) watches and does; the hop settings only for a chain's hops."""

    mode: str
    idle_timeout: int
    pod_iface: str
    client_nets: tuple[str, ...]
    backend_iface: str
    vip: str
    maps: tuple[str, ...]
    events: Path
    hop: str | None = None
    snat: str | None = None
    order_ms: int = 0
    cut: bool = False

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "runner.embedded.lbagent", "--mode", self.mode,
                "--idle-timeout", str(self.idle_timeout), "--pod-iface", self.pod_iface,
                *(x for net in self.client_nets for x in ("--pod-net", net)), "--backend-iface", self.backend_iface,
                "--vip", self.vip, *(x for m in self.maps for x in ("--map", m)), "--events", str(self.events)]
        if self.hop is not None:
            argv += ["--hop", self.hop]
        if self.snat is not None:
            argv += ["--snat", self.snat]
        if self.order_ms:
            argv += ["--offset-ms", str(self.order_ms)]
        if self.cut:
            argv.append("--cut")
        return argv


#: The LB agents' SCHED_FIFO priority: above every normal process, below the kernel's own threads (50).
AGENT_PRIORITY = 10


def start_agent(name: str, netns: str, argv: list[str], stdout: Path, events: Path, log: CommandLog,
                what: str) -> Child:
    """The agent started in `netns`; returns once its event log says `ready`.

    It runs at a real-time priority (AGENT_PRIORITY): its RSTs must leave at the deadline, within
    the ±5 ms the hop tests hold it to, while every watcher of a full matrix wants the CPU. It
    sleeps in select() between packets and deadlines, so it takes little, and the kernel's RT
    throttling bounds it if it ever spun."""
    agent = Child(name, in_netns(netns, ["chrt", "--fifo", str(AGENT_PRIORITY), *argv]), stdout=stdout, log=log,
                  cwd=Path(__file__).resolve().parents[2])
    wait_until(lambda: any(e.get("event") == "ready" for e in read_timed(events)), agent, 20,
               f"ready (its event log's `ready` line, {what})")
    return agent


class LoadBalancer:
    """One profile's LB namespace, front, agent and captures. `close()` undoes all of it."""

    def __init__(self, cluster: EmbeddedCluster, slot: int, profile: Profile, evidence_dir: Path, *,
                 clients: ClientSide | None = None):
        """`clients`: where the LB meets its clients (runner/embedded/clientside.py; default: a bridge
        for the slot's pod namespaces)."""
        self.cluster = cluster
        self.slot = slot
        self.profile = profile
        self.evidence_dir = evidence_dir
        self.log = cluster.log
        self.topo = cluster.topology
        self.block = cluster.block
        self.netns = ""
        self.table = f"watchdrop_{cluster.run_id}"
        self.front: Child | None = None
        self.agent: Child | None = None
        self.captures: list[Capture] = []
        self.pods: list[Pod] = []
        self.vip = self.block.vip(slot)
        self.clients: ClientSide = clients or PodBridge.of_slot(self.block, slot)
        self.events_path = evidence_dir / "lb-events.jsonl"

    @property
    def has_front(self) -> bool:
        """Whether a proxy answers the client in kube-apiserver's place (every front but `passthrough`)."""
        return self.profile.front != "passthrough"

    @property
    def api_target(self) -> str:
        return self.block.front(self.slot) if self.has_front else self.block.apiserver

    @property
    def pod_iface(self) -> str:
        """The LB namespace's interface toward its clients (the pods), where the agent and capture look."""
        return self.clients.iface

    @property
    def pod_net(self) -> str:
        """The clients' addresses: the agent tells a pod from a backend by them."""
        return self.clients.net

    def _backend_side(self) -> None:
        """The link to the backends: here the api namespace (front, kube-apiserver, timer)."""
        b, s, ns, api_ns = self.block, self.slot, self.netns, self.cluster.api_ns
        lb_end, be_end = b.lb_link(s)
        self.topo.veth(ns, "back0", api_ns, f"lb{s}")
        self.topo.addr(ns, "back0", f"{lb_end}/30")
        self.topo.addr(api_ns, f"lb{s}", f"{be_end}/30")
        self.topo.route(ns, b.service_net, be_end)
        self.topo.route(api_ns, self.pod_net, lb_end)

    def _ruleset(self) -> str:
        return nft_ruleset(table=self.table, profile=self.profile, vip=self.vip, api_target=self.api_target,
                           timer=self.block.timer, inside_iface=self.pod_iface)

    def _agent_maps(self) -> list[str]:
        """The agent's `--map VPORT=HOST:PORT`s: what each VIP port is DNATed to."""
        return [f"{APISERVER_PORT}={self.api_target}:{APISERVER_PORT}",
                *(f"{p}={self.block.timer}:{p}" for p in TIMER_PORTS)]

    @property
    def client_nets(self) -> list[str]:
        """Every network the LB's clients come from (the agent's `--pod-net`s)."""
        return [self.pod_net]

    def _pod_side(self) -> None:
        """The client side (by default a bridge in the LB namespace that `add_pod` attaches pod namespaces to)."""
        self.clients.attach(self.topo, self.netns, self.vip)

    def server_url(self) -> str:
        return f"https://{self.vip}:{APISERVER_PORT}"

    def start(self) -> LoadBalancer:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        self.evidence_dir.mkdir(parents=True, exist_ok=True)
        s = self.slot
        self.netns = ns = self.topo.add_ns(f"lb{s}")
        self._backend_side()
        self.topo.run_in(ns, ["ip", "addr", "add", f"{self.vip}/32", "dev", "lo"])
        self._pod_side()
        self.topo.sysctl(ns, "net.ipv4.ip_forward", "1")
        # Without this, a late packet re-adopts an expired flow and the LB forgets nothing (docs/facts.md).
        self.topo.sysctl(ns, "net.netfilter.nf_conntrack_tcp_loose", "0")
        # Window tracking must not call a live flow's packets invalid (they would be dropped as if
        # expired, e.g. under load); a packet of a forgotten flow stays invalid: it has no entry.
        self.topo.sysctl(ns, "net.netfilter.nf_conntrack_tcp_be_liberal", "1")
        self.log.run(in_netns(ns, ["nft", "-f", "-"]), input_text=self._ruleset())
        if self.has_front:
            self._start_front()
        self.captures = [
            Capture(ns, self.pod_iface, self.evidence_dir / "lb-pod-leg.pcap", self.log).start(),
            Capture(ns, "back0", self.evidence_dir / "lb-server-leg.pcap", self.log).start(),
        ]
        self._start_agent()

    def _start_front(self) -> None:
        api_ns, front = self.cluster.api_ns, self.block.front(self.slot)
        self.topo.run_in(api_ns, ["ip", "addr", "add", f"{front}/32", "dev", "lo"])
        cfg = self.cluster.workdir / f"haproxy-{self.slot}.cfg"
        cfg.write_text(haproxy_config(self.profile.front, front, self.block.apiserver, self._front_tls()))
        self.front = Child(f"haproxy {self.profile.front} front {self.slot}",
                           in_netns(api_ns, ["haproxy", "-db", "-f", cfg]),
                           stdout=self.evidence_dir / "front.log", log=self.log)
        self._wait_listening(api_ns, front, APISERVER_PORT, self.front)

    def _front_tls(self) -> FrontTls | None:
        """An `http` front's certificate (issued by the cluster's CA for this slot) and the CA; None otherwise."""
        if self.profile.front != "http":
            return None
        if self.cluster.pki is None:
            raise ClusterError("an http front needs the cluster's CA, and the cluster has none yet",
                               fix="start the cluster before its LBs")
        # In the cluster's 0700 work dir, wiped with it.
        cert = pki.issue_front(self.cluster.pki, f"front-{self.slot}")
        return FrontTls(cert_pem=cert, ca_file=self.cluster.pki.ca_cert)

    def _agent_spec(self) -> AgentSpec:
        return AgentSpec(mode=self.profile.mode, idle_timeout=self.profile.idle_timeout, pod_iface=self.pod_iface,
                         client_nets=tuple(self.client_nets), backend_iface="back0", vip=self.vip,
                         maps=tuple(self._agent_maps()), events=self.events_path)

    def _start_agent(self) -> None:
        self.agent = start_agent(f"lb agent {self.slot}", self.netns, self._agent_spec().argv(),
                                 self.evidence_dir / "lb-agent.log", self.events_path, self.log,
                                 f"profile {self.profile.name}")

    def _wait_listening(self, ns: str, addr: str, port: int, child: Child) -> None:
        def listening() -> bool:
            return bool(self.topo.run_in(ns, ["ss", "-Hltn", f"src {addr}:{port}"], check=False).stdout.strip())

        wait_until(listening, child, 10, f"listening on {addr}:{port}")

    @property
    def bridge_ns(self) -> str:
        """The namespace whose bridge the pods attach to (a chain's first hop, runner/embedded/chain.py)."""
        return self.netns

    def add_pod(self, log: CommandLog | None = None) -> Pod:
        """A pod namespace on this LB's bridge; `log` records the commands in the cell's evidence."""
        bridge = self.clients
        if not isinstance(bridge, PodBridge):
            raise ClusterError(f"the LB of {self.profile.name} meets its clients over {bridge.iface}, not a bridge "
                               "for pod namespaces", fix="attach pods to an LB built with the default PodBridge")
        idx = len(self.pods)
        addr = self.block.pod_addr(self.slot, idx)
        ns = self.topo.add_ns(f"lb{self.slot}-pod{idx}", log=log)
        port = f"p{idx}"
        self.topo.veth(self.bridge_ns, port, ns, "eth0", log=log)
        self.topo.run_in(self.bridge_ns, ["ip", "link", "set", port, "master", bridge.iface, "up"], log=log)
        self.topo.addr(ns, "eth0", f"{addr}/25", log=log)
        # Only the VIP is reachable from a pod: no default route, nothing else in 198.18.
        self.topo.run_in(ns, ["ip", "route", "add", f"{self.vip}/32", "via", bridge.gateway],
                         log=log)
        pod = Pod(netns=ns, addr=addr)
        self.pods.append(pod)
        return pod

    def hop_logs(self) -> list[tuple[str, Path]]:
        """Each hop's event log by hop name, pod side first: a single LB has one (a chain overrides it)."""
        return [("lb", self.events_path)]

    def problems(self) -> list[LbProblem]:
        """Why this LB can no longer be trusted (an empty list while it is whole)."""
        out = []
        name = self.profile.name
        if self.agent is not None and not self.agent.alive():
            out.append(LbProblem("agent", f"the LB agent of {name} died (exit {self.agent.returncode})"))
        if self.front is not None and not self.front.alive():
            out.append(LbProblem("front", f"the front proxy of {name} died (exit {self.front.returncode})"))
        for cap in self.captures:
            if not cap.alive():
                out.append(LbProblem("capture", f"the LB capture {cap.pcap.name} of {self.profile.name} stopped"))
        return out

    def close(self) -> None:
        """Stop agent, captures and front (namespaces go with the cluster's topology)."""
        # Agent and front first, so each capture's last packets are in before it settles.
        stop_together([c for c in (self.agent, self.front) if c is not None], grace=5)
        stop_captures(self.captures)
        if self.netns and self.netns in self.topo.namespaces:
            self.log.run(in_netns(self.netns, ["nft", "delete", "table", "ip", self.table]), check=False)
