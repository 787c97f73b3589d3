"""The runner's own identity on a real cluster: least privilege that holds.

Rendering (no cluster), then against the embedded kube-apiserver: `python -m runner kube-rbac`'s
manifests applied, a ServiceAccount bound as the runner, SubjectAccessReviews for the RBAC half
and real requests as that ServiceAccount (dry-run where the request would do harm) for the
admission half.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from runner.credentials.kubeconfig import token_user, write_kubeconfig
from runner.credentials.rbac import service_account_groups, user_can
from runner.embedded.cluster import EmbeddedCluster
from runner.host.netns import new_run_id
from runner.kube import manifests as m
from runner.kube.api import (
    apply,
    excess_permissions,
    holds_everywhere,
    missing_permissions,
    pod_policy_in_force,
    wait_pod_policy,
    whoami,
)
from tests.conftest import needs_root_tools

REPO = Path(__file__).resolve().parent.parent
SA = m.Subject("ServiceAccount", "runner", "watchdrop-admin")


# -- rendering --------------------------------------------------------------------------------------

def _granted(role: dict[str, Any]) -> set[tuple[str, str, str, str | None]]:
    return {(g, r, v, n) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"] for n in (rule.get("resourceNames") or [None])}


def test_cluster_wide_role_creates_namespaces_and_binds_only_the_in_run_role() -> None:
    granted = _granted(m.runner_cluster_role())
    assert granted == {
        *(("", "namespaces", v, None) for v in ("get", "list", "create", "patch", "delete")),
        *((m.RBAC_GROUP, "rolebindings", v, None) for v in ("get", "create", "patch")),
        (m.RBAC_GROUP, "clusterroles", "bind", m.IN_RUN_ROLE), (m.RBAC_GROUP, "clusterroles", "get", m.IN_RUN_ROLE),
    }


def test_in_run_role_is_exactly_the_runner_rules() -> None:
    want = {(g, r, v, None) for g, r, verbs in m.RUNNER_RULES for v in verbs}
    assert _granted(m.in_run_cluster_role()) == want
    assert _granted(m.in_run_cluster_role(pull_secrets=True)) == want | {("", "secrets", "create", None),
                                                                         ("", "secrets", "patch", None)}
    assert not any("*" in str(rule) for rule in m.in_run_cluster_role()["rules"])


def test_runner_rbac_binds_the_in_run_role_nowhere_cluster_wide() -> None:
    objs = m.runner_rbac(SA, pull_secrets=["acr"], secrets_namespace="ci")
    kinds = [o["kind"] for o in objs]
    assert kinds == ["ClusterRole", "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
                     "ValidatingAdmissionPolicyBinding", "ValidatingAdmissionPolicy",
                     "ValidatingAdmissionPolicyBinding", "Role", "RoleBinding"]
    crb = objs[2]
    assert crb["roleRef"]["name"] == m.RUNNER_ROLE
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "runner", "namespace": "watchdrop-admin"}]
    role = objs[7]
    assert role["metadata"]["namespace"] == "ci"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["acr"], "verbs": ["get"]}]
    for policy in (o for o in objs if o["kind"] == "ValidatingAdmissionPolicy"):
        assert policy["spec"]["failurePolicy"] == "Fail"
        assert policy["spec"]["matchConditions"][0]["expression"] == \
            'request.userInfo.username == "system:serviceaccount:watchdrop-admin:runner"'
    assert all(o["spec"]["validationActions"] == ["Deny"] for o in objs if o["kind"].endswith("PolicyBinding"))


def test_subjects_from_user_names() -> None:
    assert m.Subject.of_user("system:serviceaccount:ci:wd") == m.Subject("ServiceAccount", "wd", "ci")
    user = m.Subject.of_user("alice@example.com")
    assert user.rbac() == {"kind": "User", "apiGroup": m.RBAC_GROUP, "name": "alice@example.com"}
    assert user.cel_match() == 'request.userInfo.username == "alice@example.com"'
    assert m.Subject("Group", 'ops"x').cel_match() == '"ops\\"x" in request.userInfo.groups'


def test_run_namespace_pattern_is_exactly_the_runs_names() -> None:
    run = new_run_id()
    pattern = re.compile(m.RUN_NAMESPACE_PATTERN)
    for ns in (m.run_namespace(run), m.run_namespace(run, 2), m.cell_namespace(run, 0), m.cell_namespace(run, 999),
               m.cell_namespace(run, 1234)):
        assert pattern.match(ns), ns
    for ns in ("default", "kube-system", "watchdrop", "watchdrop-victim", f"watchdrop-{run}-x", f"watchdrop-{run}x",
               f"kube-system-watchdrop-{run}", f"watchdrop-{run}-c01", m.cell_namespace(run, 7).upper()):
        assert not pattern.match(ns), ns


def test_objects_bind_the_runner_right_after_each_namespace() -> None:
    d = m.Deployment(run_id="abc123", cluster="k", capture_image="r/c:1", runner_subject=SA)
    cell = m.cell_objects(m.cell_namespace("abc123", 0), d, m.CellSpec(
        index=0, cell="c/k/watch", client_name="c", scenario="watch", image="r/w:1"))
    timer = m.timer_objects(m.run_namespace("abc123"), d, image="r/t:1", service_type="ClusterIP")
    for objs in (cell, timer):
        assert [o["kind"] for o in objs[:2]] == ["Namespace", "RoleBinding"]
        assert m.is_runner_binding(objs[1]) and objs[1]["subjects"] == [SA.rbac()]
        assert objs[1]["metadata"]["namespace"] == objs[0]["metadata"]["name"]
        secret = {"kind": "Secret", "metadata": {"name": "acr"}}
        assert m.with_secrets(objs, [secret])[2] is secret
    assert [o["kind"] for o in m.with_secrets(cell[:1] + cell[2:], [secret])][:2] == ["Namespace", "Secret"]


def test_kube_rbac_command_prints_the_manifests() -> None:
    out = subprocess.run([sys.executable, "-m", "runner", "kube-rbac", "--service-account", "ops/wd"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    import yaml
    assert list(yaml.safe_load_all(out)) == m.runner_rbac(m.Subject("ServiceAccount", "wd", "ops"))
    bad = subprocess.run([sys.executable, "-m", "runner", "kube-rbac", "--service-account", "wd"],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 4 and "expected NAMESPACE/NAME" in bad.stderr


# -- against a real kube-apiserver ------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(churn_interval=0) as c:
        yield c


def _own_policy(obj: dict[str, Any], subject: m.Subject) -> None:
    """One policy pair per identity in this shared cluster: its names carry the subject's."""
    obj["metadata"]["name"] += f"-{subject.name}"
    if obj["kind"].endswith("Binding"):
        obj["spec"]["policyName"] += f"-{subject.name}"


