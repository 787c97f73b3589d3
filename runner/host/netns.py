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
(FACTS.md). The run's own, more specific routes still win.

Addresses inside a run block B (a /20):
    B+0.0/30        host link: root end .1, api end .2 (the runner's admin path, never via an LB)
    B+1.0/24        service addresses on the api namespace's loopback (apiserver, timer, fronts)
    B+(2+i).0/24    LB slot i: .0/30 LB↔backend link, .8 the VIP, .128/25 the pods' bridge
    B+15.0/24       the service cluster IP range handed to kube-apiserver
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import secrets
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from runner.errors import ClusterError
from runner.host import signals
from runner.host.commands import CommandLog, in_netns

PREFIX = "wd-"
RANGE = ipaddress.ip_network("198.18.0.0/15")
BLOCK_PREFIX = 20
BLOCKS = list(RANGE.subnets(new_prefix=BLOCK_PREFIX))
MAX_LB_SLOTS = 13
LOCK_PATH = Path("/run/watchdrop.lock")
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
    with LOCK_PATH.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _root_routes_in_range(log: CommandLog) -> list[ipaddress.IPv4Network]:
    proc = log.run(["ip", "-j", "route", "show", "root", str(RANGE)], check=False)
    nets = []
    for r in json.loads(proc.stdout or "[]"):
        dst = r.get("dst", "")
        if dst and dst != "default":
            nets.append(ipaddress.ip_network(dst if "/" in dst else dst + "/32"))
    return nets


def list_project_netns() -> list[str]:
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(PREFIX))


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
            (RUNS_DIR / self.run_id).write_text(f"{os.getpid()}\n")
        except PermissionError:
            pass  # not root: this process creates no namespaces either, and cleanup needs root

    def allocate(self) -> Block:
        """Pick a free /20 and raise the guard route, under a lock shared by parallel runs."""
        with _alloc_lock():
            used = _root_routes_in_range(self.log)
            for net in BLOCKS:
                if any(u != RANGE and u.overlaps(net) for u in used):
                    continue
                self.block = Block(net)
                break
            else:
                raise ClusterError("no free /20 block left in 198.18.0.0/15",
                                   fix="run `python -m runner clean` to remove leftovers of crashed runs")
            if RANGE not in used:
                self.log.run(["ip", "route", "add", "unreachable", str(RANGE)], check=False)
            RUNS_DIR.mkdir(parents=True, exist_ok=True)
            (RUNS_DIR / self.run_id).write_text(f"{os.getpid()}\n")
            # Claim the block at once so a parallel run sees it as used.
            self.log.run(["ip", "route", "add", "unreachable", str(self.block.net)])
            self.root_routes.append(str(self.block.net))
        return self.block

    def allocate_extra(self) -> ipaddress.IPv4Network:
        """One more free /20 for this run (the local cluster's node and pods), claimed like `allocate`
        with an unreachable route that `close()` removes."""
        with _alloc_lock():
            used = _root_routes_in_range(self.log)
            for net in BLOCKS:
                if not any(u != RANGE and u.overlaps(net) for u in used):
                    self.log.run(["ip", "route", "add", "unreachable", str(net)])
                    self.root_routes.append(str(net))
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
        self.log.run(["ip"] + (["-n", ns] if ns else []) + ["route", "replace", dst, "via", via])
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
        """Kill whatever still runs in our namespaces, delete them, drop our routes. Returns problems."""
        problems: list[str] = []
        for ns in reversed(self.namespaces):
            problems += kill_netns_pids(ns, self.log, grace)
            proc = self.log.run(["ip", "netns", "delete", ns], check=False)
            if proc.returncode != 0 and Path("/run/netns", ns).exists():
                problems.append(f"could not delete netns {ns}: {proc.stderr.strip()}")
        self.namespaces.clear()
        if self.host_link:
            self.log.run(["ip", "link", "delete", self.host_link], check=False)
        with _alloc_lock():
            for dst in reversed(self.root_routes):
                self.log.run(["ip", "route", "del", dst], check=False)
            self.root_routes.clear()
            (RUNS_DIR / self.run_id).unlink(missing_ok=True)
            drop_guard_if_unused(self.log)
        return problems


def drop_guard_if_unused(log: CommandLog) -> None:
    """The guard comes down with the last project namespace (call under the allocation lock)."""
    if not list_project_netns():
        others = [n for n in _root_routes_in_range(log) if n != RANGE]
        if not others:
            log.run(["ip", "route", "del", "unreachable", str(RANGE)], check=False)


def netns_pids(ns: str) -> list[int]:
    import subprocess

    proc = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
    return [int(p) for p in proc.stdout.split()]


def kill_netns_pids(ns: str, log: CommandLog, grace: float = 5.0) -> list[str]:
    """SIGTERM everything inside `ns`, then SIGKILL what is left after `grace` seconds (by pid)."""
    pids = netns_pids(ns)
    if not pids:
        return []
    log.note(f"SIGTERM to pids {pids} in {ns}")
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and netns_pids(ns) and not signals.hurry.is_set():
        time.sleep(0.05)
    left = netns_pids(ns)
    if left:
        log.note(f"SIGKILL to pids {left} in {ns}")
        for pid in left:
            _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and netns_pids(ns):
            time.sleep(0.05)
    left = netns_pids(ns)
    return [f"pids {left} survived SIGKILL in {ns}"] if left else []


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
