"""The local cluster (runner/local/): a real node from nothing, a pod from a locally built image
that uses its projected token through the `kubernetes` ClusterIP, the kubelet closed to pods, and
a teardown that leaves the host as it found it. One cluster serves the module; the last test
tears it down and checks."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from runner.host.netns import list_project_netns
from runner.local import hoststate
from runner.local.cluster import LocalCluster
from tests.conftest import needs_root_tools

pytestmark = [needs_root_tools("ip", "go", "nft"), pytest.mark.slow]

NS = "wd-local-test"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
PROCESS_NAMES = ("kubelet", "kube-proxy", "coredns", "containerd", "containerd-shim", "containerd-shim-runc-v2",
                 "dockerd", "docker-registry", "kube-controller-manager", "kube-scheduler", "etcd", "kube-apiserver")

LIST_SCRIPT = f"""
T=$(cat {SA_DIR}/token); N=$(cat {SA_DIR}/namespace)
curl -sS --max-time 10 --cacert {SA_DIR}/ca.crt -H "Authorization: Bearer $T" \\
  "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/$N/configmaps" \\
  | grep -q '"name": "hello"' && echo "LISTED hello via $KUBERNETES_SERVICE_HOST"
exec sleep 3600
"""

# Anonymous, then with the pod's own token: both must be refused by the kubelet.
KUBELET_SCRIPT = f"""
T=$(cat {SA_DIR}/token)
A=$(curl -sk --max-time 10 -o /dev/null -w '%{{http_code}}' -X POST "https://$NODE_IP:10250/run/{NS}/lister/main?cmd=id")
B=$(curl -sk --max-time 10 -o /dev/null -w '%{{http_code}}' -H "Authorization: Bearer $T" \\
  -X POST "https://$NODE_IP:10250/run/{NS}/lister/main?cmd=id")
echo "anonymous=$A token=$B"
exec sleep 3600
"""


def _host_state() -> dict[str, object]:
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    return {
        "sysctls": hoststate.read_sysctls(),
        "nft": hoststate.nft_tables(),
        "iptables": hoststate.iptables_chains(),
        "cgroups": hoststate.kube_cgroups(),
        "paths": [p for p in hoststate.HOST_PATHS if os.path.lexists(p)],
        "veths_and_bridges": sorted(line.split()[0] for line in links.splitlines()
                                    if (line.startswith(("veth", "wd")) and line.split()[0].endswith("n"))
                                    or line.startswith("veth")),
    }


def _processes(run_id: str) -> list[str]:
    """The run's daemons still alive (other engineers' runs have their own etcd and kube-apiserver:
    ours name the run id in their argv, containerd's shims through their socket path). Pod
    processes are covered by the cgroup check: their kubepods cgroups must be gone."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                comm = Path(f"/proc/{d}/comm").read_text().strip()
                cmdline = Path(f"/proc/{d}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            # comm is cut at 15 characters (kube-controller, containerd-shim)
            if comm in {n[:15] for n in PROCESS_NAMES} and run_id in cmdline:
                out.append(f"{comm}:{d}")
    return out


@pytest.fixture(scope="module")
def before() -> dict[str, object]:
    return _host_state()


@pytest.fixture(scope="module")
def cluster(before: dict[str, object]) -> Iterator[LocalCluster]:
    c = LocalCluster(progress=print)
    with c:
        yield c


def _build_and_push(cluster: LocalCluster, name: str, script: str) -> str:
    images = cluster.images()
    base = images.base()
    ctx = io.BytesIO()
    with tarfile.open(fileobj=ctx, mode="w") as tar:
        for fname, text in (("Dockerfile", f'FROM {base}\nCOPY run.sh /run.sh\nCMD ["/bin/sh", "/run.sh"]\n'),
                            ("run.sh", script)):
            data = text.encode()
            info = tarfile.TarInfo(fname)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ctx.seek(0)
    assert cluster.docker is not None
    local = f"watchdrop-local/test-{name}:1"
    cluster.docker.images.build(fileobj=ctx, custom_context=True, tag=local, network_mode="host", rm=True)
    return images.push(local, f"test-{name}", "1")


def _pod(name: str, image: str, env: list[client.V1EnvVar] | None = None) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            termination_grace_period_seconds=0,
            containers=[client.V1Container(name="main", image=image, image_pull_policy="IfNotPresent",
                                           env=env)]))


def _wait_running(v1: client.CoreV1Api, name: str, timeout: float = 60) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        pod = v1.read_namespaced_pod(name, NS)
        if pod.status.phase == "Running":
            return time.monotonic() - t0
        assert pod.status.phase in ("Pending", None), pod.status
        time.sleep(0.2)
    pytest.fail(f"pod {name} not Running within {timeout} s: {v1.read_namespaced_pod(name, NS).status}")