def restricted_runner(cluster: EmbeddedCluster, kubeconfig: Path,
                      leave_out: str | None = None) -> tuple[m.Subject, Path]:
    """A ServiceAccount bound as the runner with `runner_rbac`'s manifests (applied by the admin; all
    but the policy named `leave_out`), and a kubeconfig holding its token; waits until the namespace
    policy is in force (the pod policy can only be probed in a run namespace: `wait_pod_policy`)."""
    api = cluster.admin_api()
    core = client.CoreV1Api(api)
    subject = m.Subject("ServiceAccount", f"runner-{new_run_id()}", "watchdrop-admin")
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="watchdrop-admin")))
    except ApiException as exc:
        if exc.status != 409:
            raise
    core.create_namespaced_service_account(subject.namespace, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name=subject.name)))
    for obj in m.runner_rbac(subject, binding=f"{m.RUNNER_ROLE}-{subject.name}"):
        if obj["kind"].startswith("ValidatingAdmissionPolicy"):
            if obj["metadata"]["name"] == leave_out:
                continue
            _own_policy(obj, subject)
        apply(api, obj)
    token = core.create_namespaced_service_account_token(subject.name, subject.namespace,
                                                         client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))).status.token
    assert cluster.pki is not None
    write_kubeconfig(kubeconfig, server=cluster.server_url(), ca_pem=cluster.pki.ca_cert.read_bytes(),
                     user=token_user(token))
    runner = config.new_client_from_config(config_file=str(kubeconfig))
    # Policies take effect once the API server has loaded and type-checked them.
    deadline = time.monotonic() + 30
    while any("create any namespace" in x for x in excess_permissions(runner)):
        assert time.monotonic() < deadline, "the namespace policy never came into force"
        time.sleep(0.5)
    return subject, kubeconfig


def _refused(call: Callable[[], Any], why: str = "ValidatingAdmissionPolicy") -> str:
    with pytest.raises(ApiException) as info:
        call()
    assert info.value.status == 403, info.value.body
    assert why in (info.value.body or ""), info.value.body
    return str(info.value.body)


