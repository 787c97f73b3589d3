"""The kubernetes backend interrupted or killed: nothing the run made stays on the cluster.

The "cluster" is the embedded kube-apiserver (no kubelet, so no pod ever starts); the runs are the
real CLI (`python -m runner MATRIX --images-from ...`) in a subprocess. Ctrl-C is aimed at each of
the backend's phases through the runner's own phase log; a SIGKILLed run's namespaces are removed
by `clean MATRIX` and by the next run, and namespaces that are not provably a dead run's are not.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client

from runner.embedded.cluster import EmbeddedCluster
from runner.kube import manifests as m
from runner.kube.leftovers import runner_mark
from tests.conftest import needs_root_tools, wait_for_phase

pytestmark = [needs_root_tools("ip", "curl", "go"), pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
PHASES = ("kubernetes deploy", "kubernetes pods", "kubernetes collect", "kubernetes teardown")


@pytest.fixture(scope="module")
def cluster():
    with EmbeddedCluster(churn_interval=0) as c:
        yield c


def _matrix(tmp: Path, cluster: EmbeddedCluster) -> Path:
    (tmp / "clients").symlink_to(REPO / "clients")
    (tmp / "matrix.yaml").write_text(f"""
clients:
  - name: client-python
clusters:
  - name: emb
    kind: kubernetes
    kubeconfig: {cluster.admin_kubeconfig}
    registry: registry.invalid/wd
    idle_timeout: 240
    start_timeout: 3
scenarios:
  watch: {{interval: idle+30, detection_timeout: 10, rounds: 1}}
""")
    return tmp / "matrix.yaml"


def _start(matrix: Path, out: Path, pause_at: str | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "runner", str(matrix), "--out", str(out), "--no-readme",
                             "--images-from", "registry.invalid/wd", *(["--pause-at", pause_at] if pause_at else [])],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _namespaces(cluster: EmbeddedCluster, run_id: str) -> list[client.V1Namespace]:
    return client.CoreV1Api(cluster.admin_api()).list_namespace(label_selector=m.run_selector(run_id)).items


def _deleted(ns: client.V1Namespace) -> bool:
    # With no namespace controller here, a deleted namespace stays Terminating: deleted is enough.
    return ns.metadata.deletion_timestamp is not None


@pytest.mark.parametrize("phase", PHASES)
def test_ctrl_c_at_each_kubernetes_phase_deletes_what_the_run_made(phase: str, cluster: EmbeddedCluster,
                                                                   tmp_path: Path) -> None:
    matrix, out = _matrix(tmp_path, cluster), tmp_path / "out"
    proc = _start(matrix, out, pause_at=phase)
    try:
        run_id = wait_for_phase(proc, out, phase)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, output
    made = _namespaces(cluster, run_id)
    if phase == "kubernetes deploy":
        assert not made  # interrupted before anything was applied
    else:
        assert made and all(_deleted(ns) for ns in made), [ns.metadata.name for ns in made if not _deleted(ns)]
    results = json.loads((out / run_id / "results.json").read_text())
    assert results["interrupted"] is True
    cell = results["cells"][0]
    assert cell["verdict"] == "ERROR", cell
    if phase in ("kubernetes deploy", "kubernetes pods"):
        assert "interrupted" in cell["reason"], cell["reason"]


def test_a_killed_runs_namespaces_are_removed_by_clean_and_nothing_else(cluster: EmbeddedCluster,
                                                                        tmp_path: Path) -> None:
    matrix, out = _matrix(tmp_path, cluster), tmp_path / "out"
    core = client.CoreV1Api(cluster.admin_api())

    def planted(name: str, run_id: str, mark: str) -> str:
        core.create_namespace(m.namespace(name, run_id, cluster="emb", runner=mark))
        return name

    # A run on another machine and a live run on this one, which clean must leave alone.
    elsewhere = planted("watchdrop-eeeeee", "eeeeee", f"not-{socket.gethostname()} 1 1")
    live = planted("watchdrop-aaaaaa", "aaaaaa", runner_mark(os.getpid()))
    proc = _start(matrix, out, pause_at="kubernetes pods")
    try:
        run_id = wait_for_phase(proc, out, "kubernetes pods")
        proc.kill()
        proc.wait()
        made = _namespaces(cluster, run_id)
        assert made and not any(_deleted(ns) for ns in made)  # SIGKILL: no teardown ran
        cleaned = subprocess.run([sys.executable, "-m", "runner", "clean", str(matrix)], cwd=REPO,
                                 capture_output=True, text=True, timeout=120)
        assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
        for ns in made:
            assert f"removed namespace {ns.metadata.name} of crashed run {run_id}" in cleaned.stdout
        assert all(_deleted(ns) for ns in _namespaces(cluster, run_id))
        assert f"left alone: namespace {elsewhere} of run eeeeee, started on not-{socket.gethostname()}" \
            in cleaned.stdout
        assert "kubectl --kubeconfig" in cleaned.stdout and "delete namespace -l watchdrop.io/run-id=eeeeee" \
            in cleaned.stdout
        assert live not in cleaned.stdout
        for name in (elsewhere, live):
            assert core.read_namespace(name).metadata.deletion_timestamp is None
    finally:
        if proc.poll() is None:
            proc.kill()
        for name in (elsewhere, live):
            core.delete_namespace(name)


def test_the_next_run_removes_a_killed_runs_namespaces(cluster: EmbeddedCluster, tmp_path: Path) -> None:
    matrix, out = _matrix(tmp_path, cluster), tmp_path / "out"
    proc = _start(matrix, out, pause_at="kubernetes pods")
    try:
        killed = wait_for_phase(proc, out, "kubernetes pods")
        proc.kill()
        proc.wait()
        assert not any(_deleted(ns) for ns in _namespaces(cluster, killed))
        nxt = _start(matrix, tmp_path / "out2")
        output, _ = nxt.communicate(timeout=300)
        assert nxt.returncode == 1, output  # its own cell: ERROR, the pod never started
        assert f"of crashed run {killed}" in output
        assert all(_deleted(ns) for ns in _namespaces(cluster, killed))
    finally:
        if proc.poll() is None:
            proc.kill()
