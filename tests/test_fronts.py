"""The fronts decide what the client hears of kube-apiserver's own closes (issue 17, docs/facts.md "Fronts").

kube-apiserver closes an HTTP connection idle for 90 s. Behind a `tcp` front that FIN reaches the
client, whose pool then opens a new connection for its next request; behind an `http` front (an L7
front with its own client connections and its own pool toward kube-apiserver) the close ends at the
front, and the client's pooled connection stays open until the LB forgets it. So an idle-request
cell behind a silent-drop LB whose idle timeout is longer than 90 s (as every real profile's is:
240 s and more) meets a stale pooled connection only behind the `http` front: client-python sends
its request into the void and hangs (FAIL-SILENT).

The LB here forgets after 100 s, not the quick profiles' 45 s: behind a 45 s LB the server's FIN at
90 s would arrive after the flow was forgotten and be dropped by the LB, and the `tcp` front could
not show what it passes on. About 2.5 minutes for the cells, 10 s for the watch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client

from runner.config.profiles import Profile
from runner.embedded.cluster import EmbeddedCluster
from runner.embedded.lb import LoadBalancer
from runner.evidence.pcap import ConnFacts, read_pcap
from runner.host.commands import CommandLog
from runner.host.procs import Child
from runner.report.render import load_results
from tests.conftest import needs_root_tools

pytestmark = [needs_root_tools("ip", "nft", "conntrack", "tcpdump", "haproxy", "curl", "go"), pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
#: kube-apiserver's IdleTimeout for HTTP connections (k8s.io/apiserver pkg/server/secure_serving.go).
APISERVER_IDLE_CLOSE = 90
LB_IDLE = 100

MATRIX = f"""
clients:
  - name: client-python
clusters:
  - name: drop-tcp-front
    lb: {{profile: azure-slb-no-reset-quick, idle_timeout: {LB_IDLE}, front: tcp}}
    churn: {{lease_interval: 10}}
  - name: drop-http-front
    lb: {{profile: azure-slb-no-reset-quick, idle_timeout: {LB_IDLE}, front: http}}
    churn: {{lease_interval: 10}}
