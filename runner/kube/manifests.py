"""Every object the kubernetes backend creates, rendered as plain dicts (what `kubectl apply` reads).

Plain dicts, not client models: the backend sends them with server-side apply and strict field
validation, so a misspelt field is an API error instead of a field the client library silently
drops, and tests can compare them with `==`.

Layout of one run on one cluster:

- `watchdrop-<run-id>`: the timer server (the seed's LB probe) behind a Service of the matrix's
  `service_type` (ClusterIP unless the matrix asks for an LB with source ranges), with a capture
  sidecar.
- in every namespace, first: RoleBinding `watchdrop-runner`, the runner's own identity bound to
  ClusterRole `watchdrop-runner-in-run` there and nowhere else (see "what the runner's own kube
  context needs" below).
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

Why one long module: every object (and every privilege) the backend creates on a cluster is here,
so a reviewer reads all of it in one place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from kubernetes import client

from runner.contract import TRIGGER, WATCH
from runner.credentials.rbac import SERVICE_ACCOUNT, binding_manifest, role_manifest
from runner.evidence.limits import SNAPLEN, pcap_limit

Obj = dict[str, Any]

LABEL_RUN = "watchdrop.io/run-id"
LABEL_CELL_INDEX = "watchdrop.io/cell-index"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
ANNOTATION_CELL = "watchdrop.io/cell"
ANNOTATION_CLUSTER = "watchdrop.io/cluster"
#: `<host> <pid> <process start ticks> <machine id> <boot id>` of the runner that made a namespace:
#: a later run on the same machine can tell a crashed run's leftovers from a live run's
#: (runner/kube/leftovers.py).
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
# sandbox), while a named interface never did. `-B 8192` (KiB): the sidecar is held to 250m of CPU,
# and with 33 pods starting at once on 2 cores a watcher's first LIST burst overran libpcap's default
# 2 MiB ring (kopf: "5 packets dropped by kernel", a cell ERROR in local run 811654). `-s`: the ring
# holds whole frames of the snapshot length, 32 at the default 256 KiB even in 8 MiB; headers are
# all a verdict reads (runner/evidence/limits.py's SNAPLEN, put in below).
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
  tcpdump -i "$iface" -n -s @SNAPLEN@ -U --immediate-mode -B 8192 -w /capture/pod.pcap \
    "$WATCHDROP_CAPTURE_FILTER" \
    2>/capture/tcpdump.log &
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
""".replace("@SNAPLEN@", str(SNAPLEN))

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


@dataclass(frozen=True)
class Deployment:
    """What every object one run deploys on one cluster shares."""

    run_id: str
    #: The matrix cluster's name (an annotation on every namespace).
    cluster: str
    #: The capture sidecar's image.
    capture_image: str
    pull_policy: str = "IfNotPresent"
    pull_secrets: Sequence[str] = ()
    #: host:port the watchers reach the API server at, instead of in-cluster discovery.
    api_server: str | None = None
    #: The runner's mark (runner/kube/leftovers.py), so a later run can tell whether this one crashed.
    runner: str = ""
    #: The runner's own identity: bound to IN_RUN_ROLE in each namespace right after it is made.
    #: None renders no binding (an identity that already holds everything, e.g. cluster-admin in tests).
    runner_subject: Subject | None = None


@dataclass(frozen=True)
class CellSpec:
    """One cell as its pod needs it."""

    index: int
    #: The cell id (client/cluster/scenario).
    cell: str
    client_name: str
    scenario: str
    image: str
    #: The contract's WATCHDROP_* set plus the variant's.
    env: Mapping[str, str] = field(default_factory=dict)
    #: The projected token's lifetime: longer than the cell (runner/credentials/rbac.token_seconds).
    token_seconds: int = TOKEN_SECONDS


