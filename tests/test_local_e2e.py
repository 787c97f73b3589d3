"""End to end through the kubernetes backend on the local cluster: from nothing, as a user runs it.

`python -m runner <matrix> --only ...` with one `kind: local` cluster behind the silent-drop quick
profile: the runner brings the cluster up with the LB emulator's VIP as the `kubernetes` Service's
endpoint, builds client-go's and client-python's images with the run's Docker engine, pushes them to
the run's registry, deploys the watcher pods (in-cluster config, projected tokens: pod → ClusterIP →
kube-proxy → the LB → the front → kube-apiserver), runs the rounds, judges, and tears all of it down.
Checks the verdicts the project exists to show, every cell's evidence, that the LB saw the pods' own
addresses, and that nothing is left on the host; then Ctrl-C during a docker build in flight, the
deploy, the pods' start and the rounds of four more runs.
About 4.5 minutes with the images cached (7 with the local base images built first).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.host.netns import list_project_netns
from runner.kube import manifests as m
from runner.local import hoststate
from runner.model import RunResult
from runner.report.render import load_results
from tests.conftest import needs_root_tools, wait_for_phase
from tests.test_local_cluster import _host_state, _processes

pytestmark = [needs_root_tools("ip", "go", "nft", "conntrack", "tcpdump", "haproxy"), pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
CLUSTER = "local-silent"
EVIDENCE = ("watcher.jsonl", "pod.pcap", "cell.json")

# The quick matrix's columns and timings (matrix.quick.yaml), one local cluster behind its silent drop.
MATRIX = f"""
clients:
  - name: client-go
    folder: client-go
    env: {{WATCHDROP_STYLE: informer}}
  - name: client-python
clusters:
  - name: {CLUSTER}
    kind: local
    lb: {{profile: azure-slb-no-reset-quick}}
    churn: {{lease_interval: 10}}
scenarios:
  watch: {{interval: idle+20, detection_timeout: 10, rounds: 2}}
  idle-request: {{idle: idle+15, detection_timeout: 10, rounds: 1}}
"""

# A client whose image build takes long enough to be interrupted mid-way: its nonce file makes each
# test run's build new (the engine's layer cache is in the cache directory and outlives runs).
SLOW_CLIENT = """\
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
COPY nonce /nonce
RUN echo building slowly && sleep 600
"""
SLOW_MATRIX = f"""
clients:
  - name: slowbuild
clusters:
  - name: {CLUSTER}
    kind: local
    lb: {{profile: azure-slb-no-reset-quick}}
scenarios:
  watch: {{interval: idle+20, detection_timeout: 10, rounds: 2}}
"""


@pytest.fixture(scope="module")
def before() -> dict[str, object]:
    return _host_state()


@pytest.fixture(scope="module")
def run(before: dict[str, object], tmp_path_factory: pytest.TempPathFactory
        ) -> tuple[RunResult, Path, subprocess.CompletedProcess[str]]:
    return run_matrix(tmp_path_factory.mktemp("local-e2e"), MATRIX, f"--only=cluster={CLUSTER}",
                      "--only=client=client-go", "--only=client=client-python")


def run_matrix(work: Path, matrix_text: str, *only: str) -> tuple[RunResult, Path, subprocess.CompletedProcess[str]]:
    """`python -m runner` on `matrix_text` in `work`, as a user runs it: (results, run folder, process)."""
    matrix = work / "matrix.yaml"
    matrix.write_text(matrix_text)
    out = work / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "runner", str(matrix), "--clients", str(REPO / "clients"), "--out", str(out),
         "--no-readme", *only], cwd=REPO, capture_output=True, text=True, timeout=1800)
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    run_dir = (out / "latest").resolve()
    assert (run_dir / "results.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return load_results(run_dir / "results.json"), run_dir, proc


def _verdicts(result: RunResult) -> dict[str, str]:
    return {c.cell_id: c.verdict.value for c in result.cells}


def test_watch_verdicts_through_the_kubernetes_backend(run) -> None:
    result, _, proc = run
    v = _verdicts(result)
    print(json.dumps(v, indent=1))
    assert v[f"client-go/{CLUSTER}/watch"] == "PASS", proc.stdout[-3000:]
    assert v[f"client-python/{CLUSTER}/watch"] == "FAIL-SILENT", proc.stdout[-3000:]


def test_the_runner_ran_as_its_own_least_privileged_user(run) -> None:
    """The provider hands over a kube context like a user's: the kube-rbac role, no more, no less."""
    _, run_dir, proc = run
    assert "may do more than its job needs" not in proc.stdout, proc.stdout[-3000:]
    assert "runner's rights: exactly its job's" in (run_dir / "clusters" / CLUSTER / "runner-rbac.log").read_text()
    # the pod policy, probed once the first run namespace was bound
    assert "may make pods that reach the node" not in proc.stdout, proc.stdout[-3000:]
    assert f"{m.POD_POLICY} in force" in (run_dir / "clusters" / CLUSTER / "cluster.log").read_text()


def test_every_cell_has_its_evidence(run) -> None:
    result, run_dir, _ = run
    for cell in result.cells:
        d = run_dir / "cells" / cell.cell_id
        for name in EVIDENCE:
            assert (d / name).exists(), f"{cell.cell_id}: missing {name}"
        assert json.loads((d / "cell.json").read_text())["verdict"] == cell.verdict.value


