"""A runner killed with SIGKILL leaves namespaces and processes; `clean` finds them by prefix."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from runner.host.cleanup import clean, find_leftovers
from runner.host.commands import CommandLog
from runner.host.netns import list_project_netns, netns_pids
from tests.conftest import needs_root_tools

REPO = Path(__file__).resolve().parent.parent

pytestmark = [needs_root_tools("ip", "curl"), pytest.mark.slow]

CHILD = """
import sys, time
from runner.embedded.cluster import EmbeddedCluster
c = EmbeddedCluster(churn_interval=0)
c.start()
print(c.run_id, c.workdir, flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for whoever reaps orphans here)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@contextmanager
def _killed_cluster() -> Iterator[tuple[str, str]]:
    """(run id, workdir) of an embedded cluster whose process was SIGKILLed; cleaned up after."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        run_id, workdir = (proc.stdout.readline() if proc.stdout else "").split()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        yield run_id, workdir
    finally:
        if proc.poll() is None:
            proc.kill()
        clean(CommandLog(), say=lambda _: None)


def test_clean_removes_a_killed_runs_leftovers_and_nothing_else() -> None:
    with _killed_cluster() as (run_id, workdir):
        mine = [n for n in list_project_netns() if run_id in n]
        assert mine, "the killed run should have left its namespaces"
        pids = [p for n in mine for p in netns_pids(n)]
        assert pids, "etcd and kube-apiserver outlive a SIGKILLed runner"
        assert run_id in find_leftovers()
        clean(CommandLog(), say=lambda _: None)
        assert not [n for n in list_project_netns() if run_id in n]
        time.sleep(0.2)
        assert not [p for p in pids if _running(p)]
        assert not Path(workdir).exists()
        assert run_id not in find_leftovers()


NEXT_RUN_MATRIX = """
clients:
  - name: brokenbuild
clusters:
  - name: reset-fast
    lb: {profile: azure-slb, idle_timeout: 5}
scenarios:
  watch: {interval: idle+3, detection_timeout: 5, rounds: 1}
"""


def test_the_next_run_removes_a_killed_runs_leftovers(tmp_path: Path) -> None:
    """No `clean` needed: a run starts by removing what dead runs left (its own cell fails to build
    here, so it starts no cluster of its own and ends in seconds)."""
    shutil.copytree(Path(__file__).resolve().parent / "fixtures" / "brokenbuild", tmp_path / "clients" / "brokenbuild")
    (tmp_path / "matrix.yaml").write_text(NEXT_RUN_MATRIX)
    with _killed_cluster() as (run_id, workdir):
        assert [n for n in list_project_netns() if run_id in n]
        nxt = subprocess.run([sys.executable, "-m", "runner", str(tmp_path / "matrix.yaml"), "--out",
                              str(tmp_path / "out"), "--no-readme"], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
        assert nxt.returncode == 1, nxt.stdout + nxt.stderr  # its one cell is ERROR: build failed
        assert f"leftover of a crashed run: removing netns wd-{run_id}-api (run {run_id})" in nxt.stdout
        assert not [n for n in list_project_netns() if run_id in n]
        assert not Path(workdir).exists()
        assert run_id not in find_leftovers()
