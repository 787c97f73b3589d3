"""The LB emulator, or a whole chain of hops, in a local cluster's pods' path to kube-apiserver.

    pod ──bridge── root ns ──veth── [node0  first box] ... [last box  back0] ── api netns
                   kube-proxy: ClusterIP → VIP;      a nat hop's SNAT         front,
                   route VIP/32 via the first box    or the LB's DNAT         kube-apiserver

The same LB and nat hops as the embedded cells' (runner/embedded/lb.py, hop.py, chain.py: conntrack
modes, agents, front, event logs, captures); only the client side differs (runner/embedded/clientside.py,
NodeLink): instead of a bridge with pod namespaces in the first box's namespace, a veth from the root
namespace, where the node's pods and kube-proxy are. kube-proxy does not masquerade pod → ClusterIP
traffic from the cluster CIDR, so the first box sees the pods' own addresses as clients, and the way
back must cross the boxes as well: the api namespace routes the pods' /24 through the LB (or the last
nat hop's address, for a chain), and only the kubelet's node address keeps the direct host link, for
logs and exec. The runner's own admin path (root → host link → kube-apiserver) never crosses the LB.
"""

from __future__ import annotations

from pathlib import Path

from runner.config.paths import NetPath
from runner.config.profiles import Profile
from runner.embedded.chain import ChainLb
from runner.embedded.clientside import NodeLink
from runner.embedded.cluster import EmbeddedCluster
from runner.embedded.lb import LoadBalancer

#: The slot of the API path's LB (a LoadBalancer Service's LB takes another, runner/local/lbservice.py).
API_SLOT = 0


def node_link(cluster: EmbeddedCluster, pod_cidr: str, slot: int = API_SLOT) -> NodeLink:
    """The root namespace's link to the first box of the slot's path."""
    root_end, box_end = cluster.block.node_link(slot)
    return NodeLink(root_link=f"wd{cluster.run_id}l{slot}", root_end=root_end, box_end=box_end, net=pod_cidr)


def start_node_path(cluster: EmbeddedCluster, lb: Profile | NetPath, evidence_dir: Path, *, pod_cidr: str,
                    node_ip: str) -> LoadBalancer:
    """The LB (a profile) or chain of hops (a path) between the node's pods and kube-apiserver, running."""
    # First, before the boxes route the pods' /24 back through themselves: the kubelet's address
    # (its own flows to kube-apiserver, logs, exec, port 10250) keeps the host link.
    cluster.topology.route(cluster.api_ns, f"{node_ip}/32", cluster.block.host_root)
    clients = node_link(cluster, pod_cidr)
    if isinstance(lb, NetPath):
        return ChainLb(cluster, API_SLOT, lb, evidence_dir, clients=clients).start()
    return LoadBalancer(cluster, API_SLOT, lb, evidence_dir, clients=clients).start()