@pytest.mark.slow
@needs_root_tools("ip", "curl", "go")
def test_the_runner_can_do_its_job_in_run_namespaces_and_nothing_outside(cluster: EmbeddedCluster,
                                                                          tmp_path: Path) -> None:
    admin = cluster.admin_api()
    subject, kubeconfig = restricted_runner(cluster, tmp_path / "runner.kubeconfig")
    runner = config.new_client_from_config(config_file=str(kubeconfig))
    user, groups = str(subject.username), service_account_groups(str(subject.namespace))
    rcore = client.CoreV1Api(runner)

    def can(verb: str, resource: str, ns: str | None, group: str = "", name: str | None = None) -> bool:
        return user_can(admin, user, groups, verb=verb, resource=resource, target_namespace=ns, group=group, name=name)

    assert whoami(runner) == subject
    run = new_run_id()
    ns = m.cell_namespace(run, 0)
    assert missing_permissions(runner, m.run_namespace(run)) == []
    assert not holds_everywhere(runner)
    assert excess_permissions(runner) == []

    # -- the job: create the namespace, bind itself there, deploy a cell, delete the namespace
    d = m.Deployment(run_id=run, cluster="emb", capture_image="r/c:1", runner_subject=subject)
    objs = m.cell_objects(ns, d, m.CellSpec(index=0, cell="c/emb/watch", client_name="c", scenario="watch",
                                            image="r/w:1"))
    assert not can("create", "pods", ns)  # nothing before its own binding there
    apply(runner, objs[0])
    apply(runner, objs[1])
    deadline = time.monotonic() + 10
    while not can("create", "pods", ns):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    for group, resource, verbs in m.RUNNER_RULES:
        for verb in verbs:
            assert can(verb, resource, ns, group), f"{verb} {resource} in {ns}"
    for obj in objs[2:]:
        apply(runner, obj)  # ServiceAccount, Role, RoleBinding (the watcher's), ConfigMap, Pod
    assert rcore.read_namespaced_pod(m.WATCHER_POD, ns).spec.service_account_name == m.SERVICE_ACCOUNT

    # -- RBAC: nothing of it anywhere else
    for other in ("kube-system", "default", m.cell_namespace(new_run_id(), 0)):
        for verb, resource in (("create", "pods"), ("create", "pods/exec"), ("get", "pods/exec"), ("delete", "pods"),
                               ("get", "secrets"), ("list", "secrets"), ("create", "serviceaccounts/token"),
                               ("create", "configmaps"), ("create", "services")):
            assert not can(verb, resource, other), f"{verb} {resource} in {other}"
        assert not can("create", "roles", other, m.RBAC_GROUP)
    assert not can("create", "pods", None) and not can("get", "secrets", None)
    for verb, resource, name in (("bind", "clusterroles", "cluster-admin"), ("bind", "clusterroles", m.RUNNER_ROLE),
                                 ("escalate", "clusterroles", m.IN_RUN_ROLE), ("patch", "clusterroles", m.IN_RUN_ROLE),
                                 ("create", "clusterrolebindings", None), ("create", "clusterroles", None)):
        assert not can(verb, resource, None, m.RBAC_GROUP, name), f"{verb} {resource} {name}"
    for verb in ("delete", "patch", "create"):
        assert not can(verb, "validatingadmissionpolicies", None, "admissionregistration.k8s.io")
        assert not can(verb, "validatingadmissionpolicybindings", None, "admissionregistration.k8s.io")
    assert not can("impersonate", "users", None) and not can("impersonate", "serviceaccounts", "kube-system")

    # -- admission: real requests as the runner, outside run namespaces, refused by the policy. RBAC
    # alone allows these (create rolebindings and delete/patch namespaces are cluster-wide: the run's
    # namespaces do not exist when the roles are bound), so SubjectAccessReviews cannot show it.
    assert can("create", "rolebindings", "kube-system", m.RBAC_GROUP) and can("delete", "namespaces", None)
    binding = {**objs[1], "metadata": {**objs[1]["metadata"], "namespace": "kube-system"}}
    _refused(lambda: apply(runner, binding, dry_run=True))
    _refused(lambda: apply(runner, {**binding, "metadata": {**binding["metadata"], "namespace": "default"}},
                           dry_run=True))
    # a decoy that carries the run's labels (anyone allowed to patch it could have set them)
    victim = f"victim-{run}"
    client.CoreV1Api(admin).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=victim, labels=m.run_labels(run), annotations={m.ANNOTATION_CLUSTER: "emb"})))
    body = _refused(lambda: rcore.delete_namespace(victim, dry_run="All"))
    assert "only create, change or delete namespaces named like a run's" in body and victim in body
    # (the API server's own NamespaceLifecycle refuses these two first, for everyone)
    _refused(lambda: rcore.delete_namespace("default", dry_run="All"), why="forbidden")
    _refused(lambda: rcore.delete_namespace("kube-system", dry_run="All"), why="forbidden")
    _refused(lambda: rcore.delete_namespace("watchdrop-admin", dry_run="All"))
    _refused(lambda: rcore.patch_namespace(victim, {"metadata": {"labels": {"x": "y"}}}, dry_run="All"))
    _refused(lambda: rcore.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="kube-evil")),
                                            dry_run="All"))
    # pods that would reach the node, in the runner's own namespace (`privileged` is refused by this
    # API server's validation already: it runs without --allow-privileged)
    pod = next(o for o in objs if o["kind"] == "Pod")
    # The pod policy comes into force on its own, possibly seconds after the namespace policy.
    assert wait_pod_policy(runner, pod, timeout=30), "the pod policy never came into force"
    for change in ({"hostNetwork": True}, {"hostPID": True, "shareProcessNamespace": False}, {"hostIPC": True},
                   {"volumes": [*pod["spec"]["volumes"], {"name": "root", "hostPath": {"path": "/"}}]},
                   {"containers": [{**c, "securityContext": {**c["securityContext"],
                                                             "capabilities": {"add": ["SYS_ADMIN"]}}}
                                   for c in pod["spec"]["containers"]]}):
        bad = {**pod, "metadata": {**pod["metadata"], "name": "bad"}, "spec": {**pod["spec"], **change}}
        _refused(lambda bad=bad: apply(runner, bad, dry_run=True))
    assert client.CoreV1Api(admin).read_namespace(victim).metadata.deletion_timestamp is None

    # -- and deleting its own namespace works
    rcore.delete_namespace(ns)
    assert client.CoreV1Api(admin).read_namespace(ns).metadata.deletion_timestamp is not None


