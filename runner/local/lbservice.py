"""LoadBalancer Services on the local cluster: the LB emulator as the cloud's LB, and its controller.

    outside client ──br0──┐                                  ┌── root ns: the node (kube-proxy NodePort → pod)
      (198.18 /25)        [ svc LB netns: VIP, DNAT only ]──back0──[ NAT hop ]──
    node's pods ──root──hair┘   VIP:port → node IP:NodePort        masquerade

The same LB as the embedded cells' and the API path's (runner/embedded/lb.py: conntrack modes, agent,
event log, captures) with the cluster's profile. Its clients are outside clients on its bridge (each
in its own network namespace, as the runner's machine is outside a cloud's cluster) and the node's
own pods, whose traffic to the VIP the root namespace routes to the LB (the `hair` link, enslaved to
the same bridge), so in-cluster clients cross it as on a cloud with a proxy-mode LB.

The LB itself only DNATs, so its agent and event log see each client's own address (and can send its
exact-sequence RSTs both ways); a NAT hop behind it masquerades toward the node, so every reply comes
back through the LB, also for a pod whose reply would otherwise go straight across the node's bridge.
The Service's `loadBalancerSourceRanges` are enforced at the VIP, as a cloud's LB does.

`ServiceLbController` is the service controller's part (the cluster admin's identity, not the
runner's): it waits for a LoadBalancer Service's NodePorts, points the LB at them and writes the VIP
into the Service's status with `ipMode: Proxy` (KEP-1860, GA in 1.32; the pinned 1.34 has it), so
kube-proxy leaves the VIP alone instead of short-circuiting it inside the node.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from kubernetes import client

from runner.config.profiles import Profile
from runner.embedded.cluster import EmbeddedCluster
from runner.embedded.lb import LoadBalancer, nft_ruleset
from runner.errors import ClusterError
from runner.host.commands import in_netns

#: The LB slot Services get (slot 0 is the API path's LB, runner/local/lbpath.py).
SERVICE_SLOT = 1


class ServiceLoadBalancer(LoadBalancer):
    """A LoadBalancer Service's LB: VIP ports → the node's NodePorts, through a NAT hop."""

    def __init__(self, cluster: EmbeddedCluster, slot: int, profile: Profile, evidence_dir: Path, *,
                 node_ip: str, pod_cidr: str, node_ports: dict[int, int], source_ranges: Sequence[str]):
        super().__init__(cluster, slot, profile, evidence_dir)
        self.node_ip, self.node_pod_cidr = node_ip, pod_cidr
        self.node_ports = dict(node_ports)
        self.source_ranges = list(source_ranges)
        self.hop_ns = ""
        self.hair_link = f"wd{cluster.run_id}s{slot}"
        self.hop_link = f"wd{cluster.run_id}t{slot}"

    @property
    def client_nets(self) -> list[str]:
        return [self.pod_net, self.node_pod_cidr]

    def _backend_side(self) -> None:
        b, s, ns = self.block, self.slot, self.netns
        lb_end, hop_end = b.lb_link(s)
        root_end, hop_root_end = b.hop_link(s)
        self.hop_ns = hop = self.topo.add_ns(f"lb{s}hop")
        self.topo.veth(ns, "back0", hop, "lb0")
        self.topo.addr(ns, "back0", f"{lb_end}/30")
        self.topo.addr(hop, "lb0", f"{hop_end}/30")
        # The root end goes with the hop's namespace (a veth pair dies with either end's namespace).
        self.topo.veth(None, self.hop_link, hop, "node0")
        self.topo.addr(None, self.hop_link, f"{root_end}/30")
        self.topo.addr(hop, "node0", f"{hop_root_end}/30")
        self.topo.route(ns, f"{self.node_ip}/32", hop_end)
        self.topo.route(hop, f"{self.node_ip}/32", root_end)
        self.topo.run_in(hop, ["ip", "route", "add", "default", "via", lb_end])
        self.topo.sysctl(hop, "net.ipv4.ip_forward", "1")
        self.log.run(in_netns(hop, ["nft", "-f", "-"]), input_text=(
            f"table ip {self.table}_hop {{\n  chain post {{\n    type nat hook postrouting priority srcnat; "
            f"policy accept;\n    oifname \"node0\" masquerade\n  }}\n}}\n"))

    def _pod_side(self) -> None:
        super()._pod_side()
        b, s, ns = self.block, self.slot, self.netns
        root_end, lb_end = b.node_link(s)
        # The node's pods reach the VIP over a link on the same bridge as the outside clients; its root
        # end goes with the LB's namespace.
        self.topo.veth(None, self.hair_link, ns, "hair0")
        self.topo.run_in(ns, ["ip", "link", "set", "hair0", "master", "br0", "up"])
        self.topo.addr(None, self.hair_link, f"{root_end}/30")
        self.topo.run_in(ns, ["ip", "addr", "add", f"{lb_end}/30", "dev", "br0"])
        self.topo.route(ns, self.node_pod_cidr, root_end)
        # A scoped device route, as the API path's: it vanishes with the veth.
        self.log.run(["ip", "route", "replace", f"{self.vip}/32", "via", lb_end, "dev", self.hair_link])

    def _start_front(self) -> None:
        """No front: a profile's tcp or http front stands for the provider's front end of kube-apiserver;
        a Service's LB forwards to the node's ports itself."""

    def _ruleset(self) -> str:
        ranges = ", ".join(self.source_ranges)
        allow = f"ip saddr {{ {ranges} }} " if ranges else ""
        dnat = "".join(f"ip daddr {self.vip} {allow}tcp dport {port} dnat to {self.node_ip}:{node_port}\n    "
                       for port, node_port in sorted(self.node_ports.items()))
        return nft_ruleset(table=self.table, profile=self.profile, vip=self.vip, api_target=self.node_ip,
                           timer=self.node_ip, dnat=dnat)

    def _agent_maps(self) -> list[str]:
        return [f"{port}={self.node_ip}:{node_port}" for port, node_port in sorted(self.node_ports.items())]

    def close(self) -> None:
        super().close()
        if self.hop_ns and self.hop_ns in self.topo.namespaces:
            self.log.run(in_netns(self.hop_ns, ["nft", "delete", "table", "ip", f"{self.table}_hop"]), check=False)


class ServiceLbController:
    """The service controller's part for one LoadBalancer Service, with the cluster admin's API."""

    def __init__(self, control: EmbeddedCluster, profile: Profile, evidence_dir: Path, *, node_ip: str,
                 pod_cidr: str, new_api: Callable[[], client.ApiClient], note: Callable[[str], None]):
        self.control, self.profile, self.evidence_dir = control, profile, evidence_dir
        self.node_ip, self.pod_cidr = node_ip, pod_cidr
        self.new_api, self.note = new_api, note
        self.lb: ServiceLoadBalancer | None = None

    @property
    def vip(self) -> str:
        return self.control.block.vip(SERVICE_SLOT)

    @property
    def outside_net(self) -> str:
        """Where outside clients' addresses come from (the LB's bridge)."""
        return self.control.block.pod_net(SERVICE_SLOT)

    def serve(self, namespace: str, name: str, timeout: float = 30.0) -> ServiceLoadBalancer:
        """Once the Service has its NodePorts: the LB up in front of them, the VIP in its status."""
        api = self.new_api()
        core = client.CoreV1Api(api)
        try:
            deadline = time.monotonic() + timeout
            while True:
                svc = core.read_namespaced_service(name, namespace, _request_timeout=10)
                ports = {p.port: p.node_port for p in svc.spec.ports or [] if p.node_port}
                if svc.spec.type == "LoadBalancer" and ports and len(ports) == len(svc.spec.ports):
                    break
                if time.monotonic() > deadline:
                    raise ClusterError(f"Service {namespace}/{name} got no NodePorts within {timeout:.0f} s",
                                       fix="see kube-apiserver.log in the cluster's evidence")
                time.sleep(0.2)
            self.lb = ServiceLoadBalancer(self.control, SERVICE_SLOT, self.profile, self.evidence_dir,
                                          node_ip=self.node_ip, pod_cidr=self.pod_cidr, node_ports=ports,
                                          source_ranges=svc.spec.load_balancer_source_ranges or [])
            self.lb.start()
            core.patch_namespaced_service_status(name, namespace, body={"status": {"loadBalancer": {"ingress": [
                {"ip": self.vip, "ipMode": "Proxy"}]}}}, _request_timeout=10)
            self.note(f"Service {namespace}/{name}: LB {self.profile.name} at {self.vip} → "
                      + ", ".join(f"{p}→{self.node_ip}:{n}" for p, n in sorted(ports.items())))
            return self.lb
        finally:
            api.close()

    def close(self) -> None:
        """Agent, captures and rules; the namespaces go with the cluster's topology."""
        if self.lb is not None:
            self.lb.close()
            self.lb = None
