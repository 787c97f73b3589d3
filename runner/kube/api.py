"""How the runner talks to a real cluster: its kube context, the bounds of every wait, server-side
apply, exec, and copying a capture out of a pod. Used by runner/kube/backend.py and runner/kube/cell.py.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

from runner.config.matrix import KubernetesCluster
from runner.errors import UsageError
from runner.host.procs import wait_for
from runner.kube import manifests as m

Obj = dict[str, Any]
NewApi = Callable[[], client.ApiClient]
Say = Callable[[str], None]

#: (connect, read) seconds for every request the runner makes: a dead path fails, never hangs.
REQUEST_TIMEOUT = (10.0, 30.0)



@dataclass(frozen=True)
class KubeSettings:
    """Bounds of the kubernetes backend; every wait in it is one of these."""

    #: Seconds for every pod to be running: scheduling, an image pull on a cold node, the capture's
    #: postStart. A pod not running by then is ERROR "pod never started" with its phase,
    #: conditions and warning events.
    start_timeout: float = 300.0
    #: Seconds the watcher gets to exit after SIGTERM before SIGKILL; its exit code is evidence.
    stop_timeout: float = 20.0
    #: Seconds for one exec (stop the capture, copy it out).
    exec_timeout: float = 120.0
    #: The runner's log stream reconnects after this many silent seconds; far below every cloud
    #: LB idle timeout (240 s and up), so the runner's own stream never idles out.
    log_read_timeout: float = 20.0
    #: Seconds to wait for the run's namespaces to be gone after the deletes.
    teardown_timeout: float = 180.0
    #: A namespace still Terminating with no status conditions after this many seconds has no
    #: namespace controller acting on it (the controller sets conditions on its first pass): stop
    #: waiting for it instead of waiting out teardown_timeout.
    no_controller_after: float = 20.0
    #: Seconds between status polls while waiting.
    poll: float = 1.0
    #: imagePullPolicy when the matrix does not say; content-hash tags make IfNotPresent safe.
    pull_policy: str = "IfNotPresent"


# -- reaching the cluster ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KubeAccess:
    """How the runner reaches one cluster: fresh ApiClients on demand, and the context's namespace."""

    new_api: NewApi
    #: The kube context's namespace: where pull_secrets are read from.
    namespace: str = "default"
    #: `--kubeconfig ... --context ...` for the kubectl commands the runner prints.
    kubectl_flags: tuple[str, ...] = ()


def connect(cluster: KubernetesCluster) -> KubeAccess:
    """Load the cluster's kubeconfig/context once; every ApiClient shares that configuration but has
    its own connection pool (exec credential plugins refresh through the shared configuration)."""
    path = str(Path(cluster.kubeconfig).expanduser()) if cluster.kubeconfig else None
    cfg = client.Configuration()
    try:
        config.load_kube_config(config_file=path, context=cluster.context, client_configuration=cfg,
                                persist_config=False)
        contexts, active = config.list_kube_config_contexts(config_file=path)
    except Exception as exc:  # ConfigException, a missing file, bad YAML
        raise UsageError(f"cluster {cluster.name}: cannot load kube context {cluster.context or '(current)'}"
                         f"{' from ' + path if path else ''}: {exc}",
                         fix="check `context:` / `kubeconfig:` in the matrix (`kubectl config get-contexts`)") from exc
    chosen = next((c for c in contexts if c.get("name") == cluster.context), active) if cluster.context else active
    ns = ((chosen or {}).get("context") or {}).get("namespace") or "default"
    flags: list[str] = []
    if path:
        flags += ["--kubeconfig", path]
    if cluster.context:
        flags += ["--context", cluster.context]
    return KubeAccess(new_api=lambda: client.ApiClient(configuration=cfg), namespace=ns, kubectl_flags=tuple(flags))


def delete_command(access: KubeAccess, run_id: str) -> str:
    """The kubectl command that deletes a run's namespaces, shown wherever the runner leaves them."""
    return " ".join(["kubectl", *access.kubectl_flags, "delete", "namespace", "-l", m.run_selector(run_id)])