def _wait_log(v1: client.CoreV1Api, name: str, needle: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = v1.read_namespaced_pod_log(name, NS)
        if needle in text:
            return text
        time.sleep(0.3)
    pytest.fail(f"pod {name} logged {text!r}, expected {needle!r}")


def test_the_kubelet_started_only_after_containerds_cri_answered(cluster: LocalCluster) -> None:
    """`ctr version` answers while the CRI plugin is still initializing; a kubelet started in that
    window exits ("server is not initialized yet"). The runner must wait for a CRI status call."""
    lines = (cluster.evidence_dir / "commands.log").read_text().splitlines()
    kubelet_at = next(i for i, line in enumerate(lines) if " start kubelet:" in line)
    cri_ok = [i for i, line in enumerate(lines[:kubelet_at])
              if "crictl" in line and " info" in line and lines[i + 1].endswith("-> 0")]
    assert cri_ok, "no successful CRI status call before the kubelet started"


def test_pod_from_a_local_image_lists_configmaps_through_the_cluster_ip(cluster: LocalCluster) -> None:
    api = cluster.admin_api()
    v1, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
    v1.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="hello")))
    rbac.create_namespaced_role(NS, client.V1Role(
        metadata=client.V1ObjectMeta(name="list-cm"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["list"])]))
    rbac.create_namespaced_role_binding(NS, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="list-cm"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="list-cm"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="default", namespace=NS)]))
    image = _build_and_push(cluster, "lister", LIST_SCRIPT)
    assert image.startswith(cluster.handover().registry + "/")
    deadline = time.monotonic() + 30  # the controller manager makes the namespace's default ServiceAccount
    while True:
        try:
            v1.create_namespaced_pod(NS, _pod("lister", image))
            break
        except client.ApiException as exc:
            if time.monotonic() > deadline or "serviceaccount" not in str(exc.body):
                raise
            time.sleep(0.2)
    took = _wait_running(v1, "lister")
    print(f"pod Running {took:.2f} s after create")
    svc_ip = v1.read_namespaced_service("kubernetes", "default").spec.cluster_ip
    _wait_log(v1, "lister", f"LISTED hello via {svc_ip}")
    pod = v1.read_namespaced_pod("lister", NS)
    assert any(v.projected for v in pod.spec.volumes), "the token should be a projected volume"


def test_a_pod_cannot_exec_through_the_kubelet(cluster: LocalCluster) -> None:
    v1 = client.CoreV1Api(cluster.admin_api())
    image = _build_and_push(cluster, "kubelet-probe", KUBELET_SCRIPT)
    env = [client.V1EnvVar(name="NODE_IP", value_from=client.V1EnvVarSource(
        field_ref=client.V1ObjectFieldSelector(field_path="status.hostIP")))]
    v1.create_namespaced_pod(NS, _pod("prober", image, env))
    _wait_running(v1, "prober")
    text = _wait_log(v1, "prober", "anonymous=")
    assert "anonymous=401 token=403" in text, text
    # The API server itself may (its own client certificate, system:masters): logs work.
    assert "LISTED" in v1.read_namespaced_pod_log("lister", NS)


DNS_SCRIPT = """
echo "cluster=$(getent hosts kubernetes.default.svc | cut -d' ' -f1)"
getent hosts pypi.org || echo "outside=refused"
exec sleep 3600
"""


def test_pods_resolve_the_cluster_by_name_and_nothing_outside(cluster: LocalCluster) -> None:
    """kube-dns (CoreDNS): `kubernetes.default.svc` is the `kubernetes` Service's ClusterIP, as kopf's
    in-cluster login needs; an outside name gets no answer (no lookup leaves the machine)."""
    v1 = client.CoreV1Api(cluster.admin_api())
    v1.create_namespaced_pod(NS, _pod("resolver", _build_and_push(cluster, "resolver", DNS_SCRIPT)))
    _wait_running(v1, "resolver")
    text = _wait_log(v1, "resolver", "outside=")
    svc_ip = v1.read_namespaced_service("kubernetes", "default").spec.cluster_ip
    assert f"cluster={svc_ip}" in text and "outside=refused" in text, text


def test_servers_listen_on_loopback_or_198_18_only(cluster: LocalCluster) -> None:
    pids = set(hoststate.pids_mentioning(str(cluster.workdir)))
    listening = []
    for ns in (None, cluster.control.api_ns):
        argv = ["ss", "-Htlnup"] if ns is None else ["ip", "netns", "exec", ns, "ss", "-Htlnup"]
        for line in subprocess.run(argv, capture_output=True, text=True).stdout.splitlines():
            if any(f"pid={pid}," in line for pid in pids):
                listening.append(line.split()[4])
    assert any(a.endswith(":10250") for a in listening), listening  # the kubelet, on the node address
    for addr in listening:
        host = addr.rsplit(":", 1)[0]
        assert host.startswith(("127.", "198.18.", "198.19.")), f"{addr} is reachable from outside: {listening}"


def test_teardown_leaves_nothing(cluster: LocalCluster, before: dict[str, object]) -> None:
    run_id, workdir = cluster.run_id, cluster.workdir
    assert _host_state()["sysctls"] != before["sysctls"], "the kubelet rewrites kernel.panic & co"
    t0 = time.monotonic()
    problems = cluster.close()
    print(f"teardown {time.monotonic() - t0:.2f} s")
    assert problems == []
    time.sleep(0.3)
    assert _processes(run_id) == []
    assert not [n for n in list_project_netns() if run_id in n]
    assert hoststate.mounts_under([str(workdir), "/var/lib/kubelet", "/run/containerd"]) == []
    assert not workdir.exists()
    assert not hoststate.Ledger.path_for(run_id).exists()
    assert _host_state() == before
