"""The LB emulator in a local cluster's pods' path to kube-apiserver.

    pod ──bridge── root ns (kube-proxy DNAT ClusterIP → VIP) ──veth── [node0  LB netns  back0] ── api netns
                   route VIP/32 via the LB end                         VIP, DNAT only       front, kube-apiserver

The same LB as the embedded cells' (runner/embedded/lb.py: conntrack modes, agent, front, event
log, captures); only its client side differs: instead of a bridge with pod namespaces in the LB
namespace, a veth from the root namespace, where the node's pods and kube-proxy are. kube-proxy does
not masquerade pod → ClusterIP traffic from the cluster CIDR, so the LB sees the pods' own
addresses as clients, and the way back must cross the LB too: the api namespace routes the pods'
/24 through the LB (only the kubelet's node address keeps the direct host link, for logs and exec).
The runner's own admin path (root → host link → kube-apiserver) never crosses the LB.
"""

from __future__ import annotations

from pathlib import Path

from runner.config.profiles import Profile
from runner.embedded.cluster import EmbeddedCluster
from runner.embedded.lb import LoadBalancer


class NodeLoadBalancer(LoadBalancer):
    """A LoadBalancer whose clients are the root namespace's pods (a node's bridge), not its own bridge."""

    pod_iface = "node0"

    def __init__(self, cluster: EmbeddedCluster, slot: int, profile: Profile, evidence_dir: Path, *,
                 pod_cidr: str, node_ip: str):
        super().__init__(cluster, slot, profile, evidence_dir)
        self.node_pod_cidr = pod_cidr
        self.node_ip = node_ip
        self.root_link = f"wd{cluster.run_id}l{slot}"

    @property
    def pod_net(self) -> str:
        return self.node_pod_cidr

    def _pod_side(self) -> None:
        b, ns, api_ns = self.block, self.netns, self.cluster.api_ns
        root_end, lb_end = b.node_link(self.slot)
        # The root end goes with the LB namespace (a veth pair dies with either end's namespace).
        self.topo.veth(None, self.root_link, ns, self.pod_iface)
        self.topo.addr(None, self.root_link, f"{root_end}/30")
        self.topo.addr(ns, self.pod_iface, f"{lb_end}/30")
        self.topo.route(ns, self.node_pod_cidr, root_end)
        # A scoped device route, not Topology.route: it must vanish with the veth, and `clean`
        # finds nothing of it to undo.
        self.log.run(["ip", "route", "replace", f"{self.vip}/32", "via", lb_end, "dev", self.root_link])
        # The way back from kube-apiserver (and the front) to the pods crosses the LB as well; the
        # kubelet's address (logs, exec, port 10250) keeps the host link.
        self.topo.route(api_ns, f"{self.node_ip}/32", b.host_root)
