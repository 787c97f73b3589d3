"""The embedded cluster with a real etcd and kube-apiserver: start, RBAC, smoke round, teardown."""

from __future__ import annotations

import errno
import socket
import subprocess

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from runner.cli.cluster import smoke_round
from runner.credentials.rbac import service_account_can
from runner.embedded.cluster import ApiServerOptions, EmbeddedCluster
from runner.errors import ClusterError
from runner.host.netns import RANGE, list_project_netns
from tests.conftest import needs_root_tools

pytestmark = [needs_root_tools("ip", "curl", "go"), pytest.mark.slow]


def _pids_of(cluster: EmbeddedCluster) -> list[int]:
    return [c.pid for c in (cluster.etcd, cluster.apiserver) if c is not None]


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _guard_present() -> bool:
    out = subprocess.run(["ip", "route", "show", "root", str(RANGE)], capture_output=True, text=True).stdout
    return f"unreachable {RANGE}" in out


@pytest.fixture(scope="module")
def cluster():
    with EmbeddedCluster() as c:
        yield c


def test_smoke_round_sees_the_update(cluster: EmbeddedCluster) -> None:
    results = smoke_round(cluster)
    assert results["event latency"] < 10


def test_watcher_token_is_least_privilege(cluster: EmbeddedCluster) -> None:
    access = cluster.watcher_access("wd-rbac-a")
    cluster.watcher_access("wd-rbac-b")
    scoped = config.new_client_from_config(config_file=str(access.kubeconfig))
    v1 = client.CoreV1Api(scoped)
    try:
        assert v1.list_namespaced_config_map("wd-rbac-a").items == []
        for call in (lambda: v1.list_namespaced_secret("wd-rbac-a"),
                     lambda: v1.list_namespaced_config_map("wd-rbac-b"),
                     lambda: v1.create_namespaced_config_map(
                         "wd-rbac-a", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x")))):
            with pytest.raises(ApiException) as info:
                call()
            assert info.value.status == 403
    finally:
        scoped.close()
    admin = cluster.admin_api()
    assert service_account_can(admin, "wd-rbac-a", verb="watch", resource="configmaps", target_namespace="wd-rbac-a")
    assert not service_account_can(admin, "wd-rbac-a", verb="get", resource="secrets", target_namespace="wd-rbac-a")
    assert not service_account_can(admin, "wd-rbac-a", verb="watch", resource="configmaps",
                                   target_namespace="wd-rbac-b")
    assert not service_account_can(admin, "wd-rbac-a", verb="list", resource="configmaps", target_namespace=None)
    assert not service_account_can(admin, "wd-rbac-a", verb="list", resource="namespaces", target_namespace=None)


def test_guard_route_keeps_198_18_on_the_machine(cluster: EmbeddedCluster) -> None:
    """While namespaces exist, an unused 198.18 address fails at once with 'no route'."""
    assert _guard_present()
    unused = str(RANGE.broadcast_address - 1)
    s = socket.socket()
    s.settimeout(2)
    try:
        with pytest.raises(OSError) as info:
            s.connect((unused, 443))
        assert info.value.errno == errno.EHOSTUNREACH
    finally:
        s.close()


def test_teardown_leaves_nothing() -> None:
    c = EmbeddedCluster()
    with c:
        pids = _pids_of(c)
        ns = list(c.topology.namespaces)
        workdir = c.workdir
        assert all(_pid_alive(p) for p in pids)
    assert not any(_pid_alive(p) for p in pids)
    assert not set(ns) & set(list_project_netns())
    assert not workdir.exists()


def test_failed_start_rolls_back() -> None:
    """kube-apiserver refuses a bad flag after etcd is up: everything made so far goes away."""
    c = EmbeddedCluster(apiserver=ApiServerOptions(extra_args=["--no-such-flag"]))
    with pytest.raises(ClusterError, match="kube-apiserver exited"):
        c.start()
    assert c.etcd is not None and not _pid_alive(c.etcd.pid)
    assert not [n for n in list_project_netns() if c.run_id in n]
    assert not c.workdir.exists()
