"""One cell on the embedded cluster: the watcher as a process in its pod netns behind the LB emulator.

The harness (runner/harness.py) writes over the runner's own admin connection, which never
crosses the LB; the evidence is the watcher's lines, the pod's capture and the LB's event log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from kubernetes import client

from runner.collect import BackendEvidence, collect_cell
from runner.contract import API_PORT, TRIGGER, WATCH
from runner.credentials.rbac import token_seconds
from runner.embedded.cluster import EmbeddedCluster
from runner.embedded.lb import LoadBalancer, Pod
from runner.evidence.lb_events import LbProblem, chain_lb_record
from runner.evidence.limits import log_limit
from runner.evidence.pcap import PcapFacts
from runner.harness import CellSetupError, ConfigMapWriter, HarnessRun, profile_facts
from runner.host import sandbox
from runner.host.capture import Capture
from runner.host.commands import CommandLog, in_netns
from runner.host.netns import BLOCKS
from runner.host.procs import Child
from runner.model import CellResult

WATCHER_STOP_GRACE = 15.0


@dataclass
class CellRun(HarnessRun):
    cluster: EmbeddedCluster = field(kw_only=True)
    lb: LoadBalancer = field(kw_only=True)
    pod: Pod | None = None
    capture: Capture | None = None
    #: Test seam: start a capture that fails (the run's hidden --break-capture names the client).
    break_capture: bool = False
    #: The local process (HarnessRun.watcher, typed for what stop_processes needs).
    process: Child | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.log = CommandLog(self.evidence / "commands.log")
        self.namespace = f"cell-{self.index:03d}"

    # -- setup ----------------------------------------------------------------------------------
    def setup(self, pod: Pod | None = None) -> None:
        """Credentials, the trigger ConfigMap, the pod's capture and the watcher; `pod` may be made
        beforehand (the LB hands out pod slots in order)."""
        try:
            uid = sandbox.cell_uid(BLOCKS.index(self.cluster.block.net), self.index) if sandbox.enabled() else None
            access = self.cluster.watcher_access(self.namespace, server=self.lb.server_url(), owner_uid=uid,
                                                 token_seconds=token_seconds(self.cell.estimated_seconds))
            self.harness(f"namespace {self.namespace}: ServiceAccount, Role (configmaps get/list/watch), "
                         "RoleBinding, token")
            if self.cell.scenario == WATCH:
                self._core().create_namespaced_config_map(self.namespace, client.V1ConfigMap(
                    metadata=client.V1ObjectMeta(name=TRIGGER), data={"value": "initial"}))
            self.pod = pod or self.lb.add_pod(log=self.log)
            # Test seam (`--break-capture CLIENT`): that client's capture fails to start, so tests can
            # prove a cell without packet evidence is ERROR.
            self.capture = Capture(self.pod.netns, self.pod.iface, self.evidence / "pod.pcap", self.log,
                                   tcpdump="false" if self.break_capture else "tcpdump").start()
            env = {**self.cell.watcher_env(), "WATCHDROP_KUBECONFIG": str(access.kubeconfig),
                   "WATCHDROP_NAMESPACE": self.namespace}
            argv = self.built.run_argv()
            if uid is not None:
                # Its own uid, HOME = its own cell folder (which holds its kubeconfig), the
                # allow-listed environment; stdout/stderr are files the runner opened.
                box = sandbox.Sandbox(uid, home=access.kubeconfig.parent,
                                      readable=[self.built.src, self.built.out])
                argv, env = box.wrap(argv), box.env(env)
            self.started = time.time()
            # prlimit: the kernel stops the watcher's stdout/stderr at the log limit (a watcher that
            # prints without end gets SIGXFSZ there), so it cannot fill the disk; the limit is
            # inherited through the sandbox's drop of privileges.
            argv = ["prlimit", f"--fsize={log_limit()}", "--", *argv]
            self.process = Child(f"watcher {self.cell.id}", in_netns(self.pod.netns, argv),
                                 stdout=self.stdout, stderr=self.stderr, env=env, log=self.log,
                                 cwd=self.built.src, inherit_env=uid is None)
            self.watcher = self.process
        except Exception as exc:
            raise CellSetupError(f"cell setup failed: {exc}") from exc

    def _core(self) -> ConfigMapWriter:
        return client.CoreV1Api(self.cluster.admin_api())

    # -- collect --------------------------------------------------------------------------------
    def stop_processes(self) -> None:
        if self.process is not None and self.watcher_exit is None:
            # Generous: on a loaded machine a watcher may need seconds to act on SIGTERM, and a
            # SIGKILL after the grace would read as a crash (ERROR).
            self.watcher_exit = self.process.stop(grace=WATCHER_STOP_GRACE)
        if self.capture is not None:
            self.capture.stop()

    def collect(self, lb_problems: list[LbProblem], cluster_alive: bool,
                pcap_facts: PcapFacts | Exception | None = None) -> CellResult:
        """Judge the cell from its evidence; `pcap_facts` may be read beforehand (in parallel)."""
        self.stop_processes()
        cell = self.cell
        # Every hop's record of the pod's flows (a single LB: its own), in the cell's lb-events.jsonl.
        lb, flows = chain_lb_record(self.lb.hop_logs(), self.pod.addr if self.pod else None, self.exposed_until,
                                    self.evidence / "lb-events.jsonl")
        return collect_cell(self, BackendEvidence(
            profile=profile_facts(cell),
            evidence_files=EVIDENCE, pcap=pcap_facts, server_ports={API_PORT},
            lb=lb, lb_flows=flows,
            capture=self.capture.ended if self.capture is not None else None,
            lb_helper_died=any(p.kind == "agent" for p in lb_problems), apiserver_died=not cluster_alive,
            late_problems=[p.text for p in lb_problems if p.kind != "agent"],
        ))


EVIDENCE = ("watcher.jsonl", "watcher.stderr", "pod.pcap", "pod.tcpdump.log", "lb-events.jsonl", "commands.log",
            "harness.log", "cell.json")
