"""Ctrl-C at any phase leaves the machine as it was, writes what it has, and exits 2.

Each case aims SIGINT at one phase of a real quick run, found in the runner's own phase log
(`--pause-at PHASE` holds the run there for a few seconds so the signal lands inside it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from runner.host import signals
from runner.host.netns import list_project_netns
from runner.host.procs import Child
from tests.conftest import needs_root_tools, wait_for_phase

REPO = Path(__file__).resolve().parent.parent
PHASES = ("build", "cluster start", "lb setup", "cells setup", "rounds", "collect", "report")


def _processes_of(marks: tuple[str, ...]) -> list[str]:
    """Live processes whose command line or environment names this run (its id or its out dir):
    etcd's data dir, the API server's certs, HAProxy's config, the agent's and tcpdump's files, and
    the watcher's WATCHDROP_KUBECONFIG all do. Other runs on the machine are not counted."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            text = (proc / "cmdline").read_bytes() + b"\0" + (proc / "environ").read_bytes()
        except OSError:
            continue
        if int(proc.name) != os.getpid() and any(m.encode() in text for m in marks):
            found.append(f"{proc.name} {text[:100]!r}")
    return found


def _interrupt_one_cell(out: Path, phase: str, *, signals_sent: int) -> tuple[str, str, int]:
    """Run one quick cell, SIGINT it `signals_sent` times once it is in `phase`; (run id, output, exit)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "matrix.quick.yaml", "--out", str(out), "--no-readme",
         "--only", "client=client-go", "--only", "cluster=azure-slb-quick", "--only", "scenario=watch",
         "--pause-at", phase],
        cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        run_id = wait_for_phase(proc, out, phase)
        time.sleep(0.5)
        for _ in range(signals_sent):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return run_id, output, proc.returncode


def _assert_nothing_of(run_id: str, out: Path) -> None:
    assert not [n for n in list_project_netns() if run_id in n]
    assert not _processes_of((run_id, str(out)))
    assert not list(Path("/tmp").glob(f"watchdrop-{run_id}-*"))


@needs_root_tools("ip", "nft", "tcpdump", "haproxy", "go")
@pytest.mark.slow
@pytest.mark.parametrize("phase", PHASES)
def test_interrupt_at_phase_cleans_up(phase: str, tmp_path: Path) -> None:
    out = tmp_path / "results"
    run_id, output, rc = _interrupt_one_cell(out, phase, signals_sent=1)
    assert rc == 2, output
    _assert_nothing_of(run_id, out)
    # nft tables live inside the run's LB namespaces, which are gone; none may leak into the root one.
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert f"watchdrop_{run_id}" not in tables
    results = json.loads(((out / "latest") / "results.json").read_text())
    assert results["interrupted"] is True
    if phase == "collect":
        # Each cell is judged as soon as its own rounds end (runner/backend.py, EarlyCollect): an
        # interrupt after that keeps the verdict of a cell whose rounds were all over, nothing else.
        assert all(c["verdict"] == "ERROR" or len(c["rounds"]) == 2 for c in results["cells"]), results["cells"]
    else:
        assert all(c["verdict"] == "ERROR" for c in results["cells"]) or phase == "report"


def test_sigterm_escalates_to_sigkill_for_a_child_that_ignores_it(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    child = Child("stubborn", [sys.executable, "-c", code], stdout=tmp_path / "out.log")
    deadline = time.monotonic() + 10
    while "up" not in (tmp_path / "out.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    t0 = time.monotonic()
    rc = child.stop(grace=1.0)
    assert rc == -signal.SIGKILL
    assert time.monotonic() - t0 < 5


def test_a_second_ctrl_c_ends_the_grace_at_once(tmp_path: Path) -> None:
    """A child ignoring SIGTERM with a minute of grace: the second signal (hurry) kills it now."""
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(99)"
    child = Child("stubborn", [sys.executable, "-c", code], stdout=tmp_path / "out.log")
    deadline = time.monotonic() + 10
    while "up" not in (tmp_path / "out.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    got: list[int | None] = []
    stopper = threading.Thread(target=lambda: got.append(child.stop(grace=60.0)))
    stopper.start()
    try:
        time.sleep(0.5)
        assert stopper.is_alive()  # inside the grace
        signals.hurry.set()
        stopper.join(20)
        assert not stopper.is_alive(), "the grace was not cut short"
        assert got == [-signal.SIGKILL]
    finally:
        signals.consume()
        if child.alive():
            child.popen.kill()


@needs_root_tools("ip", "nft", "tcpdump", "haproxy", "go")
@pytest.mark.slow
def test_two_ctrl_c_still_clean_up_everything(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run_id, output, rc = _interrupt_one_cell(out, "rounds", signals_sent=2)
    assert rc == 2, output
    _assert_nothing_of(run_id, out)
    results = json.loads(((out / "latest") / "results.json").read_text())
    assert results["interrupted"] is True
