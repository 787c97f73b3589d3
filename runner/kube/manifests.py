"""Every object the kubernetes backend creates, rendered as plain dicts (what `kubectl apply` reads).

Plain dicts, not client models: the backend sends them with server-side apply and strict field
validation, so a misspelt field is an API error instead of a field the client library silently
drops, and tests can compare them with `==`.

Layout of one run on one cluster:

- `watchdrop-<run-id>`: the timer server (the seed's LB probe) behind a Service of the matrix's
  `service_type`, with a capture sidecar.
- `watchdrop-<run-id>-c<NNN>` per cell: ServiceAccount `watcher`, Role + RoleBinding that allow
  get/list/watch on ConfigMaps in that namespace only (runner/credentials/rbac.py defines them), ConfigMap
  `trigger` (watch scenario) and pod `watcher`. One namespace per cell keeps the RBAC proof
  simple: the watcher's ServiceAccount can see its own namespace's ConfigMaps and nothing else.

Every namespace carries `watchdrop.io/run-id`, so teardown and `kubectl delete ns -l` find them all.

The watcher pod:

- `automountServiceAccountToken: false` on the pod and its ServiceAccount; the token, CA and
  namespace are projected into the watcher container only, at the path in-cluster config reads.
  The capture sidecar gets no token.
- the capture sidecar runs tcpdump as uid 65532 with NET_RAW and NET_ADMIN (file capabilities on
  the tcpdump binary in the capture image, so it needs `allowPrivilegeEscalation: true`: with
  no_new_privs the kernel ignores file capabilities). It writes to an emptyDir. Its postStart hook
  waits for tcpdump's "listening on": the kubelet starts the next container (the watcher) only
  after it returns, so the watcher's first SYN is always captured.
- `shareProcessNamespace: true`, so the runner can send SIGTERM to the watcher alone (through the
  sidecar's shell) and read its exit code while the capture keeps running; deleting the pod would
  signal both at once, and the kubelet reports no exit code until every container has stopped.
  The price: the sidecar (our own image and script, same uid) could read the watcher's /proc,
  including its token. The token only allows reading the cell's ConfigMaps.
- the namespaces are labelled `pod-security.kubernetes.io/enforce: privileged` because NET_RAW
  and NET_ADMIN are outside the baseline Pod Security level; everything else meets `restricted`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes import client

from runner.credentials.rbac import SERVICE_ACCOUNT, binding_manifest, role_manifest
from runner.evidence.limits import pcap_limit

Obj = dict[str, Any]

LABEL_RUN = "watchdrop.io/run-id"
LABEL_CELL_INDEX = "watchdrop.io/cell-index"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
ANNOTATION_CELL = "watchdrop.io/cell"
ANNOTATION_CLUSTER = "watchdrop.io/cluster"
#: `<host> <pid> <process start ticks>` of the runner that made a namespace: a later run on the
#: same host can tell a crashed run's leftovers from a live run's (runner/kube/leftovers.py).
ANNOTATION_RUNNER = "watchdrop.io/runner"
MANAGER = "watchdrop"

WATCHER_POD = "watcher"
WATCHER_CONTAINER = "watcher"
CAPTURE_CONTAINER = "capture"
TIMER_POD = "timer-server"
TIMER_CONTAINER = "timer-server"
TIMER_SERVICE = "timer-server"
TIMER_SERVICE_ACCOUNT = "timer-server"
#: The timer server image's own default ports (images/timer-server/Dockerfile CMD).
TIMER_PORTS = (8005, 8600)
TRIGGER = "trigger"

#: Distroless "nonroot"; every watchdrop image runs as it (the client Dockerfiles say USER 65532).
NONROOT = 65532
CAPTURE_DIR = "/capture"
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: The watcher's shortest token lifetime; a cell's own follows its length (rbac.token_seconds), so a
#: library that reads the token once never meets its expiry inside the cell. The kubelet refreshes
#: it at 80 % of its lifetime.
TOKEN_SECONDS = 3600
#: SIGTERM to the watcher is the runner's job (via the sidecar); this only bounds pod deletion.
GRACE_SECONDS = 30

PULL_POLICIES = ("Always", "IfNotPresent", "Never")

#: Requests and limits. The watcher's memory limit has room for a JVM client; an OOM kill is an
#: ERROR with its reason, never a verdict.
WATCHER_RESOURCES: Obj = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}
CAPTURE_RESOURCES: Obj = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "250m", "memory": "128Mi"}}
TIMER_RESOURCES: Obj = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "250m", "memory": "128Mi"}}

# The capture sidecar's script. tcpdump runs in the background so the shell can stop it with
# SIGINT when asked (`touch stop`), which makes tcpdump flush and close the file cleanly, and then
# keep the container up so the runner can copy the file out. `-U`: each packet is written as it
# arrives, so whatever happens later the file holds what was seen. `prlimit`: the file stops at
# WATCHDROP_CAPTURE_MAX bytes (runner/evidence/limits.py). `stopped` holds tcpdump's exit code and
# `asked` (the runner stopped it) or `early` (it ended by itself: died, killed, cut at the limit).
# The interface is the one with the default route (read from /proc/net/route: the image needs no
# iproute2), eth0 when there is none. Not `-i any`: with --immediate-mode, libpcap 1.10's `any`
# device loses packets ("dropped by kernel"; 5 of 8 loopback runs in tests/test_k8s_backend.py's
# sandbox), while a named interface never did.
CAPTURE_SCRIPT = """\
set -u
cd /capture
iface=""
while read -r name dest _; do
  if [ "$dest" = "00000000" ]; then iface=$name; break; fi
