"""The kubernetes backend: deploy → wait → collect → teardown against a real kube-apiserver (with no
kubelet, so no pod ever starts), the pure pieces it judges pods and logs with, and the images."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from runner.backend import RunContext, run_backend, run_rounds
from runner.build import images
from runner.config.descriptor import load_descriptor
from runner.config.matrix import KubernetesCluster
from runner.config.plan import Cell
from runner.credentials.kubeconfig import token_user, write_kubeconfig
from runner.embedded.cluster import EmbeddedCluster
from runner.errors import Interrupted, PrerequisiteError
from runner.evidence.pcap import read_pcap
from runner.host.netns import new_run_id
from runner.kube import manifests as m
from runner.kube.api import FreshCoreV1Api, KubeAccess, KubeSettings, extract_files
from runner.kube.backend import kubernetes_backends
from runner.kube.cell import capture_facts
from runner.kube.pods import LineSink, clock_problems, describe_pod, pod_problem, start_state
from runner.model import CellResult, Verdict
from runner.verdict import Update
from tests.conftest import needs_root_tools

REPO = Path(__file__).resolve().parent.parent
CLUSTER = "emb"


# -- pure pieces -------------------------------------------------------------------------------------


def _pod(status: dict[str, Any]) -> client.V1Pod:
    return client.V1Pod.model_validate({
        "metadata": {"name": "watcher"},
        "spec": {"containers": [{"name": "capture", "image": "c"},
                                {"name": "watcher", "image": "w", "resources": {"limits": {"memory": "512Mi"}}}]},
        "status": status})


def _running(name: str) -> dict[str, Any]:
    return {"name": name, "image": "i", "imageID": "", "ready": True, "restartCount": 0,
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}


def _terminated(name: str, reason: str, code: int) -> dict[str, Any]:
    return {"name": name, "image": "i", "imageID": "", "ready": False, "restartCount": 0,
            "state": {"terminated": {"reason": reason, "exitCode": code}}}


def _waiting(name: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"name": name, "image": "i", "imageID": "", "ready": False, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": message}}}


def test_start_state_reads_the_kubelets_status() -> None:
    assert start_state(_pod({"phase": "Pending"})) == ("waiting", None)
    assert start_state(_pod({"phase": "Running", "containerStatuses": [
        _running("capture"), _running("watcher")]})) == ("running", None)
    # a watcher that already exited has started: its crash is evidence for the verdict
    assert start_state(_pod({"phase": "Running", "containerStatuses": [
        _running("capture"), _terminated("watcher", "Error", 2)]}))[0] == "running"
    # an image pull may still succeed; a bad image name never will
    assert start_state(_pod({"phase": "Pending", "containerStatuses": [
        _running("capture"), _waiting("watcher", "ImagePullBackOff")]})) == ("waiting", None)
    state, why = start_state(_pod({"phase": "Pending", "containerStatuses": [
        _running("capture"), _waiting("watcher", "InvalidImageName", "bad ref")]}))
    assert state == "failed" and why == "watcher: InvalidImageName: bad ref"


def test_evicted_oom_and_dead_capture_are_pod_problems() -> None:
    assert pod_problem(_pod({"phase": "Running", "containerStatuses": [_running("capture"),
                                                                       _running("watcher")]})) is None
    assert pod_problem(_pod({"phase": "Failed", "reason": "Evicted",
                             "message": "The node was low on resource: memory."})) == \
        "pod evicted: The node was low on resource: memory."
    assert pod_problem(_pod({"phase": "Running", "containerStatuses": [
        _running("capture"), _terminated("watcher", "OOMKilled", 137)]})) == \
        "watcher container OOM-killed (memory limit 512Mi)"
    problem = pod_problem(_pod({"phase": "Running", "containerStatuses": [
        _terminated("capture", "Error", 1), _running("watcher")]}))
    assert problem is not None and problem.startswith("capture sidecar ended early")


def test_describe_pod_says_why_it_never_ran() -> None:
    text = describe_pod(_pod({"phase": "Pending"}))
    assert text.startswith("phase Pending; no conditions (never scheduled")
    assert text.endswith("no events")
    event = client.CoreV1Event.model_validate({
        "metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "watcher"}, "type": "Warning",
        "reason": "FailedScheduling", "message": "0/3 nodes are available: 3 Insufficient memory."})
    text = describe_pod(_pod({"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}]}), [event])
    assert "PodScheduled=False (Unschedulable: 0/3 nodes)" in text
    assert "event FailedScheduling: 0/3 nodes are available: 3 Insufficient memory." in text
    assert describe_pod(None) == "the pod does not exist"


def test_log_lines_survive_reconnects_without_duplicates(tmp_path: Path) -> None:
    sink = LineSink(tmp_path / "w.jsonl", tmp_path / "w.stderr", tmp_path / "w.log")
    first = [b'{"ts": 1.0, "event": "sta', b'rted"}\nI1125 klog line\n{"ts": 2.0, "event": "watch-op']
    sink.feed_stream(first)  # the stream was cut mid-line: the half line waits
    assert sink.seen == 2
    # the runner reconnects and reads the whole log again from the start
    again = [b'{"ts": 1.0, "event": "started"}\nI1125 klog line\n{"ts": 2.0, "event": "watch-opened"}\n',
             b'{"ts": 3.0, "event": "event-seen", "value": "round-1"}\nno newline at the end']
    sink.feed_stream(again)
    sink.feed_stream(again, final=True)  # the container ended: the last line counts
    events = [json.loads(x)["event"] for x in (tmp_path / "w.jsonl").read_text().splitlines()]
    assert events == ["started", "watch-opened", "event-seen"]
    assert (tmp_path / "w.stderr").read_text().splitlines() == ["I1125 klog line", "no newline at the end"]
    assert len((tmp_path / "w.log").read_text().splitlines()) == 5
    assert [ts for _, ts in sink.received] == [1.0, 2.0, 3.0]


def test_extract_takes_only_the_named_regular_files(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("pod.pcap", b"pcap"), ("tcpdump.log", b"listening on any"), ("../../etc/evil", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("stopped")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    got = extract_files(buf.getvalue(), tmp_path / "out", ["pod.pcap", "tcpdump.log", "stopped"])
    assert sorted(got) == ["pod.pcap", "tcpdump.log"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pod.pcap", "tcpdump.log"]
    assert not (tmp_path / "etc").exists()


def test_clock_disagreement_is_caught_from_evidence() -> None:
    updates = [Update(at=100.0, value="round-1")]
    seen = [{"ts": 100.2, "event": "event-seen", "value": "round-1"}]
    assert clock_problems([(100.3, 100.2)], seen, updates) == []
    ahead = clock_problems([(100.3, 103.0)], seen, updates)
    assert len(ahead) == 1 and "2.7 s ahead" in ahead[0]
    early = [{"ts": 97.0, "event": "event-seen", "value": "round-1"}]
    behind = clock_problems([(100.3, 97.0)], early, updates)
    assert len(behind) == 1 and "3.0 s behind" in behind[0]


# -- the capture sidecar's scripts, in a sandbox shaped like the pod -----------------------------------

TRAFFIC = """
import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 5555)); s.listen()
c = socket.create_connection(("127.0.0.1", 5555)); a, _ = s.accept()
c.send(b"hi"); a.recv(10); c.close(); a.close(); time.sleep(0.2)
"""


def _at(script: str, where: Path) -> str:
    """The script with /capture moved to a test folder (the only change)."""
    return script.replace("/capture/", f"{where}/").replace("cd /capture\n", f"cd {where}\n")


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(x) for x in (task / "children").read_text().split()]
    return out


@needs_root_tools("ip", "tcpdump", "unshare", "nsenter")
def test_capture_scripts_stop_the_watcher_alone_and_keep_every_packet(tmp_path: Path) -> None:
    """A new PID namespace is the pod's shared one: its init is the pause process, and processes
    entered from outside have parent 0, like each container's first process. The scripts run
    under /bin/sh with tcpdump, as in the capture image."""
    cap = tmp_path / "capture"
    cap.mkdir()
    ns = f"wdtest-{new_run_id()}"
    procs: list[subprocess.Popen[bytes]] = []
    init = None
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        # The script captures on the default route's interface.
        subprocess.run(["ip", "-n", ns, "route", "add", "default", "dev", "lo"], check=True)
        pause = subprocess.Popen(["ip", "netns", "exec", ns, "unshare", "--pid", "--fork", "--mount-proc",
                                  "sleep", "600"])
        procs.append(pause)
        for _ in range(200):
            kids = _children(pause.pid)
            if kids:
                init = kids[0]
                break
            time.sleep(0.02)
        assert init is not None
        enter = ["nsenter", "-t", str(init), "-p", "-m", "-n"]
        env = {**os.environ, "WATCHDROP_CAPTURE_FILTER": "tcp port 5555"}
        procs.append(subprocess.Popen([*enter, "sh", "-c", _at(m.CAPTURE_SCRIPT, cap)], env=env))
        post_start = subprocess.run([*enter, "sh", "-c", _at(m.CAPTURE_POST_START, cap)], timeout=40)
        assert post_start.returncode == 0
        watcher = subprocess.Popen([*enter, "sleep", "600"])
        procs.append(watcher)
        subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", TRAFFIC], check=True, timeout=20)

        def signal_watcher() -> str:
            return subprocess.run([*enter, "sh", "-c", _at(m.SIGNAL_WATCHER_SCRIPT, cap), "signal", "TERM"],
                                  capture_output=True, text=True, check=True, timeout=20).stdout.strip()

        assert re.fullmatch(r"sent TERM to \d+", signal_watcher())  # one process: the watcher
        watcher.wait(10)
        assert signal_watcher() == "no watcher process"
        stop = subprocess.run([*enter, "sh", "-c", _at(m.STOP_CAPTURE_SCRIPT, cap)], capture_output=True,
                              text=True, timeout=30)
        assert (stop.returncode, stop.stdout.strip()) == (0, "0 asked")  # tcpdump exited 0, closed the file
        assert (cap / "iface").read_text().strip() == "capturing on lo"
        assert procs[1].poll() is None  # the sidecar stays up so the runner can copy the file out
        facts = read_pcap(cap / "pod.pcap")
        assert "0 packets dropped by kernel" in (cap / "tcpdump.log").read_text()
        assert len(facts.connections) == 1
        assert facts.connections[0].close_kind is not None  # the closing FINs were captured too
    finally:
        if init is not None:
            os.kill(init, signal.SIGKILL)  # the kernel then kills everything in its PID namespace
        for p in procs:
            if p.poll() is None and p is not procs[0]:
                p.kill()
            p.wait(10)
        subprocess.run(["ip", "netns", "del", ns], check=False)


# -- images --------------------------------------------------------------------------------------------


def _cell(scenario: str, client_name: str = "client-python", **kw: Any) -> Cell:
    watch = scenario == "watch"
    return Cell(client=client_name, folder=client_name, cluster=CLUSTER, cluster_kind="kubernetes", scenario=scenario,
                profile=None, idle_timeout=240, interval=270 if watch else None, idle=None if watch else 270,
                detection_timeout=10, rounds=2 if watch else 1, src=REPO / "clients" / client_name, **kw)


def test_image_tags_follow_content(tmp_path: Path) -> None:
    ctx = tmp_path / "c"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nARG PIN\n")
    (ctx / "main.go").write_text("package main\n")
    spec = images.client_image(ctx, {})
    assert spec.tag == images.client_image(ctx, {}).tag
    assert spec.ref("reg.example/wd/") == f"reg.example/wd/watchdrop-c:{spec.tag}"
    assert images.client_image(ctx, {"PIN": "v0.30.0"}).tag != spec.tag
    assert images.client_image(ctx, {}, platform="linux/arm64").tag != spec.tag
    (ctx / "main.go").write_text("package main // changed\n")
    assert images.client_image(ctx, {}).tag != spec.tag
    assert images.capture_image().tag == images.capture_image().tag


def test_clients_without_a_usable_dockerfile_say_why(tmp_path: Path) -> None:
    assert images.kubernetes_problem(REPO / "clients" / "client-go", {}) is None
    (tmp_path / "x").mkdir()
    assert "no Dockerfile in clients/x" in (images.kubernetes_problem(tmp_path / "x", {}) or "")
    problem = images.kubernetes_problem(REPO / "clients" / "client-go", {"CLIENT_GO_VERSION": "v0.30.0"})
    assert problem is not None and "ARG CLIENT_GO_VERSION" in problem


def test_prebuilt_images_are_the_refs_a_build_would_push() -> None:
    cells = [_cell("watch"), _cell("idle-request"), _cell("watch", "client-go")]
    got = images.prebuilt(cells, "reg.example/wd")
    assert got.capture == f"reg.example/wd/watchdrop-capture:{images.capture_image().tag}"
    assert got.watcher(cells[0]) == got.watcher(cells[1])
    assert got.watcher(cells[2]) == images.client_image(REPO / "clients" / "client-go", {}).ref("reg.example/wd")
    assert got.problem(cells[0]) is None


def test_no_docker_engine_names_both_ways_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(PrerequisiteError) as info:
        images.build_and_push([_cell("watch")], "reg.example/wd", tmp_path / "logs")
    text = info.value.render()
    assert "no Docker engine reachable" in text
    assert "--images-from REGISTRY" in text and "start a Docker engine" in text
    assert "reg.example/wd/watchdrop-client-python:" in text


@pytest.mark.slow
def test_docker_builds_the_timer_server_image(local_bases: dict[str, str], tmp_path: Path) -> None:
    """On the private engine of tests/conftest.py (nothing can be pulled here: local base images)."""
    api = images.docker_api()
    spec = images.timer_server_image(bases=local_bases)
    assert dict(spec.buildargs) == {"PYTHON_IMAGE": local_bases["PYTHON_IMAGE"]}
    ref = f"watchdrop-test/{spec.name}:{spec.tag}"
    try:
        images.build_image(api, spec, ref, tmp_path / "build.log")
        assert api.inspect_image(ref)["Config"]["User"] == "65532:65532"
    finally:
        api.close()


# -- against a real kube-apiserver (no kubelet, no scheduler, no controllers) ---------------------------


@pytest.fixture(scope="module")
def cluster():
    with EmbeddedCluster(churn_interval=0) as c:
        yield c


def _kube(kubeconfig: Path) -> KubernetesCluster:
    return KubernetesCluster.model_validate({
        "name": CLUSTER, "kind": "kubernetes", "kubeconfig": str(kubeconfig), "registry": "registry.invalid/wd",
        "idle_timeout": 240, "description": "embedded kube-apiserver (no kubelet)"})


SETTINGS = KubeSettings(start_timeout=3, teardown_timeout=15, no_controller_after=2, poll=0.5)


def _run(cluster: EmbeddedCluster, tmp_path: Path, cells: list[Cell],
         clusters: dict[str, KubernetesCluster] | None = None, rounds: Any = run_rounds,
         run_id: str | None = None, say: Any = None) -> tuple[str, Path, dict[str, CellResult]]:
    """The kubernetes backends through the pipeline's own loop (runner/backend.run_backend)."""
    run_id = run_id or new_run_id()
    run_dir = tmp_path / run_id
    results: dict[str, CellResult] = {}
    assert cluster.admin_kubeconfig is not None
    ctx = RunContext(run_id=run_id, run_dir=run_dir, say=say or (lambda _: None),
                     descriptors={c.folder: load_descriptor(REPO / "clients" / c.folder) for c in cells})
    clusters = clusters or {CLUSTER: _kube(cluster.admin_kubeconfig)}
    for backend in kubernetes_backends(cells, clusters, ctx, images_from="registry.invalid/wd", settings=SETTINGS):
        run_backend(backend, ctx, results, rounds=rounds)
    return run_id, run_dir, results


