"""Explicit background churn: a Lease renewed every few seconds, as every kubelet does.

A real cluster writes all the time (node leases every 10 s), which moves the resource version and
lets the watch cache send BOOKMARKs. A perfectly quiet embedded cluster would be less realistic,
and cells sharing one API server would otherwise change each other's bookmarks. So churn is a
cluster setting, the same for every cell, and recorded in the run's metadata (docs/facts.md).
"""

from __future__ import annotations

import datetime as dt
import threading

from kubernetes import client

CHURN_NAMESPACE = "watchdrop-system"
LEASE = "churn"


class Churn:
    def __init__(self, api: client.ApiClient, interval: float):
        self.api = api
        self.interval = interval
        self.renewals = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval <= 0:
            return
        core = client.CoreV1Api(self.api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=CHURN_NAMESPACE)))
        coord = client.CoordinationV1Api(self.api)
        coord.create_namespaced_lease(CHURN_NAMESPACE, client.V1Lease(
            metadata=client.V1ObjectMeta(name=LEASE),
            spec=client.V1LeaseSpec(holder_identity="watchdrop", lease_duration_seconds=40)))
        self._thread = threading.Thread(target=self._loop, name="churn", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        coord = client.CoordinationV1Api(self.api)
        while not self._stop.wait(self.interval):
            try:
                now = dt.datetime.now(dt.UTC)
                coord.patch_namespaced_lease(LEASE, CHURN_NAMESPACE, {"spec": {"renewTime": now.isoformat()}})
                self.renewals += 1
            except Exception as exc:  # recorded; the run decides what it means
                self.errors.append(str(exc)[:200])

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def metadata(self) -> dict[str, object]:
        return {"lease_interval": self.interval, "renewals": self.renewals, "errors": len(self.errors)}
