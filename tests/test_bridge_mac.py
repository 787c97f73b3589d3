"""A pods' bridge keeps its MAC address while pods attach (real bridges in a namespace).

Pods start while others already talk (the start-up waves). A bridge left to itself takes its
lowest port MAC, so a new port can change the gateway's address under the running pods: their
packets then go to the old address and are dropped until ARP catches up (a run lost a TCP
keepalive that way, and the LB saw a live flow idle). `add_bridge_argv` fixes the address.
"""

from __future__ import annotations

import json

from runner.host import netns
from runner.host.commands import CommandLog
from tests.conftest import needs_root_tools

pytestmark = needs_root_tools("ip")


def _mac(topo: netns.Topology, ns: str, dev: str) -> str:
    return json.loads(topo.run_in(ns, ["ip", "-j", "link", "show", dev]).stdout)[0]["address"]


def _attach_low_mac_port(topo: netns.Topology, ns: str, bridge: str, n: int) -> None:
    topo.veth(ns, f"p{n}", ns, f"q{n}")
    topo.run_in(ns, ["ip", "link", "set", f"p{n}", "address", f"00:00:00:00:00:0{n}"])
    topo.run_in(ns, ["ip", "link", "set", f"p{n}", "master", bridge, "up"])


def test_attaching_a_port_with_a_lower_mac_leaves_the_bridge_address_alone() -> None:
    topo = netns.Topology(netns.new_run_id(), CommandLog())
    try:
        ns = topo.add_ns("bridge")
        topo.run_in(ns, netns.add_bridge_argv("br0", "198.18.2.129"))
        # The control: what the kernel does to a bridge without a set address.
        topo.run_in(ns, ["ip", "link", "add", "brx", "type", "bridge"])
        _attach_low_mac_port(topo, ns, "brx", 1)
        assert _mac(topo, ns, "brx") == "00:00:00:00:00:01"
        fixed = _mac(topo, ns, "br0")
        assert fixed == "02:77:64:12:02:81"
        _attach_low_mac_port(topo, ns, "br0", 2)
        _attach_low_mac_port(topo, ns, "br0", 3)
        assert _mac(topo, ns, "br0") == fixed
    finally:
        assert topo.close() == []