def _assert_torn_down(cluster: EmbeddedCluster, namespaces: list[str]) -> None:
    """Deleted: gone, or Terminating (without kube-controller-manager nothing finalizes it here)."""
    core = client.CoreV1Api(cluster.admin_api())
    for ns in namespaces:
        try:
            obj = core.read_namespace(ns)
        except ApiException as exc:
            assert exc.status == 404
            continue
        assert obj.metadata.deletion_timestamp is not None, f"{ns} was not deleted"
        assert obj.status.phase == "Terminating"


#: A JWT (ServiceAccount tokens), a PEM key, kubeconfig credential fields, or a token value.
_SECRETS = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}|PRIVATE KEY|client-key-data|"
                      rb"\"?token\"?\s*:\s*\"?[A-Za-z0-9]")


def _assert_no_secrets(run_dir: Path, cluster: EmbeddedCluster) -> None:
    assert cluster.pki is not None
    key = cluster.pki.admin_key.read_bytes()
    for path in run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not _SECRETS.search(data), f"{path} holds something like a credential"
            assert key not in data


@pytest.mark.slow
@needs_root_tools("ip", "curl", "go")
def test_pods_that_never_start_are_error_and_everything_is_deleted(cluster: EmbeddedCluster, tmp_path: Path) -> None:
    cells = [_cell("watch"), _cell("idle-request")]
    run_id, run_dir, results = _run(cluster, tmp_path, cells)
    for cell in cells:
        r = results[cell.id]
        assert r.verdict is Verdict.ERROR
        assert r.reason.startswith("pod never started within 3 s: phase Pending; no conditions (never scheduled")
        evidence = run_dir / "cells" / cell.id
        for name in ("manifests.json", "pod.json", "events.json", "harness.log", "cell.json"):
            assert (evidence / name).is_file(), name
            assert r.evidence.get(name) == f"cells/{cell.id}/{name}"
        assert json.loads((evidence / "cell.json").read_text())["verdict"] == "ERROR"
        kinds = [o["kind"] for o in json.loads((evidence / "manifests.json").read_text())]
        assert kinds[-1] == "Pod"
    namespaces = [m.run_namespace(run_id), m.cell_namespace(run_id, 0), m.cell_namespace(run_id, 1)]
    _assert_torn_down(cluster, namespaces)
    status = json.loads((run_dir / "clusters" / CLUSTER / "teardown.json").read_text())
    assert sorted(status) == sorted(namespaces)
    assert all(s == "gone" or "no namespace controller" in s for s in status.values())
    _assert_no_secrets(run_dir, cluster)


