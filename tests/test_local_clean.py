"""The local cluster's failure paths: a SIGKILLed runner leaves a whole cluster (daemons, a pod,
mounts, cgroups, sysctls, tables, a bridge) and `clean` puts the host back from the run's ledger;
a start that fails halfway rolls back; Ctrl-C on `cluster up --kind local` exits 2, leaving nothing."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from runner.errors import ClusterError
from runner.host.cleanup import clean, find_leftovers
from runner.host.commands import CommandLog
from runner.host.netns import list_project_netns
from runner.local import hoststate
from runner.local.cluster import LOCK_PATH, LocalCluster
from tests.conftest import needs_root_tools
from tests.test_local_cluster import _host_state, _processes

REPO = Path(__file__).resolve().parent.parent

pytestmark = [needs_root_tools("ip", "go", "nft"), pytest.mark.slow]

CHILD = """
import time
from kubernetes import client
from runner.local.cluster import LOCK_PATH, LocalCluster
c = LocalCluster()
c.start()
v1 = client.CoreV1Api(c.admin_api())
v1.create_namespaced_pod("default", client.V1Pod(metadata=client.V1ObjectMeta(name="p"), spec=client.V1PodSpec(
    containers=[client.V1Container(name="c", image=c.pause_image, image_pull_policy="IfNotPresent")])))
while v1.read_namespaced_pod("p", "default").status.phase != "Running":
    time.sleep(0.2)
print(c.run_id, c.workdir, flush=True)
time.sleep(600)
"""


def test_clean_puts_back_a_killed_local_cluster() -> None:
    before = _host_state()
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line, "the local cluster did not come up"
        run_id, workdir = line.split()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert _processes(run_id), "the daemons outlive a SIGKILLed runner"
        assert hoststate.mounts_under([workdir]), "the pod's mounts are still there"
        assert any(item.startswith("local ") for item in find_leftovers()[run_id])
        clean(CommandLog(), say=print)
        time.sleep(0.3)
        assert _processes(run_id) == []
        assert hoststate.mounts_under([workdir, "/var/lib/kubelet", "/run/containerd"]) == []
        assert not [n for n in list_project_netns() if run_id in n]
        assert not Path(workdir).exists()
        assert run_id not in find_leftovers()
        assert _host_state() == before
    finally:
        if proc.poll() is None:
            proc.kill()
        clean(CommandLog(), say=lambda _: None)


def _assert_nothing_left(run_id: str, before: dict[str, object]) -> None:
    time.sleep(0.3)
    assert _processes(run_id) == []
    assert hoststate.mounts_under(["/var/lib/kubelet", "/run/containerd"]) == []
    assert not [n for n in list_project_netns() if run_id in n]
    assert not list(Path(tempfile.gettempdir()).glob(f"watchdrop-{run_id}-*"))
    assert not hoststate.Ledger.path_for(run_id).exists()
    assert _host_state() == before


def test_failed_start_rolls_back() -> None:
    """The kubelet refuses a bad flag after the control plane, Docker and containerd are up."""
    before = _host_state()
    c = LocalCluster(extra_kubelet_args=["--no-such-flag"])
    with pytest.raises(ClusterError, match="kubelet exited"):
        c.start()
    _assert_nothing_left(c.run_id, before)


def test_ctrl_c_on_cluster_up_local_exits_2_and_leaves_nothing() -> None:
    before = _host_state()
    proc = subprocess.Popen([sys.executable, "-m", "runner", "cluster", "up", "--kind", "local"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C tears it down." in line:
                break
        assert lines and "local cluster (run " in lines[0], "".join(lines)
        run_id = lines[0].split("(run ")[1].rstrip(")\n")
        kubeconfig = next(line.split()[1] for line in lines if line.startswith("kubeconfig:"))
        assert Path(kubeconfig).exists()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 2, "".join(lines) + out
        _assert_nothing_left(run_id, before)
    finally:
        if proc.poll() is None:
            proc.kill()
            clean(CommandLog(), say=lambda _: None)


def test_a_second_local_cluster_is_refused_in_one_line() -> None:
    """One local cluster per machine: the kubelet's and containerd's host paths are machine-wide."""
    before = _host_state()
    with LOCK_PATH.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        c = LocalCluster(install=False)
        with pytest.raises(ClusterError, match="another local cluster is running") as info:
            c.start()
        assert info.value.fix and "clean" in info.value.fix
    _assert_nothing_left(c.run_id, before)
