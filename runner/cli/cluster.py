"""`python -m runner cluster check|up [--kind local]`: a cluster on its own, for smoke tests and debugging."""

from __future__ import annotations

import queue
import threading
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from runner.contract import TRIGGER
from runner.credentials.rbac import service_account_can
from runner.embedded.cluster import EmbeddedCluster
from runner.errors import ClusterError
from runner.host.netns import list_project_netns

SMOKE_NS = "watchdrop-smoke"


def _say(msg: str) -> None:
    print(msg, flush=True)


def smoke_round(cluster: EmbeddedCluster, timeout: float = 20.0) -> dict[str, float]:
    """A watcher-scoped client watches ConfigMaps, the admin changes one, the event must arrive."""
    t0 = time.monotonic()
    access = cluster.watcher_access(SMOKE_NS)
    scoped = config.new_client_from_config(config_file=str(access.kubeconfig))
    results: dict[str, float] = {"rbac": time.monotonic() - t0}
    try:
        # Least privilege, checked with real requests under the watcher's own token.
        v1 = client.CoreV1Api(scoped)
        for what, call in (("Secrets", lambda: v1.list_namespaced_secret(SMOKE_NS)),
                           ("ConfigMaps in another namespace", lambda: v1.list_namespaced_config_map("default"))):
            try:
                call()
            except ApiException as exc:
                if exc.status != 403:
                    raise ClusterError(f"watcher token: {what} gave {exc.status}, expected 403") from None
            else:
                raise ClusterError(f"watcher token could read {what}: RBAC is not least privilege")
        if not service_account_can(cluster.admin_api(), SMOKE_NS, verb="watch", resource="configmaps",
                                   target_namespace=SMOKE_NS):
            raise ClusterError("SubjectAccessReview: the watcher may not watch its own ConfigMaps")

        seen: queue.Queue[tuple[float, str]] = queue.Queue()
        w = watch.Watch()
        opened = threading.Event()

        def run_watch() -> None:
            try:
                for ev in w.stream(v1.list_namespaced_config_map, namespace=SMOKE_NS, timeout_seconds=60,
                                   _request_timeout=timeout + 10):
                    opened.set()
                    obj = ev["object"]
                    seen.put((time.monotonic(), f"{ev['type']} {obj.metadata.name}={(obj.data or {}).get('value')}"))
            except Exception as exc:  # reported through the queue; the check then fails
                seen.put((time.monotonic(), f"error {exc}"))

        th = threading.Thread(target=run_watch, daemon=True)
        th.start()
        time.sleep(1.0)  # the list+watch request is in flight; an ADDED for the new object follows
        admin = client.CoreV1Api(cluster.admin_api())
        written = time.monotonic()
        admin.create_namespaced_config_map(SMOKE_NS, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=TRIGGER), data={"value": "smoke-1"}))
        deadline = written + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClusterError(f"the watcher saw no event within {timeout:.0f} s of the update")
            try:
                at, what = seen.get(timeout=left)
            except queue.Empty:
                continue
            if what.startswith("error"):
                raise ClusterError(f"the watch failed: {what}")
            if what == "ADDED trigger=smoke-1":
                results["event latency"] = at - written
                break
        w.stop()
    finally:
        scoped.close()
    return results


def check() -> int:
    cluster = EmbeddedCluster(progress=lambda m: _say(f"  {m}"))
    _say(f"cluster check (run {cluster.run_id})")
    with cluster:
        results = smoke_round(cluster)
        for name, took in results.items():
            _say(f"  {name}: {took:.3f} s")
    _say(f"  {cluster.phases[-1][0]}: {cluster.phases[-1][1]:.2f} s")
    leftovers = [n for n in list_project_netns() if cluster.run_id in n]
    if leftovers or cluster.alive():
        raise ClusterError(f"teardown left {leftovers or 'processes'} behind")
    _say("cluster check: OK")
    return 0


def up() -> int:
    cluster = EmbeddedCluster(progress=lambda m: _say(f"  {m}"))
    with cluster:
        access = cluster.watcher_access("watchdrop-dev")
        _say(f"API server: {cluster.server_url()} (reachable from this machine's root namespace)")
        _say(f"admin kubeconfig:   {cluster.admin_kubeconfig}")
        _say(f"watcher kubeconfig: {access.kubeconfig} (ConfigMaps in namespace watchdrop-dev only)")
        _say("Ctrl-C tears it down.")
        while cluster.alive():
            time.sleep(1)
        raise ClusterError("the control plane exited", detail=cluster.apiserver.tail() if cluster.apiserver else "")
    return 0


def up_local() -> int:
    """A real single-node cluster (runner/local/) until Ctrl-C; Interrupted unwinds the teardown."""
    from runner.local.cluster import LocalCluster

    cluster = LocalCluster(progress=lambda m: _say(f"  {m}"), install=False)
    _say(f"local cluster (run {cluster.run_id})")
    with cluster:
        h = cluster.handover()
        _say(f"kubeconfig: {h.kubeconfig}")
        _say(f"context:    {h.context}")
        _say(f"  e.g. kubectl --kubeconfig {h.kubeconfig} --context {h.context} get nodes -o wide")
        _say(f"registry:   {h.registry} (push here; the node pulls from it)")
        _say(f"docker:     DOCKER_HOST={h.docker_socket}")
        _say(f"node:       {h.node_name} {h.node_ip}, pods {h.pod_cidr}, services {h.service_cidr}, "
             f"API server {h.apiserver} (kubernetes Service endpoint {h.advertised})")
        _say("Ctrl-C tears it down.")
        while cluster.alive():
            time.sleep(1)
        raise ClusterError(f"a component of the local cluster exited: {', '.join(cluster.dead_children())}",
                           fix="see its log in " + str(cluster.evidence_dir))
    return 0