@pytest.mark.slow
@needs_root_tools("ip", "curl", "go")
def test_ctrl_c_still_tears_down(cluster: EmbeddedCluster, tmp_path: Path) -> None:
    def ctrl_c(_runs: list[Any], _ctx: RunContext) -> None:
        raise Interrupted("SIGINT")

    cells = [_cell("watch")]
    run_id = ""
    with pytest.raises(Interrupted):
        run_id, _, _ = _run(cluster, tmp_path, cells, rounds=ctrl_c)
    run_id = next(p.name for p in tmp_path.iterdir())
    _assert_torn_down(cluster, [m.run_namespace(run_id), m.cell_namespace(run_id, 0)])
    core = client.CoreV1Api(cluster.admin_api())
    assert core.list_namespace(label_selector=m.run_selector(run_id)).items  # the deletes were issued, not skipped


@pytest.mark.slow
@needs_root_tools("ip", "curl", "go")
def test_a_runner_without_permissions_deploys_nothing(cluster: EmbeddedCluster, tmp_path: Path) -> None:
    core = client.CoreV1Api(cluster.admin_api())
    sa = f"nobody-{new_run_id()}"
    core.create_namespaced_service_account("default", client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=sa)))
    token = core.create_namespaced_service_account_token(sa, "default", client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))).status.token
    assert cluster.pki is not None
    kubeconfig = write_kubeconfig(tmp_path / "nobody.kubeconfig", server=cluster.server_url(),
                                  ca_pem=cluster.pki.ca_cert.read_bytes(), user=token_user(token))
    cells = [_cell("watch")]
    run_id, run_dir, results = _run(cluster, tmp_path / "run", cells, clusters={CLUSTER: _kube(kubeconfig)})
    r = results[cells[0].id]
    assert r.verdict is Verdict.ERROR
    assert "the runner's kube identity may not: get namespaces" in r.reason
    assert f"bind clusterroles.rbac.authorization.k8s.io/{m.IN_RUN_ROLE}" in r.reason
    assert f"ClusterRole {m.IN_RUN_ROLE} (not readable)" in r.reason
    assert not core.list_namespace(label_selector=m.run_selector(run_id)).items
    # the error shows what the admin applies, for this very identity
    problems = (run_dir / "clusters" / CLUSTER / "problems.txt").read_text()
    assert f"--service-account default/{sa}" in problems
    for kind in ("ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        assert f"kind: {kind}\n" in problems
    assert f"name: {sa}\n" in problems
    _assert_no_secrets(run_dir, cluster)


@pytest.mark.slow
@needs_root_tools("ip", "curl", "go")
def test_a_least_privilege_runner_deploys_and_deletes_only_its_namespaces(cluster: EmbeddedCluster,
                                                                          tmp_path: Path) -> None:
    """The whole flow as `python -m runner kube-rbac`'s identity instead of admin; a decoy that
    carries the run's labels and cluster annotation is left alone."""
    from tests.test_kube_rbac import restricted_runner
    subject, kubeconfig = restricted_runner(cluster, tmp_path / "runner.kubeconfig")
    core = client.CoreV1Api(cluster.admin_api())
    run_id = new_run_id()
    decoy = f"decoy-{run_id}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=decoy, labels=m.run_labels(run_id), annotations={m.ANNOTATION_CLUSTER: CLUSTER})))
    said: list[str] = []
    cells = [_cell("watch"), _cell("idle-request")]
    _, run_dir, results = _run(cluster, tmp_path / "run", cells, clusters={CLUSTER: _kube(kubeconfig)},
                               run_id=run_id, say=said.append)
    for cell in cells:
        assert results[cell.id].reason.startswith("pod never started within 3 s"), results[cell.id].reason
    namespaces = [m.run_namespace(run_id), m.cell_namespace(run_id, 0), m.cell_namespace(run_id, 1)]
    for ns in namespaces:
        binding = client.RbacAuthorizationV1Api(cluster.admin_api()).read_namespaced_role_binding(m.IN_RUN_BINDING, ns)
        assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [
            ("ServiceAccount", subject.name, subject.namespace)]
    _assert_torn_down(cluster, namespaces)
    status = json.loads((run_dir / "clusters" / CLUSTER / "teardown.json").read_text())
    assert sorted(status) == sorted(namespaces)
    assert core.read_namespace(decoy).metadata.deletion_timestamp is None
    assert not [t for t in said if "more than its job needs" in t]
    _assert_no_secrets(run_dir, cluster)


@pytest.mark.slow
@needs_root_tools("ip", "curl", "go")
def test_each_harness_write_uses_a_new_connection(cluster: EmbeddedCluster) -> None:
    assert cluster.admin_kubeconfig is not None
    made: list[client.ApiClient] = []

    def new_api() -> client.ApiClient:
        api = config.new_client_from_config(config_file=str(cluster.admin_kubeconfig))
        made.append(api)
        return api

    access = KubeAccess(new_api=new_api)
    ns = f"wd-fresh-{new_run_id()}"
    client.CoreV1Api(cluster.admin_api()).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    core = FreshCoreV1Api(access.new_api)
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="trigger"),
                                                             data={"value": "initial"}))
    for value in ("round-1", "round-2"):
        core.patch_namespaced_config_map("trigger", ns, {"data": {"value": value}})
    assert len(made) == 3 and len({id(a) for a in made}) == 3
    got = client.CoreV1Api(cluster.admin_api()).read_namespaced_config_map("trigger", ns)
    assert got.data == {"value": "round-2"}


