"""A crashed run's namespaces on a real cluster: found by label, removed only when provably dead.

Every namespace a run creates carries `app.kubernetes.io/managed-by=watchdrop`, the run id, and
the annotation `watchdrop.io/runner: <host> <pid> <start ticks>` (manifests.ANNOTATION_RUNNER).
A runner killed with SIGKILL never reaches its teardown; the next run against the same cluster,
or `python -m runner clean MATRIX`, finds those namespaces and deletes them.

Only a namespace whose runner ran on *this* host and is no longer running (no such pid, or a pid
reused by another process, told apart by its start time) is deleted. A namespace from another
host may belong to a colleague's live run: it is listed with the command that deletes it, never
touched.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client
from kubernetes.client.rest import ApiException

from runner.kube import manifests as m

Say = Callable[[str], None]


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] if len(fields) > 19 else None


def runner_mark(pid: int) -> str:
    """What a run writes into ANNOTATION_RUNNER: this host, the runner's pid and its start time."""
    return f"{socket.gethostname()} {pid} {_start_ticks(pid) or '?'}"


def mark_state(mark: str, host: str | None = None) -> str:
    """"alive", "dead" (this host, the process is gone or the pid was reused) or "elsewhere"."""
    parts = mark.split()
    if len(parts) != 3 or not parts[1].isdigit():
        return "elsewhere"  # unreadable: not provably ours, so not provably dead
    name, pid, ticks = parts
    if name != (host or socket.gethostname()):
        return "elsewhere"
    now = _start_ticks(int(pid))
    return "alive" if now is not None and now == ticks else "dead"


@dataclass(frozen=True)
class Leftover:
    namespace: str
    run_id: str
    state: str  # mark_state's answer
    runner: str


def find(core: client.CoreV1Api, *, own_run_id: str, timeout: tuple[float, float]) -> list[Leftover]:
    """Namespaces the project made for other runs that are not being deleted already."""
    items = core.list_namespace(label_selector=f"{m.LABEL_MANAGED}={m.MANAGER}", _request_timeout=timeout).items
    found = []
    for ns in items:
        meta = ns.metadata
        if meta is None or meta.deletion_timestamp is not None:
            continue
        run_id = (meta.labels or {}).get(m.LABEL_RUN, "")
        if not run_id or run_id == own_run_id:
            continue
        runner = (meta.annotations or {}).get(m.ANNOTATION_RUNNER, "")
        found.append(Leftover(str(meta.name), run_id, mark_state(runner), runner))
    return sorted(found, key=lambda x: x.namespace)


def remove(core: client.CoreV1Api, *, own_run_id: str, timeout: tuple[float, float], say: Say,
           delete_hint: Callable[[str], str]) -> list[str]:
    """Delete the dead runs' namespaces (without waiting for them to go); returns their names.
    `delete_hint(run_id)` is the command shown for namespaces left alone."""
    removed = []
    elsewhere: dict[str, list[Leftover]] = {}
    for left in find(core, own_run_id=own_run_id, timeout=timeout):
        if left.state == "dead":
            try:
                core.delete_namespace(left.namespace, propagation_policy="Background", _request_timeout=timeout)
            except ApiException as exc:
                if exc.status != 404:
                    say(f"could not delete namespace {left.namespace} of crashed run {left.run_id}: "
                        f"{exc.status} {exc.reason}")
                continue
            say(f"removed namespace {left.namespace} of crashed run {left.run_id} ({left.runner})")
            removed.append(left.namespace)
        elif left.state == "elsewhere":
            elsewhere.setdefault(left.run_id, []).append(left)
    # One line per foreign run, however many namespaces it has (a run makes one per cell).
    for run_id, lefts in sorted(elsewhere.items()):
        names = (f"namespace {lefts[0].namespace}" if len(lefts) == 1
                 else f"{len(lefts)} namespaces ({lefts[0].namespace}, ...)")
        host = lefts[0].runner.split()[0] if lefts[0].runner else "an unknown host"
        say(f"left alone: {names} of run {run_id}, started on {host}; if that run is over: "
            f"{delete_hint(run_id)}")
    return removed
