"""The embedded cluster: a real etcd and kube-apiserver in the run's own network namespace.

Start order follows envtest: etcd, then the API server, then readiness; a start that fails
halfway rolls back everything it made. `close()` stops the API server before etcd (SIGTERM, then
SIGKILL after a bounded wait, by pid), deletes the namespaces and wipes the work directory: a
deleted Kubernetes namespace would stay Terminating without kube-controller-manager, so teardown
wipes etcd's data instead (docs/facts.md).

Both servers listen only inside the `api` namespace: etcd on that namespace's loopback, the API
server on a 198.18 service address. The runner reaches the API server over the host link, which
never crosses a load balancer.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from runner.build import gobuild
from runner.contract import API_PORT
from runner.credentials import pki
from runner.credentials.kubeconfig import admin_user, write_kubeconfig
from runner.credentials.rbac import TOKEN_SECONDS, WatcherAccess, create_watcher_access
from runner.embedded.churn import Churn
from runner.errors import ClusterError
from runner.host import sandbox
from runner.host.commands import CommandLog, in_netns
from runner.host.lifetime import StartStop, teardown_steps
from runner.host.netns import Block, Topology, new_run_id
from runner.host.procs import Child, wait_until
from runner.kube.api import bounded_client_from_config

APISERVER_PORT = API_PORT
ETCD_CLIENT = "http://127.0.0.1:2379"

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class ApiServerOptions:
    """kube-apiserver beyond the embedded defaults."""

    #: Appended to the command line as they are.
    extra_args: Sequence[str] = ()
    ready_timeout: float = 90.0
    authorization_mode: str = "RBAC"
    #: Runs once the namespace, block and certificates exist and returns more kube-apiserver
    #: arguments: the local cluster (runner/local/) wires its node there.
    before_start: Callable[[EmbeddedCluster], list[str]] | None = None
    #: Picks `--advertise-address` (the `kubernetes` Service's endpoint) from the run's block; by
    #: default its own service address. An LB VIP there puts the LB in the pods' in-cluster path
    #: (every VIP is in the serving certificate already).
    advertise: Callable[[Block], str] | None = None


class EmbeddedCluster(StartStop):
    """A context manager; `start()` / `close()` for callers that manage the lifetime themselves."""

    kind = "embedded"

    def __init__(self, *, run_id: str | None = None, workdir: Path | None = None,
                 evidence_dir: Path | None = None, churn_interval: float = 10.0,
                 progress: Progress = _quiet, apiserver: ApiServerOptions | None = None):
        """`apiserver` shapes kube-apiserver beyond the embedded defaults (the local cluster's node)."""
        self.run_id = run_id or new_run_id()
        self._own_workdir = workdir is None
        self.topology = Topology(self.run_id, CommandLog())
        self.topology.claim()
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"watchdrop-{self.run_id}-"))
        self.evidence_dir = evidence_dir or self.workdir / "evidence"
        self.log = CommandLog(self.evidence_dir / "commands.log")
        self.topology.log = self.log
        self.churn_interval = churn_interval
        self.progress = progress
        self.options = apiserver or ApiServerOptions()
        self.phases: list[tuple[str, float]] = []
        self.etcd: Child | None = None
        self.apiserver: Child | None = None
        self.churn: Churn | None = None
        self.pki: pki.Pki | None = None
        self.api_ns = ""
        self.admin_kubeconfig: Path | None = None
        self._api: client.ApiClient | None = None

    # -- lifetime -------------------------------------------------------------------------------
    def _start(self) -> None:
        t0 = time.monotonic()
        bins = gobuild.ensure_control_plane_binaries(self.log, self.progress)
        self._phase("binaries (build or cache)", t0)

        t0 = time.monotonic()
        block = self.topology.allocate()
        self.api_ns = self.topology.add_ns("api")
        self.topology.add_host_link(self.api_ns)
        for addr in (block.apiserver, block.timer):
            self.topology.run_in(self.api_ns, ["ip", "addr", "add", f"{addr}/32", "dev", "lo"])
        self._phase("network namespace", t0)

        t0 = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Admin kubeconfig, PKI keys and every cell's token live here: root's alone.
        self.workdir.chmod(0o700)
        self.pki = pki.generate(
            self.workdir / "pki",
            ip_sans=[block.apiserver, *block.all_vips(), *(block.front(i) for i in range(13)),
                     _first_ip(block.service_cluster_ip_range)],
            dns_sans=["kubernetes", "kubernetes.default", "kubernetes.default.svc",
                      "kubernetes.default.svc.cluster.local"],
        )
        self._phase("certificates", t0)
        more_args = self.options.before_start(self) if self.options.before_start else []

        t0 = time.monotonic()
        self.etcd = Child("etcd", in_netns(self.api_ns, [
            bins["etcd"], "--name", "watchdrop", "--data-dir", self.workdir / "etcd",
            "--listen-client-urls", ETCD_CLIENT, "--advertise-client-urls", ETCD_CLIENT,
            "--listen-peer-urls", "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--initial-cluster", "watchdrop=http://127.0.0.1:2380",
            # A throwaway single-node store: fsync only costs time here.
            "--unsafe-no-fsync", "--log-level", "warn",
        ]), stdout=self.evidence_dir / "etcd.log", log=self.log)
        self._wait_etcd()
        self._phase("etcd ready", t0)

        t0 = time.monotonic()
        p = self.pki
        self.apiserver = Child("kube-apiserver", in_netns(self.api_ns, [
            bins["kube-apiserver"],
            f"--etcd-servers={ETCD_CLIENT}",
            f"--bind-address={block.apiserver}",
            f"--advertise-address={self.options.advertise(block) if self.options.advertise else block.apiserver}",
            f"--secure-port={APISERVER_PORT}",
            f"--cert-dir={p.dir}", f"--tls-cert-file={p.serving_cert}",
            f"--tls-private-key-file={p.serving_key}", f"--client-ca-file={p.ca_cert}",
            f"--authorization-mode={self.options.authorization_mode}",
            f"--service-cluster-ip-range={block.service_cluster_ip_range}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            "--profiling=false", "--v=1",
            *more_args,
            *self.options.extra_args,
        ]), stdout=self.evidence_dir / "kube-apiserver.log", log=self.log)
        self._wait_ready()
        self._phase("kube-apiserver ready", t0)

        self.admin_kubeconfig = write_kubeconfig(
            self.workdir / "admin.kubeconfig", server=self.server_url(),
            ca_pem=p.ca_cert.read_bytes(),
            user=admin_user(p.admin_cert.read_bytes(), p.admin_key.read_bytes()))
        self._api = bounded_client_from_config(self.admin_kubeconfig)

        t0 = time.monotonic()
        self.churn = Churn(self._api, self.churn_interval)
        self.churn.start()
        self._phase("background churn", t0)

    def close(self) -> list[str]:
        """Tear everything down; return the problems met (never raises for them)."""
        problems: list[str] = []
        t0 = time.monotonic()
        # Independent steps: a child that will not die or a namespace that will not go must not keep
        # the workdir (admin kubeconfig, PKI) or the routes from being removed.
        problems += teardown_steps([
            ("churn", lambda: self.churn and self.churn.stop()),
            ("admin API client", self._close_api),
            *((f"stop {child.name}", lambda child=child: child.stop(grace=10))
              for child in (self.apiserver, self.etcd) if child is not None),
            ("network", lambda: problems.extend(self.topology.close())),
            ("workdir", self._remove_workdir),
        ])
        self.phases.append(("teardown", time.monotonic() - t0))
        return problems

    def _close_api(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None

    def _remove_workdir(self) -> None:
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            return
        for sub in ("etcd", "pki", "cells"):
            shutil.rmtree(self.workdir / sub, ignore_errors=True)
        for kc in self.workdir.glob("*.kubeconfig"):
            kc.unlink(missing_ok=True)

    # -- waiting ------------------------------------------------------------------------------
    def _wait_etcd(self) -> None:
        assert self.etcd is not None

        def healthy() -> bool:
            proc = self.topology.run_in(self.api_ns, ["curl", "-sf", "--max-time", "2",
                                                      f"{ETCD_CLIENT}/health"], check=False)
            return proc.returncode == 0 and '"health":"true"' in proc.stdout.replace(" ", "")

        wait_until(healthy, self.etcd, 30, "healthy", poll=0.2, fix="see etcd.log in the evidence")

    def _ssl_context(self) -> ssl.SSLContext:
        assert self.pki is not None
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    def _wait_ready(self) -> None:
        assert self.apiserver is not None
        ctx = self._ssl_context()
        last = [""]

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{self.server_url()}/readyz", context=ctx, timeout=2) as r:
                    return r.status == 200
            except (urllib.error.URLError, OSError) as exc:
                last[0] = str(exc)
                return False

        wait_until(ready, self.apiserver, self.options.ready_timeout, "ready (/readyz)", poll=0.1,
                   fix="see kube-apiserver.log in the evidence", last=lambda: last[0])

    # -- what the runner uses -----------------------------------------------------------------
    @property
    def block(self) -> Block:
        assert self.topology.block is not None
        return self.topology.block

    def server_url(self) -> str:
        return f"https://{self.block.apiserver}:{APISERVER_PORT}"

    def admin_api(self) -> client.ApiClient:
        if self._api is None:
            raise ClusterError("the cluster is not running")
        return self._api

    def alive(self) -> bool:
        return bool(self.apiserver and self.apiserver.alive() and self.etcd and self.etcd.alive())

    def watcher_access(self, namespace: str, server: str | None = None,
                       owner_uid: int | None = None, token_seconds: int = TOKEN_SECONDS) -> WatcherAccess:
        """Namespace, ServiceAccount, Role, RoleBinding and a token valid for `token_seconds`; a
        kubeconfig for it alone.

        With `owner_uid` (a sandboxed watcher) the kubeconfig goes into a folder of its own owned
        by that uid (0700), inside the 0700 work dir: no other uid reads it, and that uid reads
        nothing else of the work dir (the sandbox binds back only this folder)."""
        assert self.pki is not None
        if owner_uid is None:
            path = self.workdir / f"{namespace}.kubeconfig"
        else:
            path = self.workdir / "cells" / namespace / "kubeconfig"
            (self.workdir / "cells").mkdir(mode=0o700, exist_ok=True)
        access = create_watcher_access(
            self.admin_api(), namespace, server=server or self.server_url(),
            ca_pem=self.pki.ca_cert.read_bytes(), kubeconfig_path=path, seconds=token_seconds)
        if owner_uid is not None:
            os.chown(path, owner_uid, owner_uid)
            path.chmod(0o400)
            sandbox.owned_dir(path.parent, owner_uid)
        return access

    def metadata(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "kubernetes_version": gobuild.KUBE_APISERVER.version,
            "etcd_version": gobuild.ETCD.version,
            "churn": self.churn.metadata() if self.churn else {"lease_interval": self.churn_interval},
        }


def _first_ip(cidr: str) -> str:
    import ipaddress

    return str(ipaddress.ip_network(cidr).network_address + 1)
