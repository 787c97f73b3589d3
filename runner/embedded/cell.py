"""One cell on the embedded cluster: the watcher as a process in its pod netns behind the LB emulator.

The harness (runner/harness.py) writes over the runner's own admin connection, which never
crosses the LB; the evidence is the watcher's lines, the pod's capture and the LB's event log.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

from kubernetes import client

from runner.embedded.cluster import EmbeddedCluster
from runner.embedded.lb import LoadBalancer, Pod
from runner.evidence.pcap import PcapError, PcapFacts, read_pcap
from runner.harness import TRIGGER, CellSetupError, HarnessRun, base_result, read_jsonl
from runner.host import sandbox
from runner.host.capture import Capture
from runner.host.commands import CommandLog, in_netns
from runner.host.netns import BLOCKS
from runner.host.procs import Child
from runner.model import CellResult, ProfileFacts
from runner.verdict import CellInputs, judge_cell, parse_watcher_log, summarize_lb_events

WATCHER_STOP_GRACE = 15.0
API_PORT = 6443


@dataclass
class CellRun(HarnessRun):
    cluster: EmbeddedCluster = field(kw_only=True)
    lb: LoadBalancer = field(kw_only=True)
    pod: Pod | None = None
    capture: Capture | None = None
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
            access = self.cluster.watcher_access(self.namespace, server=self.lb.server_url(), owner_uid=uid)
            self.harness(f"namespace {self.namespace}: ServiceAccount, Role (configmaps get/list/watch), "
                         "RoleBinding, token")
            if self.cell.scenario == "watch":
                self._core().create_namespaced_config_map(self.namespace, client.V1ConfigMap(
                    metadata=client.V1ObjectMeta(name=TRIGGER), data={"value": "initial"}))
            self.pod = pod or self.lb.add_pod(log=self.log)
            # Test hook: WATCHDROP_TEST_BROKEN_CAPTURE=<client> makes that client's capture fail to start,
            # so tests can prove a cell without packet evidence is ERROR.
            broken = os.environ.get("WATCHDROP_TEST_BROKEN_CAPTURE") == self.cell.client
            self.capture = Capture(self.pod.netns, self.pod.iface, self.evidence / "pod.pcap", self.log,
                                   tcpdump="false" if broken else "tcpdump").start()
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
            self.process = Child(f"watcher {self.cell.id}", in_netns(self.pod.netns, argv),
                                 stdout=self.stdout, stderr=self.stderr, env=env, log=self.log,
                                 cwd=self.built.src, inherit_env=uid is None)
            self.watcher = self.process
        except Exception as exc:
            raise CellSetupError(f"cell setup failed: {exc}") from exc

    def _core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.cluster.admin_api())

    # -- collect --------------------------------------------------------------------------------
    def stop_processes(self) -> None:
        if self.process is not None and self.watcher_exit is None:
            # Generous: on a loaded machine a watcher may need seconds to act on SIGTERM, and a
            # SIGKILL after the grace would read as a crash (ERROR).
            self.watcher_exit = self.process.stop(grace=WATCHER_STOP_GRACE)
        if self.capture is not None:
            self.capture.stop()

    def collect(self, lb_problems: list[str], cluster_alive: bool,
                pcap_facts: PcapFacts | Exception | None = None) -> CellResult:
        """Judge the cell from its evidence; `pcap_facts` may be read beforehand (in parallel)."""
        self.stop_processes()
        cell, desc = self.cell, self.built.descriptor
        errors = list(self.harness_errors)
        if self.setup_error:
            errors.append(self.setup_error)
        pcap = None
        try:
            if isinstance(pcap_facts, Exception):
                raise pcap_facts
            pcap = pcap_facts or read_pcap(self.pcap_path, server_ports={API_PORT})
        except (PcapError, OSError) as exc:
            errors.append(f"no packet evidence: {exc}")
        events = [e for e in read_jsonl(self.lb.events_path)
                  if self.pod is not None and str(e.get("flow", "")).startswith(self.pod.addr + ":")]
        (self.evidence / "lb-events.jsonl").write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in events))
        until = (self.updates[-1].at + cell.detection_timeout) if self.updates else self.finished
        lb = summarize_lb_events(events, pod_ip=self.pod.addr if self.pod else None, until=until)
        inputs = CellInputs(
            scenario=cell.scenario, detection_timeout=cell.detection_timeout, expected_rounds=cell.rounds,
            profile=ProfileFacts.from_profile(cell.profile) if cell.profile else None,
            updates=self.updates,
            watcher_lines=parse_watcher_log(self.stdout.read_text(errors="replace")) if self.stdout.exists() else None,
            watcher_exit=self.watcher_exit,
            watcher_stderr=self.stderr.read_text(errors="replace") if self.stderr.exists() else "",
            pcap=pcap, lb=lb,
            lb_helper_died=any("agent" in p for p in lb_problems),
            apiserver_died=not cluster_alive,
            harness_errors=errors + [p for p in lb_problems if "agent" not in p],
            expected_version=desc.version_for(cell.build_env),
        )
        j = judge_cell(inputs)
        result = base_result(cell, desc, j.verdict, j.reason)
        result.rounds = j.rounds
        result.watcher = j.watcher
        result.pcap = pcap.to_dict() if pcap else None
        result.lb = lb
        result.keepalive = pcap.keepalive_summary() if pcap else ""
        result.errors = list(inputs.harness_errors) + (["LB agent died"] if inputs.lb_helper_died else []) + (
            ["kube-apiserver died"] if inputs.apiserver_died else [])
        result.started, result.finished = self.started, self.finished
        rel = self.evidence.relative_to(self.run_dir)
        result.evidence = {name: str(rel / name) for name in
                           ("watcher.jsonl", "watcher.stderr", "pod.pcap", "lb-events.jsonl", "commands.log",
                            "harness.log", "cell.json") if (self.evidence / name).exists() or name == "cell.json"}
        (self.evidence / "cell.json").write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
        return result
