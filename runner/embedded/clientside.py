"""Where a path's first box (an LB, or a chain's first nat hop) meets its clients.

    PodBridge:  pod netns ──veth── [br0  first box ...]            the embedded cells' pods
    NodeLink:   node's pods ── root ns ──veth── [node0  first box ...]   a local cluster's node

Every box after the first meets only the box before it (runner/embedded/hop.py, `link_hops`), so the
client side is the one part of a path that depends on where the clients are; the boxes, their rules,
agents and captures are the same for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from runner.host.netns import Block, Topology, add_bridge_argv


class ClientSide(Protocol):
    """The first box's interface toward its clients, their addresses, and how it is built."""

    @property
    def iface(self) -> str: ...

    @property
    def net(self) -> str: ...

    def attach(self, topo: Topology, ns: str, vip: str) -> None:
        """Build the client side in the box's namespace `ns`, so that clients reach `vip` through it."""
        ...


@dataclass(frozen=True)
class PodBridge:
    """A bridge the pods' namespaces attach to (LoadBalancer.add_pod), the box as their gateway."""

    gateway: str
    net: str
    iface: str = "br0"

    @classmethod
    def of_slot(cls, block: Block, slot: int) -> PodBridge:
        """The bridge of an LB slot's pod namespaces: its gateway and /25."""
        return cls(block.pod_gateway(slot), block.pod_net(slot))

    def attach(self, topo: Topology, ns: str, vip: str) -> None:
        topo.run_in(ns, add_bridge_argv(self.iface, self.gateway))
        topo.addr(ns, self.iface, f"{self.gateway}/25")
        # br_netfilter is built in: it would run the IP hooks (DNAT, the drops) at the bridge port,
        # before br0 sees a packet, hiding every dropped packet from the agent and the capture.
        topo.sysctl(ns, "net.bridge.bridge-nf-call-iptables", "0")


@dataclass(frozen=True)
class NodeLink:
    """A veth from the root namespace, where a local cluster's node keeps its pods and kube-proxy
    (runner/local/lbpath.py): the root namespace routes the VIP over it, the box routes the node's
    pod CIDR back. kube-proxy does not masquerade pod → ClusterIP traffic from the cluster CIDR, so
    the box sees the pods' own addresses."""

    root_link: str
    root_end: str
    box_end: str
    net: str
    iface: str = "node0"

    def attach(self, topo: Topology, ns: str, vip: str) -> None:
        # The root end goes with the box's namespace (a veth pair dies with either end's namespace).
        topo.veth(None, self.root_link, ns, self.iface)
        topo.addr(None, self.root_link, f"{self.root_end}/30")
        topo.addr(ns, self.iface, f"{self.box_end}/30")
        topo.route(ns, self.net, self.root_end)
        # A scoped device route, not Topology.route: it must vanish with the veth, and `clean`
        # finds nothing of it to undo.
        topo.log.run(["ip", "route", "replace", f"{vip}/32", "via", self.box_end, "dev", self.root_link])
