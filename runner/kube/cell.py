"""One cell on a real cluster: HarnessRun's rounds (runner/harness.py) with a pod instead of a process.

The harness writes over a new connection per write (FreshCoreV1Api) and reads the watcher's lines
from the pod's log stream; evidence is the embedded layout plus the pod's status and events.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from runner.collect import BackendEvidence, collect_cell
from runner.evidence.lb_events import RecordingLb, chain_lb_record
from runner.evidence.limits import file_size, pcap_limit, tcpdump_dropped
from runner.evidence.pcap import PcapFacts
from runner.harness import CellSetupError, ConfigMapWriter, HarnessRun, profile_facts
from runner.host.procs import escalate
from runner.kube import manifests as m
from runner.kube.api import (
    REQUEST_TIMEOUT,
    FreshCoreV1Api,
    KubeAccess,
    KubeSettings,
    NewApi,
    Obj,
    api_error,
    apply_all,
    copy_capture,
    exec_in,
)
from runner.kube.pods import LineSink, PodWatcher, clock_problems, pod_problem
from runner.model import CaptureFacts, CellResult


@dataclass
class KubeCellRun(HarnessRun):
    """One cell on a real cluster: the harness's rounds, with a pod instead of a process."""

    run_id: str = field(kw_only=True)
    access: KubeAccess = field(kw_only=True)
    settings: KubeSettings = field(default_factory=KubeSettings)
    objects: list[Obj] = field(default_factory=list)
    pull_secrets: list[Obj] = field(default_factory=list)
    pod_watcher: PodWatcher | None = None
    pod_started: bool = False
    pod_problems: list[str] = field(default_factory=list)
    #: How the capture sidecar's tcpdump ended; None until stopped (or when it could not be told).
    capture: CaptureFacts | None = None
    #: An emulated LB in the pods' API path that keeps a record (a `local` cluster's), given by the
    #: cluster's provider; None on a provider's cluster, whose LB tells nothing.
    lb: RecordingLb | None = None
    #: The pod's address, as the LB sees its flows' client end (kube-proxy does not masquerade pods).
    pod_ip: str | None = None
    _stopped: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.namespace = m.cell_namespace(self.run_id, self.index)

    @property
    def new_api(self) -> NewApi:
        return self.access.new_api

    def _core(self) -> ConfigMapWriter:
        return FreshCoreV1Api(self.new_api)

    # -- deploy ---------------------------------------------------------------------------------
    def setup(self) -> None:
        """Apply the cell's objects (the pod last)."""
        (self.evidence / "manifests.json").write_text(json.dumps(
            self.objects + [{"kind": "Secret", "name": s["metadata"]["name"], "note": "copied, not recorded"}
                            for s in self.pull_secrets], indent=2) + "\n")
        api = self.new_api()
        try:
            apply_all(api, m.with_secrets(self.objects, self.pull_secrets), self.harness)
        except Exception as exc:
            raise CellSetupError(f"cell setup failed: {api_error(exc)}") from exc
        finally:
            api.close()

    def started_now(self, pod_ip: str | None = None) -> None:
        self.pod_started = True
        self.pod_ip = pod_ip
        self.started = time.time()
        self.pod_watcher = PodWatcher(self.new_api, self.namespace, LineSink(self.stdout, self.stderr,
                                                                            self.evidence / "watcher.log"),
                                      read_timeout=self.settings.log_read_timeout, note=self.harness).start()
        self.watcher = self.pod_watcher  # the round loop asks it `alive()` and `returncode`
        self.harness("pod running; following the watcher's log")

    # -- stop and collect -----------------------------------------------------------------------
    def _signal(self, sig: str) -> str:
        r = exec_in(self.new_api, self.namespace, m.WATCHER_POD, m.CAPTURE_CONTAINER,
                    ["/bin/sh", "-c", m.SIGNAL_WATCHER_SCRIPT, "signal", sig], self.settings.exec_timeout)
        return r.text() if r.rc == 0 else f"exit {r.rc}: {r.text()}"

    def _send(self, sig: signal.Signals) -> None:
        """The watcher's signal, sent through exec in the capture sidecar (it shares the pod's pid namespace)."""
        if sig == signal.SIGTERM:
            self.harness(f"stop: SIGTERM to the watcher: {self._signal('TERM')}")
        else:
            self.harness(f"stop: no exit within {self.settings.stop_timeout:.0f} s; SIGKILL: {self._signal('KILL')}")

    def stop_processes(self) -> None:
        """SIGTERM the watcher (SIGKILL after stop_timeout), then stop the capture and copy it out."""
        if self._stopped or not self.pod_started or self.pod_watcher is None:
            return
        self._stopped = True
        w = self.pod_watcher
        try:
            if w.alive() and not escalate(self._send, lambda: not w.alive(), grace=self.settings.stop_timeout,
                                          kill_wait=self.settings.stop_timeout):
                self.harness_errors.append("the watcher did not stop after SIGKILL")
            pod = w.refresh()
            self.watcher_exit = w.returncode
            term = w.termination
            if term is not None:
                self.harness(f"watcher exited: {term.reason} exit {term.exit_code}")
            if pod is not None:
                problem = pod_problem(pod)
                if problem:
                    self.pod_problems.append(problem)
            elif w.gone:
                self.pod_problems.append("the pod disappeared during the cell (deleted, or its node was lost)")
            if not w.gone:
                copied = copy_capture(self.new_api, self.namespace, m.WATCHER_POD, self.evidence,
                                      timeout=self.settings.exec_timeout)
                for p in copied.problems:
                    self.harness(p)
                self.capture = capture_facts(copied.stopped, self.evidence / "tcpdump.log", self.pcap_path)
                if self.capture is None:
                    self.harness(f"no account of how the capture ended (sidecar said {copied.stopped!r})")
        except Exception as exc:
            self.harness_errors.append(f"stopping the pod: {api_error(exc)}")
        finally:
            w.close()
            self.finished = self.finished or time.time()

    def snapshot(self) -> None:
        """The pod's last status and its namespace's events, as evidence (no tokens in either)."""
        api = self.new_api()
        core = client.CoreV1Api(api)
        try:
            try:
                pod = core.read_namespaced_pod(m.WATCHER_POD, self.namespace, _request_timeout=REQUEST_TIMEOUT)
                (self.evidence / "pod.json").write_text(json.dumps(api.sanitize_for_serialization(pod.status),
                                                                   indent=2, sort_keys=True) + "\n")
            except ApiException as exc:
                if exc.status != 404:
                    self.harness(f"pod status: {api_error(exc)}")
            events = core.list_namespaced_event(self.namespace, _request_timeout=REQUEST_TIMEOUT).items
            (self.evidence / "events.json").write_text(json.dumps(
                [event_record(e) for e in events], indent=2, sort_keys=True) + "\n")
        except Exception as exc:
            self.harness(f"events: {api_error(exc)}")
        finally:
            api.close()

    def collect(self, pcap_facts: PcapFacts | Exception | None = None) -> CellResult:
        """Stop, copy out and judge; `pcap_facts`, when given, is the capture already read."""
        self.stop_processes()
        self.snapshot()
        lb_problems = self.lb.problems() if self.lb is not None else []
        # Every hop's record of the pod's flows (a single LB: its own), as the embedded cells read it.
        lb, flows = (chain_lb_record(self.lb.hop_logs(), self.pod_ip, self.exposed_until,
                                     self.evidence / "lb-events.jsonl") if self.lb is not None else (None, []))

        def line_problems(lines: Sequence[Mapping[str, Any]] | None) -> list[str]:
            if self.pod_watcher is None:
                return []
            clock = clock_problems(self.pod_watcher.sink.received, lines or [], self.updates)
            (self.evidence / "clock.json").write_text(json.dumps({
                "max_line_ahead_of_receipt": max((ts - r for r, ts in self.pod_watcher.sink.received),
                                                 default=None),
                "problems": clock}, indent=2) + "\n")
            return clock

        # The pod makes only the watcher's connections and the capture starts first, so each SYN
        # names the server end; no port filter (kube-proxy may or may not rewrite 443).
        return collect_cell(self, BackendEvidence(
            profile=profile_facts(self.cell) if self.lb is not None else None,
            evidence_files=EVIDENCE,
            pcap=pcap_facts, ran=self.pod_started, problems=self.pod_problems, line_problems=line_problems,
            capture=self.capture, cuts=self.pod_watcher.sink.cuts() if self.pod_watcher is not None else [],
            lb=lb, lb_flows=flows, lb_helper_died=any(p.kind == "agent" for p in lb_problems),
            late_problems=[p.text for p in lb_problems if p.kind != "agent"],
        ))


