"""The harness side of one cell, wherever its watcher runs: the Updater's rounds and the cell's result.

The watcher only watches, as a typical user of its library writes a watch. The harness is the
Updater: every interval it changes ConfigMap `trigger` and waits up to the detection timeout for
the watcher's `event-seen` line; a missed round writes a `failure-<timestamp>` ConfigMap, as the
seed did. For idle-request it follows the watcher's own rounds and stops a request that hangs.

HarnessRun holds that loop; a backend supplies where the watcher runs and how the harness writes:
runner/embedded/cell.py (a process in a pod netns behind the LB emulator) and runner/kube/cell.py (a pod
on a real cluster).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from kubernetes import client

from runner.build.clients import BuiltClient
from runner.config.descriptor import Descriptor
from runner.config.plan import Cell
from runner.contract import TRIGGER, WATCH
from runner.evidence import harness_log
from runner.evidence.limits import LineReader, contract_line
from runner.model import CellResult, ProfileFacts, Timings, Verdict
from runner.verdict import Update

OPEN_TIMEOUT = 60.0
#: How long the first request of an idle-request round may take before it counts as hung.
FIRST_REQUEST_GRACE = 120.0
#: Start-up waves: a cell holds its admission slot until its watcher has done its first piece of
#: work (opened its watch, or had its first request answered), or this long.
WARM_BOUND = 20.0
#: The lines that say a watcher is past its own start-up (clients/README.md's events).
WARM_EVENTS = frozenset({"watch-opened", "event-seen", "request-done", "error"})


class CellSetupError(Exception):
    pass


class ConfigMapWriter(Protocol):
    """The two CoreV1Api calls the harness writes `trigger` and `failure-*` with (a CoreV1Api is one)."""

    def patch_namespaced_config_map(self, name: str, namespace: str, body: Any) -> Any: ...

    def create_namespaced_config_map(self, namespace: str, body: Any) -> Any: ...


class Watched(Protocol):
    """The watcher as the round loop sees it: a local process (procs.Child) or a pod (PodWatcher)."""

    def alive(self) -> bool: ...

    @property
    def returncode(self) -> int | None: ...


def profile_facts(cell: Cell) -> ProfileFacts | None:
    """The cell's LB profile as results.json records it, with its chain of hops when it has one."""
    if cell.profile is None:
        return None
    return ProfileFacts.from_profile(cell.profile, path=cell.path.describe() if cell.path else None)


def base_result(cell: Cell, desc: Descriptor, verdict: Verdict, reason: str) -> CellResult:
    """A cell's result with everything the plan knows filled in; the caller adds the evidence."""
    return CellResult(
        client=cell.client, folder=cell.folder, library=desc.library,
        library_version=desc.version_for(cell.build_env),
        api_style=cell.env.get("WATCHDROP_STYLE", desc.api_style), variant_env=dict(cell.env),
        cluster=cell.cluster, profile=profile_facts(cell),
        scenario=cell.scenario,
        timings=Timings(interval=cell.interval, detection_timeout=cell.detection_timeout, rounds=cell.rounds,
                        idle=cell.idle),
        verdict=verdict, reason=reason, build_env=dict(cell.build_env),
    )


def error_result(cell: Cell, desc: Descriptor, reason: str) -> CellResult:
    r = base_result(cell, desc, Verdict.ERROR, reason)
    r.errors.append(reason)
    return r


def _is_event_for(value: str, line: dict[str, Any]) -> bool:
    return line.get("event") == "event-seen" and line.get("name") == TRIGGER and line.get("value") == value


def _done_event() -> threading.Event:
    done = threading.Event()
    done.set()
    return done


