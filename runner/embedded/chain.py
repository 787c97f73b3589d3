"""A chain of hops in front of kube-apiserver: the nat hops (runner/embedded/hop.py) and the last hop.

    pods ──br0 [nat hop 0] out0──in0 [nat hop 1] ... out0──in0 [last hop: LB, VIP, DNAT] back0── api ns
    (a local cluster's node meets the first hop over node0 instead of br0: runner/local/lbpath.py)

The last hop is today's LB (runner/embedded/lb.py) with the path's last hop as its profile, its
client side the link from the previous hop instead of the pods' bridge, and its agent writing the
hop's name in every record. Its evidence keeps the LB's names (`lb-events.jsonl`, `lb-pod-leg.pcap`,
`lb-server-leg.pcap`), so the verdict reads the same files as for a single LB; each nat hop writes
its own (`hop-<name>-...`). Every hop's conntrack is its own namespace's, so each forgets a flow by
its own timer, and the evidence of each says who forgot first and what each end was told.

With no hop before it, a ChainLb is a LoadBalancer whose agent records the hop's name.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from runner.config.paths import NetPath
from runner.embedded.clientside import ClientSide
from runner.embedded.cluster import EmbeddedCluster
from runner.embedded.hop import NatHop, agent_cuts
from runner.embedded.lb import AgentSpec, LoadBalancer, nft_ruleset
from runner.evidence.lb_events import LbProblem


class ChainLb(LoadBalancer):
    """The last hop of a path, owning the nat hops before it: `start()` builds the whole chain."""

    def __init__(self, cluster: EmbeddedCluster, slot: int, path: NetPath, evidence_dir: Path, *,
                 clients: ClientSide | None = None):
        """`clients`: where the chain's first hop meets the clients (runner/embedded/clientside.py)."""
        super().__init__(cluster, slot, path.profile(), evidence_dir, clients=clients)
        self.path = path
        self.hop = path.last
        self.upstream: list[NatHop] = []
        for i, hop in enumerate(path.before):
            self.upstream.append(NatHop(cluster, slot, i, hop, evidence_dir,
                                        previous=self.upstream[-1] if self.upstream else None, clients=self.clients))

    @property
    def pod_iface(self) -> str:
        return "in0" if self.upstream else self.clients.iface

    @property
    def bridge_ns(self) -> str:
        return self.upstream[0].netns if self.upstream else self.netns

    @property
    def client_nets(self) -> list[str]:
        """Behind a nat hop the LB sees only that hop's masquerade address."""
        return [f"{self.upstream[-1].snat}/32"] if self.upstream else [self.pod_net]

    @property
    def cut(self) -> bool:
        return agent_cuts(self.hop)

    def hop_logs(self) -> list[tuple[str, Path]]:
        """Each hop's event log by hop name, pod side first."""
        return [*((h.hop.name, h.events_path) for h in self.upstream), (self.hop.name, self.events_path)]

    def _start(self) -> None:
        for i, hop in enumerate(self.upstream):
            hop.start()
            if i:
                self.upstream[i - 1].link_next(hop.netns)
        super()._start()

    def _pod_side(self) -> None:
        if not self.upstream:
            super()._pod_side()
            return
        self.upstream[-1].link_next(self.netns)

    def _backend_side(self) -> None:
        super()._backend_side()
        if self.upstream:
            # The api namespace answers the last nat hop's address, which is all the LB passes on.
            self.topo.route(self.cluster.api_ns, f"{self.upstream[-1].snat}/32", self.block.lb_link(self.slot)[0])

    def _ruleset(self) -> str:
        return nft_ruleset(table=self.table, profile=self.profile, vip=self.vip, api_target=self.api_target,
                           timer=self.block.timer, inside_iface=self.pod_iface, cut=self.cut)

    def _agent_spec(self) -> AgentSpec:
        return dataclasses.replace(super()._agent_spec(), hop=self.hop.name, order_ms=self.hop.order_ms, cut=self.cut)

    def problems(self) -> list[LbProblem]:
        return [p for h in self.upstream for p in h.problems()] + super().problems()

    def close(self) -> None:
        super().close()
        for hop in reversed(self.upstream):
            hop.close()