def api_error(exc: BaseException) -> str:
    """One line from an ApiException (the API's own message), or the exception's text."""
    if isinstance(exc, ApiException):
        try:
            body = json.loads(exc.body or "{}")
            message = body.get("message") or exc.reason
        except (ValueError, AttributeError):
            message = exc.reason
        return f"{exc.status} {message}".strip()
    return f"{exc.__class__.__name__}: {exc}"


def whoami(api: client.ApiClient) -> m.Subject | None:
    """The runner's identity as the API server sees it (SelfSubjectReview); None when the server
    cannot say (before 1.28)."""
    try:
        review = client.AuthenticationV1Api(api).create_self_subject_review(
            client.V1SelfSubjectReview(), _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        if exc.status in (403, 404):
            return None
        raise
    info = review.status.user_info if review.status else None
    return m.Subject.of_user(info.username) if info and info.username else None


def can(api: client.ApiClient, verb: str, resource: str, namespace: str | None, *, group: str = "",
        name: str | None = None) -> bool:
    """One SelfSubjectAccessReview; `resource` may name a subresource (`pods/exec`)."""
    res, _, sub = resource.partition("/")
    attrs = client.V1ResourceAttributes(group=group, resource=res, subresource=sub or None, verb=verb,
                                        namespace=namespace, name=name)
    review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attrs))
    status = client.AuthorizationV1Api(api).create_self_subject_access_review(
        review, _request_timeout=REQUEST_TIMEOUT).status
    return bool(status and status.allowed)


def _granted(rules: Iterable[client.V1PolicyRule], group: str, resource: str, verb: str) -> bool:
    """Whether a ClusterRole's rules (as read back) grant this, wildcards included."""
    for r in rules:
        if r.resource_names or r.non_resource_urls:
            continue
        if (group in (r.api_groups or []) or "*" in (r.api_groups or [])) and \
                (resource in (r.resources or []) or "*" in (r.resources or [])) and \
                (verb in (r.verbs or []) or "*" in (r.verbs or [])):
            return True
    return False


def _label(verb: str, group: str, resource: str) -> str:
    return f"{verb} {resource}" + (f".{group}" if group else "")


def _in_run_rules(pull_secrets: bool) -> list[m.Rule]:
    return [*m.RUNNER_RULES, *([m.PULL_SECRET_RULE] if pull_secrets else [])]


def holds_everywhere(api: client.ApiClient, *, pull_secrets: bool = False) -> bool:
    """Whether the identity already holds the in-run rights in every namespace (cluster-admin):
    then it needs no binding of its own in the run's namespaces."""
    return all(can(api, verb, resource, None, group=group)
               for group, resource, verbs in _in_run_rules(pull_secrets) for verb in verbs)


def missing_permissions(api: client.ApiClient, namespace: str, *, pull_secrets: Sequence[str] = (),
                        secrets_from: str | None = None) -> list[str]:
    """What the runner lacks to do its job (manifests.runner_rbac); `namespace` is a run namespace
    the run will create. Returns one entry per refusal, empty when everything is in place.

    Cluster-wide rights are SelfSubjectAccessReviews. The rights inside run namespaces cannot be
    asked for yet (the namespace and the runner's binding there do not exist): they are read from
    ClusterRole IN_RUN_ROLE, which the runner may `get`, unless the identity holds them everywhere
    already (then it needs no binding).
    """
    missing = []
    for group, resource, verbs in m.RUNNER_CLUSTER_RULES:
        for verb in verbs:
            if not can(api, verb, resource, None if resource == "namespaces" else namespace, group=group):
                missing.append(_label(verb, group, resource))
    in_run = _in_run_rules(bool(pull_secrets))
    if not holds_everywhere(api, pull_secrets=bool(pull_secrets)):
        for verb in m.RUNNER_BIND_VERBS:
            if not can(api, verb, "clusterroles", None, group=m.RBAC_GROUP, name=m.IN_RUN_ROLE):
                missing.append(f"{verb} clusterroles.{m.RBAC_GROUP}/{m.IN_RUN_ROLE}")
        try:
            rules = client.RbacAuthorizationV1Api(api).read_cluster_role(
                m.IN_RUN_ROLE, _request_timeout=REQUEST_TIMEOUT).rules or []
        except ApiException as exc:
            if exc.status not in (403, 404):
                raise
            missing.append(f"ClusterRole {m.IN_RUN_ROLE} ({'not found' if exc.status == 404 else 'not readable'})")
        else:
            missing += [f"{_label(verb, group, resource)} in run namespaces ({m.IN_RUN_ROLE})"
                        for group, resource, verbs in in_run for verb in verbs
                        if not _granted(rules, group, resource, verb)]
    if secrets_from is not None:
        missing += [f"get secrets/{name} in {secrets_from}" for name in pull_secrets
                    if not can(api, "get", "secrets", secrets_from, name=name)]
    return missing


