"""A pod as the runner sees it from outside: whether it started, why it did not, and the watcher's
log lines followed over a stream that may go stale (runner/kube/cell.py uses these).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from runner.evidence.limits import LINE_MAX, contract_line, file_size, log_limit
from runner.kube import manifests as m
from runner.kube.api import (
    REQUEST_TIMEOUT,
    NewApi,
    Say,
    api_error,
)
from runner.model import Cut
from runner.verdict import EARLY_SLACK, Update

#: Waiting reasons that no amount of waiting fixes.
FATAL_WAITING = {"InvalidImageName", "CreateContainerConfigError", "CreateContainerError", "ErrImageNeverPull",
                 "RunContainerError", "PostStartHookError"}

# -- pod status ---------------------------------------------------------------------------------------


def container_statuses(pod: client.V1Pod) -> dict[str, client.V1ContainerStatus]:
    st = pod.status
    return {cs.name: cs for cs in ((st.container_statuses if st else None) or [])}


def _terminated(cs: client.V1ContainerStatus | None) -> client.V1ContainerStateTerminated | None:
    if cs is None or cs.state is None:
        return None
    return cs.state.terminated


def _limit(pod: client.V1Pod, container: str) -> str:
    for c in (pod.spec.containers if pod.spec else []) or []:
        if c.name == container and c.resources and c.resources.limits:
            return str(c.resources.limits.get("memory", "?"))
    return "?"


def pod_problem(pod: client.V1Pod) -> str | None:
    """A reason the pod's evidence cannot be judged (evicted, OOM-killed, capture gone), or None."""
    st = pod.status
    if st is not None and st.reason == "Evicted":
        return f"pod evicted: {st.message or 'no message'}"
    statuses = container_statuses(pod)
    for name, cs in statuses.items():
        for state in (cs.state, cs.last_state):
            term = state.terminated if state is not None else None
            if term is not None and term.reason == "OOMKilled":
                return f"{name} container OOM-killed (memory limit {_limit(pod, name)})"
    cap = _terminated(statuses.get(m.CAPTURE_CONTAINER))
    if cap is not None:  # the runner only ever stops tcpdump, never the sidecar itself
        return f"capture sidecar ended early ({cap.reason or 'exit'} {cap.exit_code}): no packet evidence after it"
    if st is not None and st.phase == "Failed" and st.reason:
        return f"pod failed: {st.reason}: {st.message or ''}".strip()
    return None


def describe_pod(pod: client.V1Pod | None, events: Sequence[client.CoreV1Event] = ()) -> str:
    """Phase, conditions, container waiting/terminated reasons and the last warnings, in one line."""
    if pod is None:
        return "the pod does not exist"
    st = pod.status
    parts = [f"phase {(st.phase if st else None) or 'unknown'}"]
    conditions = (st.conditions if st else None) or []
    if not conditions:
        parts.append("no conditions (never scheduled: no scheduler acted on it or no node was assigned)")
    for c in conditions:
        if c.status != "True":
            parts.append(f"{c.type}={c.status}" + (f" ({c.reason}: {c.message})" if c.reason else ""))
    for name, cs in container_statuses(pod).items():
        if cs.state is None:
            continue
        if cs.state.waiting is not None:
            w = cs.state.waiting
            parts.append(f"{name} waiting: {w.reason}" + (f" ({w.message})" if w.message else ""))
        elif cs.state.terminated is not None:
            t = cs.state.terminated
            parts.append(f"{name} terminated: {t.reason} exit {t.exit_code}" + (f" ({t.message})" if t.message else ""))
    warnings = [e for e in events if e.type == "Warning"][-3:]
    for e in warnings:
        parts.append(f"event {e.reason}: {e.message}")
    if not events:
        parts.append("no events")
    return "; ".join(parts)


