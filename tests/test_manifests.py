"""The kubernetes backend's objects: hardened as promised, accepted by a real kube-apiserver, least privilege."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from runner.credentials.rbac import service_account_can
from runner.embedded.cluster import EmbeddedCluster
from runner.host.netns import new_run_id
from runner.kube import manifests as m
from runner.kube.api import apply, delete
from tests.conftest import needs_root_tools

RUN = "abc123"
NS = m.cell_namespace(RUN, 7)


def _cell_objects(run: str = RUN, **overrides: Any) -> list[dict[str, Any]]:
    kwargs: dict[str, Any] = {
        "cluster": "my-aks", "index": 7, "cell": "client-go/my-aks/watch", "client_name": "client-go",
        "scenario": "watch", "image": "registry.invalid/watchdrop/watchdrop-client-go:0123456789abcdef",
        "capture_image": "registry.invalid/watchdrop/watchdrop-capture:fedcba9876543210",
        "env": {"WATCHDROP_SCENARIO": "watch", "WATCHDROP_ROUNDS": "2", "DISABLE_HTTP2": "1"},
    }
    kwargs.update(overrides)
    spec_keys = {"index", "cell", "client_name", "scenario", "image", "env"}
    d = m.Deployment(run_id=run, **{k: v for k, v in kwargs.items() if k not in spec_keys})
    c = m.CellSpec(**{k: v for k, v in kwargs.items() if k in spec_keys})
    return m.cell_objects(m.cell_namespace(run, c.index), d, c)


def _pod(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == "Pod")


def _containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod["spec"]["containers"]}


# -- rendering (no cluster) -------------------------------------------------------------------------


def test_cell_objects_in_creation_order_with_the_run_label() -> None:
    objs = _cell_objects()
    assert [o["kind"] for o in objs] == ["Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Pod"]
    assert NS == "watchdrop-abc123-c007"
    for o in objs:
        assert o["metadata"]["labels"][m.LABEL_RUN] == RUN
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == NS
    ns = objs[0]
    assert ns["metadata"]["annotations"][m.ANNOTATION_CELL] == "client-go/my-aks/watch"
    # idle-request has no trigger to update
    assert "ConfigMap" not in [o["kind"] for o in _cell_objects(scenario="idle-request")]


def test_every_container_is_hardened() -> None:
    for pod in (_pod(_cell_objects()), m.timer_pod("watchdrop-abc123", RUN, image="r/t:1", capture_image="r/c:1")):
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["spec"]["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert sc["readOnlyRootFilesystem"] is True
            assert c["imagePullPolicy"] == "IfNotPresent"
            for kind in ("requests", "limits"):
                assert set(c["resources"][kind]) == {"cpu", "memory"}
            if c["name"] == m.CAPTURE_CONTAINER:
                assert sorted(sc["capabilities"]["add"]) == ["NET_ADMIN", "NET_RAW"]
                assert {v["mountPath"] for v in c["volumeMounts"]} == {m.CAPTURE_DIR}
            else:
                assert "add" not in sc["capabilities"]
                assert sc["allowPrivilegeEscalation"] is False


def test_only_the_watcher_gets_a_token() -> None:
    objs = _cell_objects()
    sa = next(o for o in objs if o["kind"] == "ServiceAccount")
    pod = _pod(objs)
    assert sa["automountServiceAccountToken"] is False
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["serviceAccountName"] == m.SERVICE_ACCOUNT
    mounts = {name: [v["mountPath"] for v in c.get("volumeMounts", [])] for name, c in _containers(pod).items()}
    assert m.TOKEN_DIR in mounts[m.WATCHER_CONTAINER]
    assert m.TOKEN_DIR not in mounts[m.CAPTURE_CONTAINER]
    projected = next(v for v in pod["spec"]["volumes"] if v["name"] == "kube-api-access")["projected"]["sources"]
    assert {"serviceAccountToken", "configMap", "downwardAPI"} == {k for s in projected for k in s}
    timer = m.timer_pod("watchdrop-abc123", RUN, image="r/t:1", capture_image="r/c:1")
    assert timer["spec"]["automountServiceAccountToken"] is False
    assert all(v["name"] != "kube-api-access" for v in timer["spec"]["volumes"])


def test_capture_starts_before_the_watcher() -> None:
    """The kubelet starts containers in order and waits for postStart: tcpdump listens first."""
    pod = _pod(_cell_objects())
    names = [c["name"] for c in pod["spec"]["containers"]]
    assert names == [m.CAPTURE_CONTAINER, m.WATCHER_CONTAINER]
    capture = pod["spec"]["containers"][0]
    assert "listening on" in capture["lifecycle"]["postStart"]["exec"]["command"][-1]
    assert pod["spec"]["shareProcessNamespace"] is True
    assert pod["spec"]["restartPolicy"] == "Never"


def test_watcher_env_uses_in_cluster_config() -> None:
    env = {e["name"]: e["value"] for e in _containers(_pod(_cell_objects(
        env={"WATCHDROP_SCENARIO": "watch", "WATCHDROP_KUBECONFIG": "/x"})))[m.WATCHER_CONTAINER]["env"]}
    assert "WATCHDROP_KUBECONFIG" not in env
    assert env["WATCHDROP_NAMESPACE"] == NS
    assert "KUBERNETES_SERVICE_HOST" not in env
    env = {e["name"]: e["value"] for e in _containers(_pod(_cell_objects(
        api_server="myaks-dns.hcp.westeurope.azmk8s.io:443")))[m.WATCHER_CONTAINER]["env"]}
    assert env["KUBERNETES_SERVICE_HOST"] == "myaks-dns.hcp.westeurope.azmk8s.io"
    assert env["KUBERNETES_SERVICE_PORT"] == "443"
    assert m.api_server_env("[fd00::1]:6443") == [{"name": "KUBERNETES_SERVICE_HOST", "value": "fd00::1"},
                                                 {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"}]


def test_timer_service_is_internal_as_the_matrix_says() -> None:
    plain = m.timer_service("ns", RUN, "ClusterIP")
    assert plain["spec"]["type"] == "ClusterIP" and "loadBalancerSourceRanges" not in plain["spec"]
    assert "annotations" not in plain["metadata"]
    lb = m.timer_service("ns", RUN, "LoadBalancer", source_ranges=["10.0.0.0/8"], internal="gcp")
    assert lb["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
    assert lb["metadata"]["annotations"] == {"networking.gke.io/load-balancer-type": "Internal"}


def test_pull_policy_and_secrets_from_the_matrix() -> None:
    pod = _pod(_cell_objects(pull_policy="Always", pull_secrets=["acr"]))
    assert {c["imagePullPolicy"] for c in pod["spec"]["containers"]} == {"Always"}
    assert pod["spec"]["imagePullSecrets"] == [{"name": "acr"}]
    with pytest.raises(ValueError, match="imagePullPolicy"):
        _cell_objects(pull_policy="Sometimes")


def test_role_is_configmaps_read_only() -> None:
    role = next(o for o in _cell_objects() if o["kind"] == "Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]
    binding = next(o for o in _cell_objects() if o["kind"] == "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": m.SERVICE_ACCOUNT, "namespace": NS}]


# The runner's own ClusterRoles and admission policies: tests/test_kube_rbac.py.


# -- against a real kube-apiserver ------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    with EmbeddedCluster(churn_interval=0) as c:
        yield c


@pytest.mark.slow
@needs_root_tools("ip", "curl", "go")
def test_api_server_accepts_every_object(cluster: EmbeddedCluster) -> None:
    """Server-side dry-run apply with strict field validation, then a real apply, then delete."""
    api = cluster.admin_api()
    # A run id per test: a deleted namespace stays Terminating here (no namespace controller).
    run = new_run_id()
    ns = m.cell_namespace(run, 7)
    objs = _cell_objects(run, api_server="[fd00::1]:6443", pull_policy="Always", pull_secrets=["acr"])
    objs += m.timer_objects(m.run_namespace(run), m.Deployment(run_id=run, cluster="my-aks", capture_image="r/c:1"),
                            image="r/t:1", service_type="LoadBalancer", source_ranges=["10.0.0.0/8"],
                            internal="aws")
    objs.insert(1, m.pull_secret_copy({"metadata": {"name": "acr"}, "type": "kubernetes.io/dockerconfigjson",
                                       "data": {".dockerconfigjson": "e30="}}, ns, run))
    applied = []
    try:
        for obj in objs:
            # Dry-run first: a namespaced object's dry run needs its namespace (and a pod its
            # ServiceAccount) to exist for real, so each real apply follows its own dry run.
            apply(api, obj, dry_run=True)
            apply(api, obj)
            applied.append(obj)
        pod = client.CoreV1Api(api).read_namespaced_pod(m.WATCHER_POD, ns)
        assert pod.spec.security_context.run_as_non_root is True
        assert [c.name for c in pod.spec.containers] == [m.CAPTURE_CONTAINER, m.WATCHER_CONTAINER]
        # Strict validation is what makes this test mean something: a misspelt field is refused.
        bad = copy.deepcopy(_pod(objs))
        bad["spec"]["containers"][1]["securityContxt"] = {}
        with pytest.raises(ApiException) as info:
            apply(api, bad, dry_run=True)
        # kube-apiserver reports a schema error of an apply patch as 500 "failed to create typed patch".
        assert "securityContxt" in (info.value.body or "") and "not declared in schema" in (info.value.body or "")
    finally:
        for obj in reversed(applied):
            delete(api, obj, grace=0)


@pytest.mark.slow
@needs_root_tools("ip", "curl", "go")
def test_watcher_service_account_is_least_privilege(cluster: EmbeddedCluster) -> None:
    api = cluster.admin_api()
    run = new_run_id()
    ns, other = m.cell_namespace(run, 7), m.cell_namespace(run, 8)
    objs = _cell_objects(run) + [o for o in m.cell_objects(
        other, m.Deployment(run_id=run, cluster="my-aks", capture_image="r/c:1"),
        m.CellSpec(index=8, cell="x/my-aks/watch", client_name="x", scenario="watch", image="r/w:1"))
        if o["kind"] != "Pod"]
    try:
        for obj in objs:
            apply(api, obj)

        def can(verb: str, resource: str, target: str | None, group: str = "") -> bool:
            return service_account_can(api, ns, verb=verb, resource=resource, target_namespace=target, group=group)

        for verb in ("get", "list", "watch"):
            assert can(verb, "configmaps", ns)
        for verb in ("create", "update", "patch", "delete"):
            assert not can(verb, "configmaps", ns)
        assert not can("get", "secrets", ns)
        assert not can("list", "pods", ns)
        assert not can("watch", "configmaps", other)
        assert not can("list", "configmaps", None)
        assert not can("list", "namespaces", None)
        assert not can("get", "roles", ns, group="rbac.authorization.k8s.io")
    finally:
        for obj in reversed(objs):
            delete(api, obj, grace=0)
