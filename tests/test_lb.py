"""The LB emulator on the real kernel datapath, with short idle timeouts (4 s).

Each test puts a real TCP client in a pod namespace, talks to the timer server through one LB
profile, and checks what each end saw: the client's socket errors and TCP state, the timer
server's log of its own socket's fate, and the LB's event log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.config.profiles import Profile
from runner.embedded.cluster import EmbeddedCluster
from runner.embedded.lb import LoadBalancer
from runner.embedded.timer import start_timer_server
from runner.host.netns import list_project_netns
from tests.conftest import needs_root_tools

pytestmark = [needs_root_tools("ip", "nft", "conntrack", "tcpdump", "haproxy", "curl"), pytest.mark.slow]

T = 4
#: the timer's "fast" port sends only every 7 s (> T), so an idle flow expires before it speaks.
SLOW_SERVER_PORT, SLOW_SERVER_EVERY = 8005, 7
PODCLIENT = Path(__file__).with_name("podclient.py")
ESTABLISHED = 1


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    ev = tmp_path_factory.mktemp("lb-evidence")
    with EmbeddedCluster(churn_interval=0, evidence_dir=ev) as cluster:
        timer = start_timer_server(cluster, ev, ports=((SLOW_SERVER_PORT, SLOW_SERVER_EVERY), (8600, 600)))
        try:
            yield cluster, ev, timer
        finally:
            timer.stop()


_slots = iter(range(13))


@pytest.fixture
def make_lb(env):
    cluster, ev, _ = env
    made: list[LoadBalancer] = []

    def make(mode: str, front: str = "tcp", timeout: int = T) -> LoadBalancer:
        slot = next(_slots)
        lb = LoadBalancer(cluster, slot, Profile(f"test-{mode}", mode, timeout, front, "test"), ev / f"lb{slot}")
        made.append(lb.start())
        return lb

    yield make
    for lb in made:
        lb.close()


def run_client(lb: LoadBalancer, port: int, steps: list, keepalive: list[int] | None = None) -> dict:
    pod = lb.add_pod()
    plan = {"addr": lb.vip, "port": port, "keepalive": keepalive, "steps": steps}
    proc = subprocess.run(["ip", "netns", "exec", pod.netns, sys.executable, str(PODCLIENT), json.dumps(plan)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def timer_fate(env, local: str) -> list[dict]:
    _, ev, _ = env
    time.sleep(0.3)
    lines = [json.loads(x) for x in (ev / "timer-server.jsonl").read_text().splitlines() if x.strip()]
    return [x for x in lines if x.get("peer") == local]


def lb_events(lb: LoadBalancer) -> list[dict]:
    return [json.loads(x) for x in lb.events_path.read_text().splitlines() if x.strip()]


def test_rst_both_ways_resets_client_and_server_at_the_timeout(env, make_lb) -> None:
    lb = make_lb("rst-both-ways")
    res = run_client(lb, 8600, [["recv", 5], ["recv", T + 5]])
    assert res["steps"][0]["ok"]  # the banner
    cut = res["steps"][1]
    assert cut["error"] == "ConnectionResetError"
    assert T - 0.2 <= cut["after"] <= T + 1.0
    fates = [f["event"] for f in timer_fate(env, res["local"])]
    assert "reset" in fates, fates
    sent = {e["to"] for e in lb_events(lb) if e["event"] == "rst-sent"}
    assert sent == {"client", "server"}


def test_silent_drop_tells_nobody(env, make_lb) -> None:
    lb = make_lb("silent-drop")
    # The client stays idle past T, then the server speaks at 7 s and the client writes at 8 s.
    res = run_client(lb, SLOW_SERVER_PORT, [["recv", 5], ["sleep", T + 4], ["send", "late"], ["recv", 3]])
    assert res["steps"][0]["ok"]
    assert res["steps"][2]["error"] == "timeout"  # nothing arrives, no RST either
    assert res["tcp_state"] == ESTABLISHED  # the socket still looks alive
    assert "reset" not in [f["event"] for f in timer_fate(env, res["local"])]
    ev = lb_events(lb)
    after = [e for e in ev if e["event"] == "after-expiry"]
    assert {e["side"] for e in after} == {"client", "server"}
    assert sum(e["side"] == "server" for e in after) >= 2  # the server retransmits into the void
    assert not [e for e in ev if e["event"] == "rst-sent"]


def test_rst_on_next_packet_resets_only_the_sender_client_first(env, make_lb) -> None:
    lb = make_lb("rst-on-next-packet")
    res = run_client(lb, 8600, [["recv", 5], ["sleep", T + 1], ["send", "late"], ["recv", 3]])
    assert res["steps"][2]["error"] == "ConnectionResetError"
    fates = [f["event"] for f in timer_fate(env, res["local"])]
    assert "reset" not in fates  # the server was not told


def test_rst_on_next_packet_resets_only_the_sender_server_first(env, make_lb) -> None:
    lb = make_lb("rst-on-next-packet")
    res = run_client(lb, SLOW_SERVER_PORT, [["recv", 5], ["recv", SLOW_SERVER_EVERY + 2]])
    assert res["steps"][1]["error"] == "timeout"  # the client heard nothing
    assert res["tcp_state"] == ESTABLISHED
    fates = [f["event"] for f in timer_fate(env, res["local"])]
    assert "reset" in fates, fates


@pytest.mark.parametrize("mode", ["silent-drop", "rst-on-next-packet", "rst-both-ways"])
def test_keepalive_shorter_than_the_timeout_keeps_the_flow(env, make_lb, mode: str) -> None:
    lb = make_lb(mode)
    res = run_client(lb, SLOW_SERVER_PORT, [["recv", 5], ["recv", SLOW_SERVER_EVERY + 3]], keepalive=[1, 1, 5])
    assert res["steps"][1]["ok"] and "Current time" in res["steps"][1]["data"], res
    assert not [e for e in lb_events(lb) if e["event"] in ("expired", "rst-sent")]


def test_seed_curl_experiment_exits_56(env, make_lb) -> None:
    lb = make_lb("rst-both-ways")
    pod = lb.add_pod()
    t0 = time.monotonic()
    proc = subprocess.run(["ip", "netns", "exec", pod.netns, "curl", "-sS", "--no-keepalive", "--http0.9",
                           f"http://{lb.vip}:8600/"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 56, proc.stderr
    assert "Connection reset by peer" in proc.stderr
    assert time.monotonic() - t0 >= T - 0.2


def test_agent_crash_is_reported(env, make_lb) -> None:
    lb = make_lb("rst-both-ways")
    assert lb.problems() == []
    assert lb.agent is not None
    os.kill(lb.agent.pid, signal.SIGKILL)
    lb.agent.popen.wait(5)
    assert any(p.kind == "agent" and "died" in p.text for p in lb.problems())


def test_teardown_leaves_nothing(tmp_path) -> None:
    with EmbeddedCluster(churn_interval=0, evidence_dir=tmp_path) as cluster:
        lb = LoadBalancer(cluster, 0, Profile("t", "rst-both-ways", T, "tcp", "test"), tmp_path / "lb").start()
        lb.add_pod()
        pids = [c.pid for c in (lb.agent, lb.front) if c] + [c.child.pid for c in lb.captures if c.child]
        run_id = cluster.run_id
        lb.close()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert not [n for n in list_project_netns() if run_id in n]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert run_id not in tables