scenarios:
  idle-request: {{idle: idle+20, detection_timeout: 10, rounds: 1}}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path, str]:
    tmp = tmp_path_factory.mktemp("fronts")
    (tmp / "matrix.yaml").write_text(MATRIX)
    proc = subprocess.run(
        [sys.executable, "-m", "runner", str(tmp / "matrix.yaml"), "--clients", str(REPO / "clients"),
         "--out", str(tmp / "results"), "--no-readme"],
        cwd=REPO, capture_output=True, text=True, timeout=1200)
    run_dir = (tmp / "results" / "latest").resolve()
    assert (run_dir / "results.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = load_results(run_dir / "results.json")
    return {c.cluster: f"{c.verdict.value}: {c.reason}" for c in result.cells}, run_dir, proc.stdout


def first_connection(run_dir: Path, cluster: str) -> ConnFacts:
    """The pod's first connection to the VIP: the pooled one the second request may reuse."""
    pcap = read_pcap(run_dir / "cells" / "client-python" / cluster / "idle-request" / "pod.pcap",
                     server_ports={6443})
    return min(pcap.connections, key=lambda c: c.opened_at or 0.0)


def test_the_http_front_keeps_the_servers_close_from_the_client(run) -> None:
    verdicts, run_dir, stdout = run
    assert verdicts["drop-http-front"].startswith("FAIL-SILENT: no response in time"), (verdicts, stdout[-2000:])
    conn = first_connection(run_dir, "drop-http-front")
    # No FIN from the server side ever reached the pod: the 90 s close stayed behind the front, and
    # the request went out on the pooled connection the LB had forgotten (retransmitted, unanswered).
    assert [f for f in conn.fins if f[1] == "server"] == [], conn.fins
    assert conn.retransmissions_client > 0 and conn.rsts == []


def test_the_tcp_front_passes_the_servers_close_on(run) -> None:
    verdicts, run_dir, stdout = run
    assert verdicts["drop-tcp-front"].startswith("PASS"), (verdicts, stdout[-2000:])
    conn = first_connection(run_dir, "drop-tcp-front")
    server_fins = [t for t, side in conn.fins if side == "server"]
    assert server_fins, conn.fins
    idle = server_fins[0] - max(t for t in conn.data_client + conn.data_server if t < server_fins[0])
    # kube-apiserver's own idle close, passed on by the front while the LB still held the flow.
    assert APISERVER_IDLE_CLOSE - 2 <= idle <= APISERVER_IDLE_CLOSE + 5, idle


def test_results_name_the_front(run) -> None:
    _, run_dir, _ = run
    # One named profile behind two fronts: two entries, each as it ran (not one per name).
    profiles = json.loads((run_dir / "results.json").read_text())["profiles"]
    assert sorted(p["front"] for p in profiles) == ["http", "tcp"], profiles
    assert {p["name"] for p in profiles} == {"azure-slb-no-reset-quick"}
    report = (run_dir / "report.md").read_text()
    assert "front http [overridden: front=http, idle_timeout=100]" in report
    assert "front tcp [overridden: front=tcp, idle_timeout=100]" in report
    # The http front logs each request it carried (no header, so no token).
    log = (run_dir / "lbs" / "drop-http-front" / "front.log").read_text()
    assert '"GET /api/v1/namespaces/' in log and "Bearer" not in log
    # The front's key stays in the cluster's work dir, never in the results.
    for path in run_dir.rglob("*"):
        if path.is_file() and path.suffix != ".pcap":
            text = path.read_text(errors="replace")
            assert "PRIVATE KEY" not in text and "eyJhbGciOi" not in text, path


def _curl_watch(pod_ns: str, url: str, ca: Path, header: Path, http: str, out: Path, log: CommandLog) -> Child:
    # The token goes in a header file, never on a command line another process could read; no -v,
    # which would print it.
    argv = ["ip", "netns", "exec", pod_ns, "curl", "-sSN", http, "--cacert", str(ca), "-H", f"@{header}",
            f"{url}?watch=1&timeoutSeconds=300"]
    return Child(f"watch {http}", argv, stdout=out, log=log)


def _curl_anonymous(pod_ns: str, url: str, ca: Path, http: str) -> tuple[str, str]:
    """Status code and curl's -v trace of a request without a token."""
    proc = subprocess.run(["ip", "netns", "exec", pod_ns, "curl", "-sv", http, "-o", "/dev/null", "-w",
                           "%{http_code}", "--cacert", str(ca), url], capture_output=True, text=True, timeout=30)
    return proc.stdout, proc.stderr


def test_http_front_carries_a_watch_with_the_watchers_token(tmp_path: Path) -> None:
    with EmbeddedCluster(churn_interval=0, evidence_dir=tmp_path) as cluster:
        lb = LoadBalancer(cluster, 0, Profile("l7", "none", 240, "http", "test"), tmp_path / "lb").start()
        watches: list[Child] = []
        try:
            pod = lb.add_pod()
            ns = "fronts-watch"
            access = cluster.watcher_access(ns)
            header = tmp_path / "auth.header"
            header.touch(mode=0o600)  # 0600 before the token is in it
            header.write_text(f"Authorization: Bearer {access.token}\n")
            assert cluster.pki is not None
            ca = cluster.pki.ca_cert
            url = f"{lb.server_url()}/api/v1/namespaces/{ns}/configmaps"
            watches = [_curl_watch(pod.netns, url, ca, header, http, tmp_path / f"watch{http}.out", cluster.log)
                       for http in ("--http1.1", "--http2")]
            for http, alpn in (("--http1.1", "http/1.1"), ("--http2", "h2")):
                status, trace = _curl_anonymous(pod.netns, url, ca, http)
                # Without a token the front adds no identity of its own: kube-apiserver refuses.
                assert status in ("401", "403"), (status, trace[-2000:])
                # The client spoke TLS with the front (its own certificate, under the cluster's CA),
                # not with kube-apiserver, in the protocol it asked for.
                assert "CN=watchdrop-front" in trace, trace[-2000:]
                assert f"ALPN: server accepted {alpn}" in trace or f"server accepted to use {alpn}" in trace, trace
            time.sleep(3)
            core = client.CoreV1Api(cluster.admin_api())
            core.create_namespaced_config_map(ns, client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name="trigger"), data={"n": "1"}))
            core.patch_namespaced_config_map("trigger", ns, {"data": {"n": "2"}})
            deadline = time.monotonic() + 15
            outs = [tmp_path / "watch--http1.1.out", tmp_path / "watch--http2.out"]
            while time.monotonic() < deadline and not all('"MODIFIED"' in o.read_text() for o in outs):
                time.sleep(0.2)
            for w in watches:
                assert w.alive(), w.tail()
        finally:
            for w in watches:
                w.stop(2)
            lb.close()
    for out in outs:
        # Both events of the watcher's own namespace, through the front, on one long response.
        events = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        assert [(e["type"], e["object"]["data"]["n"]) for e in events] == [("ADDED", "1"), ("MODIFIED", "2")], events
