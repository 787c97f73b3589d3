"""kube-apiserver's own TCP keepalive (3 min) and the managed front (docs/facts.md).

Behind `front: passthrough` a pod connected to kube-apiserver receives the server's keepalive probes
after 180 s of idle, so it is never idle long enough for a 4-minute LB. Behind `front: tcp`
(HAProxy, as on AKS) those probes end at the front and never reach the pod. Read from
the pod's own capture. Takes a little over 3 minutes.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from runner.embedded.cluster import EmbeddedCluster
from runner.embedded.lb import LoadBalancer
from runner.evidence.pcap import read_pcap
from runner.host.capture import Capture
from runner.host.procs import Child
from tests.conftest import needs_root_tools

pytestmark = [needs_root_tools("ip", "nft", "tcpdump", "haproxy", "curl"), pytest.mark.slow]

APISERVER_FIRST_PROBE = 180
WAIT = APISERVER_FIRST_PROBE + 25


def test_front_hides_apiserver_keepalives(tmp_path) -> None:
    with EmbeddedCluster(churn_interval=0, evidence_dir=tmp_path) as cluster:
        from runner.config.profiles import Profile

        lbs, caps, watches = [], [], []
        try:
            for slot, front in enumerate(("passthrough", "tcp")):
                lb = LoadBalancer(cluster, slot, Profile(f"ctl-{front}", "none", 240, front, "test"),
                                  tmp_path / f"lb-{front}").start()
                lbs.append(lb)
                pod = lb.add_pod()
                caps.append(Capture(pod.netns, "eth0", tmp_path / f"{front}.pcap", cluster.log).start())
                assert cluster.pki is not None
                p = cluster.pki
                # An idle watch: nothing changes in `default`, no bookmarks asked for, curl's own
                # TCP keepalive off, HTTP/1.1 so no PINGs either.
                argv = ["ip", "netns", "exec", pod.netns, "curl", "-sN", "--no-keepalive", "--http1.1",
                        "--cacert", p.ca_cert, "--cert", p.admin_cert, "--key", p.admin_key,
                        f"{lb.server_url()}/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=900"]
                watches.append(Child(f"watch {front}", argv, stdout=tmp_path / f"{front}.out", log=cluster.log))
            time.sleep(WAIT)
            for w in watches:
                assert w.alive(), w.tail()
        finally:
            for w in watches:
                w.stop(2)
            for c in caps:
                c.stop()
            for lb in lbs:
                lb.close()
    direct = read_pcap(tmp_path / "passthrough.pcap", server_ports={6443})
    fronted = read_pcap(tmp_path / "tcp.pcap", server_ports={6443})
    assert len(direct.connections) == 1 and len(fronted.connections) == 1
    probes = direct.connections[0].keepalive_server
    assert probes, "kube-apiserver's keepalive probes should reach the pod without a front"
    conn = direct.connections[0]
    last_data = max(t for t in conn.data_server + conn.data_client if t < probes[0])
    first_gap = probes[0] - last_data
    assert APISERVER_FIRST_PROBE - 5 <= first_gap <= APISERVER_FIRST_PROBE + 20
    assert fronted.connections[0].keepalive_server == []
    assert fronted.connections[0].keepalive_client == []


def test_no_listening_socket_in_the_root_namespace(tmp_path) -> None:
    """Every server the runner starts listens inside the project's namespaces, never in the root one."""
    def listeners() -> set[str]:
        out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True).stdout
        return {line.split()[3] for line in out.splitlines() if line.strip()}

    before = listeners()
    with EmbeddedCluster(churn_interval=0, evidence_dir=tmp_path) as cluster:
        from runner.config.profiles import Profile
        from runner.embedded.timer import start_timer_server

        timer = start_timer_server(cluster, tmp_path)
        lb = LoadBalancer(cluster, 0, Profile("t", "rst-both-ways", 30, "tcp", "test"), tmp_path / "lb").start()
        try:
            during = listeners()
        finally:
            lb.close()
            timer.stop()
    assert during - before == set()