def watcher_pod(ns: str, d: Deployment, c: CellSpec, *, read_only_root: bool = True) -> Obj:
    """The cell's pod: capture sidecar first (its postStart holds the watcher back), then the watcher.

    WATCHDROP_KUBECONFIG is never set, so the watcher uses in-cluster config (clients/README.md).
    """
    if d.pull_policy not in PULL_POLICIES:
        raise ValueError(f"imagePullPolicy {d.pull_policy!r} is not one of {', '.join(PULL_POLICIES)}")
    labels = {**run_labels(d.run_id), LABEL_CELL_INDEX: str(c.index), LABEL_COMPONENT: "watcher",
              "watchdrop.io/client": c.client_name, "watchdrop.io/scenario": c.scenario}
    watcher_env = [{"name": k, "value": str(v)} for k, v in sorted(c.env.items())
                   if k not in ("WATCHDROP_KUBECONFIG", "WATCHDROP_NAMESPACE")]
    watcher_env.append({"name": "WATCHDROP_NAMESPACE", "value": ns})
    watcher_env += api_server_env(d.api_server)
    watcher = {
        "name": WATCHER_CONTAINER,
        "image": c.image,
        "imagePullPolicy": d.pull_policy,
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
        "containers": [capture_container(d.capture_image, d.pull_policy, "tcp"), watcher],
        "volumes": [_capture_volume(), _token_volume(c.token_seconds),
                    {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }
    if d.pull_secrets:
        spec["imagePullSecrets"] = _pull_secrets(d.pull_secrets)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": _meta(WATCHER_POD, labels, ns, {ANNOTATION_CELL: c.cell}), "spec": spec}


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


#: The annotation(s) that ask each provider's cloud controller for an internal (VNet/VPC-only) LB.
INTERNAL_LB_ANNOTATIONS: dict[str, dict[str, str]] = {
    "azure": {"service.beta.kubernetes.io/azure-load-balancer-internal": "true"},
    # The in-tree controller reads the first, the AWS Load Balancer Controller the second.
    "aws": {"service.beta.kubernetes.io/aws-load-balancer-internal": "true",
            "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"},
    "gcp": {"networking.gke.io/load-balancer-type": "Internal"},
}


def timer_service(ns: str, run_id: str, service_type: str, *, source_ranges: Sequence[str] = (),
                  internal: str | None = None) -> Obj:
    """The timer server's Service; the matrix refuses a public one unless it says expose_publicly."""
    spec: Obj = {"type": service_type, "selector": {LABEL_COMPONENT: "timer-server", LABEL_RUN: run_id},
                 "ports": [{"name": f"every-{p}", "port": p, "targetPort": p, "protocol": "TCP"}
                           for p in TIMER_PORTS]}
    if source_ranges:
        spec["loadBalancerSourceRanges"] = list(source_ranges)
    annotations = INTERNAL_LB_ANNOTATIONS[internal] if internal else None
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(TIMER_SERVICE, run_labels(run_id), ns, annotations), "spec": spec}


def _runner_binding(ns: str, d: Deployment) -> list[Obj]:
    return [] if d.runner_subject is None else [runner_binding(ns, d.run_id, d.runner_subject)]


def is_runner_binding(obj: Mapping[str, Any]) -> bool:
    return obj.get("kind") == "RoleBinding" and obj.get("roleRef", {}).get("name") == IN_RUN_ROLE


def with_secrets(objs: Sequence[Obj], secrets: Sequence[Obj]) -> list[Obj]:
    """The pull secret copies inserted after the namespace and the runner's binding there (which
    is what allows creating them), before everything else."""
    head = 2 if len(objs) > 1 and is_runner_binding(objs[1]) else 1
    return [*objs[:head], *secrets, *objs[head:]]


def cell_objects(ns: str, d: Deployment, c: CellSpec) -> list[Obj]:
    """A cell's objects in creation order (the pod last: its ServiceAccount must exist first)."""
    objs = [namespace(ns, d.run_id, cluster=d.cluster, cell=c.cell, cell_index=c.index, runner=d.runner),
            *_runner_binding(ns, d),
            service_account(ns, SERVICE_ACCOUNT, d.run_id), watcher_role(ns, d.run_id), watcher_binding(ns, d.run_id)]
    if c.scenario == WATCH:
        objs.append(trigger_configmap(ns, d.run_id))
    objs.append(watcher_pod(ns, d, c))
    return objs


def timer_objects(ns: str, d: Deployment, *, image: str, service_type: str, source_ranges: Sequence[str] = (),
                  internal: str | None = None) -> list[Obj]:
    return [namespace(ns, d.run_id, cluster=d.cluster, runner=d.runner),
            *_runner_binding(ns, d),
            service_account(ns, TIMER_SERVICE_ACCOUNT, d.run_id),
            timer_pod(ns, d.run_id, image=image, capture_image=d.capture_image, pull_policy=d.pull_policy,
                      pull_secrets=d.pull_secrets),
            timer_service(ns, d.run_id, service_type, source_ranges=source_ranges, internal=internal)]


# -- what the runner's own kube context needs -------------------------------------------------------
#
# RBAC cannot grant "in namespaces whose name matches a pattern", nor in namespaces that do not
# exist yet. So the runner's identity gets two ClusterRoles and one admission policy:
#
# - `watchdrop-runner`, bound cluster-wide: namespaces (create, and get/list/patch/delete), RoleBindings
#   (get/create/patch), and `bind` on the second ClusterRole only (resourceNames). Nothing else in
#   any namespace: no pods, no exec, no Secrets.
# - `watchdrop-runner-in-run` (RUNNER_RULES), never bound cluster-wide: right after creating a run
#   namespace the runner binds it to itself there (runner_binding), using its `bind` right.
# - the ValidatingAdmissionPolicies `watchdrop-runner-namespaces` and `watchdrop-runner-pods`, which
#   for the runner's identity only (a matchCondition on its user name or group) refuse namespace
#   create/update/delete and RoleBinding create/update/delete outside namespaces named like a run's
#   (RUN_NAMESPACE_PATTERN: the name, which nobody can change, not labels, which anyone allowed to
#   patch a namespace can set), and pods that would reach the node (host namespaces, hostPath,
#   privileged, capabilities beyond the capture sidecar's two): the run namespaces are
#   `privileged` for Pod Security, so without this a pod there could be root on its node.

RBAC_GROUP = "rbac.authorization.k8s.io"
#: ClusterRole bound cluster-wide to the runner's identity.
RUNNER_ROLE = "watchdrop-runner"
#: ClusterRole the runner binds to itself inside each run namespace, and nowhere else.
IN_RUN_ROLE = "watchdrop-runner-in-run"
#: The RoleBinding of IN_RUN_ROLE in every run namespace.
IN_RUN_BINDING = "watchdrop-runner"
NAMESPACE_POLICY = "watchdrop-runner-namespaces"
POD_POLICY = "watchdrop-runner-pods"
#: Every namespace run_namespace and cell_namespace make (run ids: runner/host/netns.new_run_id,
#: 6 hex digits), and nothing else.
RUN_NAMESPACE_PATTERN = r"^watchdrop-[0-9a-f]{6}(-c[0-9]{3,4}|-k[0-9]{1,3})?$"
#: The only capabilities the runner may give a container (the capture sidecar's).
ALLOWED_CAPABILITIES = ("NET_RAW", "NET_ADMIN")

Rule = tuple[str, str, tuple[str, ...]]

#: Cluster-wide (ClusterRole RUNNER_ROLE). `patch` is server-side apply; `create` too, because
#: apply creates. `list` namespaces: teardown and the search for crashed runs' leftovers.
RUNNER_CLUSTER_RULES: tuple[Rule, ...] = (
    ("", "namespaces", ("get", "list", "create", "patch", "delete")),
    # Cluster-wide because the namespaces do not exist yet; the namespace policy keeps them to run
    # namespaces, and RBAC's escalation check to roles the runner holds there or may `bind`.
    (RBAC_GROUP, "rolebindings", ("get", "create", "patch")),
)
#: On ClusterRole IN_RUN_ROLE only (resourceNames): bind it in a new run namespace, read it in preflight.
RUNNER_BIND_VERBS = ("bind", "get")

#: (API group, resource, verbs) inside the run's namespaces (ClusterRole IN_RUN_ROLE, bound there
#: by the runner). ConfigMaps get/list/watch are also what lets the runner grant them to the
#: watcher's Role (RBAC refuses to grant what the granter does not hold).
RUNNER_RULES: tuple[Rule, ...] = (
    ("", "pods", ("get", "list", "create", "patch", "delete")),
    ("", "pods/log", ("get",)),
    # `create` for SPDY exec; `get` for WebSocket exec on servers that still authorize it as GET.
    ("", "pods/exec", ("get", "create")),
    ("", "services", ("get", "create", "patch", "delete")),
    ("", "serviceaccounts", ("get", "create", "patch", "delete")),
    ("", "configmaps", ("get", "list", "watch", "create", "patch", "delete")),
    ("", "events", ("get", "list")),
    (RBAC_GROUP, "roles", ("get", "create", "patch", "delete")),
)
#: Only when the matrix names pull_secrets: copy them into the run's namespaces (IN_RUN_ROLE) ...
PULL_SECRET_RULE: Rule = ("", "secrets", ("create", "patch"))
#: ... after reading them, by name, in the kube context's namespace (a Role there).
PULL_SECRET_SOURCE_VERBS = ("get",)
SA_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class Subject:
    """The runner's identity as RBAC and the admission policy name it."""

    kind: str  # "User", "Group" or "ServiceAccount"
    name: str
    namespace: str | None = None

    @classmethod
    def of_user(cls, username: str) -> Subject:
        """The subject for a user name as the API server reports it (SelfSubjectReview)."""
        if username.startswith(SA_PREFIX) and username.count(":") == 3:
            ns, _, name = username[len(SA_PREFIX):].partition(":")
            return cls("ServiceAccount", name, ns)
        return cls("User", username)

    def rbac(self) -> Obj:
        if self.kind == "ServiceAccount":
            return {"kind": "ServiceAccount", "name": self.name, "namespace": self.namespace}
        return {"kind": self.kind, "apiGroup": RBAC_GROUP, "name": self.name}

    @property
    def username(self) -> str | None:
        if self.kind == "ServiceAccount":
            return f"{SA_PREFIX}{self.namespace}:{self.name}"
        return self.name if self.kind == "User" else None

    def cel_match(self) -> str:
        """CEL that is true for this subject's requests (a JSON string is a valid CEL string literal)."""
        if self.kind == "Group":
            return f"{json.dumps(self.name)} in request.userInfo.groups"
        return f"request.userInfo.username == {json.dumps(self.username)}"


def _rules(rules: Sequence[Rule]) -> list[Obj]:
    merged: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for group, resource, verbs in rules:
        merged.setdefault((group, verbs), []).append(resource)
    return [{"apiGroups": [g], "resources": res, "verbs": list(v)} for (g, v), res in merged.items()]


def _cluster_role(name: str, rules: list[Obj]) -> Obj:
    return {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": {LABEL_MANAGED: MANAGER}}, "rules": rules}


def runner_cluster_role() -> Obj:
    """ClusterRole RUNNER_ROLE: what the runner may do cluster-wide (bound by a ClusterRoleBinding)."""
    return _cluster_role(RUNNER_ROLE, [
        *_rules(RUNNER_CLUSTER_RULES),
        {"apiGroups": [RBAC_GROUP], "resources": ["clusterroles"], "resourceNames": [IN_RUN_ROLE],
         "verbs": list(RUNNER_BIND_VERBS)}])


def in_run_cluster_role(*, pull_secrets: bool = False) -> Obj:
    """ClusterRole IN_RUN_ROLE: what the runner may do inside a run namespace, once bound there."""
    return _cluster_role(IN_RUN_ROLE, _rules([*RUNNER_RULES, *([PULL_SECRET_RULE] if pull_secrets else [])]))


def runner_binding(ns: str, run_id: str, subject: Subject) -> Obj:
    """The RoleBinding of IN_RUN_ROLE to the runner, in one run namespace (the first object in it)."""
    return {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "RoleBinding",
            "metadata": _meta(IN_RUN_BINDING, run_labels(run_id), ns),
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": IN_RUN_ROLE},
            "subjects": [subject.rbac()]}


def _policy(name: str, subject: Subject, rules: list[Obj], validations: list[Obj]) -> list[Obj]:
    group = "admissionregistration.k8s.io/v1"
    return [
        {"apiVersion": group, "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": name, "labels": {LABEL_MANAGED: MANAGER}},
         "spec": {
             # An error evaluating the policy refuses the request: the policy fails closed.
             "failurePolicy": "Fail",
             "matchConstraints": {"resourceRules": rules},
             "matchConditions": [{"name": "is-the-watchdrop-runner", "expression": subject.cel_match()}],
             "validations": validations}},
        {"apiVersion": group, "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"name": name, "labels": {LABEL_MANAGED: MANAGER}},
         "spec": {"policyName": name, "validationActions": ["Deny"]}},
    ]


def _resource_rule(group: str, resources: list[str], operations: list[str]) -> Obj:
    return {"apiGroups": [group], "apiVersions": ["*"], "operations": operations, "resources": resources}


def namespace_policy(subject: Subject) -> list[Obj]:
    """Namespaces and RoleBindings: only in namespaces named like a run's."""
    pattern = json.dumps(RUN_NAMESPACE_PATTERN)
    return _policy(NAMESPACE_POLICY, subject, [
        _resource_rule("", ["namespaces"], ["CREATE", "UPDATE", "DELETE"]),
        _resource_rule(RBAC_GROUP, ["rolebindings"], ["CREATE", "UPDATE", "DELETE"]),
    ], [
        # DELETE has no `object`, only `oldObject`.
        {"expression": "request.resource.resource != 'namespaces' || "
                       f"(object != null ? object : oldObject).metadata.name.matches({pattern})",
         "messageExpression": json.dumps("the watchdrop runner may only create, change or delete namespaces named "
                                         f"like a run's ({RUN_NAMESPACE_PATTERN}), not ")
                              + " + (object != null ? object : oldObject).metadata.name",
         "reason": "Forbidden"},
        {"expression": f"request.resource.resource != 'rolebindings' || request.namespace.matches({pattern})",
         "messageExpression": json.dumps("the watchdrop runner may only bind roles in a run's namespaces "
                                         f"({RUN_NAMESPACE_PATTERN}), not in ") + " + request.namespace",
         "reason": "Forbidden"},
    ])


def pod_policy(subject: Subject) -> list[Obj]:
    """Pods the runner makes cannot reach their node (the run namespaces are PSA `privileged`)."""
    every = "(object.spec.containers + (has(object.spec.initContainers) ? object.spec.initContainers : []))"
    caps = json.dumps(list(ALLOWED_CAPABILITIES))
    checks = [
        ("!(has(object.spec.hostNetwork) && object.spec.hostNetwork) && "
         "!(has(object.spec.hostPID) && object.spec.hostPID) && !(has(object.spec.hostIPC) && object.spec.hostIPC)",
         "no host network, PID or IPC namespace"),
        ("!has(object.spec.volumes) || object.spec.volumes.all(v, !has(v.hostPath))", "no hostPath volume"),
        (f"{every}.all(c, !has(c.securityContext) || !has(c.securityContext.privileged) || "
         "!c.securityContext.privileged)", "no privileged container"),
        (f"{every}.all(c, !has(c.securityContext) || !has(c.securityContext.capabilities) || "
         f"!has(c.securityContext.capabilities.add) || c.securityContext.capabilities.add.all(x, x in {caps}))",
         f"no capability beyond {', '.join(ALLOWED_CAPABILITIES)}"),
    ]
    return _policy(POD_POLICY, subject, [_resource_rule("", ["pods"], ["CREATE", "UPDATE"])],
                   [{"expression": e, "message": f"the watchdrop runner's pods: {what}", "reason": "Forbidden"}
                    for e, what in checks])


def runner_rbac(subject: Subject, *, pull_secrets: Sequence[str] = (), secrets_namespace: str = "default",
                binding: str = RUNNER_ROLE) -> list[Obj]:
    """Everything an admin applies once for the runner's identity, in apply order (`python -m runner
    kube-rbac` prints it; so does the preflight when a permission is missing)."""
    objs = [runner_cluster_role(), in_run_cluster_role(pull_secrets=bool(pull_secrets)),
            {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": binding, "labels": {LABEL_MANAGED: MANAGER}},
             "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": RUNNER_ROLE},
             "subjects": [subject.rbac()]},
            *namespace_policy(subject), *pod_policy(subject)]
    if pull_secrets:
        name = f"{RUNNER_ROLE}-pull-secrets"
        meta = {"name": name, "namespace": secrets_namespace, "labels": {LABEL_MANAGED: MANAGER}}
        objs += [
            {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "Role", "metadata": meta,
             "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": list(pull_secrets),
                        "verbs": list(PULL_SECRET_SOURCE_VERBS)}]},
            {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "RoleBinding", "metadata": dict(meta),
             "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": name}, "subjects": [subject.rbac()]},
        ]
    return objs


class _Dumper(yaml.SafeDumper):
    """Block style, except lists of plain strings on one line (`verbs: [get, list]`), as RBAC docs write them."""


def _list(dumper: yaml.SafeDumper, items: list[Any]) -> yaml.Node:
    flow = all(isinstance(i, str) and len(i) < 60 for i in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flow)


_Dumper.add_representer(list, _list)


def render_yaml(objs: Sequence[Obj]) -> str:
    """`kubectl apply -f -` input."""
    return yaml.dump_all(objs, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
