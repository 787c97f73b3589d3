"""The local cluster's rendered configuration (pure functions) and `kind: local` in the matrix."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import yaml

from runner.backend import RunContext
from runner.config.matrix import LocalCluster, load_matrix
from runner.config.paths import PATHS as NAMED_PATHS
from runner.config.plan import plan
from runner.errors import MatrixError
from runner.local import configs, dns
from runner.local.cluster import Handover
from runner.local.node import NodeNet
from runner.local.provider import LocalProvidedBackend, kube_context
from runner.pipeline import Execution, prepare

REPO = Path(__file__).resolve().parent.parent
PATHS = configs.NodePaths(state=Path("/tmp/watchdrop-abcdef-local-x/node"), cache=Path("/cache/local"))


def test_containerd_config_keeps_state_in_the_run_and_never_pulls_outside() -> None:
    doc = tomllib.loads(configs.containerd_config(PATHS, "127.0.0.1:5000/watchdrop-local/pause:1"))
    assert doc["version"] == 2
    assert doc["root"] == "/cache/local/containerd-root"
    assert doc["state"].startswith(str(PATHS.state))
    assert doc["grpc"]["address"] == str(PATHS.containerd_sock)
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True            # no CAP_SYS_RESOURCE here
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["sandbox_image"].startswith("127.0.0.1:")   # the run's registry, never a public one
    assert cri["stream_server_address"] == "127.0.0.1"
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"] == {"Root": f"{PATHS.containerd_state}/runc", "SystemdCgroup": False}
    assert cri["cni"]["conf_dir"].startswith(str(PATHS.state))
    assert cri["registry"]["config_path"] == str(PATHS.certs_d)


def test_registry_hosts_toml_is_plain_http_pull_only() -> None:
    doc = tomllib.loads(configs.registry_hosts_toml("127.0.0.1:41234"))
    assert doc["server"] == "http://127.0.0.1:41234"
    assert doc["host"]["http://127.0.0.1:41234"]["capabilities"] == ["pull", "resolve"]


def test_cni_conflist_no_masquerade_and_only_198_18_routes() -> None:
    net = NodeNet(__import__("ipaddress").ip_network("198.18.32.0/20"), "abcdef")
    assert (net.node_ip, net.pod_cidr, net.bridge) == ("198.18.32.1", "198.18.32.0/24", "wdabcdefn")
    doc = json.loads(configs.cni_conflist("x", net.bridge, net.pod_cidr, net.node_ip, PATHS.state / "ipam"))
    [bridge] = doc["plugins"]
    assert bridge["type"] == "bridge" and bridge["bridge"] == "wdabcdefn"
    assert bridge["ipMasq"] is False and bridge["isGateway"] is True
    assert bridge["ipam"]["routes"] == [{"dst": "198.18.0.0/15"}]
    assert bridge["ipam"]["ranges"] == [[{"subnet": "198.18.32.0/24", "gateway": "198.18.32.1"}]]
    assert bridge["ipam"]["dataDir"].startswith(str(PATHS.state))


def test_kubelet_config_is_secured_and_cgroup_v1() -> None:
    s = configs.KubeletSettings(node_ip="198.18.32.1", ca_cert=Path("/p/ca.crt"), serving_cert=Path("/p/k.crt"),
                                serving_key=Path("/p/k.key"), cluster_dns="198.18.47.10")
    doc = yaml.safe_load(configs.kubelet_config(PATHS, s))
    assert doc["clusterDNS"] == ["198.18.47.10"] and doc["clusterDomain"] == "cluster.local"
    assert doc["authentication"]["anonymous"]["enabled"] is False
    assert doc["authentication"]["x509"]["clientCAFile"] == "/p/ca.crt"
    assert doc["authentication"]["webhook"]["enabled"] is True
    assert doc["authorization"]["mode"] == "Webhook"
    assert doc["readOnlyPort"] == 0
    assert doc["address"] == "198.18.32.1" and doc["healthzBindAddress"] == "127.0.0.1"
    assert doc["cgroupDriver"] == "cgroupfs" and doc["failCgroupV1"] is False
    assert doc["containerRuntimeEndpoint"] == f"unix://{PATHS.containerd_sock}"
    assert doc["resolvConf"] == str(PATHS.resolv_conf)


def test_cluster_dns_answers_only_the_clusters_zones_with_read_only_rights() -> None:
    """No `forward`: a pod's lookup of an outside name is refused, never sent off the machine."""
    conf = dns.corefile("198.18.32.1", Path("/k/coredns.kubeconfig"), 40123)
    assert "forward" not in conf and "bind 198.18.32.1" in conf and "ready 127.0.0.1:40123" in conf
    assert conf.startswith("cluster.local in-addr.arpa ip6.arpa {")
    assert dns.service_ip("198.18.47.0/24") == "198.18.47.10"
    objs = {o["kind"]: o for o in dns.objects("198.18.47.0/24", "198.18.32.1")}
    assert objs["Service"]["spec"]["clusterIP"] == "198.18.47.10" and "selector" not in objs["Service"]["spec"]
    assert objs["EndpointSlice"]["endpoints"][0]["addresses"] == ["198.18.32.1"]
    assert objs["EndpointSlice"]["metadata"]["labels"]["kubernetes.io/service-name"] == "kube-dns"
    verbs = {v for rule in objs["ClusterRole"]["rules"] for v in rule["verbs"]}
    assert verbs == {"list", "watch"}
    assert objs["ClusterRoleBinding"]["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": dns.USER}]


