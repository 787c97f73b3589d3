"""A SIGKILLed runner leaves a whole local cluster (daemons, a pod, mounts, cgroups, sysctls,
tables, a bridge); `clean` puts the host back from the run's ledger."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.host.cleanup import clean, find_leftovers
from runner.host.commands import CommandLog
from runner.host.netns import list_project_netns
from runner.local import hoststate
from tests.conftest import needs_root_tools
from tests.test_local_cluster import _host_state, _processes

REPO = Path(__file__).resolve().parent.parent

pytestmark = [needs_root_tools("ip", "go", "nft"), pytest.mark.slow]

CHILD = """
import time
from kubernetes import client
from runner.local.cluster import LocalCluster
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
