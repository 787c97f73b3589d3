"""lb-probe on `kind: local`: a local cluster whose LoadBalancer Services get the LB emulator.

The cluster comes up as a matrix run's does (runner/local/provider.py: the runner's own
least-privilege user, images built with the cluster's Docker engine from `base_images: local`),
without the LB in the pods' API path: the probe's LB is the Service's (runner/local/lbservice.py),
with the matrix cluster's profile. The runner's identity deploys a Service of type LoadBalancer
whose source ranges are the two client networks; the controller (the cluster admin's identity)
gives it the VIP. The outside client is a network namespace on the LB's client side.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from runner.backend import RunContext
from runner.config.matrix import LocalCluster as LocalSpec
from runner.host import signals
from runner.host.capture import Capture
from runner.host.commands import in_netns
from runner.host.netns import new_run_id
from runner.kube import manifests as m
from runner.kube.backend import KubernetesBackend
from runner.local.cluster import LocalCluster
from runner.local.lbservice import ServiceLbController
from runner.local.provider import copy_evidence, kube_context, runner_identity
from runner.probe import fates as f
from runner.probe.command import Probe, replace_cluster
from runner.probe.kube import jsonl
from runner.probe.ladder import Rung
from runner.probe.manifests import CLIENT_POD


def run_local(spec: LocalSpec, rs: Sequence[Rung], out: Path, run_id: str) -> list[tuple[f.PathResult, str]]:
    def say(text: str) -> None:
        print(text, flush=True)

    profile = spec.profile()
    say(f"  local cluster {spec.name}: LoadBalancer Services behind {profile.name} ({profile.describe()})")
    local = LocalCluster(run_id=new_run_id(), progress=lambda t: say(f"  {spec.name}: {t}"), lb=None)
    say(f"  local cluster {spec.name}: run {local.run_id}")
    docker_host = os.environ.get("DOCKER_HOST")
    controller: ServiceLbController | None = None
    capture: Capture | None = None
    probe: Probe | None = None
    backend: KubernetesBackend | None = None
    try:
        local.start()
        kubeconfig = runner_identity(local, lambda t: _append(out / "runner-rbac.log", t))
        h = replace(local.handover(), kubeconfig=kubeconfig)
        os.environ["DOCKER_HOST"] = h.docker_socket  # the image builds use the cluster's engine
        controller = ServiceLbController(local.control, profile, out / "lb", node_ip=h.node_ip, pod_cidr=h.pod_cidr,
                                         new_api=local.admin_api, note=lambda t: _append(out / "controller.log", t))
        cluster = replace_cluster(kube_context(spec, h), service_type="LoadBalancer",
                                  load_balancer_source_ranges=[controller.outside_net, h.pod_cidr])
        ctx = RunContext(run_id=run_id, run_dir=out, descriptors={}, say=say)
        backend = KubernetesBackend(cluster, [], ctx)
        probe = Probe(backend, rs, out, say=say)
        probe.start()
        lb = controller.serve(backend.run_ns, m.TIMER_SERVICE)
        address = probe.cluster.external_address(timeout=30)
        say(f"  Service {backend.run_ns}/{m.TIMER_SERVICE}: LoadBalancer at {address} (ipMode Proxy), "
            f"source ranges {controller.outside_net}, {h.pod_cidr}")
        client = lb.add_pod(local.log)
        capture = Capture(client.netns, client.iface, out / "outside-client.pcap", local.log).start()
        cluster_ip = str(probe.cluster.service().spec.cluster_ip)
        raw = probe.hold(address, cluster_ip, lambda argv: in_netns(client.netns, argv))
        capture.stop()
        lb.close()  # the agent writes its last events and the captures close before they are read
        events = jsonl(lb.events_path.read_text()) if lb.events_path.exists() else []
        where = {"outside": f"curl from {client.addr} (its own netns) to the LB at {address}",
                 "inside": f"pod {CLIENT_POD} to the LB at {address}, hairpinning out of the node"}
        return probe.judge(raw, events, where)
    finally:
        with signals.shield():
            if probe is not None:
                probe.stop_clients()
            if capture is not None:
                capture.stop()
            problems: list[str] = []
            if backend is not None:
                problems += backend.close()
            if controller is not None:
                controller.close()
            try:  # the daemons' logs, before teardown removes the cluster's directory
                copy_evidence(local.evidence_dir, out / "local")
            except OSError as exc:
                problems.append(f"local cluster evidence: {exc}")
            problems += local.close()
            if docker_host is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = docker_host
            for problem in problems:
                say(f"  teardown problem: {problem}")


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(text + "\n")