@pytest.mark.slow
@needs_root_tools("ip", "curl", "go")
def test_the_pod_policy_probe_tells_whether_it_is_in_force(cluster: EmbeddedCluster, tmp_path: Path) -> None:
    """The kubernetes backend's check after the first run namespace: a dry-run host-network pod."""
    subject, kubeconfig = restricted_runner(cluster, tmp_path / "runner.kubeconfig", leave_out=m.POD_POLICY)
    runner = config.new_client_from_config(config_file=str(kubeconfig))
    run = new_run_id()
    d = m.Deployment(run_id=run, cluster="emb", capture_image="r/c:1", runner_subject=subject)
    objs = m.timer_objects(m.run_namespace(run), d, image="r/t:1", service_type="ClusterIP")
    for obj in objs:
        apply(runner, obj)
    pod = next(o for o in objs if o["kind"] == "Pod")
    assert not pod_policy_in_force(runner, pod)  # without the policy the runner could make it
    assert not wait_pod_policy(runner, pod, timeout=1, poll=0.2)
    admin = cluster.admin_api()
    for obj in m.pod_policy(subject):
        _own_policy(obj, subject)
        apply(admin, obj)
    assert wait_pod_policy(runner, pod, timeout=30)
    client.CoreV1Api(runner).delete_namespace(m.run_namespace(run))


@pytest.mark.slow
@needs_root_tools("ip", "curl", "go")
def test_preflight_reports_what_is_missing(cluster: EmbeddedCluster, tmp_path: Path) -> None:
    """Bound cluster-wide, but the in-run ClusterRole lacks exec: the preflight says exactly that."""
    _, kubeconfig = restricted_runner(cluster, tmp_path / "runner.kubeconfig")
    runner = config.new_client_from_config(config_file=str(kubeconfig))
    rbac = client.RbacAuthorizationV1Api(cluster.admin_api())
    full = m.in_run_cluster_role()
    try:
        less = {**full, "rules": [r for r in full["rules"] if r["resources"] != ["pods/exec"]]}
        apply(cluster.admin_api(), less)
        assert missing_permissions(runner, m.run_namespace(new_run_id())) == [
            f"get pods/exec in run namespaces ({m.IN_RUN_ROLE})",
            f"create pods/exec in run namespaces ({m.IN_RUN_ROLE})"]
        assert missing_permissions(runner, m.run_namespace(new_run_id()), pull_secrets=["acr"],
                                   secrets_from="default")[-2:] == [
            f"patch secrets in run namespaces ({m.IN_RUN_ROLE})", "get secrets/acr in default"]
    finally:
        apply(cluster.admin_api(), full)
    rbac.delete_cluster_role(m.IN_RUN_ROLE)
    try:
        assert missing_permissions(runner, m.run_namespace(new_run_id())) == [
            f"ClusterRole {m.IN_RUN_ROLE} (not found)"]
    finally:
        apply(cluster.admin_api(), full)
