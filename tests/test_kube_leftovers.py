"""Telling a crashed run's namespaces from a live run's by the runner mark they carry."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from runner.kube import leftovers
from runner.kube.leftovers import mark_state, runner_mark


def test_a_live_runner_on_this_host_is_alive() -> None:
    assert mark_state(runner_mark(os.getpid())) == "alive"


def test_a_runner_that_exited_is_dead() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    mark = runner_mark(proc.pid)
    proc.wait()
    assert mark_state(mark) == "dead"


def test_a_reused_pid_is_not_the_runner() -> None:
    host, pid, ticks, machine, boot = runner_mark(os.getpid()).split()
    assert mark_state(f"{host} {pid} {int(ticks) - 1} {machine} {boot}") == "dead"


def test_the_mark_names_this_machine_and_boot_and_both_must_match() -> None:
    """Host names repeat across machines, pids and start ticks across boots: a dead-looking mark
    from another machine or an earlier boot with this host name is not provably this machine's."""
    machine = Path("/etc/machine-id").read_text().strip()
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    mark = runner_mark(proc.pid)
    proc.wait()
    host, pid, ticks, *ids = mark.split()
    assert ids == [machine, boot]
    assert mark_state(mark) == "dead"
    assert mark_state(f"{host} {pid} {ticks} {'0' * 32} {boot}") == "elsewhere"     # a twin host name
    assert mark_state(f"{host} {pid} {ticks} {machine} {'0' * 8}-0000-0000-0000-{'0' * 12}") == "elsewhere"
    assert mark_state(f"{host} {pid} {ticks}") == "elsewhere"  # an older mark proves nothing


def test_a_namespace_is_a_leftover_only_under_a_name_its_run_makes() -> None:
    assert leftovers.is_run_namespace_name("watchdrop-dddddd", "dddddd")
    assert leftovers.is_run_namespace_name("watchdrop-dddddd-c012", "dddddd")
    assert leftovers.is_run_namespace_name("watchdrop-dddddd-k1", "dddddd")
    for name in ("kube-system", "watchdrop-aaaaaa", "watchdrop-dddddd-prod", "team-watchdrop-dddddd"):
        assert not leftovers.is_run_namespace_name(name, "dddddd")


def test_another_hosts_or_an_unreadable_mark_is_never_taken_for_dead() -> None:
    _, pid, ticks, machine, boot = runner_mark(os.getpid()).split()
    assert mark_state(f"not-{socket.gethostname()} 999999 1 {machine} {boot}") == "elsewhere"
    assert mark_state(f"other {pid} {ticks} {machine} {boot}") == "elsewhere"
    for garbage in ("", "host", "host pid ticks", "a b c d"):
        assert mark_state(garbage) == "elsewhere"


def test_a_process_name_with_spaces_and_parentheses_reads_right() -> None:
    # /proc/PID/stat's second field is the command name in parentheses; it may contain both.
    child = "import time; open('/proc/self/comm', 'w').write('a) b (c'); print(flush=True); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline()
        with open(f"/proc/{proc.pid}/comm") as f:
            assert f.read().strip() == "a) b (c"
        assert mark_state(runner_mark(proc.pid)) == "alive"
    finally:
        proc.kill()
        proc.wait()


def test_only_dead_runs_are_deleted_and_each_foreign_run_is_named_once() -> None:
    """remove() over a namespace list (a stand-in CoreV1Api: pure logic, no cluster)."""
    from types import SimpleNamespace

    from runner.kube import manifests as m
    from runner.kube.leftovers import remove

    dead_proc = subprocess.Popen([sys.executable, "-c", "pass"])
    dead = runner_mark(dead_proc.pid)
    dead_proc.wait()

    def ns(name: str, run_id: str, mark: str) -> SimpleNamespace:
        return SimpleNamespace(metadata=SimpleNamespace(
            name=name, deletion_timestamp=None, labels={m.LABEL_RUN: run_id, m.LABEL_MANAGED: m.MANAGER},
            annotations={m.ANNOTATION_RUNNER: mark}))

    items = [ns("watchdrop-dddddd", "dddddd", dead), ns("watchdrop-dddddd-c000", "dddddd", dead),
             ns("watchdrop-aaaaaa", "aaaaaa", runner_mark(os.getpid())),
             *[ns(f"watchdrop-eeeeee-c00{i}", "eeeeee", "far-away 1 1") for i in range(3)],
             ns("watchdrop-ownrun", "ownrun", dead),
             # The labels and a dead mark, but not a name its run makes: someone else's namespace.
             ns("kube-system", "dddddd", dead), ns("watchdrop-bbbbbb", "dddddd", dead)]
    deleted: list[str] = []

    class Core:
        def list_namespace(self, **_kw: object) -> SimpleNamespace:
            return SimpleNamespace(items=items)

        def delete_namespace(self, name: str, **_kw: object) -> None:
            deleted.append(name)

    said: list[str] = []
    removed = remove(Core(), own_run_id="ownrun", timeout=(1, 1), say=said.append,  # type: ignore[arg-type]
                     delete_hint=lambda rid: f"kubectl delete namespace -l watchdrop.io/run-id={rid}")
    assert removed == deleted == ["watchdrop-dddddd", "watchdrop-dddddd-c000"]
    foreign = [line for line in said if line.startswith("left alone") and "eeeeee" in line]
    assert foreign == ["left alone: 3 namespaces (watchdrop-eeeeee-c000, ...) of run eeeeee, started on far-away; "
                       "if that run is over: kubectl delete namespace -l watchdrop.io/run-id=eeeeee"]