@dataclass
class HarnessRun:
    index: int
    cell: Cell
    built: BuiltClient
    evidence: Path
    run_dir: Path
    stop: threading.Event
    setup_error: str | None = None
    #: Set once the backend has set this cell up (or failed to). A backend may return its cells
    #: while setting them up, so that setups overlap the rounds of cells already running.
    setup_done: threading.Event = field(default_factory=_done_event, repr=False)
    namespace: str = ""
    watcher: Watched | None = None
    watcher_exit: int | None = None
    updates: list[Update] = field(default_factory=list)
    harness_errors: list[str] = field(default_factory=list)
    started: float | None = None
    finished: float | None = None
    #: Lines of the watcher's stdout longer than the line cap (cut), as the readers found them.
    stdout_long_lines: int = 0
    #: One reader per cell: each poll reads only what the watcher wrote since the last one.
    _reader: LineReader | None = field(default=None, repr=False)
    #: Lines read but not yet looked at by a wait (a batch may hold more than the line waited for).
    _unseen: deque[dict[str, Any]] = field(default_factory=deque, repr=False)
    #: idle-request: the last request line seen, and the rounds a request was sent for.
    _last_request: dict[str, Any] | None = field(default=None, repr=False)
    _last_first_of_round: bool = field(default=False, repr=False)
    _rounds_sent: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self.evidence.mkdir(parents=True, exist_ok=True)

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

    @property
    def exposed_until(self) -> float | None:
        """The last round's deadline: what an LB did later happened in teardown, which no round saw."""
        return (self.updates[-1].at + self.cell.detection_timeout) if self.updates else self.finished

    def harness(self, text: str, kind: harness_log.Kind = "note", **fields: Any) -> None:
        """One line of harness.log (runner/evidence/harness_log.py: JSON lines, typed by `kind`)."""
        harness_log.append(self.evidence / "harness.log", text, kind, **fields)

    # -- what a backend supplies ------------------------------------------------------------------
    def _core(self) -> ConfigMapWriter:
        """The API the harness writes `trigger` and `failure-*` with."""
        raise NotImplementedError

    def stop_processes(self) -> None:
        """Stop the watcher and its capture; keep the exit code (idempotent)."""
        raise NotImplementedError

    # -- rounds ---------------------------------------------------------------------------------
    def _next_lines(self) -> list[dict[str, Any]]:
        """The contract lines the watcher wrote since the last call, read from where that one stopped."""
        if self._reader is None:
            self._reader = LineReader(self.stdout)
        lines = [obj for text in self._reader.read() if (obj := contract_line(text)) is not None]
        self.stdout_long_lines = max(self.stdout_long_lines, self._reader.long_lines)
        return lines

    def _take(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """The first unseen line that matches, dropping the ones before it; None when none does."""
        while self._unseen:
            line = self._unseen.popleft()
            if pred(line):
                return line
        return None

    def _wait_line(self, pred: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any] | None:
        deadline = time.time() + timeout
        while time.time() < deadline and not self.stop.is_set():
            found = self._take(pred)
            if found is not None:
                return found
            self._unseen.extend(self._next_lines())
            if self._unseen:
                continue
            if self.watcher is not None and not self.watcher.alive():
                # One more read: the line may have been written just before it exited.
                self._unseen.extend(self._next_lines())
                return self._take(pred)
            time.sleep(0.05)
        return None

    def wait_warm(self, bound: float = WARM_BOUND) -> float:
        """Wait until the watcher is past its start-up (a WARM_EVENTS line), has exited, or `bound`
        passed; returns the seconds waited. Reads the file with a reader of its own, so the round
        loop still sees every line."""
        reader, t0 = LineReader(self.stdout), time.monotonic()
        while time.monotonic() - t0 < bound and not self.stop.is_set():
            if any((ln := contract_line(text)) is not None and ln["event"] in WARM_EVENTS for text in reader.read()):
                break
            if self.watcher is None or not self.watcher.alive():
                break
            time.sleep(0.05)
        return time.monotonic() - t0

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the run is stopping; True when it is."""
        return self.stop.wait(seconds)

    def run_rounds(self, say: Callable[[str, bool], None]) -> None:
        while not self.setup_done.wait(0.2):
            if self.stop.is_set():
                return
        if self.setup_error is not None:
            say(f"  {self.cell.id}: setup failed: {self.setup_error}", False)
            return
        try:
            if self.cell.scenario == WATCH:
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
            if self.watcher is not None and not self.watcher.alive():
                self.harness_errors.append(f"the watcher exited (code {self.watcher.returncode}) before it opened "
                                           "a watch")
            elif not self.stop.is_set():
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
            self.harness(f"round {r}: set {TRIGGER}={value}", "update", round=r, value=value)
            seen = self._wait_line(partial(_is_event_for, value), c.detection_timeout)
            if seen is not None:
                after = round(float(seen["ts"]) - at, 3)
                self.harness(f"round {r}: seen after {after:.3f} s", "seen", round=r, after=after)
                say(f"  {c.id}: round {r}/{c.rounds} seen", True)
                continue
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
            core.create_namespaced_config_map(self.namespace, client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=f"failure-{stamp}-r{r}"),
                data={"round": str(r), "expected": value, "updated_at": f"{at:.3f}",
                      "detection_timeout": str(c.detection_timeout)}))
            self.harness(f"round {r}: FAILURE: no event-seen for {value} within {c.detection_timeout} s; "
                         f"wrote failure-{stamp}-r{r}", "failure", round=r)
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
                             f"{c.detection_timeout + 5} s; stopping the watcher", "failure", round=hung.get("round"))
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
        for x in self._next_lines():
            if x.get("event") == "request-sent":
                key = json.dumps(x.get("round"))
                self._last_first_of_round = key not in self._rounds_sent
                self._rounds_sent.add(key)
                self._last_request = x
            elif x.get("event") == "request-done":
                self._last_request = x
        last = self._last_request
        if last is None or last["event"] != "request-sent":
            return None
        limit = max(after, FIRST_REQUEST_GRACE) if self._last_first_of_round else after
        return last if time.time() - float(last["ts"]) > limit else None