done </proc/net/route
iface=${iface:-eth0}
echo "capturing on $iface" >/capture/iface
prlimit --fsize="${WATCHDROP_CAPTURE_MAX:-67108864}" -- \
  tcpdump -i "$iface" -n -U --immediate-mode -w /capture/pod.pcap "$WATCHDROP_CAPTURE_FILTER" 2>/capture/tcpdump.log &
pid=$!
echo "$$" >/capture/capture.pid
trap 'touch /capture/stop' TERM INT
while [ ! -e /capture/stop ] && kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
how=asked
[ -e /capture/stop ] || how=early
kill -INT "$pid" 2>/dev/null
wait "$pid"
echo "$? $how" >/capture/stopped
trap 'exit 0' TERM INT
while :; do sleep 0.5; done
"""

# postStart: hold the pod's next container until tcpdump listens (at most 30 s); on failure print
# tcpdump's own words, which the kubelet puts into the FailedPostStartHook event.
CAPTURE_POST_START = """\
i=0
until grep -q 'listening on' /capture/tcpdump.log 2>/dev/null; do
  i=$((i+1))
  if [ "$i" -gt 300 ]; then echo 'tcpdump did not start:' >&2; cat /capture/tcpdump.log >&2; exit 1; fi
  sleep 0.1
done
"""

# Run by the runner through exec in the capture container: signal the watcher's process. With a
# shared PID namespace the pause process is PID 1, and every container's first process has parent
# 0; the one that is neither PID 1, this script, nor the capture script is the watcher.
SIGNAL_WATCHER_SCRIPT = """\
sig="$1"
self=$(cat /capture/capture.pid)
found=""
for d in /proc/[0-9]*; do
  p=${d#/proc/}
  if [ "$p" = 1 ] || [ "$p" = "$self" ] || [ "$p" = "$$" ]; then continue; fi
  ppid=$(sed -n 's/^PPid:[[:space:]]*//p' "$d/status" 2>/dev/null) || continue
  if [ "$ppid" = 0 ]; then found="$found $p"; fi
done
if [ -z "$found" ]; then echo "no watcher process"; exit 0; fi
kill "-$sig" $found && echo "sent $sig to$found"
"""

# Run by the runner after the watcher stopped: wait until the capture file stops growing (the last
# FIN or RST can still be in flight), then stop tcpdump and wait for it to close the file.
STOP_CAPTURE_SCRIPT = """\
last=-1; same=0; i=0
while [ "$i" -lt 30 ] && [ "$same" -lt 5 ]; do
  size=$(wc -c </capture/pod.pcap 2>/dev/null || echo 0)
  if [ "$size" = "$last" ]; then same=$((same+1)); else same=0; last=$size; fi
  i=$((i+1)); sleep 0.1
done
touch /capture/stop
i=0
until [ -e /capture/stopped ]; do
  i=$((i+1)); if [ "$i" -gt 100 ]; then echo 'tcpdump did not stop' >&2; exit 1; fi; sleep 0.1
done
cat /capture/stopped
"""


def run_namespace(run_id: str, slot: int = 0) -> str:
    """The run's own namespace on one cluster (the timer server); `slot` tells apart two matrix
    clusters that are the same real cluster."""
    return f"watchdrop-{run_id}" if slot == 0 else f"watchdrop-{run_id}-k{slot}"


def cell_namespace(run_id: str, index: int) -> str:
    return f"watchdrop-{run_id}-c{index:03d}"


def run_labels(run_id: str) -> dict[str, str]:
    return {LABEL_RUN: run_id, LABEL_MANAGED: MANAGER}


def run_selector(run_id: str) -> str:
    return f"{LABEL_RUN}={run_id}"


def _meta(name: str, labels: Mapping[str, str], namespace: str | None = None,
          annotations: Mapping[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name, "labels": dict(labels)}
    if namespace is not None:
        meta["namespace"] = namespace
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def namespace(name: str, run_id: str, *, cluster: str, cell: str | None = None,
              cell_index: int | None = None, runner: str = "") -> Obj:
    labels = {**run_labels(run_id),
              # NET_RAW/NET_ADMIN of the capture sidecar are outside the baseline level.
              "pod-security.kubernetes.io/enforce": "privileged"}
    if cell_index is not None:
        labels[LABEL_CELL_INDEX] = str(cell_index)
    annotations = {ANNOTATION_CLUSTER: cluster}
    if cell is not None:
        annotations[ANNOTATION_CELL] = cell
    if runner:
        annotations[ANNOTATION_RUNNER] = runner
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(name, labels, annotations=annotations)}


def service_account(ns: str, name: str, run_id: str) -> Obj:
    # No automount through this account: only the explicit projection in the watcher container.
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, run_labels(run_id), ns),
            "automountServiceAccountToken": False}


def _plain(model: Any) -> Obj:
    out: Obj = client.ApiClient().sanitize_for_serialization(model)
    return out


def watcher_role(ns: str, run_id: str) -> Obj:
    """runner/credentials/rbac.py's Role (get/list/watch ConfigMaps), the same one the embedded cluster uses."""
    role = _plain(role_manifest(ns))
    role["metadata"]["labels"] = run_labels(run_id)
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", **role}


def watcher_binding(ns: str, run_id: str) -> Obj:
    binding = _plain(binding_manifest(ns))
    binding["metadata"]["labels"] = run_labels(run_id)
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", **binding}


def trigger_configmap(ns: str, run_id: str) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(TRIGGER, run_labels(run_id), ns),
            "data": {"value": "initial"}}


