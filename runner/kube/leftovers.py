"""A crashed run's namespaces on a real cluster: found by label, removed only when provably dead.

Every namespace a run creates carries `app.kubernetes.io/managed-by=watchdrop`, the run id, and
the annotation `watchdrop.io/runner: <host> <pid> <start ticks> <machine id> <boot id>`
(manifests.ANNOTATION_RUNNER). A runner killed with SIGKILL never reaches its teardown; the next
run against the same cluster, or `python -m runner clean MATRIX`, finds those namespaces and
deletes them.

Only a namespace whose name is one a run makes (`watchdrop-<run id>`, `-c<NNN>`, `-k<N>`, with
the run id of its label), whose runner ran on *this* machine in *this* boot (host name, machine
id and boot id all match: host names repeat across machines, and pids and start ticks repeat
across boots) and is no longer running (no such pid, or a pid reused by another process, told
apart by its start time) is deleted. Anything else may belong to a colleague's live run, or be
someone's namespace that merely carries the labels: it is listed with the command that deletes
it, never touched.
"""

from __future__ import annotations

import re
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


MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
_ID = re.compile(r"[0-9a-f-]{16,64}")


def _read_id(*paths: Path) -> str:
    """A machine or boot id, or "?" (unknown: then no mark is ever provably this machine's)."""
    for path in paths:
        try:
            value = path.read_text().strip().lower()
        except OSError:
            continue
        if _ID.fullmatch(value):
            return value
    return "?"


def machine_identity() -> tuple[str, str, str]:
    """(host name, machine id, boot id) of this runner."""
    return socket.gethostname(), _read_id(*MACHINE_ID_FILES), _read_id(BOOT_ID_FILE)


def runner_mark(pid: int) -> str:
    """What a run writes into ANNOTATION_RUNNER: this host, the runner's pid and start time, and
    the machine and boot ids that make the pid and start time mean something."""
    host, machine, boot = machine_identity()
    return f"{host} {pid} {_start_ticks(pid) or '?'} {machine} {boot}"


def mark_state(mark: str, identity: tuple[str, str, str] | None = None) -> str:
    """"alive", "dead" (this machine and boot, the process is gone or the pid was reused) or
    "elsewhere" (another machine or boot, or a mark that proves nothing)."""
    parts = mark.split()
    if len(parts) != 5 or not parts[1].isdigit():
        return "elsewhere"  # unreadable or an older mark: not provably ours, so not provably dead
    name, pid, ticks, machine, boot = parts
    host, my_machine, my_boot = identity or machine_identity()
    if "?" in (my_machine, my_boot) or (name, machine, boot) != (host, my_machine, my_boot):
        return "elsewhere"
    now = _start_ticks(int(pid))
    return "alive" if now is not None and now == ticks else "dead"


def is_run_namespace_name(name: str, run_id: str) -> bool:
    """Whether `name` is one a run with `run_id` makes (manifests.namespace_name / cell namespaces)."""
    return re.fullmatch(rf"watchdrop-{re.escape(run_id)}(?:-c\d{{3,}}|-k\d+)?", name) is not None


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
        # Labels anyone with label rights can set: a name a run would not make is never a leftover.
        state = mark_state(runner) if is_run_namespace_name(str(meta.name), run_id) else "elsewhere"
        found.append(Leftover(str(meta.name), run_id, state, runner))
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