def capture_facts(stopped: str, log: Path, pcap: Path) -> CaptureFacts | None:
    """CaptureFacts from the sidecar's `stopped` record ("<exit code> asked|early", manifests.CAPTURE_SCRIPT)
    and the copied tcpdump.log and pod.pcap; None when the record is not that."""
    parts = stopped.split()
    if len(parts) != 2 or not parts[0].isdigit() or parts[1] not in ("asked", "early"):
        return None
    try:
        text = log.read_text(errors="replace")[-4096:]
    except OSError:
        text = ""
    # The shell reports a death by signal N as 128+N; keep tcpdump's own -N like the embedded side.
    code = int(parts[0])
    return CaptureFacts(ran_to_end=parts[1] == "asked", exit_code=-(code - 128) if code > 128 else code,
                        dropped=tcpdump_dropped(text), size=file_size(pcap), limit=pcap_limit())


EVIDENCE = ("watcher.jsonl", "watcher.stderr", "watcher.log", "pod.pcap", "tcpdump.log", "events.json", "pod.json",
            "manifests.json", "clock.json", "lb-events.jsonl", "harness.log", "cell.json")


def event_record(e: client.CoreV1Event) -> Obj:
    involved = e.involved_object
    return {"type": e.type, "reason": e.reason, "message": e.message, "count": e.count,
            "object": f"{involved.kind}/{involved.name}" if involved else None,
            "first": str(e.first_timestamp or e.event_time or ""), "last": str(e.last_timestamp or "")}