def pull_secret_copy(source: Mapping[str, Any], ns: str, run_id: str) -> Obj:
    """An image pull secret copied into a run namespace (type and data only, never written to results)."""
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": _meta(source["metadata"]["name"], run_labels(run_id), ns),
            "type": source.get("type") or "kubernetes.io/dockerconfigjson", "data": dict(source.get("data") or {})}


def api_server_env(api_server: str | None) -> list[Obj]:
    """`host:port` (or `[v6]:port`) as the variables in-cluster config reads; none when unset."""
    if not api_server:
        return []
    host, _, port = api_server.rpartition(":")
    return [{"name": "KUBERNETES_SERVICE_HOST", "value": host.strip("[]")},
            {"name": "KUBERNETES_SERVICE_PORT", "value": port}]


def _container_security(*, read_only_root: bool = True, add: Sequence[str] = (),
                        allow_escalation: bool = False) -> Obj:
    caps: Obj = {"drop": ["ALL"]}
    if add:
        caps["add"] = list(add)
    return {
        "runAsNonRoot": True,
        "runAsUser": NONROOT,
        "runAsGroup": NONROOT,
        "allowPrivilegeEscalation": allow_escalation,
        "readOnlyRootFilesystem": read_only_root,
        "capabilities": caps,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security() -> Obj:
    return {"runAsNonRoot": True, "runAsUser": NONROOT, "runAsGroup": NONROOT, "fsGroup": NONROOT,
            "seccompProfile": {"type": "RuntimeDefault"}}


def capture_container(image: str, pull_policy: str, capture_filter: str) -> Obj:
    return {
        "name": CAPTURE_CONTAINER,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": ["/bin/sh", "-c", CAPTURE_SCRIPT],
        "env": [{"name": "WATCHDROP_CAPTURE_FILTER", "value": capture_filter},
                {"name": "WATCHDROP_CAPTURE_MAX", "value": str(pcap_limit())}],
        "lifecycle": {"postStart": {"exec": {"command": ["/bin/sh", "-c", CAPTURE_POST_START]}}},
        "resources": CAPTURE_RESOURCES,
        # File capabilities on tcpdump need exec without no_new_privs (module docstring).
        "securityContext": _container_security(add=["NET_RAW", "NET_ADMIN"], allow_escalation=True),
        "volumeMounts": [{"name": "capture", "mountPath": CAPTURE_DIR}],
    }


def _capture_volume() -> Obj:
    return {"name": "capture", "emptyDir": {"sizeLimit": "256Mi"}}


def _token_volume(seconds: int = TOKEN_SECONDS) -> Obj:
    """What the ServiceAccount admission plugin would mount, spelled out for one container only."""
    return {"name": "kube-api-access", "projected": {"defaultMode": 0o444, "sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": seconds}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                      "fieldPath": "metadata.namespace"}}]}},
    ]}}


