"""Routes: the project removes only the routes it made (real `ip route` in the root namespace).

Each test adds its routes in the last /20 of 198.18.0.0/15 (the one a run takes last) and removes
them again whatever happens.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from runner.errors import ClusterError, CommandError
from runner.host import cleanup, netns
from runner.host.commands import CommandLog
from tests.conftest import needs_root_tools

pytestmark = needs_root_tools("ip")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _routes() -> str:
    return _ip("route", "show", "root", str(netns.RANGE)).stdout


@pytest.fixture
def routes() -> Iterator[list[list[str]]]:
    """Routes the test adds (argv after `ip route add`); each is deleted afterwards."""
    added: list[list[str]] = []
    yield added
    for spec in added:
        _ip("route", "del", *spec, check=False)


def test_clean_removes_the_projects_stale_routes_and_leaves_foreign_ones(routes: list[list[str]]) -> None:
    foreign = ["unreachable", "198.19.252.0/24"]           # someone else's (proto boot)
    stale = ["unreachable", "198.19.253.0/24", "proto", netns.ROUTE_PROTO]  # a crashed run's
    for spec in (foreign, stale):
        _ip("route", "add", *spec)
        routes.append(spec)
    said: list[str] = []
    cleanup.clean(CommandLog(), say=said.append)          # what every run's start does too
    table = _routes()
    assert "198.19.252.0/24" in table, "a foreign route inside the range was removed"
    assert "198.19.253.0/24" not in table, f"the project's stale route stayed: {said}"


def test_a_foreign_route_for_the_whole_range_stops_the_run(routes: list[list[str]]) -> None:
    spec = [str(netns.RANGE), "dev", "lo", "metric", "77"]  # carries the range somewhere: not a guard
    _ip("route", "add", *spec)
    routes.append(spec)
    topo = netns.Topology(netns.new_run_id(), CommandLog())
    try:
        with pytest.raises(ClusterError, match="did not make that route") as info:
            topo.allocate()
        assert "ip route show" in (info.value.fix or "")
    finally:
        topo.close()
    assert "dev lo" in _routes() and "metric 77" in _routes()


def test_a_runs_routes_are_marked_and_go_with_it() -> None:
    topo = netns.Topology(netns.new_run_id(), CommandLog())
    try:
        block = topo.allocate()
        mine = _ip("route", "show", "root", str(block.net), "proto", netns.ROUTE_PROTO).stdout
        assert str(block.net) in mine
        guard = [r for r in netns.root_routes_in_range(CommandLog()) if r.net == netns.RANGE]
        assert any(r.ours and r.type == "unreachable" for r in guard), guard
    finally:
        topo.close()
    assert str(block.net) not in _routes()


class _HangingNetnsDelete(CommandLog):
    """`ip netns delete` times out (CommandLog.run raises CommandError then, even with check=False)."""

    def run(self, argv, **kw):  # type: ignore[no-untyped-def,override]
        if list(argv[:3]) == ["ip", "netns", "delete"]:
            self.note("$ " + " ".join(argv))
            raise CommandError(list(argv), -1, "timed out after 60s")
        return super().run(argv, **kw)


def test_a_namespace_that_will_not_go_does_not_keep_the_routes_and_claim(routes: list[list[str]]) -> None:
    topo = netns.Topology(netns.new_run_id(), _HangingNetnsDelete())
    topo.claim()
    spec = ["unreachable", "198.19.254.0/24", "proto", netns.ROUTE_PROTO]
    _ip("route", "add", *spec)
    routes.append(spec)
    topo.root_routes.append("198.19.254.0/24")
    topo.namespaces += [topo.ns_name("a"), topo.ns_name("b")]   # never made: deleting them "hangs"
    problems = topo.close(grace=0)
    assert len(problems) == 2 and all("ip netns delete" in p for p in problems), problems
    assert "198.19.254.0/24" not in _routes(), "a failed netns delete kept the run's route"
    assert not (netns.RUNS_DIR / topo.run_id).exists(), "a failed netns delete kept the run's claim"
