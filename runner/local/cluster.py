"""LocalCluster: bring a real single-node Kubernetes up, hand over its context, tear it down.

Start order: host ledger; the embedded etcd + kube-apiserver (secured for a node: Node,RBAC
authorization, NodeRestriction, its kubelet client certificate, a route from the api namespace
to the node's /24); dockerd and the registry; the pause image; containerd; the controller manager
and scheduler; the kubelet and kube-proxy; then a Ready node. A start that fails halfway, or a
Ctrl-C, runs the same `close()`, which stops every daemon by pid and puts the host back
(runner/local/hoststate.py). Only one local cluster runs on a machine at a time: the kubelet's
/var/lib/kubelet, containerd's /run/containerd and the pods' cgroups are machine-wide.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import docker
from kubernetes import client

from runner.build import gobuild
from runner.build.cache import cache_root
from runner.config.paths import NetPath
from runner.config.profiles import Profile
from runner.embedded.cluster import APISERVER_PORT, ApiServerOptions, EmbeddedCluster
from runner.embedded.lb import LoadBalancer
from runner.errors import ClusterError
from runner.host import signals, sysdeps
from runner.host.commands import CommandLog
from runner.host.lifetime import StartStop
from runner.host.netns import Block, new_run_id
from runner.host.procs import Child, wait_until
from runner.host.safefiles import open_nofollow
from runner.kube.api import apply_all
from runner.local import configs, containerd, controlplane, dns, node
from runner.local import docker as dockermod
from runner.local.hoststate import Ledger, undo
from runner.local.images import LocalImages
from runner.local.lbpath import start_node_path

LOCK_PATH = Path("/run/watchdrop-local.lock")
CONTEXT = "watchdrop-local"

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _first_vip(block: Block) -> str:
    return block.vip(0)


@dataclass(frozen=True)
class Handover:
    """What the kubernetes backend and the LB wiring need from a running local cluster."""

    kubeconfig: Path
    context: str
    registry: str              # push here (docker on this machine); the node pulls from it
    node_name: str
    node_ip: str
    pod_cidr: str
    service_cidr: str
    apiserver: str             # kube-apiserver's own address (the runner's admin path)
    advertised: str            # the `kubernetes` Service's endpoint (the LB's VIP when there is an LB)
    docker_socket: str
    lb_evidence: Path | None = None  # the LB's event log, captures and agent log (None: no LB)


class LocalCluster(StartStop):
    kind = "local"

    #: Seconds the node may take to become Ready once the kubelet runs.
    ready_timeout = 60.0

    def __init__(self, *, run_id: str | None = None, progress: Progress = _quiet, churn_interval: float = 0.0,
                 install: bool = True, extra_kubelet_args: list[str] | None = None,
                 lb: Profile | NetPath | None = None, lb_evidence: Path | None = None):
        """`lb`: the LB emulator's profile, or a chain of hops, in the pods' path to kube-apiserver
        (runner/local/lbpath.py): kube-apiserver then advertises the (last) LB's VIP, so the
        `kubernetes` Service leads through it.
        `lb_evidence`: where the LB's event log and captures go (default: the cluster's evidence)."""
        advertise_address = _first_vip if lb is not None else None
        self.lb_spec = lb
        self.lb: LoadBalancer | None = None
        self.run_id = run_id or new_run_id()
        self.progress = progress
        self.install = install
        self.extra_kubelet_args = extra_kubelet_args or []
        self.workdir = Path(tempfile.mkdtemp(prefix=f"watchdrop-{self.run_id}-local-"))
        self.evidence_dir = self.workdir / "evidence"
        self.log = CommandLog(self.evidence_dir / "commands.log")
        self.paths = configs.NodePaths(state=self.workdir / "node", cache=cache_root() / "local")
        self.phases: list[tuple[str, float]] = []
        self.children: list[Child] = []
        self.ledger: Ledger | None = None
        self.net: node.NodeNet | None = None
        self.ids: node.Identities | None = None
        self.registry = ""
        self.docker: docker.DockerClient | None = None
        self.kubelet: Child | None = None
        self._lock: IO[str] | None = None
        self._closed = False
        self.pause_image = ""
        self.kubeconfig: Path | None = None
        self.lb_evidence = lb_evidence or self.evidence_dir / "lb"
        self.control = EmbeddedCluster(
            run_id=self.run_id, workdir=self.workdir / "control", evidence_dir=self.evidence_dir,
            churn_interval=churn_interval, progress=progress,
            apiserver=ApiServerOptions(authorization_mode="Node,RBAC", before_start=self._wire_node,
                                       advertise=advertise_address))

    # -- lifetime -------------------------------------------------------------------------------
    def _take_lock(self) -> None:
        self._lock = open_nofollow(LOCK_PATH)  # /run is root's, but a planted link must not be truncated
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise ClusterError("another local cluster is running on this machine (lock /run/watchdrop-local.lock)",
                               fix="stop it (Ctrl-C), or run `python -m runner clean` if its runner crashed") from None

    def _start(self) -> None:
        t0 = time.monotonic()
        sysdeps.require_root("the local cluster")
        if self.install:
            sysdeps.ensure_local_cluster_tools(self.progress)
        self._phase("packages", t0)
        t0 = time.monotonic()
        bins = gobuild.ensure_local_cluster_binaries(self.log, self.progress)
        self._phase("binaries (build or cache)", t0)

        self._take_lock()
        # Before anything touches the host: what it looks like now, on disk for `clean`.
        self.ledger = Ledger.record(self.run_id, self.workdir)
        self.ledger.kube_proxy = str(bins["kube-proxy"])
        self.ledger.kube_proxy_config = str(self.paths.kube_proxy_config)
        self.ledger.save()

        # etcd + kube-apiserver; _wire_node runs in between (bridge, route, certificates).
        self.control.start()
        assert self.net is not None and self.ids is not None and self.control.pki is not None
        ev, log, p = self.evidence_dir, self.log, self.control.pki

        t0 = time.monotonic()
        dockerd, self.docker = dockermod.start_dockerd(self.paths, ev, log)
        self.children.append(dockerd)
        reg, self.registry = dockermod.start_registry(self.paths, ev, log)
        self.children.append(reg)
        self._phase("dockerd and registry", t0)

        t0 = time.monotonic()
        self.pause_image = pause = LocalImages(self.docker, self.registry, log, self.progress).pause()
        self._phase("pause image", t0)

        t0 = time.monotonic()
        conflist = configs.cni_conflist(f"watchdrop-{self.run_id}", self.net.bridge, self.net.pod_cidr,
                                        self.net.node_ip, self.paths.state / "cni-ipam")
        self.children.append(containerd.start(self.paths, bins["crictl"], pause, self.registry, conflist, ev, log))
        self._phase("containerd", t0)

        t0 = time.monotonic()
        api_ns = self.control.api_ns
        self.children.append(controlplane.start_controller_manager(
            bins["kube-controller-manager"], api_ns, self.ids.controller_manager, p, f"watchdrop-{self.run_id}",
            ev, log))
        self.children.append(controlplane.start_scheduler(bins["kube-scheduler"], api_ns, self.ids.scheduler,
                                                          ev, log))
        self.children.append(self._start_dns(bins["coredns"]))
        self.kubelet = node.start_kubelet(node.KubeletSetup(
            bins["kubelet"], self.paths, self.net, p, self.ids,
            dns.service_ip(self.control.block.service_cluster_ip_range), tuple(self.extra_kubelet_args)), ev, log)
        self.children.append(self.kubelet)
        proxy = node.start_kube_proxy(bins["kube-proxy"], self.paths, self.net, self.ids, ev, log)
        self.children.append(proxy)
        self._wait_node_ready()
        self._phase("node Ready", t0)
        t0 = time.monotonic()
        wait_until(node.kube_proxy_healthy, proxy, 30, "healthy", fix="see kube-proxy.log in the evidence")
        self._wait_default_service_account()
        self._phase("kube-proxy and default ServiceAccount", t0)
        if self.lb_spec is not None:
            t0 = time.monotonic()
            self.lb = start_node_path(self.control, self.lb_spec, self.lb_evidence, pod_cidr=self.net.pod_cidr,
                                      node_ip=self.net.node_ip)
            what = "path" if isinstance(self.lb_spec, NetPath) else "LB"
            self._phase(f"{what} {self.lb_spec.name} in the pods' path", t0)
        self._write_kubeconfig()

    def _start_dns(self, binary: Path) -> Child:
        """kube-dns: its Service, EndpointSlice and rights, then CoreDNS on the node (runner/local/dns.py)."""
        assert self.net is not None and self.ids is not None
        api = self.admin_api()
        try:
            apply_all(api, dns.objects(self.control.block.service_cluster_ip_range, self.net.node_ip), self.log.note)
        finally:
            api.close()
        return dns.start(binary, self.net.node_ip, self.ids.coredns, self.workdir / "dns", self.evidence_dir,
                         self.log)

    def _wire_node(self, control: EmbeddedCluster) -> list[str]:
        """Called by the control plane after its namespace and certificates, before kube-apiserver."""
        assert control.pki is not None
        t0 = time.monotonic()
        self.net = node.NodeNet(control.topology.allocate_extra(), self.run_id)
        assert self.ledger is not None
        self.ledger.bridge = self.net.bridge
        self.ledger.routes = [str(self.net.block)]
        self.ledger.save()
        node.make_bridge(self.net, self.log)
        # kube-apiserver reaches the kubelet (logs, exec) and pods reach kube-apiserver: both through
        # the host link, with the root namespace routing between the bridge and that link.
        control.topology.route(control.api_ns, self.net.pod_cidr, control.block.host_root)
        self.ids = node.issue_identities(control.pki, self.net, control.server_url(), self.workdir / "kubeconfigs")
        self._phase("node network and identities", t0)
        cert, key = self.ids.apiserver_kubelet_client
        return [
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={cert}", f"--kubelet-client-key={key}",
            f"--kubelet-certificate-authority={control.pki.ca_cert}",
            # The node's name is not in any DNS the API server's namespace can reach.
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def close(self) -> list[str]:
        """Stop everything by pid and put the host back; returns the problems met (never raises)."""
        problems: list[str] = []
        if self._closed:
            return problems
        t0 = time.monotonic()
        with signals.shield():
            if self.docker is not None:
                self.docker.close()
                self.docker = None
            # The kubelet first, so that nothing restarts what is stopped next; pods go with undo().
            for child in reversed(self.children):
                child.stop(grace=signals.grace(5))
            self.children.clear()
            if self.lb is not None:
                # Agent, front and captures; its namespace and veth go with the control plane's topology.
                try:
                    self.lb.close()
                except Exception as exc:
                    problems.append(f"LB teardown: {exc.__class__.__name__}: {exc}")
                self.lb = None
            if self.ledger is not None:
                problems += undo(self.ledger, self.log)
            problems += self.control.close()
            if self.ledger is not None and not problems:
                self.ledger.forget()
            self.ledger = None
            self._closed = True
            if self._lock is not None:
                self._lock.close()
                self._lock = None
            if not problems:
                shutil.rmtree(self.workdir, ignore_errors=True)
        self.phases.append(("teardown", time.monotonic() - t0))
        for problem in problems:
            self.progress(f"teardown problem: {problem}")
        return problems

    # -- waiting ------------------------------------------------------------------------------
    def _wait_node_ready(self) -> None:
        assert self.kubelet is not None and self.net is not None
        v1 = client.CoreV1Api(self.control.admin_api())
        name = self.net.name

        def ready() -> bool:
            n = v1.read_node(name)
            conds = {c.type: c.status for c in (n.status.conditions or [])}
            taints = [t.key for t in (n.spec.taints or [])]
            return conds.get("Ready") == "True" and "node.kubernetes.io/not-ready" not in taints

        wait_until(ready, self.kubelet, self.ready_timeout, f"Ready (node {name})",
                   fix="see kubelet.log in the evidence")

    def _wait_default_service_account(self) -> None:
        v1 = client.CoreV1Api(self.control.admin_api())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                v1.read_namespaced_service_account("default", "default")
                v1.read_namespaced_config_map("kube-root-ca.crt", "default")
                return
            except client.ApiException:
                time.sleep(0.2)
        raise ClusterError("kube-controller-manager made no default ServiceAccount within 30 s",
                           fix="see kube-controller-manager.log in the evidence")

    # -- what the user and the runner get ------------------------------------------------------
    def _write_kubeconfig(self) -> None:
        from runner.credentials.kubeconfig import admin_user, write_kubeconfig

        p = self.control.pki
        assert p is not None
        self.kubeconfig = write_kubeconfig(
            self.workdir / "local.kubeconfig", server=self.control.server_url(), ca_pem=p.ca_cert.read_bytes(),
            user=admin_user(p.admin_cert.read_bytes(), p.admin_key.read_bytes()), name=CONTEXT)

    def handover(self) -> Handover:
        assert self.net is not None and self.kubeconfig is not None
        return Handover(kubeconfig=self.kubeconfig, context=CONTEXT, registry=self.registry,
                        node_name=self.net.name, node_ip=self.net.node_ip, pod_cidr=self.net.pod_cidr,
                        service_cidr=self.control.block.service_cluster_ip_range,
                        apiserver=f"{self.control.block.apiserver}:{APISERVER_PORT}",
                        advertised=self._advertised(),
                        docker_socket=f"unix://{self.paths.docker_sock}",
                        lb_evidence=self.lb_evidence if self.lb_spec is not None else None)

    def _advertised(self) -> str:
        ep = client.CoreV1Api(self.admin_api()).read_namespaced_endpoints("kubernetes", "default")
        return ",".join(f"{a.ip}:{pt.port}" for s in ep.subsets or [] for a in s.addresses or [] for pt in s.ports)

    def admin_api(self) -> client.ApiClient:
        return self.control.admin_api()

    def alive(self) -> bool:
        return self.control.alive() and all(c.alive() for c in self.children)

    def dead_children(self) -> list[str]:
        return [c.name for c in self.children if not c.alive()]

    def images(self) -> LocalImages:
        assert self.docker is not None
        return LocalImages(self.docker, self.registry, self.log, self.progress)