def _tcpdump_writing(pcap: Path) -> int:
    """The pid of the tcpdump writing this file (the test's own, by its unique path)."""
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if proc.name.isdigit() and cmd[0].endswith(b"tcpdump") and str(pcap).encode() in cmd:
            return int(proc.name)
    raise AssertionError(f"no tcpdump writes {pcap}")


@needs_root_tools("ip", "tcpdump", "prlimit")
def test_capture_sidecar_says_when_tcpdump_ended_early_or_was_cut(tmp_path: Path) -> None:
    """Issue 13: the sidecar records tcpdump's exit code and whether the runner asked it to stop; a
    capture killed or cut at WATCHDROP_CAPTURE_MAX reads as such (CaptureFacts), never as complete."""
    ns = f"wdtest-{new_run_id()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", ns, "route", "add", "default", "dev", "lo"], check=True)
        for case, limit in (("killed", 1 << 20), ("cut", 300)):
            cap = tmp_path / case
            cap.mkdir()
            env = {**os.environ, "WATCHDROP_CAPTURE_FILTER": "tcp port 5555", "WATCHDROP_CAPTURE_MAX": str(limit)}
            script = subprocess.Popen(["ip", "netns", "exec", ns, "sh", "-c", _at(m.CAPTURE_SCRIPT, cap)], env=env)
            procs.append(script)
            post = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", _at(m.CAPTURE_POST_START, cap)], timeout=40)
            assert post.returncode == 0
            if case == "killed":
                os.kill(_tcpdump_writing(cap / "pod.pcap"), signal.SIGKILL)
            for _ in range(3):  # enough packets to pass a 300-byte cap
                subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", TRAFFIC], check=True, timeout=20)
            stop = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", _at(m.STOP_CAPTURE_SCRIPT, cap)],
                                  capture_output=True, text=True, timeout=30)
            assert stop.returncode == 0, stop.stderr
            facts = capture_facts(stop.stdout.strip(), cap / "tcpdump.log", cap / "pod.pcap")
            assert facts is not None, stop.stdout
            if case == "killed":
                assert stop.stdout.strip() == "137 early"
                assert (facts.ran_to_end, facts.exit_code, facts.dropped) == (False, -9, None)
                assert "the capture stopped before the cell ended" in " ".join(facts.problems())
            else:
                assert stop.stdout.strip().endswith(" early"), stop.stdout
                facts = facts.model_copy(update={"limit": limit})
                assert facts.size >= limit and not facts.ran_to_end
                assert any(p.startswith("capture cut at") for p in facts.problems()), facts.problems()
            script.terminate()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
        subprocess.run(["ip", "netns", "del", ns], check=False)
