"""`python -m runner lb-probe --cluster NAME`: hold idle connections across a cluster's LB and tell
after how long, and how, each path broke.

The timer server runs in the cluster behind a Service of the cluster's `service_type` (on `local`,
LoadBalancer: the LB emulator with the cluster's profile gives it its address, runner/local/lbservice.py),
speaking every `idle` seconds on one port per rung of the ladder. Two paths reach it through the
external address, one connection per rung each, all at once: `outside`, the seed's
`curl --no-keepalive --http0.9` from the runner's machine (on `local`, from a network namespace of
its own on the LB's client side), and `inside`, a pod in the cluster. Bounded: 2 connections per
rung, at most --max-idle + 15 s of holding them; everything made is torn down at the end, also on
Ctrl-C. The verdicts come from both ends' evidence (runner/probe/fates.py).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from runner.backend import RunContext
from runner.config.matrix import KubernetesCluster, load_matrix
from runner.config.matrix import LocalCluster as LocalSpec
from runner.errors import ClusterError, UsageError
from runner.evidence.pcap import PcapError, read_pcap
from runner.host import sysdeps
from runner.host.commands import CommandLog
from runner.host.netns import new_run_id
from runner.kube import manifests as m
from runner.kube.backend import KubernetesBackend
from runner.probe import fates as f
from runner.probe.kube import ClusterProbe
from runner.probe.ladder import MARGIN, PATHS, READY_PORT, Rung, ladder, parse_ladder, rungs
from runner.probe.manifests import CLIENT_POD

Wrap = Callable[[list[str]], list[str]]


def _plain(argv: list[str]) -> list[str]:
    return argv


def check_args(args: argparse.Namespace) -> tuple[LocalSpec | KubernetesCluster, list[Rung]]:
    """Everything a user can get wrong, before anything starts (exit 4 with the fix)."""
    idles = ladder(args.max_idle, parse_ladder(args.ladder))
    path = Path(args.matrix)
    if not path.is_file():
        raise UsageError(f"lb-probe --matrix {args.matrix}: no such file",
                         fix="give the matrix that names the cluster, e.g. --matrix matrix.local.yaml")
    matrix = load_matrix(path, path.parent / "clients")
    try:
        spec = matrix.cluster(args.cluster)
    except KeyError:
        names = ", ".join(f"{c.name} ({c.kind})" for c in matrix.clusters)
        raise UsageError(f"lb-probe --cluster {args.cluster}: no such cluster in {path}",
                         fix=f"use one of: {names}") from None
    if spec.kind == "embedded":
        raise UsageError(f"lb-probe --cluster {args.cluster}: an embedded cluster has no Services to probe",
                         fix=f"use `lb-probe --profile {spec.profile().name}` for its LB, or --cluster with a "
                             "cluster of kind local or kubernetes") from None
    return spec, rungs(idles)


def main(args: argparse.Namespace) -> int:
    spec, rs = check_args(args)
    run_id = new_run_id()
    out = Path(args.out) / f"lb-probe-{run_id}"
    out.mkdir(parents=True, exist_ok=True)
    idles = sorted({r.idle for r in rs})
    print(f"lb-probe: cluster {spec.name} ({spec.kind}); idle ladder {', '.join(map(str, idles))} s, one "
          f"connection per rung from outside and from a pod; about {max(idles) + MARGIN} s of holding; "
          f"evidence in {out}", flush=True)
    if isinstance(spec, LocalSpec):
        sysdeps.require_root("lb-probe on a local cluster")
        from runner.probe.local import run_local
        results = run_local(spec, rs, out, run_id)
    else:
        results = run_kubernetes(spec, rs, out, run_id)
    print_results(results, out)
    return 0


# -- one run on a prepared backend ------------------------------------------------------------------


class Probe:
    """Deploy, hold the connections, collect, judge; the caller owns the backend's lifetime."""

    def __init__(self, backend: KubernetesBackend, rs: Sequence[Rung], out: Path, *, say: Callable[[str], None]):
        self.backend, self.rungs, self.out, self.say = backend, list(rs), out, say
        self.cluster = ClusterProbe(backend, rs, out, say)
        self.procs: list[subprocess.Popen[str]] = []
        # Every curl the runner starts, as it ran (with the namespace wrapper), beside the evidence.
        self.log = CommandLog(out / "commands.log")

    def of(self, path: str) -> list[Rung]:
        return [r for r in self.rungs if r.path == path]

    def start(self) -> None:
        b = self.backend
        b.prepare()
        b.access  # noqa: B018 - connect now: a context that cannot be reached fails here
        b.preflight()
        b.remove_leftovers()
        self.cluster.deploy()
        self.say(f"  deployed the timer server behind a {b.cluster.service_type} Service in {b.run_ns}")

    def hold(self, address: str | None, cluster_ip: str, wrap: Wrap) -> dict[str, Any]:
        """Both paths at once; returns the raw evidence of each client."""
        self.cluster.wait_running(m.TIMER_POD, self.backend.settings.start_timeout)
        curls: dict[int, dict[str, Any]] = {}
        threads = []
        if address is not None:
            self.wait_forwarding(address, wrap)
            for r in self.of("outside"):
                t = threading.Thread(target=self._curl, args=(r, address, wrap, curls), daemon=True)
                t.start()
                threads.append(t)
        inside_at = address or cluster_ip
        self.cluster.start_client(inside_at, self.of("inside"))
        longest = max(r.idle for r in self.rungs) + MARGIN
        lines = self.cluster.client_lines(timeout=longest + self.backend.settings.start_timeout)
        for t in threads:
            t.join(timeout=longest + 30)
        time.sleep(2)  # the server's last fates (its user timeout) and the captures' last packets
        events = self.cluster.collect()
        (self.out / "outside-curl.json").write_text(json.dumps(curls, indent=2, sort_keys=True) + "\n")
        return {"curls": curls, "lines": lines, "server": events, "inside_at": inside_at}

    def wait_forwarding(self, address: str, wrap: Wrap) -> None:
        """Until the readiness port's banner comes through the external address (kube-proxy's rules, a
        cloud LB's health checks), bounded by the cluster's start_timeout."""
        url = f"http://{address}:{READY_PORT}/"
        deadline = time.monotonic() + self.backend.settings.start_timeout
        while True:
            proc = self.log.run(wrap(["curl", "-sS", "--no-keepalive", "--http0.9", "--max-time", "3", url]),
                                check=False, timeout=30)
            if proc.stdout.startswith("Hello"):
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"{url} gave no banner within {self.backend.settings.start_timeout:.0f} s "
                                   f"(last: {proc.stderr.strip()[-200:]})",
                                   fix="check the Service's LB (`kubectl describe service`) and its source ranges")
            time.sleep(1)

    def _curl(self, r: Rung, address: str, wrap: Wrap, into: dict[int, dict[str, Any]]) -> None:
        argv = ["curl", "-sS", "--no-keepalive", "--http0.9", "--max-time", str(r.idle + MARGIN),
                f"http://{address}:{r.port}/"]
        t0 = time.monotonic()
        self.log.note("$ " + shlex.join(wrap(argv)))
        proc = subprocess.Popen(wrap(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        try:
            stdout, stderr = proc.communicate(timeout=r.idle + MARGIN + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        self.log.note(f"  -> {proc.returncode} (port {r.port})")
        into[r.port] = {"argv": argv, "rc": proc.returncode, "stdout": stdout[-4000:], "stderr": stderr[-2000:],
                        "elapsed": round(time.monotonic() - t0, 3), "idle": r.idle}

    def stop_clients(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)

    def judge(self, raw: dict[str, Any], lb_events: list[dict[str, Any]] | None,
              where: dict[str, str]) -> list[tuple[f.PathResult, str]]:
        retrans, rsts_in = server_packets(self.out / "server-pod.pcap", {r.port for r in self.rungs})
        lines = {int(x["port"]): x for x in raw["lines"] if "port" in x}
        results = []
        for path in PATHS:
            fates = []
            for r in self.of(path):
                if path == "outside":
                    c = raw["curls"].get(r.port)
                    client = (f.curl_end(c["rc"], c["stderr"], c["stdout"], c["elapsed"]) if c else
                              f.ClientEnd("unknown", None, "no external address" if not raw["curls"] else "no curl"))
                else:
                    client = f.pod_client_end(lines.get(r.port))
                server = f.server_end(raw["server"], r.port, retransmissions=retrans.get(r.port) if retrans else None,
                                      rsts_in=rsts_in.get(r.port) if rsts_in else None)
                lb = f.lb_record(lb_events, r.port) if lb_events is not None else None
                fates.append(f.Fate(r, client, server, lb))
            results.append((f.judge_path(path, fates), where[path]))
        (self.out / "probe.json").write_text(json.dumps(
            [{**f.as_record(res), "where": w} for res, w in results], indent=2, default=str) + "\n")
        return results


def server_packets(pcap: Path, ports: set[int]) -> tuple[dict[int, int] | None, dict[int, int] | None]:
    """Per server port: the server's retransmitted segments and the RSTs that reached it (None: no capture)."""
    try:
        facts = read_pcap(pcap, server_ports=ports)
    except PcapError:
        return None, None
    retrans: dict[int, int] = {}
    rsts: dict[int, int] = {}
    for conn in facts.connections:
        port = int(conn.server.rsplit(":", 1)[1])
        retrans[port] = retrans.get(port, 0) + conn.retransmissions_server
        rsts[port] = rsts.get(port, 0) + sum(1 for _, who in conn.rsts if who == "client")
    return retrans, rsts


def print_results(results: Sequence[tuple[f.PathResult, str]], out: Path) -> None:
    for res, where in results:
        print(f.story(res, where), flush=True)
    print(f"  evidence: {out} (probe.json, timer-server.jsonl, server-pod.pcap, inside-client.jsonl, "
          "inside-client-pod.pcap, outside-curl.json, commands.log" + (", outside-client.pcap, lb/lb-events.jsonl"
                                                          if (out / "lb").exists() else "") + ")", flush=True)


# -- kind: kubernetes ---------------------------------------------------------------------------------


def run_kubernetes(spec: KubernetesCluster, rs: Sequence[Rung], out: Path,
                   run_id: str) -> list[tuple[f.PathResult, str]]:
    """Against a user's kube context: curl from this machine to the Service's external address."""
    ctx = RunContext(run_id=run_id, run_dir=out, descriptors={}, say=lambda t: print(t, flush=True))
    backend = KubernetesBackend(spec, [], ctx)
    probe = Probe(backend, rs, out, say=ctx.say)
    try:
        probe.start()
        address = probe.cluster.external_address(timeout=backend.settings.start_timeout)
        cluster_ip = str(probe.cluster.service().spec.cluster_ip)
        raw = probe.hold(address, cluster_ip, _plain)
        ingress = (probe.cluster.service().status.load_balancer.ingress or []) if address else []
        # Without `ipMode: Proxy`, kube-proxy answers for the LB's address inside the node itself.
        bypass = address is not None and not any(i.ip_mode == "Proxy" for i in ingress)
        where = {"outside": f"curl from this machine to {address}" if address else
                 f"no external address: service_type {spec.service_type}",
                 "inside": f"pod {CLIENT_POD} to {raw['inside_at']}" + (
                     " (ipMode VIP: kube-proxy short-circuits the LB's address inside the node, so this path does "
                     "not cross the LB)" if bypass else "")}
        return probe.judge(raw, None, where)
    finally:
        probe.stop_clients()
        for problem in backend.close():
            print(f"  teardown problem: {problem}", flush=True)


def replace_cluster(spec: KubernetesCluster, **changes: Any) -> KubernetesCluster:
    return KubernetesCluster.model_validate({**spec.model_dump(), **changes})