def start_state(pod: client.V1Pod) -> tuple[str, str | None]:
    """("running", None), ("waiting", None) or ("failed", why) for a pod the runner is starting."""
    problem = pod_problem(pod)
    if problem:
        return "failed", problem
    st = pod.status
    if st is not None and st.phase in ("Succeeded", "Failed"):
        return "failed", f"pod {st.phase.lower()} before the watcher ran"
    statuses = container_statuses(pod)
    for name, cs in statuses.items():
        waiting = cs.state.waiting if cs.state is not None else None
        if waiting is not None and waiting.reason in FATAL_WAITING:
            return "failed", f"{name}: {waiting.reason}: {waiting.message or ''}".strip()
    cap, wat = statuses.get(m.CAPTURE_CONTAINER), statuses.get(m.WATCHER_CONTAINER)
    cap_running = cap is not None and cap.state is not None and cap.state.running is not None
    wat_started = wat is not None and wat.state is not None and (
        wat.state.running is not None or wat.state.terminated is not None)
    return ("running", None) if cap_running and wat_started else ("waiting", None)


# -- the watcher as seen from outside -----------------------------------------------------------------


class LineSink:
    """Where the watcher's log lines go: JSON objects to `jsonl` (what the harness and the verdict
    read), the rest to `other`, everything verbatim to `raw`; receipt times for the clock check.

    Bounded like the embedded backend's files (runner/evidence/limits.py): a line longer than
    LINE_MAX is cut to it and counted, each file stops at `limit` bytes, and what was cut is
    reported by `cuts()`. A cut line that began like a JSON object counts against `jsonl`: it may
    have been a contract line.
    """

    def __init__(self, jsonl: Path, other: Path, raw: Path, limit: int | None = None):
        self.jsonl, self.other, self.raw = jsonl, other, raw
        self.limit = log_limit() if limit is None else limit
        self.seen = 0
        self.received: list[tuple[float, float]] = []
        self.long_json = 0
        self.long_other = 0
        self._sizes: dict[Path, int] = {}
        for p in (jsonl, other, raw):
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch()
            self._sizes[p] = file_size(p)

    def _append(self, path: Path, text: str) -> bool:
        """Write a line unless the file is full; the last write fills it to exactly `limit`."""
        room = self.limit - self._sizes[path]
        if room <= 0:
            return False
        data = (text + "\n").encode("utf-8", "replace")[:room]
        with path.open("ab") as f:
            f.write(data)
        self._sizes[path] += len(data)
        return len(data) == len(text.encode("utf-8", "replace")) + 1

    def emit(self, line: bytes, now: float | None = None) -> None:
        now = time.time() if now is None else now
        long = len(line) > LINE_MAX
        line = line[:LINE_MAX]
        text = line.decode("utf-8", "replace").rstrip("\r")
        self._append(self.raw, text)
        if long:
            if text.lstrip().startswith("{"):
                self.long_json += 1
            else:
                self.long_other += 1
        obj = contract_line(text) if not long else None
        if obj is None and not long:
            try:
                other = json.loads(text)
            except ValueError:
                other = None
            # A JSON object outside the contract still goes to jsonl, as before (the verdict skips it).
            if isinstance(other, dict):
                obj = other
        target = self.jsonl if isinstance(obj, dict) else self.other
        written = self._append(target, text)
        if written and isinstance(obj, dict) and isinstance(obj.get("ts"), int | float):
            self.received.append((now, float(obj["ts"])))

    def cuts(self) -> list[Cut]:
        """What was cut, by file (runner.model.Cut)."""
        out = []
        for name, path, long in (("watcher.jsonl", self.jsonl, self.long_json),
                                 ("watcher.stderr", self.other, self.long_other), ("watcher.log", self.raw, 0)):
            capped = self.limit if self._sizes[path] >= self.limit else None
            if long or capped is not None:
                out.append(Cut(file=name, long_lines=long, capped_at=capped))
        return out

    def feed_stream(self, chunks: Iterable[bytes], *, final: bool = False) -> None:
        """One read of the whole log from its start: skip the lines already emitted, emit the rest.
        A trailing line without newline is kept for the next read unless this is the final one.
        At most LINE_MAX (+ one chunk) bytes are held: a longer line is emitted cut once it passes
        LINE_MAX, and its rest is skipped up to its newline."""
        count = 0
        buf = b""
        skipping = False
        for chunk in chunks:
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if skipping:
                    skipping = False  # the tail of a line already emitted cut
                    continue
                count += 1
                if count > self.seen:
                    self.emit(line)
                    self.seen = count
            if skipping:
                buf = b""
            elif len(buf) > LINE_MAX:
                count += 1
                if count > self.seen:
                    self.emit(buf)
                    self.seen = count
                buf, skipping = b"", True
        if final and buf and not skipping:
            count += 1
            if count > self.seen:
                self.emit(buf)
                self.seen = count


