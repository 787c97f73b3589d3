"""`lb-probe --cluster`: the pure parts (ladder, each end's evidence, the window and the match, the
story) and its usage errors, without a cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runner.errors import UsageError
from runner.host.commands import CommandLog
from runner.probe import fates as f
from runner.probe.ladder import DEFAULT_LADDER, ladder, parse_ladder, rungs, server_ports
from runner.probe.manifests import client_pod, probe_objects

REPO = Path(__file__).resolve().parent.parent


def test_the_ladder_is_bounded_by_max_idle_and_never_sits_on_a_profile_timeout() -> None:
    from runner.config.profiles import PROFILES

    assert ladder(60) == [30, 60]
    assert ladder(1800) == list(DEFAULT_LADDER)
    timeouts = {p.idle_timeout for p in PROFILES.values() if p.mode != "none"}
    assert not timeouts & set(DEFAULT_LADDER)
    # Each real timeout has a window of its own: no two fall between the same pair of rungs.
    windows = [sum(r < t for r in DEFAULT_LADDER) for t in sorted(timeouts)]
    assert len(set(windows)) == len(windows)
    with pytest.raises(UsageError, match="--max-idle 10: below the ladder's first rung"):
        ladder(10)
    assert parse_ladder("20, 40") == (20, 40)
    with pytest.raises(UsageError, match="--ladder"):
        parse_ladder("a,b")


def test_rungs_get_one_port_per_path_and_the_server_speaks_at_each_interval() -> None:
    rs = rungs([30, 60])
    assert [(r.path, r.idle, r.port) for r in rs] == [
        ("outside", 30, 9000), ("outside", 60, 9001), ("inside", 30, 9100), ("inside", 60, 9101)]
    assert server_ports(rs) == ["8999:5", "9000:30", "9001:60", "9100:30", "9101:60"]


def test_the_probe_objects_are_the_backends_timer_objects_with_the_ladders_ports() -> None:
    from runner.kube import manifests as m

    d = m.Deployment(run_id="abc123", cluster="c", capture_image="cap:1")
    rs = rungs([30, 60])
    objs = probe_objects("watchdrop-abc123", d, image="timer:1", rungs=rs, service_type="LoadBalancer",
                         source_ranges=["198.18.3.128/25"])
    pod = next(o for o in objs if o["kind"] == "Pod")
    svc = next(o for o in objs if o["kind"] == "Service")
    timer = next(c for c in pod["spec"]["containers"] if c["name"] == m.TIMER_CONTAINER)
    assert timer["args"][:6] == ["--listen", "0.0.0.0", "--port", "8999:5", "--port", "9000:30"]
    assert [p["port"] for p in svc["spec"]["ports"]] == [8999, 9000, 9001, 9100, 9101]
    assert all(len(p["name"]) <= 15 for p in svc["spec"]["ports"])
    assert svc["spec"]["loadBalancerSourceRanges"] == ["198.18.3.128/25"]
    client = client_pod(pod, address="198.18.3.8", rungs=[r for r in rs if r.path == "inside"])
    c = next(c for c in client["spec"]["containers"] if c["name"] == "client")
    assert c["command"][:2] == ["python", "-c"] and c["command"][3] == "198.18.3.8"
    # The same least privilege as the timer server: non-root, no token, all capabilities dropped.
    assert client["spec"]["automountServiceAccountToken"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["securityContext"]["runAsNonRoot"] is True


def test_curl_and_the_pod_client_ends() -> None:
    reset = "curl: (56) Recv failure: Connection reset by peer"
    assert f.curl_end(56, reset + "\n", "Hello!", 45.1) == f.ClientEnd("reset", 45.1, reset)
    assert f.curl_end(28, "curl: (28) Operation timed out", "Hello!", 75.0).outcome == "silent"
    assert f.curl_end(28, "curl: (28) Operation timed out", "Hello! Current time is x. Message 1.\n",
                      45.0).outcome == "survived"
    assert f.curl_end(None, "", "", None).outcome == "unknown"
    assert f.curl_end(7, "curl: (7) Failed to connect", "", 0.1).outcome == "unknown"
    assert f.pod_client_end({"outcome": "reset", "elapsed": 45.2, "error": "ConnectionResetError"}).outcome == "reset"
    assert f.pod_client_end(None).outcome == "unknown"


def _server_log(port: int, end: str | None, idle: float = 0.0) -> list[dict[str, object]]:
    log: list[dict[str, object]] = [{"event": "listening", "port": port},
                                    {"event": "connected", "port": port}, {"event": "sent", "port": port, "n": 0}]
    if end == "spoke":
        log.append({"event": "sent", "port": port, "n": 1})
    elif end:
        log.append({"event": end, "port": port, "idle": idle})
    return log


def test_the_server_end_from_its_log() -> None:
    assert f.server_end(_server_log(9001, "reset", 45.0), 9001).outcome == "reset"
    assert f.server_end(_server_log(9001, "timeout", 10.0), 9001, retransmissions=6).retransmissions == 6
    assert f.server_end(_server_log(9001, "spoke"), 9001).outcome == "spoke"
    assert f.server_end(_server_log(9001, "reset"), 9002).outcome == "unknown"  # another port's connection


def test_the_lb_record_per_rung() -> None:
    events = [{"event": "flow-opened", "flow": "198.18.3.130:40000>9001"},
              {"event": "flow-opened", "flow": "198.18.16.5:40001>9101"},
              {"event": "rst-sent", "flow": "198.18.3.130:40000>9001", "to": "client"},
              {"event": "rst-sent", "flow": "198.18.3.130:40000>9001", "to": "server"},
              {"event": "expired", "flow": "198.18.3.130:40000>9001", "idle": 45.0},
              {"event": "expired", "flow": "198.18.16.5:40001>9101", "idle": 45.0},
              *[{"event": "after-expiry", "flow": "198.18.16.5:40001>9101", "side": "server", "action": "dropped"}] * 4]
    assert f.lb_record(events, 9001) == f.LbRecord(45.0, ("client", "server"), 0, 0)
    assert f.lb_record(events, 9101) == f.LbRecord(45.0, (), 4, 0)
    assert f.lb_record(events, 9000) == f.LbRecord()


def _fates(path: str, by_idle: dict[int, tuple[f.ClientEnd, f.ServerEnd]]) -> list[f.Fate]:
    return [f.Fate(r, *by_idle[r.idle]) for r in rungs(sorted(by_idle), [path])]


SURVIVED = (f.ClientEnd("survived", 45.0), f.ServerEnd("closed"))


def test_an_rst_both_ways_at_45_s_matches_the_quick_reset_profile_only() -> None:
    res = f.judge_path("outside", _fates("outside", {
        30: SURVIVED,
        60: (f.ClientEnd("reset", 45.2, "curl: (56) Recv failure: Connection reset by peer"),
             f.ServerEnd("reset", 45.2, 0, 1))}))
    assert (res.survived, res.broke, res.how, res.cut_after) == (30, 60, "rst-both", 45.2)
    assert res.matches == ["azure-slb-quick"]
    text = f.story(res, "curl from 198.18.3.130")
    assert "survived 30 s idle, broke at 60 s" in text
    assert "curl: (56) Recv failure: Connection reset by peer after 45.2 s" in text
    assert "the server's socket was reset too" in text
    assert "matches azure-slb-quick (rst-both-ways after 45.2 s)" in text


def test_a_silent_drop_matches_every_silent_profile_in_the_window() -> None:
    res = f.judge_path("inside", _fates("inside", {
        30: SURVIVED,
        60: (f.ClientEnd("silent", 75.0, "no line within 75 s"), f.ServerEnd("timeout", 10.0, 6, 0))}))
    assert res.how == "silent"
    assert res.matches == ["azure-slb-no-reset-quick", "gcp-quick"]
    text = f.story(res, "pod")
    assert "retransmissions into the void" in text and "between 30 and 60 s" in text


def test_an_rst_to_the_server_when_it_spoke_is_the_nlb() -> None:
    res = f.judge_path("outside", _fates("outside", {
        30: SURVIVED, 60: (f.ClientEnd("silent", 75.0), f.ServerEnd("reset", 0.0, 0, 1))}))
    assert res.how == "rst-server" and res.matches == ["aws-nlb-quick"]
    assert "the server's line after 60 s drew an RST" in f.story(res, "x")


def test_missing_or_contradictory_evidence_is_unknown_never_a_match() -> None:
    no_server = f.judge_path("outside", _fates("outside", {
        30: SURVIVED, 60: (f.ClientEnd("silent", 75.0), f.ServerEnd("unknown"))}))
    assert no_server.how == "unknown" and no_server.matches == []
    assert "unknown: how it broke is not known" in f.story(no_server, "x")
    nothing = f.judge_path("inside", _fates("inside", {30: (f.ClientEnd("unknown", None), f.ServerEnd("unknown"))}))
    assert nothing.matches == [] and "unknown: no connection's fate is known" in f.story(nothing, "x")
    backwards = f.judge_path("outside", _fates("outside", {
        30: (f.ClientEnd("reset", 20.0), f.ServerEnd("reset")), 60: SURVIVED}))
    assert backwards.matches == [] and "contradictory" in backwards.problem


def test_nothing_broke_fits_longer_profiles_and_no_lb() -> None:
    res = f.judge_path("outside", _fates("outside", {30: SURVIVED, 60: SURVIVED}))
    assert res.broke is None and "direct" in res.matches and "azure-slb" in res.matches
    assert "azure-slb-quick" not in res.matches  # 45 s < 60 s survived


@pytest.mark.parametrize(("argv", "message"), [
    (["--cluster", "nope", "--matrix", "matrix.local.yaml"], "--cluster nope: no such cluster in matrix.local.yaml"),
    (["--cluster", "azure-slb", "--matrix", "matrix.yaml"], "an embedded cluster has no Services to probe"),
    (["--cluster", "local-azure-slb", "--matrix", "matrix.local.yaml", "--max-idle", "10"],
     "--max-idle 10: below the ladder's first rung"),
    (["--cluster", "local-azure-slb", "--matrix", "missing.yaml"], "--matrix missing.yaml: no such file"),
    (["--profile", "azure-slb", "--cluster", "local-azure-slb"], "either --profile"),
    (["--profile", "azure-slb", "--max-idle", "60"], "--max-idle/--ladder apply to --cluster only"),
])
def test_bad_input_is_a_usage_error_naming_the_flag(argv: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "runner", "lb-probe", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 4, proc.stderr
    assert message in proc.stderr and "fix:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_rst_to_the_server_alone_at_the_timeout_matches_no_profile() -> None:
    """The server reset 45 s into a 60 s idle (before it spoke), the client told nothing: no profile
    does that (an LB that resets both ends lost one RST), so no match is claimed."""
    res = f.judge_path("outside", _fates("outside", {
        30: SURVIVED, 60: (f.ClientEnd("silent", 75.0), f.ServerEnd("reset", 45.0, 0, 1))}))
    assert res.how == "rst-server-idle" and res.matches == []
    assert "reset after 45 s idle, before its line was due" in f.story(res, "x")
    assert "no profile behaves so" in f.story(res, "x")


def _service_lb(profile: str = "azure-slb-no-reset-quick"):
    import ipaddress
    from types import SimpleNamespace

    from runner.config.profiles import PROFILES
    from runner.host.netns import Block
    from runner.local.lbservice import ServiceLoadBalancer

    cluster = SimpleNamespace(log=None, topology=None, block=Block(ipaddress.ip_network("198.18.16.0/20")),
                              run_id="abc123")
    return ServiceLoadBalancer(cluster, 1, PROFILES[profile], Path("/nonexistent"),  # type: ignore[arg-type]
                               node_ip="198.18.32.1", pod_cidr="198.18.32.0/24", node_ports={9000: 30001, 8999: 30000},
                               source_ranges=["198.18.19.128/25", "198.18.32.0/24"])


def test_the_service_lb_dnats_its_ports_to_node_ports_for_its_source_ranges_only() -> None:
    lb = _service_lb()
    rules = lb._ruleset()
    assert ("ip daddr 198.18.19.8 ip saddr { 198.18.19.128/25, 198.18.32.0/24 } tcp dport 9000 "
            "dnat to 198.18.32.1:30001") in rules
    assert "6443" not in rules  # no API server behind a Service's LB
    assert "established: 45" in rules  # the profile's conntrack timeout
    assert lb._agent_maps() == ["8999=198.18.32.1:30000", "9000=198.18.32.1:30001"]
    assert lb.client_nets == ["198.18.19.128/25", "198.18.32.0/24"]


@pytest.mark.skipif(not __import__("shutil").which("nft") or __import__("os").geteuid() != 0, reason="needs nft, root")
def test_the_service_lb_ruleset_is_valid_nftables() -> None:
    proc = subprocess.run(["nft", "-c", "-f", "-"], input=_service_lb()._ruleset(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_curl_of_the_probe_is_logged_as_it_ran(tmp_path: Path) -> None:
    """The outside path's curls run in a namespace wrapper: commands.log keeps the argv that ran."""
    from runner.probe.command import Probe
    from runner.probe.ladder import Rung

    probe = Probe.__new__(Probe)
    probe.procs = []
    probe.log = CommandLog(tmp_path / "commands.log")
    into: dict[int, dict[str, object]] = {}
    probe._curl(Rung("outside", 1, 18001), "198.18.3.8", lambda argv: ["echo", "netns-wrap", *argv], into)
    logged = (tmp_path / "commands.log").read_text()
    assert "$ echo netns-wrap curl -sS --no-keepalive --http0.9" in logged
    assert "http://198.18.3.8:18001/" in logged and "-> 0 (port 18001)" in logged
    assert into[18001]["rc"] == 0