def _pull_secrets(names: Sequence[str]) -> list[Obj]:
    return [{"name": n} for n in names]


def watcher_pod(ns: str, run_id: str, *, index: int, cell: str, client_name: str, scenario: str,
                image: str, capture_image: str, env: Mapping[str, str], pull_policy: str = "IfNotPresent",
                pull_secrets: Sequence[str] = (), api_server: str | None = None,
                read_only_root: bool = True, token_seconds: int = TOKEN_SECONDS) -> Obj:
    """The cell's pod: capture sidecar first (its postStart holds the watcher back), then the watcher.

    `env` is the contract's WATCHDROP_* set plus the variant's; WATCHDROP_KUBECONFIG is never set,
    so the watcher uses in-cluster config (clients/README.md).
    """
    if pull_policy not in PULL_POLICIES:
        raise ValueError(f"imagePullPolicy {pull_policy!r} is not one of {', '.join(PULL_POLICIES)}")
    labels = {**run_labels(run_id), LABEL_CELL_INDEX: str(index), LABEL_COMPONENT: "watcher",
              "watchdrop.io/client": client_name, "watchdrop.io/scenario": scenario}
    watcher_env = [{"name": k, "value": str(v)} for k, v in sorted(env.items())
                   if k not in ("WATCHDROP_KUBECONFIG", "WATCHDROP_NAMESPACE")]
    watcher_env.append({"name": "WATCHDROP_NAMESPACE", "value": ns})
    watcher_env += api_server_env(api_server)
    watcher = {
        "name": WATCHER_CONTAINER,
        "image": image,
        "imagePullPolicy": pull_policy,
        "env": watcher_env,
        "resources": WATCHER_RESOURCES,
        "securityContext": _container_security(read_only_root=read_only_root),
        "volumeMounts": [{"name": "kube-api-access", "mountPath": TOKEN_DIR, "readOnly": True},
                         # Runtimes (JVM, some Python libraries) want a writable temp dir.
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    spec: Obj = {
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "shareProcessNamespace": True,
        "enableServiceLinks": False,
        # A crash is evidence (its exit code), not something to retry.
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        "securityContext": _pod_security(),
        "containers": [capture_container(capture_image, pull_policy, "tcp"), watcher],
        "volumes": [_capture_volume(), _token_volume(token_seconds),
                    {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }
    if pull_secrets:
        spec["imagePullSecrets"] = _pull_secrets(pull_secrets)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": _meta(WATCHER_POD, labels, ns, {ANNOTATION_CELL: cell}), "spec": spec}


def timer_pod(ns: str, run_id: str, *, image: str, capture_image: str, pull_policy: str = "IfNotPresent",
              pull_secrets: Sequence[str] = ()) -> Obj:
    labels = {**run_labels(run_id), LABEL_COMPONENT: "timer-server"}
    timer = {
        "name": TIMER_CONTAINER,
        "image": image,
        "imagePullPolicy": pull_policy,
        "ports": [{"containerPort": p, "protocol": "TCP"} for p in TIMER_PORTS],
        "resources": TIMER_RESOURCES,
        "securityContext": _container_security(),
    }
    capture_filter = " or ".join(f"tcp port {p}" for p in TIMER_PORTS)
    spec: Obj = {
        "serviceAccountName": TIMER_SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        "securityContext": _pod_security(),
        "containers": [capture_container(capture_image, pull_policy, capture_filter), timer],
        "volumes": [_capture_volume()],
    }
    if pull_secrets:
        spec["imagePullSecrets"] = _pull_secrets(pull_secrets)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": _meta(TIMER_POD, labels, ns), "spec": spec}


def timer_service(ns: str, run_id: str, service_type: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(TIMER_SERVICE, run_labels(run_id), ns),
            "spec": {"type": service_type, "selector": {LABEL_COMPONENT: "timer-server", LABEL_RUN: run_id},
                     "ports": [{"name": f"every-{p}", "port": p, "targetPort": p, "protocol": "TCP"}
                               for p in TIMER_PORTS]}}


def cell_objects(ns: str, run_id: str, *, cluster: str, index: int, cell: str, client_name: str, scenario: str,
                 image: str, capture_image: str, env: Mapping[str, str], pull_policy: str = "IfNotPresent",
                 pull_secrets: Sequence[str] = (), api_server: str | None = None, runner: str = "",
                 token_seconds: int = TOKEN_SECONDS) -> list[Obj]:
    """A cell's objects in creation order (the pod last: its ServiceAccount must exist first)."""
    objs = [namespace(ns, run_id, cluster=cluster, cell=cell, cell_index=index, runner=runner),
            service_account(ns, SERVICE_ACCOUNT, run_id), watcher_role(ns, run_id), watcher_binding(ns, run_id)]
    if scenario == "watch":
        objs.append(trigger_configmap(ns, run_id))
    objs.append(watcher_pod(ns, run_id, index=index, cell=cell, client_name=client_name, scenario=scenario,
                            image=image, capture_image=capture_image, env=env, pull_policy=pull_policy,
                            pull_secrets=pull_secrets, api_server=api_server, token_seconds=token_seconds))
    return objs


def timer_objects(ns: str, run_id: str, *, cluster: str, image: str, capture_image: str, service_type: str,
                  pull_policy: str = "IfNotPresent", pull_secrets: Sequence[str] = (), runner: str = "") -> list[Obj]:
    return [namespace(ns, run_id, cluster=cluster, runner=runner), service_account(ns, TIMER_SERVICE_ACCOUNT, run_id),
            timer_pod(ns, run_id, image=image, capture_image=capture_image, pull_policy=pull_policy,
                      pull_secrets=pull_secrets),
            timer_service(ns, run_id, service_type)]


# -- what the runner's own kube context needs -------------------------------------------------------

#: (API group, resource, verbs). Namespaced resources are needed in namespaces the run creates, so
#: they are granted cluster-wide (a ClusterRole). `patch` is server-side apply; `create` too,
#: because apply creates. ConfigMaps get/list/watch are also what lets the runner grant them to
#: the watcher's Role (RBAC refuses to grant what the granter does not hold).
RUNNER_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "namespaces", ("get", "list", "create", "patch", "delete")),
    ("", "pods", ("get", "list", "create", "patch", "delete")),
    ("", "pods/log", ("get",)),
    # `create` for SPDY exec; `get` for WebSocket exec on servers that still authorize it as GET.
    ("", "pods/exec", ("get", "create")),
    ("", "services", ("get", "create", "patch", "delete")),
    ("", "serviceaccounts", ("get", "create", "patch", "delete")),
    ("", "configmaps", ("get", "list", "watch", "create", "patch", "delete")),
    ("", "events", ("get", "list")),
    ("rbac.authorization.k8s.io", "roles", ("get", "create", "patch", "delete")),
    ("rbac.authorization.k8s.io", "rolebindings", ("get", "create", "patch", "delete")),
)
#: Only when the matrix names pull_secrets: read them in the context's namespace, copy them in.
PULL_SECRET_RULE: tuple[str, str, tuple[str, ...]] = ("", "secrets", ("get", "create", "patch"))


def runner_cluster_role(name: str = "watchdrop-runner", *, pull_secrets: bool = False) -> Obj:
    """The ClusterRole the README shows for the runner's own identity."""
    rules = list(RUNNER_RULES) + ([PULL_SECRET_RULE] if pull_secrets else [])
    merged: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for group, resource, verbs in rules:
        merged.setdefault((group, verbs), []).append(resource)
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
            "rules": [{"apiGroups": [g], "resources": res, "verbs": list(v)} for (g, v), res in merged.items()]}

