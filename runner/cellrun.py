"""One cell on the embedded cluster: set up, run its rounds as the harness, collect its evidence.

The watcher process only watches, as a typical user of its library writes a watch. The harness
is the Updater: every interval it changes ConfigMap `trigger` over the runner's own admin
connection (which never crosses the LB) and waits up to the detection timeout for the watcher's
`event-seen` line. A missed round writes a `failure-<timestamp>` ConfigMap, as the seed did.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from runner.capture import Capture
from runner.clientbuild import BuiltClient
from runner.commands import CommandLog, in_netns
from runner.embedded import EmbeddedCluster
from runner.lb import LoadBalancer, Pod
from runner.model import CellResult, Verdict
from runner.pcapfacts import PcapError, PcapFacts, read_pcap
from runner.plan import Cell
from runner.procs import Child
from runner.verdicts import CellInputs, Update, judge_cell, parse_watcher_log, summarize_lb_events

TRIGGER = "trigger"
OPEN_TIMEOUT = 60.0
WATCHER_STOP_GRACE = 15.0
#: How long the first request of an idle-request round may take before it counts as hung.
FIRST_REQUEST_GRACE = 120.0
API_PORT = 6443


class CellSetupError(Exception):
    pass


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


@dataclass
class CellRun:
    index: int
    cell: Cell
    built: BuiltClient
    cluster: EmbeddedCluster
    lb: LoadBalancer
    evidence: Path
    run_dir: Path
    stop: threading.Event
    setup_error: str | None = None
    namespace: str = ""
    pod: Pod | None = None
    capture: Capture | None = None
    watcher: Child | None = None
    watcher_exit: int | None = None
    updates: list[Update] = field(default_factory=list)
    harness_errors: list[str] = field(default_factory=list)
    started: float | None = None
    finished: float | None = None
    rounds_done: int = 0

    def __post_init__(self) -> None:
        self.evidence.mkdir(parents=True, exist_ok=True)
        self.log = CommandLog(self.evidence / "commands.log")
        self.namespace = f"cell-{self.index:03d}"

    # -- paths ----------------------------------------------------------------------------------
    @property
    def stdout(self) -> Path:
        return self.evidence / "watcher.jsonl"

    @property
    def pcap_path(self) -> Path:
        return self.evidence / "pod.pcap"

    @property
    def stderr(self) -> Path:
        return self.evidence / "watcher.stderr"

    def harness(self, text: str) -> None:
        with (self.evidence / "harness.log").open("a") as f:
            f.write(f"{time.time():.3f} {text}\n")

    # -- setup ----------------------------------------------------------------------------------
    def setup(self, pod: Pod | None = None) -> None:
        """Credentials, the trigger ConfigMap, the pod's capture and the watcher; `pod` may be made
        beforehand (the LB hands out pod slots in order)."""
        try:
            access = self.cluster.watcher_access(self.namespace, server=self.lb.server_url())
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
            self.started = time.time()
            self.watcher = Child(f"watcher {self.cell.id}", in_netns(self.pod.netns, self.built.run_argv()),
                                 stdout=self.stdout, stderr=self.stderr, env=env, log=self.log,
                                 cwd=self.built.src)
        except Exception as exc:
            raise CellSetupError(f"cell setup failed: {exc}") from exc

    def _core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.cluster.admin_api())

    # -- rounds ---------------------------------------------------------------------------------
    def _wait_line(self, pred: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any] | None:
        deadline = time.time() + timeout
        while time.time() < deadline and not self.stop.is_set():
            for line in _jsonl(self.stdout):
                if pred(line):
                    return line
            if self.watcher is not None and not self.watcher.alive():
                # One more read: the line may have been written just before it exited.
                return next((x for x in _jsonl(self.stdout) if pred(x)), None)
            time.sleep(0.05)
        return None

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the run is stopping; True when it is."""
        return self.stop.wait(seconds)

    def run_rounds(self, say: Callable[[str, bool], None]) -> None:
        try:
            if self.cell.scenario == "watch":
                self._run_watch(say)
            else:
                self._run_idle_request(say)
        except Exception as exc:  # a harness fault is evidence for ERROR, never a verdict
            self.harness_errors.append(f"harness: {exc.__class__.__name__}: {exc}")
            self.harness(f"harness error: {exc}")
        finally:
            self.finished = time.time()

    def _run_watch(self, say: Callable[[str, bool], None]) -> None:
        c = self.cell
        opened = self._wait_line(lambda x: x.get("event") in ("watch-opened", "event-seen"), OPEN_TIMEOUT)
        if opened is None:
            if not self.stop.is_set():
                self.harness_errors.append(f"the watcher opened no watch within {OPEN_TIMEOUT:.0f} s")
            return
        core = self._core()
        assert c.interval is not None
        for r in range(1, c.rounds + 1):
            if self._sleep(c.interval):
                return
            if self.watcher is not None and not self.watcher.alive():
                self.harness(f"round {r}: the watcher exited ({self.watcher.returncode}) before the update")
                return
            value = f"round-{r}"
            at = time.time()  # taken before the write: the verdict accepts events from here on
            core.patch_namespaced_config_map(TRIGGER, self.namespace, {"data": {"value": value}})
            self.updates.append(Update(at=at, value=value))
            self.harness(f"round {r}: set {TRIGGER}={value}")
            seen = self._wait_line(lambda x, v=value: x.get("event") == "event-seen" and x.get("name") == TRIGGER
                                   and x.get("value") == v, c.detection_timeout)
            self.rounds_done = r
            if seen is not None:
                self.harness(f"round {r}: seen after {float(seen['ts']) - at:.3f} s")
                say(f"  {c.id}: round {r}/{c.rounds} seen", True)
                continue
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
            core.create_namespaced_config_map(self.namespace, client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=f"failure-{stamp}-r{r}"),
                data={"round": str(r), "expected": value, "updated_at": f"{at:.3f}",
                      "detection_timeout": str(c.detection_timeout)}))
            self.harness(f"round {r}: FAILURE: no event-seen for {value} within {c.detection_timeout} s; "
                         f"wrote failure-{stamp}-r{r}")
            say(f"  {c.id}: round {r}/{c.rounds} MISSED (no event within {c.detection_timeout} s)", True)

    def _run_idle_request(self, say: Callable[[str, bool], None]) -> None:
        c = self.cell
        assert c.idle is not None and self.watcher is not None
        limit = c.rounds * (c.idle + 2 * c.detection_timeout + 30) + 60
        deadline = time.time() + limit
        while self.watcher.alive() and time.time() < deadline:
            hung = self._hung_request(c.detection_timeout + 5)
            if hung is not None:
                # A request that never returns is the finding itself (a stale pooled connection),
                # not a harness fault: stop waiting and let the verdict read it.
                self.harness(f"round {hung.get('round')}: request hung for more than "
                             f"{c.detection_timeout + 5} s; stopping the watcher")
                say(f"  {c.id}: request HUNG (no response within {c.detection_timeout} s)", True)
                return
            if self._sleep(0.2):
                return
        if self.watcher.alive():
            self.harness_errors.append(f"the watcher did not finish its {c.rounds} round(s) within {limit} s")
            return
        say(f"  {c.id}: idle-request finished", True)

    def _hung_request(self, after: float) -> dict[str, Any] | None:
        """The last request-sent line, when no request-done followed it for `after` seconds.

        The first request of a round meets no stale connection, only the process's own warm-up (a
        cold JVM on a busy machine), so it gets FIRST_REQUEST_GRACE before it counts as hung."""
        lines = [x for x in _jsonl(self.stdout) if x.get("event") in ("request-sent", "request-done")]
        if not lines or lines[-1]["event"] != "request-sent":
            return None
        last = lines[-1]
        first_of_round = not any(x["event"] == "request-sent" and x.get("round") == last.get("round")
                                 for x in lines[:-1])
        limit = max(after, FIRST_REQUEST_GRACE) if first_of_round else after
        return last if time.time() - float(last["ts"]) > limit else None

    # -- collect --------------------------------------------------------------------------------
    def stop_processes(self) -> None:
        if self.watcher is not None and self.watcher_exit is None:
            # Generous: on a loaded machine a watcher may need seconds to act on SIGTERM, and a
            # SIGKILL after the grace would read as a crash (ERROR).
            self.watcher_exit = self.watcher.stop(grace=WATCHER_STOP_GRACE)
        if self.capture is not None:
            self.capture.stop()

    def collect(self, lb_problems: list[str], cluster_alive: bool,
                pcap_facts: PcapFacts | Exception | None = None) -> CellResult:
        """Judge the cell from its evidence; `pcap_facts` may be read beforehand (in parallel)."""
        from runner.run_matrix import base_result

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
        events = [e for e in _jsonl(self.lb.events_path)
                  if self.pod is not None and str(e.get("flow", "")).startswith(self.pod.addr + ":")]
        (self.evidence / "lb-events.jsonl").write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in events))
        until = (self.updates[-1].at + cell.detection_timeout) if self.updates else self.finished
        lb = summarize_lb_events(events, pod_ip=self.pod.addr if self.pod else None, until=until)
        from runner.model import ProfileFacts

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

    def interrupted_result(self) -> CellResult:
        from runner.run_matrix import base_result

        r = base_result(self.cell, self.built.descriptor, Verdict.ERROR, "interrupted")
        r.errors.append("the run was interrupted before this cell finished")
        return r