def test_the_lb_was_in_the_pods_path_and_saw_their_own_addresses(run) -> None:
    """kube-proxy does not masquerade pod → ClusterIP traffic: the LB's clients are the pods."""
    _, run_dir, _ = run
    ev = run_dir / "clusters" / CLUSTER
    info = json.loads((ev / "local-cluster.json").read_text())
    vip = info["advertised"].split(":")[0]
    pod_net = info["pod_cidr"].rsplit(".", 1)[0] + "."
    pcap = ev / "lb" / "lb-pod-leg.pcap"
    assert pcap.exists() and pcap.stat().st_size > 24
    seen = subprocess.run(["tcpdump", "-nr", str(pcap), "tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & "
                           "tcp-ack == 0"], capture_output=True, text=True).stdout
    syns = [line for line in seen.splitlines() if f" > {vip}." in line]
    assert syns, f"no SYN to the VIP {vip} on the LB's pod leg:\n{seen[:2000]}"
    assert all(f" IP {pod_net}" in line for line in syns), syns[:5]
    # The silent drop happened at the LB: its agent logged expired flows.
    events = [json.loads(line) for line in (ev / "lb" / "lb-events.jsonl").read_text().splitlines() if line]
    assert any(e.get("event") == "expired" for e in events), events[-10:]


def _assert_nothing_left(run_dir: Path, before: dict[str, object], cluster: str = CLUSTER) -> None:
    """No process, container, pod sandbox, mount, bridge, veth, nft/iptables table, route or netns of
    the run's local cluster (pod sandboxes and containers are processes in kubepods cgroups and mounts
    under the cluster's directory: _host_state compares the cgroups, mounts are checked here)."""
    info = json.loads((run_dir / "clusters" / cluster / "local-cluster.json").read_text())
    local_id = info["run_id"]
    assert _processes(local_id) == []
    mentioning = [p for p in hoststate.pids_mentioning(str(run_dir)) if p != os.getpid()]
    assert mentioning == [], f"processes naming the run's directory: {mentioning}"
    assert not [n for n in list_project_netns() if local_id in n]
    assert hoststate.mounts_under(["/var/lib/kubelet", "/run/containerd"]) == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert local_id not in mounts, [line for line in mounts.splitlines() if local_id in line]
    assert not hoststate.Ledger.path_for(local_id).exists()
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert local_id not in links, links
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    assert info["advertised"].split(":")[0] not in routes and info["pod_cidr"] not in routes, routes
    assert not list(Path("/tmp").glob(f"watchdrop-{local_id}-*"))
    assert _host_state() == before


def test_nothing_is_left(run, before: dict[str, object]) -> None:
    _, run_dir, proc = run
    _assert_nothing_left(run_dir, before)
    problems = run_dir / "clusters" / CLUSTER / "problems.txt"
    assert not problems.exists(), problems.read_text()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _slow_client(tmp_path: Path) -> Path:
    """A clients folder holding only `slowbuild`: the rawpy test client with a slow Dockerfile."""
    clients = tmp_path / "clients"
    src = clients / "slowbuild"
    src.mkdir(parents=True)
    desc = (REPO / "tests" / "fixtures" / "rawpy" / "client.yaml").read_text()
    (src / "client.yaml").write_text(desc.replace("name: rawpy", "name: slowbuild"))
    (src / "watcher.py").write_text((REPO / "tests" / "fixtures" / "rawpy" / "watcher.py").read_text())
    (src / "Dockerfile").write_text(SLOW_CLIENT)
    (src / "nonce").write_text(f"{time.time_ns()}\n")
    return clients


def _wait_building(proc: subprocess.Popen[str], out: Path, timeout: float = 900) -> None:
    """Until the slow client's image build is inside its `sleep` (the build log says so)."""
    wait_for_phase(proc, out, "kubernetes images", timeout=timeout)
    log = out / "latest" / "builds" / "images" / "watchdrop-slowbuild.log"
    deadline = time.monotonic() + timeout
    while not (log.exists() and "building slowly" in log.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, "the slow build never started"
        time.sleep(0.2)


# Each after the main run (one local cluster at a time), with client-go's image cached: about a
# minute each. The rounds need `--pause-at` only to be sure the signal lands inside the phase.
@pytest.mark.parametrize("phase", ["kubernetes images", "kubernetes deploy", "kubernetes pods",
                                   "kubernetes rounds"])
def test_ctrl_c_exits_2_and_leaves_nothing(run, before: dict[str, object], tmp_path: Path, phase: str) -> None:
    """Ctrl-C during an image build (docker build in flight), the deploy, the pods' start or the
    rounds of a `kind: local` run: exit 2, results written, nothing of the cluster left."""
    matrix = tmp_path / "matrix.yaml"
    building = phase == "kubernetes images"
    matrix.write_text(SLOW_MATRIX if building else MATRIX)
    clients = _slow_client(tmp_path) if building else REPO / "clients"
    out = tmp_path / "results"
    argv = [sys.executable, "-m", "runner", str(matrix), "--clients", str(clients), "--out", str(out),
            "--no-readme", "--only=scenario=watch"]
    if not building:
        argv += ["--only=client=client-go", "--pause-at", phase]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        if building:
            _wait_building(proc, out)
        else:
            wait_for_phase(proc, out, phase, timeout=900)
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, output[-3000:]
    run_dir = (out / "latest").resolve()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["interrupted"] is True
    _assert_nothing_left(run_dir, before)