#: A namespace name no run makes: the namespace policy must refuse to create it.
POLICY_PROBE_NAMESPACE = "watchdrop-policy-probe"


def excess_permissions(api: client.ApiClient) -> list[str]:
    """What the runner could do beyond its job: rights outside run namespaces, or no namespace
    policy in force (a dry-run create of a namespace no run would make is not refused)."""
    found = [f"{_label(verb, '', resource)} in kube-system"
             for resource, verb in (("pods", "create"), ("pods/exec", "create"), ("secrets", "get"))
             if can(api, verb, resource, "kube-system")]
    try:
        client.CoreV1Api(api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=POLICY_PROBE_NAMESPACE)), dry_run="All",
            _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        if exc.status == 409:  # it exists: the create got past admission
            found.append(f"create namespace {POLICY_PROBE_NAMESPACE} (it exists)")
    else:
        found.append(f"create any namespace ({m.NAMESPACE_POLICY} is not in force)")
    return found


#: The name of a dry-run pod no run makes: the pod policy must refuse it.
POLICY_PROBE_POD = "watchdrop-policy-probe"


def pod_policy_in_force(api: client.ApiClient, pod: Obj) -> bool:
    """Whether the pod policy refuses this identity a copy of `pod` (one it was just allowed to make)
    that would share its node's network. A dry run: nothing is made either way."""
    probe = {**pod, "metadata": {**pod["metadata"], "name": POLICY_PROBE_POD},
             "spec": {**pod["spec"], "hostNetwork": True}}
    try:
        apply(api, probe, dry_run=True)
    except ApiException as exc:
        if exc.status == 403 and m.POD_POLICY in (exc.body or ""):
            return True
        raise
    return False


def wait_pod_policy(api: client.ApiClient, pod: Obj, timeout: float = 10.0, poll: float = 0.5) -> bool:
    """Until the pod policy is in force: the API server enforces a ValidatingAdmissionPolicy a few
    seconds after it is made, and not at the same moment as its sibling, the namespace policy."""
    return wait_for(lambda: pod_policy_in_force(api, pod), timeout, poll)


def wait_authorized(api: client.ApiClient, ns: str, timeout: float = 10.0, poll: float = 0.2) -> bool:
    """After the runner's binding in `ns` is made: until the authorizer sees it (it reads bindings
    through a cache, so the next request could still be refused for a moment)."""
    return wait_for(lambda: can(api, "create", "pods", ns), timeout, poll)


def apply_all(api: client.ApiClient, objs: Iterable[Obj], note: Say) -> None:
    """Apply in order; after the runner's own binding, wait until it is in force."""
    for obj in objs:
        apply(api, obj)
        note(f"applied {describe_obj(obj)}")
        if m.is_runner_binding(obj):
            ns = obj["metadata"]["namespace"]
            if not wait_authorized(api, ns):
                raise TimeoutError(f"the runner's RoleBinding in {ns} was not in force after 10 s")


# -- objects ------------------------------------------------------------------------------------------

