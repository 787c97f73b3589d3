"""Network namespaces, veth links and addresses: the embedded topology's plumbing.

Design
------
Every run gets a random run id and one /20 block of 198.18.0.0/15 (the benchmarking range, never
routed off the machine). All of the run's namespaces are named ``wd-<runid>-<role>`` so that a
crashed run's leftovers can be found by prefix and parallel runs never collide. Links are created
with both ends placed straight into their namespaces (``ip -n A link add … peer … netns B``), so
interface names only need to be unique inside one namespace; only the root end of the host link
lives in the root namespace.

While any ``wd-`` namespace exists, the root namespace holds ``unreachable 198.18.0.0/15``: without it
a dial to a not-yet-wired 198.18 address would follow the default route out of the machine
(docs/facts.md). The run's own, more specific routes still win. Every route the project adds to the
root namespace carries ``proto 211`` (ROUTE_PROTO): teardown and `clean` delete only those, so a
route of anyone else's inside the range stays, and a foreign route carrying the whole range
somewhere stops a run instead of passing for the guard.

Addresses inside a run block B (a /20):
    B+0.0/30        host link: root end .1, api end .2 (the runner's admin path, never via an LB)
    B+1.0/24        service addresses on the api namespace's loopback (apiserver, timer, fronts)
    B+(2+i).0/24    LB slot i: .0/30 LB↔backend link, .4/30 root↔LB, .8 the VIP, .12/30 NAT hop↔root,
                    .16 + 4k /30 the link after hop k of the slot's chain (k < 27, runner/embedded/chain.py),
                    .128/25 the pods' bridge
    B+15.0/24       the service cluster IP range handed to kube-apiserver
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import secrets
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from runner.errors import ClusterError
from runner.host.commands import CommandLog, in_netns
from runner.host.lifetime import teardown_concurrently, teardown_steps
from runner.host.procs import escalate, pid_alive, signal_pid
from runner.host.safefiles import open_nofollow, write_nofollow

PREFIX = "wd-"
RANGE = ipaddress.ip_network("198.18.0.0/15")
BLOCK_PREFIX = 20
BLOCKS = list(RANGE.subnets(new_prefix=BLOCK_PREFIX))
MAX_LB_SLOTS = 13
#: Links between the hops of one slot's chain: .16/30 up to .120/30 of the slot's /24.
MAX_CHAIN_LINKS = 27
LOCK_PATH = Path("/run/watchdrop.lock")
#: Namespaces deleted at once when a topology closes.
NETNS_DELETE_WORKERS = 8
#: The `proto` of every route watchdrop adds to the root namespace (no rt_protos entry uses it):
#: how `clean` and each run's start tell the project's routes from anyone else's.
ROUTE_PROTO = "211"
#: The guard's metric, so it can sit next to someone else's blackhole for the same range.
GUARD_METRIC = "4211"
BLACKHOLE_TYPES = ("unreachable", "blackhole", "prohibit")
GUARD_MARK = ("proto", ROUTE_PROTO, "metric", GUARD_METRIC)
#: One file per live run, holding the runner's pid: how `clean` tells a crashed run from a live one.
RUNS_DIR = Path("/run/watchdrop")


def new_run_id() -> str:
    return secrets.token_hex(3)


@dataclass(frozen=True)
class Block:
    """The addresses of one run, derived from its /20 block."""

    net: ipaddress.IPv4Network

    def _at(self, offset: int) -> str:
        return str(self.net.network_address + offset)

    @property
    def host_root(self) -> str:
        return self._at(1)

    @property
    def host_api(self) -> str:
        return self._at(2)

    @property
    def service_net(self) -> str:
        return f"{self._at(256)}/24"

    @property
    def apiserver(self) -> str:
        return self._at(256 + 1)

    @property
    def timer(self) -> str:
        return self._at(256 + 2)

    def front(self, slot: int) -> str:
        return self._at(256 + 16 + slot)

    def _slot(self, slot: int, offset: int) -> str:
        if not 0 <= slot < MAX_LB_SLOTS:
            raise ValueError(f"LB slot {slot} out of range")
        return self._at((2 + slot) * 256 + offset)

    def lb_link(self, slot: int) -> tuple[str, str]:
        """(LB end, backend end) of the LB↔backend /30."""
        return self._slot(slot, 1), self._slot(slot, 2)

    def node_link(self, slot: int) -> tuple[str, str]:
        """(root end, LB end) of the root↔LB /30 that carries a local cluster's pods to the VIP."""
        return self._slot(slot, 5), self._slot(slot, 6)

    def hop_link(self, slot: int) -> tuple[str, str]:
        """(root end, hop end) of the /30 between a Service LB's NAT hop and the node (runner/local/lbservice.py)."""
        return self._slot(slot, 13), self._slot(slot, 14)

    def chain_link(self, slot: int, index: int) -> tuple[str, str]:
        """(pod-side end, server-side end) of the /30 after hop `index` of the slot's chain
        (runner/embedded/chain.py); the pod-side end is the address a nat hop masquerades to."""
        if not 0 <= index < MAX_CHAIN_LINKS:
            raise ValueError(f"chain link {index} out of range (at most {MAX_CHAIN_LINKS} hops before the last)")
        return self._slot(slot, 16 + 4 * index + 1), self._slot(slot, 16 + 4 * index + 2)

    def vip(self, slot: int) -> str:
        return self._slot(slot, 8)

    def pod_gateway(self, slot: int) -> str:
        return self._slot(slot, 129)

    def pod_net(self, slot: int) -> str:
        return f"{self._slot(slot, 128)}/25"

    def pod_addr(self, slot: int, index: int) -> str:
        if not 0 <= index < 124:
            raise ValueError("at most 124 pods behind one LB")
        return self._slot(slot, 130 + index)

    @property
    def service_cluster_ip_range(self) -> str:
        return f"{self._at(15 * 256)}/24"

    def all_vips(self) -> list[str]:
        return [self.vip(i) for i in range(MAX_LB_SLOTS)]


