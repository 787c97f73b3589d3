"""`kind: local` in the matrix: get a local cluster, hand it to the plain kubernetes backend, tear it down.

As kind's providers do, this only *gets* a cluster: `prepare()` brings a LocalCluster up with the
matrix cluster's LB profile in the pods' path and its churn, then turns its handover into what a
user's kube context gives (a kubeconfig and context for a runner user bound to exactly the
least-privilege role `python -m runner kube-rbac` prints, a registry to push to, a Docker engine to build
with, `base_images: local`, `service_type: ClusterIP`) and delegates every step to a
KubernetesBackend, which does not know where the cluster came from. `close()` closes that backend,
then the cluster (also after a failure or Ctrl-C: run_backend always calls it).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

from kubernetes import config

from runner.backend import RunContext
from runner.config.matrix import KubernetesCluster
from runner.config.matrix import LocalCluster as LocalSpec
from runner.config.plan import Cell
from runner.credentials.kubeconfig import admin_user, write_kubeconfig
from runner.credentials.pki import issue
from runner.harness import HarnessRun
from runner.host.lifetime import teardown_steps
from runner.host.netns import new_run_id
from runner.kube import manifests as m
from runner.kube.api import apply_all, excess_permissions
from runner.kube.backend import KubernetesBackend
from runner.local.cluster import Handover, LocalCluster
from runner.model import CellResult

#: The runner's own user on a local cluster: it gets what `python -m runner kube-rbac` prints, nothing more.
RUNNER_USER = "watchdrop-runner"

#: The host's CA bundle: image builds reach the package registries through this machine's TLS-inspecting
#: proxy, whose certificate only the host trusts (runner/build/images.py, `build_ca_bundle`).
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def runner_identity(local: LocalCluster, note: Callable[[str], None]) -> Path:
    """What a cluster admin does once for a user (README, "Running on a real cluster"): a client
    certificate for the runner's own user, the least-privilege role bound to it, a kubeconfig. The
    kubernetes backend then runs with exactly the rights it asks a user's cluster admin for."""
    pki = local.control.pki
    assert pki is not None
    cert, key = issue(pki, RUNNER_USER, cn=RUNNER_USER)
    api = local.admin_api()
    try:
        apply_all(api, m.runner_rbac(m.Subject("User", RUNNER_USER)), note)
    finally:
        api.close()
    path = write_kubeconfig(local.workdir / "runner.kubeconfig", server=local.control.server_url(),
                            ca_pem=pki.ca_cert.read_bytes(), user=admin_user(cert.read_bytes(), key.read_bytes()),
                            name=local.handover().context)
    _wait_policies_in_force(path, note)
    return path


def _wait_policies_in_force(kubeconfig: Path, note: Callable[[str], None], timeout: float = 30.0) -> None:
    """ValidatingAdmissionPolicies take a few seconds after their creation to be enforced; until then
    the preflight would rightly warn that the runner may create any namespace."""
    api = config.new_client_from_config(config_file=str(kubeconfig))
    deadline = time.monotonic() + timeout
    try:
        while (excess := excess_permissions(api)) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        api.close()
    note("runner's rights: " + ("exactly its job's" if not excess else f"in excess after {timeout:.0f} s: "
                                + ", ".join(excess)))


def kube_context(spec: LocalSpec, h: Handover) -> KubernetesCluster:
    """What a user would write for this cluster as `kind: kubernetes`."""
    return KubernetesCluster.model_validate({
        "name": spec.name, "kind": "kubernetes", "kubeconfig": str(h.kubeconfig), "context": h.context,
        "registry": h.registry, "service_type": "ClusterIP", "base_images": "local",
        "idle_timeout": spec.idle_timeout,
        "description": f"local single-node cluster behind {describe_path(spec)}",
        **({"build_ca_bundle": str(HOST_CA_BUNDLE)} if HOST_CA_BUNDLE.exists() else {}),
    })


def describe_path(spec: LocalSpec) -> str:
    """The cluster's LB, or its chain of hops hop by hop."""
    path = spec.net_path()
    return f"path {path.describe()}" if path is not None else f"LB {spec.profile().describe()}"