def test_kube_proxy_config_nftables_and_hands_off_conntrack() -> None:
    doc = yaml.safe_load(configs.kube_proxy_config(Path("/k/kp.kubeconfig"), "n", "198.18.32.0/24"))
    assert doc["mode"] == "nftables"
    assert doc["conntrack"] == {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                                "tcpCloseWaitTimeout": "0s"}
    assert doc["healthzBindAddress"].startswith("127.0.0.1:")
    assert doc["metricsBindAddress"].startswith("127.0.0.1:")


def test_registry_config_on_loopback() -> None:
    doc = yaml.safe_load(configs.registry_config(Path("/cache/reg"), "127.0.0.1:41234"))
    assert doc["http"]["addr"] == "127.0.0.1:41234"
    assert doc["storage"]["filesystem"]["rootdirectory"] == "/cache/reg"


MATRIX = """
clients:
  - name: client-go
clusters:
  - name: loc
    kind: local
    lb: {profile: azure-slb, idle_timeout: 5}
    churn: {lease_interval: 3}
scenarios:
  watch: {interval: idle+3, detection_timeout: 5, rounds: 1}
"""


def test_matrix_accepts_local_clusters_and_hands_their_cells_to_the_kubernetes_backend(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MATRIX)
    matrix = load_matrix(path, REPO / "clients")
    [cluster] = matrix.clusters
    assert isinstance(cluster, LocalCluster)
    assert cluster.idle_timeout == 5 and cluster.churn.lease_interval == 3
    [cell] = plan(matrix)
    assert cell.cluster_kind == "local" and cell.interval == 8
    # The image is the build, as on any kube context: no local toolchain decides a skip.
    prepared = prepare(path, [], REPO / "clients")
    assert prepared.skips[cell.id] is None
    ctx = RunContext(run_id="abc123", run_dir=tmp_path / "run", descriptors=prepared.descriptors)
    [backend] = Execution(prepared=prepared, out=tmp_path, jobs=0, run_id="abc123").backends(ctx)
    assert isinstance(backend, LocalProvidedBackend) and backend.cells_given == [cell]
    assert backend.close() == []  # never started: nothing to undo