@contextmanager
def _alloc_lock() -> Iterator[None]:
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open_nofollow(LOCK_PATH) as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass(frozen=True)
class RootRoute:
    """A route of the root namespace inside 198.18.0.0/15."""

    net: ipaddress.IPv4Network
    type: str
    protocol: str

    @property
    def ours(self) -> bool:
        return self.protocol == ROUTE_PROTO


def root_routes_in_range(log: CommandLog) -> list[RootRoute]:
    proc = log.run(["ip", "-j", "route", "show", "root", str(RANGE)], check=False)
    routes = []
    for r in json.loads(proc.stdout or "[]"):
        dst = r.get("dst", "")
        if dst and dst != "default":
            routes.append(RootRoute(ipaddress.ip_network(dst if "/" in dst else dst + "/32"),
                                    str(r.get("type", "unicast")), str(r.get("protocol", "boot"))))
    return routes


def check_no_foreign_range_route(routes: Sequence[RootRoute]) -> None:
    """A route of someone else's for the whole range that carries traffic (a lab network, a VPN) is
    not a guard: the run would send its 198.18 traffic there. Stop with what was found."""
    for r in routes:
        if r.net == RANGE and not r.ours and r.type not in BLACKHOLE_TYPES:
            raise ClusterError(
                f"the root namespace routes {RANGE} somewhere ({r.type} route, proto {r.protocol}) and watchdrop "
                "did not make that route; its runs need the whole range unrouted",
                fix=f"see `ip route show {RANGE}`; remove that route if it is not needed, or run on another machine")


def live_run_blocks() -> list[ipaddress.IPv4Network]:
    """The blocks recorded in the claim files of runs whose runner is alive."""
    blocks = []
    if not RUNS_DIR.is_dir():
        return blocks
    for f in RUNS_DIR.iterdir():
        try:
            fields = f.read_text().split()
            pid = int(fields[0])
        except (OSError, ValueError, IndexError):
            continue
        if len(fields) < 2 or not pid_alive(pid):
            continue
        for field_ in fields[1:]:  # the run's block, then any extra block (allocate_extra)
            try:
                blocks.append(ipaddress.ip_network(field_))
            except ValueError:
                continue
    return blocks


def list_project_netns() -> list[str]:
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(PREFIX))


def add_bridge_argv(name: str, gateway: str) -> list[str]:
    """`ip link add` for a bridge whose MAC address is fixed, derived from its gateway address.

    A Linux bridge left to itself takes the lowest MAC address of its ports, so attaching a port
    (a pod that starts while others already talk) can change it: the running pods' ARP entries
    then point at the old address, and their packets to the gateway are dropped on the bridge
    until ARP finds the new one, seconds later (seen: a TCP keepalive lost that way made a live
    flow look idle to the LB). A set address never changes. 02: is locally administered."""
    octets = ipaddress.IPv4Address(gateway).packed
    mac = "02:77:64:" + ":".join(f"{b:02x}" for b in octets[1:])
    return ["ip", "link", "add", name, "address", mac, "type", "bridge"]