_KINDS: dict[str, tuple[str, bool, str]] = {
    "ClusterRole": ("rbac", False, "cluster_role"),
    "ClusterRoleBinding": ("rbac", False, "cluster_role_binding"),
    "ValidatingAdmissionPolicy": ("admission", False, "validating_admission_policy"),
    "ValidatingAdmissionPolicyBinding": ("admission", False, "validating_admission_policy_binding"),
    "Namespace": ("core", False, "namespace"),
    "ServiceAccount": ("core", True, "namespaced_service_account"),
    "ConfigMap": ("core", True, "namespaced_config_map"),
    "Secret": ("core", True, "namespaced_secret"),
    "Pod": ("core", True, "namespaced_pod"),
    "Service": ("core", True, "namespaced_service"),
    "Role": ("rbac", True, "namespaced_role"),
    "RoleBinding": ("rbac", True, "namespaced_role_binding"),
    "EndpointSlice": ("discovery", True, "namespaced_endpoint_slice"),
}


def _target(api: client.ApiClient, obj: Obj) -> tuple[Any, str, list[str]]:
    group, namespaced, suffix = _KINDS[obj["kind"]]
    apis = {"core": client.CoreV1Api, "rbac": client.RbacAuthorizationV1Api,
            "admission": client.AdmissionregistrationV1Api, "discovery": client.DiscoveryV1Api}
    target = apis[group](api)
    meta = obj["metadata"]
    args = [meta["name"], meta["namespace"]] if namespaced else [meta["name"]]
    return target, suffix, args


def apply(api: client.ApiClient, obj: Obj, *, dry_run: bool = False) -> Any:
    """Server-side apply with strict field validation: an unknown or misspelt field is an error."""
    target, suffix, args = _target(api, obj)
    return getattr(target, f"patch_{suffix}")(
        *args, body=obj, field_manager=m.MANAGER, force=True, field_validation="Strict",
        dry_run="All" if dry_run else None, _content_type="application/apply-patch+yaml",
        _request_timeout=REQUEST_TIMEOUT)