class PodWatcher:
    """The watcher container seen from outside: lines as they arrive, alive or not, exit code.

    What the harness's round loop asks a watcher (runner/harness.Watched: `alive()`, `returncode`).
    """

    def __init__(self, new_api: NewApi, ns: str, sink: LineSink, *, read_timeout: float, note: Say):
        self.new_api, self.ns, self.sink, self.read_timeout = new_api, ns, sink, read_timeout
        self._note, self._last_note = note, ""
        self.ended = threading.Event()
        self.closed = threading.Event()
        self.pod: client.V1Pod | None = None
        self.gone = False
        self._thread = threading.Thread(target=self._run, name=f"logs {ns}", daemon=True)

    def start(self) -> PodWatcher:
        self._thread.start()
        return self

    def note(self, text: str) -> None:
        """Into the harness log, once per distinct message (a refused stream is retried every 0.5 s)."""
        if text != self._last_note:
            self._last_note = text
            self._note(text)

    def alive(self) -> bool:
        return not self.ended.is_set()

    @property
    def termination(self) -> client.V1ContainerStateTerminated | None:
        return _terminated(container_statuses(self.pod).get(m.WATCHER_CONTAINER)) if self.pod is not None else None

    @property
    def returncode(self) -> int | None:
        term = self.termination
        return term.exit_code if term is not None else None

    def wait_ended(self, timeout: float) -> bool:
        return self.ended.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        self.closed.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def refresh(self) -> client.V1Pod | None:
        api = self.new_api()
        try:
            core = client.CoreV1Api(api)
            self.pod = core.read_namespaced_pod(m.WATCHER_POD, self.ns, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                self.gone = True
                return None
            self.note(f"pod status: {api_error(exc)}")
        except Exception as exc:
            self.note(f"pod status: {api_error(exc)}")
        finally:
            api.close()
        return self.pod

    def _read(self, follow: bool) -> None:
        api = self.new_api()
        resp: Any = None
        try:
            resp = client.CoreV1Api(api).read_namespaced_pod_log(
                m.WATCHER_POD, self.ns, container=m.WATCHER_CONTAINER, follow=follow, _preload_content=False,
                _request_timeout=(REQUEST_TIMEOUT[0], self.read_timeout))
            self.sink.feed_stream(resp.stream(8192), final=not follow)
        except Exception as exc:  # read timeout (silence), a cut stream, the API refusing: read again
            if not follow or "timed out" not in str(exc).lower():
                self.note(f"log stream: {api_error(exc)}")
        finally:
            if resp is not None:
                resp.release_conn()
            api.close()

    def _run(self) -> None:
        while not self.closed.is_set():
            self._read(follow=True)
            pod = self.refresh()
            if self.gone or (pod is not None and self.termination is not None) or (
                    pod is not None and pod.status is not None and pod.status.phase in ("Succeeded", "Failed")):
                if not self.gone:
                    self._read(follow=False)
                self.ended.set()
                return
            self.closed.wait(0.5)
        self.ended.set()


def clock_problems(received: Sequence[tuple[float, float]], lines: Sequence[Mapping[str, Any]],
                   updates: Sequence[Update]) -> list[str]:
    """Evidence that the node's clock and the runner's disagree by more than the verdict tolerates.

    The watcher's `ts` and the capture come from the node's clock, the harness's update times from
    the runner's. A line stamped after the runner received it proves the node ahead; an event
    carrying a round's unique value stamped before the runner wrote it proves the node behind.
    """
    problems = []
    ahead = max((ts - recv for recv, ts in received), default=0.0)
    if ahead > EARLY_SLACK:
        problems.append(f"the node's clock is at least {ahead:.1f} s ahead of the runner's (a line was stamped "
                        "after the runner received it); sync both clocks (NTP) and run again")
    for u in updates:
        early = [float(x["ts"]) for x in lines if x.get("event") == "event-seen" and x.get("value") == u.value
                 and isinstance(x.get("ts"), int | float)]
        if early and min(early) < u.at - EARLY_SLACK:
            problems.append(f"the node's clock is at least {u.at - min(early):.1f} s behind the runner's (the "
                            f"event for {u.value} is stamped before the runner wrote it); sync both clocks (NTP) "
                            "and run again")
            break
    return problems