class Topology:
    """Owns one run's namespaces, links and routes; `close()` removes every one of them."""

    def __init__(self, run_id: str, log: CommandLog):
        self.run_id = run_id
        self.log = log
        self.namespaces: list[str] = []
        self.root_routes: list[str] = []
        self.block: Block | None = None
        self.host_link = f"wd{run_id}h"

    # -- naming -----------------------------------------------------------------------------
    def ns_name(self, role: str) -> str:
        return f"{PREFIX}{self.run_id}-{role}"

    # -- setup ------------------------------------------------------------------------------
    def claim(self) -> None:
        """Mark the run id as this live process's before anything carrying it exists, so that a
        parallel run's cleanup (runner/host/cleanup.py) never takes this run's temp dir for a leftover."""
        try:
            RUNS_DIR.mkdir(parents=True, exist_ok=True)
            write_nofollow(RUNS_DIR / self.run_id, f"{os.getpid()}\n")
        except PermissionError:
            pass  # not root: this process creates no namespaces either, and cleanup needs root

    def allocate(self) -> Block:
        """Pick a free /20 and raise the guard route, under a lock shared by parallel runs."""
        with _alloc_lock():
            routes = root_routes_in_range(self.log)
            check_no_foreign_range_route(routes)
            # Anyone's route inside the range (ours, another run's, a foreign one) makes its block taken.
            used = [r.net for r in routes]
            for net in BLOCKS:
                if any(u != RANGE and u.overlaps(net) for u in used):
                    continue
                self.block = Block(net)
                break
            else:
                raise ClusterError("no free /20 block left in 198.18.0.0/15",
                                   fix="run `python -m runner clean` to remove leftovers of crashed runs")
            if not any(r.net == RANGE and r.ours for r in routes):
                self.log.run(["ip", "route", "add", "unreachable", str(RANGE), *GUARD_MARK], check=False)
            RUNS_DIR.mkdir(parents=True, exist_ok=True)
            # pid and block: `clean` removes the project's routes only outside live runs' blocks.
            write_nofollow(RUNS_DIR / self.run_id, f"{os.getpid()} {self.block.net}\n")
            # Claim the block at once so a parallel run sees it as used.
            self.log.run(["ip", "route", "add", "unreachable", str(self.block.net), "proto", ROUTE_PROTO])
            self.root_routes.append(str(self.block.net))
        return self.block

    def allocate_extra(self) -> ipaddress.IPv4Network:
        """One more free /20 for this run (the local cluster's node and pods), claimed like `allocate`
        with an unreachable route that `close()` removes."""
        with _alloc_lock():
            used = [r.net for r in root_routes_in_range(self.log)]
            for net in BLOCKS:
                if not any(u != RANGE and u.overlaps(net) for u in used):
                    self.log.run(["ip", "route", "add", "unreachable", str(net), "proto", ROUTE_PROTO])
                    self.root_routes.append(str(net))
                    # Recorded in the claim, so `clean` in a parallel run keeps this block's routes.
                    claim = RUNS_DIR / self.run_id
                    write_nofollow(claim, claim.read_text().rstrip("\n") + f" {net}\n")
                    return net
        raise ClusterError("no free /20 block left in 198.18.0.0/15",
                           fix="run `python -m runner clean` to remove leftovers of crashed runs")

    def add_ns(self, role: str, log: CommandLog | None = None) -> str:
        name = self.ns_name(role)
        (log or self.log).run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        self.run_in(name, ["ip", "link", "set", "lo", "up"], log=log)
        return name

    def run_in(self, ns: str, argv: Sequence[str], log: CommandLog | None = None, **kw):  # type: ignore[no-untyped-def]
        return (log or self.log).run(in_netns(ns, argv), **kw)

    def sysctl(self, ns: str, key: str, value: str) -> None:
        """Set a per-namespace sysctl and read it back (`sysctl -w` can exit 0 without effect)."""
        self.run_in(ns, ["sysctl", "-q", "-w", f"{key}={value}"])
        got = self.run_in(ns, ["sysctl", "-n", key]).stdout.strip()
        if got != value:
            raise ClusterError(f"sysctl {key} in {ns} reads back {got!r}, wanted {value!r}")

    def veth(self, ns_a: str | None, name_a: str, ns_b: str, name_b: str, log: CommandLog | None = None) -> None:
        """A veth pair with each end created directly in its namespace (None = root)."""
        argv = ["ip"] + (["-n", ns_a] if ns_a else []) + [
            "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b]
        (log or self.log).run(argv)

    def addr(self, ns: str | None, dev: str, cidr: str, log: CommandLog | None = None) -> None:
        argv = ["ip"] + (["-n", ns] if ns else []) + ["addr", "add", cidr, "dev", dev]
        (log or self.log).run(argv)
        (log or self.log).run(["ip"] + (["-n", ns] if ns else []) + ["link", "set", dev, "up"])

    def route(self, ns: str | None, dst: str, via: str) -> None:
        mark = [] if ns else ["proto", ROUTE_PROTO]
        self.log.run(["ip"] + (["-n", ns] if ns else []) + ["route", "replace", dst, "via", via, *mark])
        if ns is None:
            self.root_routes.append(dst)

    def add_host_link(self, api_ns: str) -> None:
        """Root ↔ api namespace: the runner's own admin path to kube-apiserver."""
        assert self.block is not None
        self.veth(None, self.host_link, api_ns, "host0")
        self.addr(None, self.host_link, f"{self.block.host_root}/30")
        self.addr(api_ns, "host0", f"{self.block.host_api}/30")
        self.route(None, self.block.service_net, self.block.host_api)

    # -- teardown ---------------------------------------------------------------------------
    def close(self, grace: float = 5.0) -> list[str]:
        """Kill whatever still runs in our namespaces, delete them, drop our routes. Returns problems.

        Each namespace, the host link and the routes are separate steps: one that hangs or fails
        (a CommandError on a timeout) is reported and the others still run."""
        problems: list[str] = []
        # A few at a time: each is two short `ip` commands (more if something still runs inside),
        # and a run has a namespace per cell.
        problems += teardown_concurrently(
            ((f"netns {ns}", lambda ns=ns: problems.extend(self._delete_netns(ns, grace)))
             for ns in reversed(self.namespaces)), workers=NETNS_DELETE_WORKERS)
        steps = []
        if self.host_link:
            steps.append((f"link {self.host_link}",
                          lambda: self.log.run(["ip", "link", "delete", self.host_link], check=False)))
        steps.append(("routes and run claim", self._drop_routes_and_claim))
        problems += teardown_steps(steps)
        self.namespaces.clear()
        return problems

    def _delete_netns(self, ns: str, grace: float) -> list[str]:
        problems = kill_netns_pids(ns, self.log, grace)
        proc = self.log.run(["ip", "netns", "delete", ns], check=False)
        if proc.returncode != 0 and Path("/run/netns", ns).exists():
            problems.append(f"could not delete netns {ns}: {proc.stderr.strip()}")
        return problems

    def _drop_routes_and_claim(self) -> None:
        with _alloc_lock():
            problems = teardown_steps(
                (f"route {dst}", lambda dst=dst: self.log.run(["ip", "route", "del", dst, "proto", ROUTE_PROTO],
                                                               check=False))
                for dst in reversed(self.root_routes))
            self.root_routes.clear()
            (RUNS_DIR / self.run_id).unlink(missing_ok=True)
            drop_guard_if_unused(self.log)
        if problems:
            raise RuntimeError("; ".join(problems))


def drop_guard_if_unused(log: CommandLog) -> None:
    """The guard comes down with the last project namespace (call under the allocation lock)."""
    if not list_project_netns():
        # Anyone's route left inside the range (an older runner's claim included) keeps it up.
        others = [r for r in root_routes_in_range(log) if r.net != RANGE]
        if not others:
            log.run(["ip", "route", "del", "unreachable", str(RANGE), *GUARD_MARK], check=False)


def netns_pids(ns: str) -> list[int]:
    import subprocess

    try:
        proc = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False, timeout=30)
    except subprocess.TimeoutExpired:
        return []
    return [int(p) for p in proc.stdout.split()]


def kill_netns_pids(ns: str, log: CommandLog, grace: float = 5.0) -> list[str]:
    """SIGTERM everything inside `ns`, then SIGKILL what is left after `grace` seconds (by pid)."""
    pids = netns_pids(ns)
    if not pids:
        return []

    def send(sig: signal.Signals) -> None:
        now = netns_pids(ns)
        log.note(f"{sig.name} to pids {now} in {ns}")
        for pid in now:
            signal_pid(pid, sig)

    escalate(send, lambda: not netns_pids(ns), grace=grace)
    left = netns_pids(ns)
    return [f"pids {left} survived SIGKILL in {ns}"] if left else []