def delete(api: client.ApiClient, obj: Obj, *, grace: int | None = None) -> bool:
    """Delete; False when it was already gone."""
    target, suffix, args = _target(api, obj)
    try:
        getattr(target, f"delete_{suffix}")(*args, grace_period_seconds=grace, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def describe_obj(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{obj['kind']} {meta.get('namespace', '') + '/' if meta.get('namespace') else ''}{meta['name']}"


class BoundedApiClient(client.ApiClient):
    """An ApiClient whose every call has a timeout unless the caller gives its own.

    The admin clients of the embedded and local clusters are used from teardown, waits and the
    harness; a call that never returns there (an API server that accepts and stalls) would hold up
    the whole run, so none may wait forever. Streams pass their own `_request_timeout`."""

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("_request_timeout") is None and len(args) < 6:
            kwargs["_request_timeout"] = REQUEST_TIMEOUT
        return super().call_api(*args, **kwargs)


def bounded_client_from_config(kubeconfig: Path) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg, persist_config=False)
    return BoundedApiClient(configuration=cfg)


class FreshCoreV1Api:
    """The harness's writes (trigger updates, failure ConfigMaps), each on a new ApiClient.

    The harness idles for a whole interval between two writes; a pooled connection could be one
    the LB in front of the API server forgot meanwhile, and the write would then hang or fail for
    reasons that belong to the runner, not the watcher. Not a CoreV1Api subclass: the harness
    needs these two calls only (runner.harness.ConfigMapWriter), and defining a subclass would
    build CoreV1Api's models (a second or more) whenever this module is imported.
    """

    def __init__(self, new_api: NewApi):  # no shared ApiClient, on purpose
        self._new_api = new_api

    def _once(self, method: str, *args: Any, **kwargs: Any) -> Any:
        api = self._new_api()
        try:
            kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
            return getattr(client.CoreV1Api(api), method)(*args, **kwargs)
        finally:
            api.close()

    def patch_namespaced_config_map(self, *args: Any, **kwargs: Any) -> Any:
        return self._once("patch_namespaced_config_map", *args, **kwargs)

    def create_namespaced_config_map(self, *args: Any, **kwargs: Any) -> Any:
        return self._once("create_namespaced_config_map", *args, **kwargs)


# -- exec ---------------------------------------------------------------------------------------------


@dataclass
class ExecResult:
    #: None when the exec did not finish in time or its status could not be read.
    rc: int | None
    stdout: bytes
    stderr: bytes

    def text(self) -> str:
        return (self.stdout + self.stderr).decode(errors="replace").strip()


def exec_in(new_api: NewApi, ns: str, pod: str, container: str, argv: Sequence[str], timeout: float) -> ExecResult:
    """Run argv in a container (the pods/exec WebSocket), binary-safe, bounded by `timeout`."""
    api = new_api()
    out, err = bytearray(), bytearray()
    rc: int | None = None
    try:
        ws = stream(client.CoreV1Api(api).connect_get_namespaced_pod_exec, pod, ns, container=container,
                    command=list(argv), stderr=True, stdin=False, stdout=True, tty=False,
                    _preload_content=False, binary=True)
        try:
            deadline = time.monotonic() + timeout
            while ws.is_open() and time.monotonic() < deadline:
                ws.update(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
                out += ws.read_stdout(timeout=0)
                err += ws.read_stderr(timeout=0)
            out += ws.read_stdout(timeout=0)
            err += ws.read_stderr(timeout=0)
            if not ws.is_open():
                try:
                    rc = ws.returncode
                except Exception:  # no status frame (connection cut): unknown, not 0
                    rc = None
        finally:
            ws.close()
    finally:
        api.close()
    return ExecResult(rc, bytes(out), bytes(err))


def extract_files(tar_bytes: bytes, dest: Path, names: Iterable[str]) -> list[str]:
    """Regular files named `names` (basename only) out of a tar stream into dest; nothing else."""
    wanted = set(names)
    got = []
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if not member.isfile() or name not in wanted:
                continue
            f = tar.extractfile(member)
            if f is not None:
                (dest / name).write_bytes(f.read())
                got.append(name)
    return got


@dataclass
class CopiedCapture:
    """What copy_capture met: problems (one line each) and the sidecar's `stopped` record
    ("<tcpdump exit code> asked|early"), empty when tcpdump did not stop."""

    problems: list[str] = field(default_factory=list)
    stopped: str = ""


def copy_capture(new_api: NewApi, ns: str, pod: str, dest: Path, *, prefix: str = "",
                 timeout: float) -> CopiedCapture:
    """Stop tcpdump in the pod's capture container (it closes the file) and copy its files out.

    The evidence files are `<prefix>pod.pcap` and `<prefix>tcpdump.log`.
    """
    out = CopiedCapture()
    problems = out.problems
    stopped = exec_in(new_api, ns, pod, m.CAPTURE_CONTAINER, ["/bin/sh", "-c", m.STOP_CAPTURE_SCRIPT], timeout)
    if stopped.rc != 0:
        problems.append(f"stopping tcpdump: exit {stopped.rc}: {stopped.text()[-300:]}")
    else:
        out.stopped = stopped.stdout.decode(errors="replace").strip()[-100:]
    tar = exec_in(new_api, ns, pod, m.CAPTURE_CONTAINER,
                  ["tar", "cf", "-", "-C", m.CAPTURE_DIR, "pod.pcap", "tcpdump.log"], timeout)
    if tar.rc != 0:
        problems.append(f"copying the capture out: exit {tar.rc}: {tar.stderr.decode(errors='replace')[-300:]}")
    if tar.stdout:
        tmp = dest / f".{prefix}capture"
        try:
            for name in extract_files(tar.stdout, tmp, ["pod.pcap", "tcpdump.log"]):
                (tmp / name).replace(dest / f"{prefix}{name}")
        except (tarfile.TarError, OSError) as exc:
            problems.append(f"copying the capture out: {exc}")
        finally:
            for leftover in tmp.glob("*"):
                leftover.unlink()
            if tmp.exists():
                tmp.rmdir()
    return out