def test_a_local_cluster_is_handed_over_as_a_plain_kube_context(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MATRIX)
    [spec] = load_matrix(path, REPO / "clients").clusters
    assert isinstance(spec, LocalCluster)
    h = Handover(kubeconfig=tmp_path / "k", context="watchdrop-local", registry="127.0.0.1:5000", node_name="n",
                 node_ip="198.18.16.1", pod_cidr="198.18.16.0/24", service_cidr="198.18.15.0/24",
                 apiserver="198.18.1.1:6443", advertised="198.18.2.8:6443", docker_socket="unix:///x.sock")
    kc = kube_context(spec, h)
    assert (kc.kind, kc.kubeconfig, kc.context, kc.registry) == ("kubernetes", str(tmp_path / "k"),
                                                                 "watchdrop-local", "127.0.0.1:5000")
    assert (kc.base_images, kc.service_type, kc.idle_timeout, kc.api_server) == ("local", "ClusterIP", 5, None)


PATH_MATRIX = """
clients:
  - name: client-go
clusters:
  - name: loc
    kind: local
    path: {preset: gke-cloudnat-quick, override: {cloudnat: {idle_timeout: 45}}}
scenarios:
  watch: {interval: idle+20, rounds: 1}
"""


def test_a_local_cluster_takes_a_path_and_its_cells_carry_it(tmp_path: Path) -> None:
    """issue 17: a chain of hops on the local cluster, as on the embedded one: the cells are sized by
    the path's first expiry, know their path (results.json prints it hop by hop), and the kube
    context the backend gets says the same."""
    path = tmp_path / "m.yaml"
    path.write_text(PATH_MATRIX)
    matrix = load_matrix(path, REPO / "clients")
    [spec] = matrix.clusters
    assert isinstance(spec, LocalCluster)
    net = spec.net_path()
    assert net is not None and [(h.name, h.kind, h.idle_timeout) for h in net.hops] == [
        ("cloudnat", "nat", 45), ("fw", "lb", 112)]
    assert spec.idle_timeout == 45 and spec.profile().idle_timeout == 112
    [cell] = plan(matrix)
    assert cell.path == net and cell.interval == 65
    h = Handover(kubeconfig=tmp_path / "k", context="watchdrop-local", registry="127.0.0.1:5000", node_name="n",
                 node_ip="198.18.16.1", pod_cidr="198.18.16.0/24", service_cidr="198.18.15.0/24",
                 apiserver="198.18.1.1:6443", advertised="198.18.2.8:6443", docker_socket="unix:///x.sock")
    kc = kube_context(spec, h)
    assert kc.idle_timeout == 45
    assert kc.description is not None and "cloudnat (nat): silent-drop after 45 s" in kc.description


def test_every_reachable_quick_path_has_a_local_column() -> None:
    """matrix.local-paths.yaml runs each named path at its quick timings on the local cluster (one
    whose first expiry a run can wait for: not the security group's 81000 s)."""
    matrix = load_matrix(REPO / "matrix.local-paths.yaml", REPO / "clients")
    ran = {p.name for c in matrix.clusters if isinstance(c, LocalCluster) and (p := c.net_path()) is not None}
    reachable = {name for name, p in NAMED_PATHS.items() if name.endswith("-quick") and (p.first_expiry or 0) < 3600}
    assert ran == reachable


@pytest.mark.parametrize("entry, expected", [
    ("    kind: local\n", "clusters[0]: a local cluster needs `lb:` or `path:`"),
    ("    kind: local\n    path: aks-pubic\n", "clusters[0].path.preset: unknown path 'aks-pubic'"),
    ("    kind: local\n    lb: {profile: gcp}\n    path: gke\n",
     "with `lb:` the path lists only the nat hops before that LB, and this one has a lb hop (fw)"),
    ("    kind: local\n    lb: {profile: nope}\n", "clusters[0].lb.profile: unknown LB profile 'nope'"),
    ("    kind: local\n    lb: {profile: gcp}\n    registry: x\n", "clusters[0].registry: unknown key"),
])
def test_matrix_local_cluster_errors_are_located(tmp_path: Path, entry: str, expected: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("clients:\n  - name: client-go\nclusters:\n  - name: loc\n" + entry
                    + "scenarios:\n  watch: {interval: idle+3}\n")
    with pytest.raises(MatrixError) as info:
        load_matrix(path, REPO / "clients")
    assert any(expected in p and p.startswith(f"{path}:") for p in info.value.problems), info.value.problems