class LocalProvidedBackend:
    """One matrix cluster of kind `local`: its cluster's lifetime around a KubernetesBackend."""

    phase_prefix = "kubernetes "

    def __init__(self, spec: LocalSpec, cells: Sequence[tuple[int, Cell]], ctx: RunContext, *, slot: int = 0,
                 images_from: str | None = None):
        self.spec, self.ctx, self.slot, self.images_from = spec, ctx, slot, images_from
        self.indexed = list(cells)
        self.cells_given = [c for _, c in self.indexed]
        self.name = f"cluster {spec.name}"
        self.evidence = ctx.run_dir / "clusters" / spec.name
        self.local: LocalCluster | None = None
        self.inner: KubernetesBackend | None = None
        self._docker_host: str | None = None
        self._docker_host_set = False

    # -- the steps --------------------------------------------------------------------------------
    def prepare(self) -> dict[str, CellResult]:
        ctx, spec = self.ctx, self.spec
        ctx.enter("local cluster start")
        profile, path = spec.profile(), spec.net_path()
        ctx.say(f"cluster {spec.name}: local single-node cluster behind {describe_path(spec)}")
        # Its own run id: an embedded cluster of the same run names its namespaces after the run's.
        self.local = LocalCluster(run_id=new_run_id(), progress=lambda t: ctx.say(f"  {spec.name}: {t}"),
                                  churn_interval=float(spec.churn.lease_interval), lb=path or profile,
                                  lb_evidence=self.evidence / "lb")
        self.local.start()
        self.evidence.mkdir(parents=True, exist_ok=True)
        kubeconfig = runner_identity(self.local, self._note)
        h = replace(self.local.handover(), kubeconfig=kubeconfig)
        (self.evidence / "local-cluster.json").write_text(json.dumps(
            {**asdict(h), "run_id": self.local.run_id, "profile": profile.name,
             "path": [hop.model_dump() for hop in path.hops] if path is not None else None,
             "phases": self.local.phases}, indent=2, default=str) + "\n")
        ctx.say(f"  {spec.name}: kube context {h.context} in {h.kubeconfig}; registry {h.registry}; "
                f"`kubernetes` Service endpoint {h.advertised} (the LB's VIP)")
        # The image builds use the Docker engine DOCKER_HOST names (runner/build/images.py), as a user's would.
        self._docker_host, self._docker_host_set = os.environ.get("DOCKER_HOST"), True
        os.environ["DOCKER_HOST"] = h.docker_socket
        # The LB in the pods' path keeps a record: the cells' verdicts hold it against their captures,
        # as the embedded cells' do (the backend is told of an LB, not of a local cluster).
        self.inner = KubernetesBackend(kube_context(spec, h), self.indexed, ctx, slot=self.slot,
                                       images_from=self.images_from, lb=self.local.lb)
        return self.inner.prepare()

    def _note(self, text: str) -> None:
        with (self.evidence / "runner-rbac.log").open("a") as f:
            f.write(text + "\n")

    def start(self) -> None:
        assert self.inner is not None
        self.inner.start()

    def cells(self) -> Sequence[HarnessRun]:
        assert self.inner is not None
        return self.inner.cells()

    def collect(self, runs: Sequence[HarnessRun]) -> dict[str, CellResult]:
        assert self.inner is not None
        return self.inner.collect(runs)

    def collected(self) -> None:
        assert self.inner is not None
        self.inner.collected()

    def hold(self) -> None:
        if self.local is not None:
            self.ctx.say(f"  {self.spec.name}: --keep: the local cluster stops with the run; its namespaces "
                         "go with it")

    def close(self) -> list[str]:
        problems: list[str] = []
        if self.inner is not None:
            problems += self.inner.close()
        if self._docker_host_set:
            if self._docker_host is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = self._docker_host
            self._docker_host_set = False
        local = self.local
        if local is not None:
            problems += teardown_steps([
                ("local cluster evidence", lambda: copy_evidence(local.evidence_dir, self.evidence / "local")),
                ("local cluster teardown", lambda: problems.extend(local.close())),
            ])
            self.local = None
        return problems


def copy_evidence(src: Path, dst: Path) -> None:
    """The daemons' logs and commands, before teardown removes the cluster's directory."""
    if src.exists():
        shutil.copytree(src, dst, dirs_exist_ok=True, ignore_dangling_symlinks=True,
                        ignore=shutil.ignore_patterns("*.sock"))
