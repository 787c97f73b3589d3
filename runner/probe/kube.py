"""The probe on a cluster: the kubernetes backend's preflight, images, namespace and teardown, the
probe's timer server and in-cluster client in that namespace, and their evidence copied out.

Everything it makes is in the run's namespace `watchdrop-<run-id>`, made and deleted by a
KubernetesBackend with no cells (the runner's least-privilege identity, the same leftovers
handling), so the probe leaves nothing in the cluster that a matrix run would not.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from runner.errors import ClusterError
from runner.kube import manifests as m
from runner.kube.api import REQUEST_TIMEOUT, api_error, apply, apply_all, copy_capture
from runner.kube.backend import KubernetesBackend
from runner.kube.pods import container_statuses
from runner.probe.ladder import Rung
from runner.probe.manifests import CLIENT_CONTAINER, CLIENT_POD, client_pod, probe_objects


class ClusterProbe:
    """One probe's objects on one cluster, through `backend` (prepared, preflighted)."""

    def __init__(self, backend: KubernetesBackend, rungs: Sequence[Rung], evidence: Path,
                 say: Callable[[str], None]):
        self.backend, self.rungs, self.evidence, self.say = backend, list(rungs), evidence, say
        self.ns = backend.run_ns
        self.timer_pod: dict[str, Any] = {}
        self.client_started = False
        self.problems: list[str] = []

    def _api(self) -> client.ApiClient:
        return self.backend.access.new_api()

    def deploy(self) -> None:
        b, c = self.backend, self.backend.cluster
        assert b.images is not None
        objs = probe_objects(self.ns, b.deployment(b.images), image=b.images.timer_server,
                             rungs=self.rungs, service_type=c.service_type,
                             source_ranges=c.load_balancer_source_ranges, internal=c.internal_load_balancer)
        self.timer_pod = next(o for o in objs if o["kind"] == "Pod")
        (self.evidence / "probe-manifests.json").write_text(json.dumps(objs, indent=2) + "\n")
        b.namespaces.append(self.ns)  # the backend's teardown deletes it, also after a failure here
        api = self._api()
        try:
            apply_all(api, m.with_secrets(objs, b.pull_secret_copies(self.ns)), b.note)
        finally:
            api.close()

    def wait_running(self, pod: str, timeout: float) -> None:
        api = self._api()
        core = client.CoreV1Api(api)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    obj = core.read_namespaced_pod(pod, self.ns, _request_timeout=REQUEST_TIMEOUT)
                    statuses = container_statuses(obj)
                    if len(statuses) == 2 and all(s.state is not None and s.state.running is not None
                                                  for s in statuses.values()):
                        return
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                if time.monotonic() > deadline:
                    raise ClusterError(f"pod {self.ns}/{pod} not running within {timeout:.0f} s",
                                       fix=f"see `kubectl -n {self.ns} describe pod {pod}`")
                time.sleep(0.5)
        finally:
            api.close()

    def service(self) -> client.V1Service:
        api = self._api()
        try:
            return client.CoreV1Api(api).read_namespaced_service(m.TIMER_SERVICE, self.ns,
                                                                 _request_timeout=REQUEST_TIMEOUT)
        finally:
            api.close()

    def external_address(self, timeout: float) -> str | None:
        """The Service's LB address once its controller gave it one; None for a ClusterIP Service."""
        deadline = time.monotonic() + timeout
        while True:
            svc = self.service()
            if svc.spec.type != "LoadBalancer":
                return None
            ingress = (svc.status.load_balancer.ingress if svc.status and svc.status.load_balancer else None) or []
            for i in ingress:
                if i.ip or i.hostname:
                    return str(i.ip or i.hostname)
            if time.monotonic() > deadline:
                raise ClusterError(f"Service {self.ns}/{m.TIMER_SERVICE} got no LB address within {timeout:.0f} s",
                                   fix="check the cluster's LB controller (`kubectl describe service`)")
            time.sleep(1.0)

    def start_client(self, address: str, rungs: Sequence[Rung]) -> None:
        api = self._api()
        try:
            apply(api, client_pod(self.timer_pod, address=address, rungs=rungs))
            self.client_started = True
        finally:
            api.close()

    def client_lines(self, timeout: float) -> list[dict[str, Any]]:
        """The in-cluster client's JSON lines, once its container has exited (bounded)."""
        api = self._api()
        core = client.CoreV1Api(api)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    pod = core.read_namespaced_pod(CLIENT_POD, self.ns, _request_timeout=REQUEST_TIMEOUT)
                    st = container_statuses(pod).get(CLIENT_CONTAINER)
                    if st is not None and st.state is not None and st.state.terminated is not None:
                        break
                except ApiException:
                    pass
                time.sleep(1.0)
            else:
                self.problems.append(f"the in-cluster client did not finish within {timeout:.0f} s")
            log = core.read_namespaced_pod_log(CLIENT_POD, self.ns, container=CLIENT_CONTAINER,
                                               _request_timeout=REQUEST_TIMEOUT)
        except Exception as exc:
            self.problems.append(f"in-cluster client's log: {api_error(exc)}")
            return []
        finally:
            api.close()
        (self.evidence / "inside-client.jsonl").write_text(log)
        return jsonl(log)

    def collect(self) -> list[dict[str, Any]]:
        """The timer server's log, both pods' captures and the Service as the cluster reported it."""
        api = self._api()
        core = client.CoreV1Api(api)
        b = self.backend
        try:
            log = core.read_namespaced_pod_log(m.TIMER_POD, self.ns, container=m.TIMER_CONTAINER,
                                               _request_timeout=REQUEST_TIMEOUT)
            (self.evidence / "timer-server.jsonl").write_text(log)
            svc = self.service()
            (self.evidence / "service.json").write_text(json.dumps(
                {"spec": api.sanitize_for_serialization(svc.spec),
                 "status": api.sanitize_for_serialization(svc.status)}, indent=2, sort_keys=True) + "\n")
        except Exception as exc:
            self.problems.append(f"timer server's log: {api_error(exc)}")
            log = ""
        finally:
            api.close()
        pods = [(m.TIMER_POD, "server-")] + ([(CLIENT_POD, "inside-client-")] if self.client_started else [])
        for pod, prefix in pods:
            try:
                self.problems += copy_capture(b.access.new_api, self.ns, pod, self.evidence, prefix=prefix,
                                              timeout=b.settings.exec_timeout).problems
            except Exception as exc:
                self.problems.append(f"capture of {pod}: {api_error(exc)}")
        return jsonl(log)


def jsonl(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out
