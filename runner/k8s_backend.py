"""The kubernetes backend: the matrix's cells on a real cluster, reached through a kube context.

Per matrix cluster: connect → preflight (SelfSubjectAccessReviews for everything the runner will
do) → images → deploy (the timer server in `watchdrop-<run-id>`, each cell in its own namespace
`watchdrop-<run-id>-c<NNN>`, runner/manifests.py) → wait for every pod to start (bounded) → rounds →
collect → teardown (in `finally`, also on Ctrl-C; `--keep` leaves the namespaces and prints how to
delete them).

The rounds are the embedded harness's own (runner/cellrun.py's CellRun: update `trigger` every
interval, wait for `event-seen`, write `failure-<timestamp>` on a miss), driven from outside the
cluster. Two things differ from the embedded cluster, both because the runner's own path to the
API server may cross the same kind of load balancer the cells test:

- every write of the harness goes over a new ApiClient (a new TCP and TLS connection), so an
  update can never sit on a connection the LB forgot while the harness idled;
- the watcher's JSON lines come from the pod's log stream, followed with a read timeout far below
  any LB idle timeout: after that much silence the runner reconnects and reads the log again from
  the start, skipping the lines it has. A stale stream can delay a line by that timeout, never
  lose it.

Evidence lands in the embedded layout (`results/<run-id>/cells/<client>/<cluster>/<scenario>/`):
the watcher's lines (`watcher.jsonl`; the rest of the container log, stdout and stderr merged by
the runtime, in `watcher.stderr`; everything in `watcher.log`), the pod's capture copied out of the
sidecar (`pod.pcap`, `tcpdump.log`), the pod's events and last status, the rendered objects, the
harness log. Verdicts come from runner/verdicts.judge_cell, as on the embedded cluster; a pod that
never started, was evicted or OOM-killed, or whose capture died, is ERROR with the reason.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

from runner import kube_leftovers, signals
from runner import manifests as m
from runner.cellrun import CellRun, CellSetupError
from runner.clientbuild import BuiltClient
from runner.descriptor import Descriptor
from runner.errors import Interrupted, PrerequisiteError, UsageError, WatchdropError
from runner.images import Images, resolve_images
from runner.matrix import KubernetesCluster
from runner.model import CellResult, Verdict
from runner.pcapfacts import PcapError, PcapFacts, read_pcap
from runner.phases import PhaseLog
from runner.plan import Cell
from runner.verdicts import EARLY_SLACK, CellInputs, Update, judge_cell, parse_watcher_log

if TYPE_CHECKING:
    from runner.embedded import EmbeddedCluster
    from runner.lb import LoadBalancer, Pod
    from runner.procs import Child

Obj = dict[str, Any]
NewApi = Callable[[], client.ApiClient]
Say = Callable[[str], None]

#: (connect, read) seconds for every request the runner makes: a dead path fails, never hangs.
REQUEST_TIMEOUT = (10.0, 30.0)

#: Waiting reasons that no amount of waiting fixes.
FATAL_WAITING = {"InvalidImageName", "CreateContainerConfigError", "CreateContainerError", "ErrImageNeverPull",
                 "RunContainerError", "PostStartHookError"}


@dataclass(frozen=True)
class KubeSettings:
    """Bounds of the kubernetes backend; every wait in it is one of these."""

    #: Seconds for every pod to be running: scheduling, an image pull on a cold node, the capture's
    #: postStart. A pod not running by then is ERROR "pod never started" with its phase,
    #: conditions and warning events.
    start_timeout: float = 300.0
    #: Seconds the watcher gets to exit after SIGTERM before SIGKILL; its exit code is evidence.
    stop_timeout: float = 20.0
    #: Seconds for one exec (stop the capture, copy it out).
    exec_timeout: float = 120.0
    #: The runner's log stream reconnects after this many silent seconds; far below every cloud
    #: LB idle timeout (240 s and up), so the runner's own stream never idles out.
    log_read_timeout: float = 20.0
    #: Seconds to wait for the run's namespaces to be gone after the deletes.
    teardown_timeout: float = 180.0
    #: A namespace still Terminating with no status conditions after this many seconds has no
    #: namespace controller acting on it (the controller sets conditions on its first pass): stop
    #: waiting for it instead of waiting out teardown_timeout.
    no_controller_after: float = 20.0
    #: Seconds between status polls while waiting.
    poll: float = 1.0
    #: imagePullPolicy when the matrix does not say; content-hash tags make IfNotPresent safe.
    pull_policy: str = "IfNotPresent"


# -- reaching the cluster ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KubeAccess:
    """How the runner reaches one cluster: fresh ApiClients on demand, and the context's namespace."""

    new_api: NewApi
    #: The kube context's namespace: where pull_secrets are read from.
    namespace: str = "default"
    #: `--kubeconfig ... --context ...` for the kubectl commands the runner prints.
    kubectl_flags: tuple[str, ...] = ()


def connect(cluster: KubernetesCluster) -> KubeAccess:
    """Load the cluster's kubeconfig/context once; every ApiClient shares that configuration but has
    its own connection pool (exec credential plugins refresh through the shared configuration)."""
    path = str(Path(cluster.kubeconfig).expanduser()) if cluster.kubeconfig else None
    cfg = client.Configuration()
    try:
        config.load_kube_config(config_file=path, context=cluster.context, client_configuration=cfg,
                                persist_config=False)
        contexts, active = config.list_kube_config_contexts(config_file=path)
    except Exception as exc:  # ConfigException, a missing file, bad YAML
        raise UsageError(f"cluster {cluster.name}: cannot load kube context {cluster.context or '(current)'}"
                         f"{' from ' + path if path else ''}: {exc}",
                         fix="check `context:` / `kubeconfig:` in the matrix (`kubectl config get-contexts`)") from exc
    chosen = next((c for c in contexts if c.get("name") == cluster.context), active) if cluster.context else active
    ns = ((chosen or {}).get("context") or {}).get("namespace") or "default"
    flags: list[str] = []
    if path:
        flags += ["--kubeconfig", path]
    if cluster.context:
        flags += ["--context", cluster.context]
    return KubeAccess(new_api=lambda: client.ApiClient(configuration=cfg), namespace=ns, kubectl_flags=tuple(flags))


def delete_command(access: KubeAccess, run_id: str) -> str:
    """The kubectl command that deletes a run's namespaces, shown wherever the runner leaves them."""
    return " ".join(["kubectl", *access.kubectl_flags, "delete", "namespace", "-l", m.run_selector(run_id)])


def api_error(exc: BaseException) -> str:
    """One line from an ApiException (the API's own message), or the exception's text."""
    if isinstance(exc, ApiException):
        try:
            body = json.loads(exc.body or "{}")
            message = body.get("message") or exc.reason
        except (ValueError, AttributeError):
            message = exc.reason
        return f"{exc.status} {message}".strip()
    return f"{exc.__class__.__name__}: {exc}"


def missing_permissions(api: client.ApiClient, namespace: str, *, secrets_from: str | None = None) -> list[str]:
    """SelfSubjectAccessReviews for everything the runner will do (manifests.RUNNER_RULES);
    `namespace` is a namespace the run will create. Returns `verb resource` for each refusal."""
    authz = client.AuthorizationV1Api(api)

    def allowed(group: str, resource: str, verb: str, ns: str | None) -> bool:
        res, _, sub = resource.partition("/")
        attrs = client.V1ResourceAttributes(group=group, resource=res, subresource=sub or None, verb=verb,
                                            namespace=ns)
        review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attrs))
        status = authz.create_self_subject_access_review(review, _request_timeout=REQUEST_TIMEOUT).status
        return bool(status and status.allowed)

    missing = []
    for group, resource, verbs in m.RUNNER_RULES:
        for verb in verbs:
            ns = None if resource == "namespaces" else namespace
            if not allowed(group, resource, verb, ns):
                missing.append(f"{verb} {resource}" + (f".{group}" if group else ""))
    if secrets_from is not None:
        if not allowed("", "secrets", "get", secrets_from):
            missing.append(f"get secrets in {secrets_from}")
        for verb in ("create", "patch"):
            if not allowed("", "secrets", verb, namespace):
                missing.append(f"{verb} secrets")
    return missing


# -- objects ------------------------------------------------------------------------------------------

_KINDS: dict[str, tuple[str, bool, str]] = {
    "Namespace": ("core", False, "namespace"),
    "ServiceAccount": ("core", True, "namespaced_service_account"),
    "ConfigMap": ("core", True, "namespaced_config_map"),
    "Secret": ("core", True, "namespaced_secret"),
    "Pod": ("core", True, "namespaced_pod"),
    "Service": ("core", True, "namespaced_service"),
    "Role": ("rbac", True, "namespaced_role"),
    "RoleBinding": ("rbac", True, "namespaced_role_binding"),
}


def _target(api: client.ApiClient, obj: Obj) -> tuple[Any, str, list[str]]:
    group, namespaced, suffix = _KINDS[obj["kind"]]
    target = client.CoreV1Api(api) if group == "core" else client.RbacAuthorizationV1Api(api)
    meta = obj["metadata"]
    args = [meta["name"], meta["namespace"]] if namespaced else [meta["name"]]
    return target, suffix, args


def apply(api: client.ApiClient, obj: Obj, *, dry_run: bool = False) -> Any:
    """Server-side apply with strict field validation: an unknown or misspelt field is an error."""
    target, suffix, args = _target(api, obj)
    return getattr(target, f"patch_{suffix}")(
        *args, body=obj, field_manager=m.MANAGER, force=True, field_validation="Strict",
        dry_run="All" if dry_run else None, _content_type="application/apply-patch+yaml",
        _request_timeout=REQUEST_TIMEOUT)


def delete(api: client.ApiClient, obj: Obj, *, grace: int | None = None) -> bool:
    """Delete; False when it was already gone."""
    target, suffix, args = _target(api, obj)
    try:
        getattr(target, f"delete_{suffix}")(*args, grace_period_seconds=grace, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _describe_obj(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{obj['kind']} {meta.get('namespace', '') + '/' if meta.get('namespace') else ''}{meta['name']}"


class FreshCoreV1Api(client.CoreV1Api):
    """The harness's writes (trigger updates, failure ConfigMaps), each on a new ApiClient.

    The harness idles for a whole interval between two writes; a pooled connection could be one
    the LB in front of the API server forgot meanwhile, and the write would then hang or fail for
    reasons that belong to the runner, not the watcher.
    """

    def __init__(self, new_api: NewApi):  # no shared ApiClient, on purpose
        self._new_api = new_api

    def _once(self, method: str, *args: Any, **kwargs: Any) -> Any:
        api = self._new_api()
        try:
            kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
            return getattr(client.CoreV1Api(api), method)(*args, **kwargs)
        finally:
            api.close()

    def patch_namespaced_config_map(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self._once("patch_namespaced_config_map", *args, **kwargs)

    def create_namespaced_config_map(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self._once("create_namespaced_config_map", *args, **kwargs)


# -- exec ---------------------------------------------------------------------------------------------


@dataclass
class ExecResult:
    #: None when the exec did not finish in time or its status could not be read.
    rc: int | None
    stdout: bytes
    stderr: bytes

    def text(self) -> str:
        return (self.stdout + self.stderr).decode(errors="replace").strip()


def exec_in(new_api: NewApi, ns: str, pod: str, container: str, argv: Sequence[str], timeout: float) -> ExecResult:
    """Run argv in a container (the pods/exec WebSocket), binary-safe, bounded by `timeout`."""
    api = new_api()
    out, err = bytearray(), bytearray()
    rc: int | None = None
    try:
        ws = stream(client.CoreV1Api(api).connect_get_namespaced_pod_exec, pod, ns, container=container,
                    command=list(argv), stderr=True, stdin=False, stdout=True, tty=False,
                    _preload_content=False, binary=True)
        try:
            deadline = time.monotonic() + timeout
            while ws.is_open() and time.monotonic() < deadline:
                ws.update(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
                out += ws.read_stdout(timeout=0)
                err += ws.read_stderr(timeout=0)
            out += ws.read_stdout(timeout=0)
            err += ws.read_stderr(timeout=0)
            if not ws.is_open():
                try:
                    rc = ws.returncode
                except Exception:  # no status frame (connection cut): unknown, not 0
                    rc = None
        finally:
            ws.close()
    finally:
        api.close()
    return ExecResult(rc, bytes(out), bytes(err))


def extract_files(tar_bytes: bytes, dest: Path, names: Iterable[str]) -> list[str]:
    """Regular files named `names` (basename only) out of a tar stream into dest; nothing else."""
    wanted = set(names)
    got = []
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if not member.isfile() or name not in wanted:
                continue
            f = tar.extractfile(member)
            if f is not None:
                (dest / name).write_bytes(f.read())
                got.append(name)
    return got


def copy_capture(new_api: NewApi, ns: str, pod: str, dest: Path, *, prefix: str = "", timeout: float) -> list[str]:
    """Stop tcpdump in the pod's capture container (it closes the file) and copy its files out.

    Returns the problems met; the evidence files are `<prefix>pod.pcap` and `<prefix>tcpdump.log`.
    """
    problems = []
    stopped = exec_in(new_api, ns, pod, m.CAPTURE_CONTAINER, ["/bin/sh", "-c", m.STOP_CAPTURE_SCRIPT], timeout)
    if stopped.rc != 0:
        problems.append(f"stopping tcpdump: exit {stopped.rc}: {stopped.text()[-300:]}")
    tar = exec_in(new_api, ns, pod, m.CAPTURE_CONTAINER,
                  ["tar", "cf", "-", "-C", m.CAPTURE_DIR, "pod.pcap", "tcpdump.log"], timeout)
    if tar.rc != 0:
        problems.append(f"copying the capture out: exit {tar.rc}: {tar.stderr.decode(errors='replace')[-300:]}")
    if tar.stdout:
        tmp = dest / f".{prefix}capture"
        try:
            for name in extract_files(tar.stdout, tmp, ["pod.pcap", "tcpdump.log"]):
                (tmp / name).replace(dest / f"{prefix}{name}")
        except (tarfile.TarError, OSError) as exc:
            problems.append(f"copying the capture out: {exc}")
        finally:
            for leftover in tmp.glob("*"):
                leftover.unlink()
            if tmp.exists():
                tmp.rmdir()
    return problems


# -- pod status ---------------------------------------------------------------------------------------


def _statuses(pod: client.V1Pod) -> dict[str, client.V1ContainerStatus]:
    st = pod.status
    return {cs.name: cs for cs in ((st.container_statuses if st else None) or [])}


def _terminated(cs: client.V1ContainerStatus | None) -> client.V1ContainerStateTerminated | None:
    if cs is None or cs.state is None:
        return None
    return cs.state.terminated


def _limit(pod: client.V1Pod, container: str) -> str:
    for c in (pod.spec.containers if pod.spec else []) or []:
        if c.name == container and c.resources and c.resources.limits:
            return str(c.resources.limits.get("memory", "?"))
    return "?"


def pod_problem(pod: client.V1Pod) -> str | None:
    """A reason the pod's evidence cannot be judged (evicted, OOM-killed, capture gone), or None."""
    st = pod.status
    if st is not None and st.reason == "Evicted":
        return f"pod evicted: {st.message or 'no message'}"
    statuses = _statuses(pod)
    for name, cs in statuses.items():
        for state in (cs.state, cs.last_state):
            term = state.terminated if state is not None else None
            if term is not None and term.reason == "OOMKilled":
                return f"{name} container OOM-killed (memory limit {_limit(pod, name)})"
    cap = _terminated(statuses.get(m.CAPTURE_CONTAINER))
    if cap is not None:  # the runner only ever stops tcpdump, never the sidecar itself
        return f"capture sidecar ended early ({cap.reason or 'exit'} {cap.exit_code}): no packet evidence after it"
    if st is not None and st.phase == "Failed" and st.reason:
        return f"pod failed: {st.reason}: {st.message or ''}".strip()
    return None


def describe_pod(pod: client.V1Pod | None, events: Sequence[client.CoreV1Event] = ()) -> str:
    """Phase, conditions, container waiting/terminated reasons and the last warnings, in one line."""
    if pod is None:
        return "the pod does not exist"
    st = pod.status
    parts = [f"phase {(st.phase if st else None) or 'unknown'}"]
    conditions = (st.conditions if st else None) or []
    if not conditions:
        parts.append("no conditions (never scheduled: no scheduler acted on it or no node was assigned)")
    for c in conditions:
        if c.status != "True":
            parts.append(f"{c.type}={c.status}" + (f" ({c.reason}: {c.message})" if c.reason else ""))
    for name, cs in _statuses(pod).items():
        if cs.state is None:
            continue
        if cs.state.waiting is not None:
            w = cs.state.waiting
            parts.append(f"{name} waiting: {w.reason}" + (f" ({w.message})" if w.message else ""))
        elif cs.state.terminated is not None:
            t = cs.state.terminated
            parts.append(f"{name} terminated: {t.reason} exit {t.exit_code}" + (f" ({t.message})" if t.message else ""))
    warnings = [e for e in events if e.type == "Warning"][-3:]
    for e in warnings:
        parts.append(f"event {e.reason}: {e.message}")
    if not events:
        parts.append("no events")
    return "; ".join(parts)


def start_state(pod: client.V1Pod) -> tuple[str, str | None]:
    """("running", None), ("waiting", None) or ("failed", why) for a pod the runner is starting."""
    problem = pod_problem(pod)
    if problem:
        return "failed", problem
    st = pod.status
    if st is not None and st.phase in ("Succeeded", "Failed"):
        return "failed", f"pod {st.phase.lower()} before the watcher ran"
    statuses = _statuses(pod)
    for name, cs in statuses.items():
        waiting = cs.state.waiting if cs.state is not None else None
        if waiting is not None and waiting.reason in FATAL_WAITING:
            return "failed", f"{name}: {waiting.reason}: {waiting.message or ''}".strip()
    cap, wat = statuses.get(m.CAPTURE_CONTAINER), statuses.get(m.WATCHER_CONTAINER)
    cap_running = cap is not None and cap.state is not None and cap.state.running is not None
    wat_started = wat is not None and wat.state is not None and (
        wat.state.running is not None or wat.state.terminated is not None)
    return ("running", None) if cap_running and wat_started else ("waiting", None)


# -- the watcher as seen from outside -----------------------------------------------------------------


class LineSink:
    """Where the watcher's log lines go: JSON objects to `jsonl` (what the harness and the verdict
    read), the rest to `other`, everything verbatim to `raw`; receipt times for the clock check."""

    def __init__(self, jsonl: Path, other: Path, raw: Path):
        self.jsonl, self.other, self.raw = jsonl, other, raw
        self.seen = 0
        self.received: list[tuple[float, float]] = []
        for p in (jsonl, other, raw):
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch()

    def emit(self, line: bytes, now: float | None = None) -> None:
        now = time.time() if now is None else now
        text = line.decode("utf-8", "replace").rstrip("\r")
        with self.raw.open("a") as f:
            f.write(text + "\n")
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        target = self.jsonl if isinstance(obj, dict) else self.other
        with target.open("a") as f:
            f.write(text + "\n")
        if isinstance(obj, dict) and isinstance(obj.get("ts"), int | float):
            self.received.append((now, float(obj["ts"])))

    def feed_stream(self, chunks: Iterable[bytes], *, final: bool = False) -> None:
        """One read of the whole log from its start: skip the lines already emitted, emit the rest.
        A trailing line without newline is kept for the next read unless this is the final one."""
        count = 0
        buf = b""
        for chunk in chunks:
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                count += 1
                if count > self.seen:
                    self.emit(line)
                    self.seen = count
        if final and buf:
            count += 1
            if count > self.seen:
                self.emit(buf)
                self.seen = count


class PodWatcher:
    """The watcher container seen from outside: lines as they arrive, alive or not, exit code.

    Stands in for runner.procs.Child in CellRun's round loop (`alive()`, `returncode`).
    """

    def __init__(self, new_api: NewApi, ns: str, sink: LineSink, *, read_timeout: float, note: Say):
        self.new_api, self.ns, self.sink, self.read_timeout = new_api, ns, sink, read_timeout
        self._note, self._last_note = note, ""
        self.ended = threading.Event()
        self.closed = threading.Event()
        self.pod: client.V1Pod | None = None
        self.gone = False
        self._thread = threading.Thread(target=self._run, name=f"logs {ns}", daemon=True)

    def start(self) -> PodWatcher:
        self._thread.start()
        return self

    def note(self, text: str) -> None:
        """Into the harness log, once per distinct message (a refused stream is retried every 0.5 s)."""
        if text != self._last_note:
            self._last_note = text
            self._note(text)

    def alive(self) -> bool:
        return not self.ended.is_set()

    @property
    def termination(self) -> client.V1ContainerStateTerminated | None:
        return _terminated(_statuses(self.pod).get(m.WATCHER_CONTAINER)) if self.pod is not None else None

    @property
    def returncode(self) -> int | None:
        term = self.termination
        return term.exit_code if term is not None else None

    def wait_ended(self, timeout: float) -> bool:
        return self.ended.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        self.closed.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def refresh(self) -> client.V1Pod | None:
        api = self.new_api()
        try:
            core = client.CoreV1Api(api)
            self.pod = core.read_namespaced_pod(m.WATCHER_POD, self.ns, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                self.gone = True
                return None
            self.note(f"pod status: {api_error(exc)}")
        except Exception as exc:
            self.note(f"pod status: {api_error(exc)}")
        finally:
            api.close()
        return self.pod

    def _read(self, follow: bool) -> None:
        api = self.new_api()
        resp: Any = None
        try:
            resp = client.CoreV1Api(api).read_namespaced_pod_log(
                m.WATCHER_POD, self.ns, container=m.WATCHER_CONTAINER, follow=follow, _preload_content=False,
                _request_timeout=(REQUEST_TIMEOUT[0], self.read_timeout))
            self.sink.feed_stream(resp.stream(8192), final=not follow)
        except Exception as exc:  # read timeout (silence), a cut stream, the API refusing: read again
            if not follow or "timed out" not in str(exc).lower():
                self.note(f"log stream: {api_error(exc)}")
        finally:
            if resp is not None:
                resp.release_conn()
            api.close()

    def _run(self) -> None:
        while not self.closed.is_set():
            self._read(follow=True)
            pod = self.refresh()
            if self.gone or (pod is not None and self.termination is not None) or (
                    pod is not None and pod.status is not None and pod.status.phase in ("Succeeded", "Failed")):
                if not self.gone:
                    self._read(follow=False)
                self.ended.set()
                return
            self.closed.wait(0.5)
        self.ended.set()


def clock_problems(received: Sequence[tuple[float, float]], lines: Sequence[Mapping[str, Any]],
                   updates: Sequence[Update]) -> list[str]:
    """Evidence that the node's clock and the runner's disagree by more than the verdict tolerates.

    The watcher's `ts` and the capture come from the node's clock, the harness's update times from
    the runner's. A line stamped after the runner received it proves the node ahead; an event
    carrying a round's unique value stamped before the runner wrote it proves the node behind.
    """
    problems = []
    ahead = max((ts - recv for recv, ts in received), default=0.0)
    if ahead > EARLY_SLACK:
        problems.append(f"the node's clock is at least {ahead:.1f} s ahead of the runner's (a line was stamped "
                        "after the runner received it); sync both clocks (NTP) and run again")
    for u in updates:
        early = [float(x["ts"]) for x in lines if x.get("event") == "event-seen" and x.get("value") == u.value
                 and isinstance(x.get("ts"), int | float)]
        if early and min(early) < u.at - EARLY_SLACK:
            problems.append(f"the node's clock is at least {u.at - min(early):.1f} s behind the runner's (the "
                            f"event for {u.value} is stamped before the runner wrote it); sync both clocks (NTP) "
                            "and run again")
            break
    return problems


# -- one cell -----------------------------------------------------------------------------------------


@dataclass
class KubeCellRun(CellRun):
    """One cell on a real cluster: CellRun's rounds, with a pod instead of a process.

    Stopgap until CellRun's round loop moves into a base class without `cluster`/`lb` (see the
    report): those two fields are None here and nothing inherited reads them.
    """

    run_id: str = ""
    access: KubeAccess | None = None
    settings: KubeSettings = field(default_factory=KubeSettings)
    objects: list[Obj] = field(default_factory=list)
    pull_secrets: list[Obj] = field(default_factory=list)
    pod_watcher: PodWatcher | None = None
    pod_started: bool = False
    pod_problems: list[str] = field(default_factory=list)
    _stopped: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.namespace = m.cell_namespace(self.run_id, self.index)

    @property
    def new_api(self) -> NewApi:
        assert self.access is not None
        return self.access.new_api

    def _core(self) -> client.CoreV1Api:
        return FreshCoreV1Api(self.new_api)

    # -- deploy ---------------------------------------------------------------------------------
    def setup(self, pod: Pod | None = None) -> None:
        """Apply the cell's objects (the pod last). `pod` is CellRun's LB slot: unused here."""
        (self.evidence / "manifests.json").write_text(json.dumps(
            self.objects + [{"kind": "Secret", "name": s["metadata"]["name"], "note": "copied, not recorded"}
                            for s in self.pull_secrets], indent=2) + "\n")
        api = self.new_api()
        try:
            ns, *rest = self.objects
            for obj in [ns, *self.pull_secrets, *rest]:
                apply(api, obj)
                self.harness(f"applied {_describe_obj(obj)}")
        except Exception as exc:
            raise CellSetupError(f"cell setup failed: {api_error(exc)}") from exc
        finally:
            api.close()

    def started_now(self) -> None:
        self.pod_started = True
        self.started = time.time()
        self.pod_watcher = PodWatcher(self.new_api, self.namespace, LineSink(self.stdout, self.stderr,
                                                                            self.evidence / "watcher.log"),
                                      read_timeout=self.settings.log_read_timeout, note=self.harness).start()
        # CellRun's round loop asks `alive()` and `returncode`, which PodWatcher answers.
        self.watcher = cast("Child", self.pod_watcher)
        self.harness("pod running; following the watcher's log")

    # -- stop and collect -----------------------------------------------------------------------
    def _signal(self, sig: str) -> str:
        r = exec_in(self.new_api, self.namespace, m.WATCHER_POD, m.CAPTURE_CONTAINER,
                    ["/bin/sh", "-c", m.SIGNAL_WATCHER_SCRIPT, "signal", sig], self.settings.exec_timeout)
        return r.text() if r.rc == 0 else f"exit {r.rc}: {r.text()}"

    def stop_processes(self) -> None:
        """SIGTERM the watcher (SIGKILL after stop_timeout), then stop the capture and copy it out."""
        if self._stopped or not self.pod_started or self.pod_watcher is None:
            return
        self._stopped = True
        w = self.pod_watcher
        try:
            if w.alive():
                self.harness(f"stop: SIGTERM to the watcher: {self._signal('TERM')}")
                if not w.wait_ended(self.settings.stop_timeout):
                    self.harness(f"stop: no exit within {self.settings.stop_timeout:.0f} s; "
                                 f"SIGKILL: {self._signal('KILL')}")
                    if not w.wait_ended(self.settings.stop_timeout):
                        self.harness_errors.append("the watcher did not stop after SIGKILL")
            pod = w.refresh()
            self.watcher_exit = w.returncode
            term = w.termination
            if term is not None:
                self.harness(f"watcher exited: {term.reason} exit {term.exit_code}")
            if pod is not None:
                problem = pod_problem(pod)
                if problem:
                    self.pod_problems.append(problem)
            elif w.gone:
                self.pod_problems.append("the pod disappeared during the cell (deleted, or its node was lost)")
            if not w.gone:
                for p in copy_capture(self.new_api, self.namespace, m.WATCHER_POD, self.evidence,
                                      timeout=self.settings.exec_timeout):
                    self.harness(p)
        except Exception as exc:
            self.harness_errors.append(f"stopping the pod: {api_error(exc)}")
        finally:
            w.close()
            self.finished = self.finished or time.time()

    def snapshot(self) -> None:
        """The pod's last status and its namespace's events, as evidence (no tokens in either)."""
        api = self.new_api()
        core = client.CoreV1Api(api)
        try:
            try:
                pod = core.read_namespaced_pod(m.WATCHER_POD, self.namespace, _request_timeout=REQUEST_TIMEOUT)
                (self.evidence / "pod.json").write_text(json.dumps(api.sanitize_for_serialization(pod.status),
                                                                   indent=2, sort_keys=True) + "\n")
            except ApiException as exc:
                if exc.status != 404:
                    self.harness(f"pod status: {api_error(exc)}")
            events = core.list_namespaced_event(self.namespace, _request_timeout=REQUEST_TIMEOUT).items
            (self.evidence / "events.json").write_text(json.dumps(
                [event_record(e) for e in events], indent=2, sort_keys=True) + "\n")
        except Exception as exc:
            self.harness(f"events: {api_error(exc)}")
        finally:
            api.close()

    def collect(self, lb_problems: list[str] | None = None, cluster_alive: bool = True,
                pcap_facts: PcapFacts | Exception | None = None) -> CellResult:
        """Stop, copy out and judge. The LB arguments are the embedded cluster's (no emulated LB
        here); `pcap_facts`, when given, is the capture already read."""
        from runner.run_matrix import base_result

        self.stop_processes()
        self.snapshot()
        cell, desc = self.cell, self.built.descriptor
        errors = list(self.harness_errors)
        if self.setup_error:
            errors.append(self.setup_error)
        errors += self.pod_problems
        pcap = None
        lines = None
        if self.pod_started:
            try:
                if isinstance(pcap_facts, Exception):
                    raise pcap_facts
                # The pod makes only the watcher's connections and the capture starts first, so each
                # SYN names the server end; no port filter (kube-proxy may or may not rewrite 443).
                pcap = pcap_facts or read_pcap(self.pcap_path)
            except (PcapError, OSError) as exc:
                errors.append(f"no packet evidence: {exc}")
            lines = parse_watcher_log(self.stdout.read_text(errors="replace")) if self.stdout.exists() else None
            if self.pod_watcher is not None:
                clock = clock_problems(self.pod_watcher.sink.received, lines or [], self.updates)
                errors += clock
                (self.evidence / "clock.json").write_text(json.dumps({
                    "max_line_ahead_of_receipt": max((ts - r for r, ts in self.pod_watcher.sink.received),
                                                     default=None),
                    "problems": clock}, indent=2) + "\n")
        inputs = CellInputs(
            scenario=cell.scenario, detection_timeout=cell.detection_timeout, expected_rounds=cell.rounds,
            profile=None, updates=self.updates, watcher_lines=lines, watcher_exit=self.watcher_exit,
            watcher_stderr=self.stderr.read_text(errors="replace") if self.stderr.exists() else "",
            pcap=pcap, lb=None, harness_errors=errors, expected_version=desc.version,
        )
        j = judge_cell(inputs)
        result = base_result(cell, desc, j.verdict, j.reason)
        result.rounds = j.rounds
        result.watcher = j.watcher
        result.pcap = pcap.to_dict() if pcap else None
        result.keepalive = pcap.keepalive_summary() if pcap else ""
        result.errors = list(inputs.harness_errors)
        result.started, result.finished = self.started, self.finished
        rel = self.evidence.relative_to(self.run_dir)
        result.evidence = {name: str(rel / name) for name in EVIDENCE if (self.evidence / name).exists()
                           or name == "cell.json"}
        (self.evidence / "cell.json").write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
        return result


EVIDENCE = ("watcher.jsonl", "watcher.stderr", "watcher.log", "pod.pcap", "tcpdump.log", "events.json", "pod.json",
            "manifests.json", "clock.json", "harness.log", "cell.json")


def event_record(e: client.CoreV1Event) -> Obj:
    involved = e.involved_object
    return {"type": e.type, "reason": e.reason, "message": e.message, "count": e.count,
            "object": f"{involved.kind}/{involved.name}" if involved else None,
            "first": str(e.first_timestamp or e.event_time or ""), "last": str(e.last_timestamp or "")}


# -- one cluster --------------------------------------------------------------------------------------


class KubernetesBackend:
    """Everything the run does on one matrix cluster; `teardown()` undoes it."""

    def __init__(self, cluster: KubernetesCluster, access: KubeAccess, *, run_id: str, run_dir: Path,
                 stop: threading.Event, slot: int = 0, settings: KubeSettings | None = None, say: Say = print):
        self.cluster, self.access, self.run_id, self.run_dir = cluster, access, run_id, run_dir
        self.stop, self.slot, self.say = stop, slot, say
        self.settings = settings or KubeSettings()
        self.pull_policy = cluster.image_pull_policy or self.settings.pull_policy
        self.run_ns = m.run_namespace(run_id, slot)
        self.evidence = run_dir / "clusters" / cluster.name
        self.evidence.mkdir(parents=True, exist_ok=True)
        #: Every namespace this run applied (or tried to), for teardown.
        self.namespaces: list[str] = []
        self.timer_started = False
        self.problems: list[str] = []
        #: namespace -> "gone" | what it still was when teardown stopped waiting.
        self.teardown_status: dict[str, str] = {}
        self._secrets: list[tuple[str, str | None, Any]] | None = None
        #: Written on every namespace, so a later run can tell whether this one crashed.
        self.runner = kube_leftovers.runner_mark(os.getpid())

    def note(self, text: str) -> None:
        with (self.evidence / "cluster.log").open("a") as f:
            f.write(f"{time.time():.3f} {text}\n")

    # -- preflight --------------------------------------------------------------------------------
    def preflight(self) -> None:
        api = self.access.new_api()
        try:
            version = client.VersionApi(api).get_code(_request_timeout=REQUEST_TIMEOUT)
            self.note(f"server version {version.git_version}")
            missing = missing_permissions(api, self.run_ns,
                                          secrets_from=self.access.namespace if self.cluster.pull_secrets else None)
        except ApiException as exc:
            raise PrerequisiteError(f"cluster {self.cluster.name}: the API server refused the runner: {api_error(exc)}",
                                    fix="check the kube context's credentials") from exc
        except Exception as exc:
            raise PrerequisiteError(f"cluster {self.cluster.name}: cannot reach the API server: {api_error(exc)}",
                                    fix="check the kube context (`kubectl version`)") from exc
        finally:
            api.close()
        (self.evidence / "server.json").write_text(json.dumps({"git_version": version.git_version,
                                                                "platform": version.platform}, indent=2) + "\n")
        if missing:
            role = m.runner_cluster_role(pull_secrets=bool(self.cluster.pull_secrets))
            raise PrerequisiteError(
                f"cluster {self.cluster.name}: the runner's kube identity may not: {', '.join(missing)}",
                fix="bind the runner's identity to the ClusterRole in README.md (kubernetes backend)",
                detail=json.dumps(role, indent=2))

    def _pull_secret_copies(self, ns: str) -> list[Obj]:
        """The matrix's pull_secrets, read once from the context's namespace, as copies for `ns`. Kept in
        memory only: never written under results."""
        if not self.cluster.pull_secrets:
            return []
        if self._secrets is None:
            api = self.access.new_api()
            try:
                core = client.CoreV1Api(api)
                self._secrets = []
                for name in self.cluster.pull_secrets:
                    s = core.read_namespaced_secret(name, self.access.namespace, _request_timeout=REQUEST_TIMEOUT)
                    self._secrets.append((name, s.type, s.data))
            except ApiException as exc:
                self._secrets = None
                raise CellSetupError(f"pull secret in namespace {self.access.namespace}: {api_error(exc)}") from exc
            finally:
                api.close()
        return [m.pull_secret_copy({"metadata": {"name": name}, "type": kind, "data": data}, ns, self.run_id)
                for name, kind, data in self._secrets]

    def remove_leftovers(self) -> list[str]:
        """Delete the namespaces of earlier runs from this host that were killed before their
        teardown (runner/kube_leftovers.py); a fault here is noted, it does not stop the run."""
        api = self.access.new_api()
        try:
            removed = kube_leftovers.remove(client.CoreV1Api(api), own_run_id=self.run_id, timeout=REQUEST_TIMEOUT,
                                            say=lambda t: self.say(f"  {self.cluster.name}: {t}"),
                                            delete_hint=self.delete_command)
        except Exception as exc:
            self.say(f"  {self.cluster.name}: could not look for leftovers of crashed runs: {api_error(exc)}")
            return []
        finally:
            api.close()
        for ns in removed:
            self.note(f"removed leftover namespace {ns}")
        return removed

    # -- the timer server -------------------------------------------------------------------------
    def deploy_timer(self, images: Images) -> None:
        """The seed's LB probe behind a Service of the cluster's service_type. Not evidence for any
        cell, so a failure here is noted, not fatal."""
        objs = m.timer_objects(self.run_ns, self.run_id, cluster=self.cluster.name, image=images.timer_server,
                               capture_image=images.capture, service_type=self.cluster.service_type,
                               pull_policy=self.pull_policy, pull_secrets=self.cluster.pull_secrets,
                               runner=self.runner)
        (self.evidence / "timer-manifests.json").write_text(json.dumps(objs, indent=2) + "\n")
        self.namespaces.append(self.run_ns)
        api = self.access.new_api()
        try:
            ns, *rest = objs
            for obj in [ns, *self._pull_secret_copies(self.run_ns), *rest]:
                apply(api, obj)
                self.note(f"applied {_describe_obj(obj)}")
        except Exception as exc:
            self.problems.append(f"timer server not deployed: {api_error(exc)}")
            self.say(f"  {self.cluster.name}: timer server not deployed: {api_error(exc)}")
        finally:
            api.close()

    # -- cells ------------------------------------------------------------------------------------
    def new_cell(self, index: int, cell: Cell, desc: Descriptor, images: Images) -> KubeCellRun:
        image = images.watcher(cell)
        assert image is not None, "cells without an image are ERROR before deploy"
        ns = m.cell_namespace(self.run_id, index)
        objs = m.cell_objects(ns, self.run_id, cluster=self.cluster.name, index=index, cell=cell.id,
                              client_name=cell.client, scenario=cell.scenario, image=image,
                              capture_image=images.capture, env=cell.watcher_env(), pull_policy=self.pull_policy,
                              pull_secrets=self.cluster.pull_secrets, api_server=self.cluster.api_server,
                              runner=self.runner)
        src = cell.src or Path(cell.folder)
        # The image is the build; BuiltClient only carries the descriptor here.
        built = BuiltClient(folder=cell.folder, descriptor=desc, out=src, src=src)
        return KubeCellRun(index=index, cell=cell, built=built, cluster=cast("EmbeddedCluster", None),
                           lb=cast("LoadBalancer", None), evidence=self.run_dir / "cells" / cell.id,
                           run_dir=self.run_dir, stop=self.stop, run_id=self.run_id, access=self.access,
                           settings=self.settings, objects=objs)

    def deploy(self, runs: Sequence[KubeCellRun]) -> None:
        for run in runs:
            if self.stop.is_set():
                return
            self.namespaces.append(run.namespace)
            try:
                run.pull_secrets = self._pull_secret_copies(run.namespace)
                run.setup()
            except CellSetupError as exc:
                run.setup_error = str(exc)
                self.say(f"  {run.cell.id}: {exc}")

    def wait_started(self, runs: Sequence[KubeCellRun]) -> None:
        """Until every pod runs (capture listening, watcher started) or start_timeout; a pod that does
        not becomes its cell's setup_error with the reason."""
        pending = {r.namespace: r for r in runs if r.setup_error is None}
        timer_pending = bool(self.run_ns in self.namespaces and not self.problems)
        deadline = time.monotonic() + self.settings.start_timeout
        last: dict[str, client.V1Pod | None] = {}
        api = self.access.new_api()  # polled every second: never idle long enough to go stale
        core = client.CoreV1Api(api)
        try:
            while (pending or timer_pending) and time.monotonic() < deadline and not self.stop.is_set():
                for ns, run in list(pending.items()):
                    try:
                        pod = core.read_namespaced_pod(m.WATCHER_POD, ns, _request_timeout=REQUEST_TIMEOUT)
                    except Exception as exc:  # 404 (not created yet) or a transient fault: poll again
                        if isinstance(exc, ApiException) and exc.status == 404:
                            last[ns] = None
                        else:
                            self.note(f"poll {ns}: {api_error(exc)}")
                        continue
                    last[ns] = pod
                    state, why = start_state(pod)
                    if state == "running":
                        del pending[ns]
                        run.started_now()
                    elif state == "failed":
                        del pending[ns]
                        run.setup_error = f"pod failed to start: {why}; {describe_pod(pod, self._events(core, ns))}"
                        run.harness(run.setup_error)
                        self.say(f"  {run.cell.id}: {run.setup_error}")
                if timer_pending:
                    timer_pending = not self._timer_running(core)
                if pending or timer_pending:
                    self.stop.wait(self.settings.poll)
            for ns, run in pending.items():
                if self.stop.is_set():
                    run.setup_error = "interrupted before the pod started"
                    continue
                run.setup_error = (f"pod never started within {self.settings.start_timeout:.0f} s: "
                                   f"{describe_pod(last.get(ns), self._events(core, ns))}")
                run.harness(run.setup_error)
                self.say(f"  {run.cell.id}: {run.setup_error}")
            if timer_pending and not self.stop.is_set():
                self.problems.append(f"timer server not running within {self.settings.start_timeout:.0f} s")
        finally:
            api.close()

    def _timer_running(self, core: client.CoreV1Api) -> bool:
        try:
            pod = core.read_namespaced_pod(m.TIMER_POD, self.run_ns, _request_timeout=REQUEST_TIMEOUT)
        except ApiException:
            return False
        statuses = _statuses(pod)
        self.timer_started = all(cs.state is not None and cs.state.running is not None for cs in statuses.values()) \
            and len(statuses) == 2
        return self.timer_started

    @staticmethod
    def _events(core: client.CoreV1Api, ns: str) -> list[client.CoreV1Event]:
        try:
            items = core.list_namespaced_event(ns, _request_timeout=REQUEST_TIMEOUT).items
        except Exception:
            return []
        return sorted(items, key=lambda e: str(e.last_timestamp or e.event_time or ""))

    def collect(self, runs: Sequence[KubeCellRun]) -> dict[str, CellResult]:
        """Stop, copy out and judge every cell, several at once (each waits on exec and its pod)."""

        def one(run: KubeCellRun) -> CellResult:
            try:
                return run.collect()
            except Exception as exc:  # a collect fault is ERROR for that cell, never a lost result
                return _error_result(run.cell, run.built.descriptor, f"collect failed: {api_error(exc)}")

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(one, runs))
        return {r.cell.id: res for r, res in zip(runs, results, strict=True)}

    def collect_timer(self) -> None:
        """The timer server's log, its capture and the Service as the cluster reported it."""
        if not self.timer_started:
            return
        api = self.access.new_api()
        core = client.CoreV1Api(api)
        try:
            log = core.read_namespaced_pod_log(m.TIMER_POD, self.run_ns, container=m.TIMER_CONTAINER,
                                               _request_timeout=REQUEST_TIMEOUT)
            (self.evidence / "timer-server.jsonl").write_text(log)
            svc = core.read_namespaced_service(m.TIMER_SERVICE, self.run_ns, _request_timeout=REQUEST_TIMEOUT)
            (self.evidence / "timer-service.json").write_text(json.dumps(
                {"spec": api.sanitize_for_serialization(svc.spec),
                 "status": api.sanitize_for_serialization(svc.status)}, indent=2, sort_keys=True) + "\n")
            self.problems += copy_capture(self.access.new_api, self.run_ns, m.TIMER_POD, self.evidence,
                                          prefix="timer-server-", timeout=self.settings.exec_timeout)
        except Exception as exc:
            self.problems.append(f"timer server evidence: {api_error(exc)}")
        finally:
            api.close()

    # -- teardown ---------------------------------------------------------------------------------
    def delete_command(self, run_id: str | None = None) -> str:
        return delete_command(self.access, run_id or self.run_id)

    def teardown(self) -> list[str]:
        """Delete every namespace of this run on this cluster and wait (bounded) until they are gone.

        A namespace that stays Terminating without status conditions has no namespace controller
        working on it; waiting longer would not help, so it is reported instead.
        """
        api = self.access.new_api()
        core = client.CoreV1Api(api)
        names = dict.fromkeys(self.namespaces)
        problems: list[str] = []
        try:
            try:
                listed = core.list_namespace(label_selector=m.run_selector(self.run_id),
                                             _request_timeout=REQUEST_TIMEOUT).items
                names.update(dict.fromkeys(
                    str(n.metadata.name) for n in listed if n.metadata is not None
                    and (n.metadata.annotations or {}).get(m.ANNOTATION_CLUSTER) == self.cluster.name))
            except Exception as exc:
                problems.append(f"listing the run's namespaces: {api_error(exc)}")
            issued: dict[str, float] = {}
            for ns in names:
                try:
                    core.delete_namespace(ns, propagation_policy="Background", _request_timeout=REQUEST_TIMEOUT)
                    issued[ns] = time.monotonic()
                    self.note(f"delete namespace {ns}: issued")
                except ApiException as exc:
                    if exc.status == 404:
                        self.teardown_status[ns] = "gone"
                    else:
                        problems.append(f"delete namespace {ns}: {api_error(exc)}")
                except Exception as exc:
                    problems.append(f"delete namespace {ns}: {api_error(exc)}")
            remaining = set(issued)
            deadline = time.monotonic() + (0 if signals.hurry.is_set() else self.settings.teardown_timeout)
            while remaining:
                for ns in sorted(remaining):
                    try:
                        obj = core.read_namespace(ns, _request_timeout=REQUEST_TIMEOUT)
                    except ApiException as exc:
                        if exc.status == 404:
                            self.teardown_status[ns] = "gone"
                            remaining.discard(ns)
                        continue
                    except Exception:
                        continue
                    phase = obj.status.phase if obj.status else None
                    conditions = (obj.status.conditions if obj.status else None) or []
                    if phase == "Terminating" and not conditions and \
                            time.monotonic() - issued[ns] > self.settings.no_controller_after:
                        self.teardown_status[ns] = (f"Terminating with no status conditions after "
                                                    f"{self.settings.no_controller_after:.0f} s: no namespace "
                                                    "controller is acting on it")
                        remaining.discard(ns)
                    else:
                        detail = "; ".join(f"{c.type}: {c.message}" for c in conditions if c.status == "True")
                        self.teardown_status[ns] = f"{phase}" + (f" ({detail})" if detail else "")
                if not remaining or time.monotonic() >= deadline or signals.hurry.is_set():
                    break  # a second Ctrl-C: the deletes are issued, stop waiting for them
                time.sleep(self.settings.poll)
        finally:
            api.close()
        for ns, status in sorted(self.teardown_status.items()):
            if status != "gone":
                problems.append(f"namespace {ns} not gone: {status}")
        (self.evidence / "teardown.json").write_text(json.dumps(self.teardown_status, indent=2, sort_keys=True) + "\n")
        if problems:
            self.say(f"  {self.cluster.name}: {len(problems)} teardown problem(s), see "
                     f"{self.evidence / 'teardown.json'}; if namespaces remain, remove them with: "
                     f"{self.delete_command()}")
        return problems


# -- the run --------------------------------------------------------------------------------------------


def _default_rounds(runs: Sequence[CellRun], jobs: int, stop: threading.Event, say: Say) -> None:
    todo = [r for r in runs if r.setup_error is None]
    if not todo:
        return

    def tell(text: str, _round_done: bool = False) -> None:
        say(text)

    with ThreadPoolExecutor(max_workers=jobs or len(todo)) as pool:
        futures = [pool.submit(r.run_rounds, tell) for r in todo]
        try:
            while not all(f.done() for f in futures):
                time.sleep(0.2)  # the main thread stays responsive to Ctrl-C
        except BaseException:
            stop.set()  # before the pool's exit waits for the harness threads
            raise
        for f in futures:
            f.result()


def _error_result(cell: Cell, desc: Descriptor, reason: str) -> CellResult:
    from runner.run_matrix import base_result

    r = base_result(cell, desc, Verdict.ERROR, reason)
    r.errors.append(reason)
    return r


def run_kubernetes_cells(
    cells: Sequence[Cell], *, clusters: Mapping[str, KubernetesCluster], descriptors: Mapping[str, Descriptor],
    run_id: str, run_dir: Path, results: dict[str, CellResult], stop: threading.Event,
    images_from: str | None = None, keep: bool = False, jobs: int = 0, settings: KubeSettings | None = None,
    say: Say = print, run_rounds: Callable[[list[CellRun]], None] | None = None, first_index: int = 0,
    access: Mapping[str, KubeAccess] | None = None, phases: PhaseLog | None = None,
) -> None:
    """Run the kubernetes cells, one matrix cluster after the other, filling `results` in place (so
    an interrupted run keeps what it has). Teardown runs in `finally` for each cluster.

    `run_rounds` is the caller's round loop (run_matrix's, with its progress display); without it
    a plain one runs. `access` overrides how each cluster is reached (tests pass the embedded
    API server's). `phases` gets "kubernetes deploy|pods|rounds|collect|teardown" as each starts.
    """
    base = settings or KubeSettings()

    def enter(phase: str) -> None:
        if phases is not None:
            phases.enter(f"kubernetes {phase}")

    by_cluster: dict[str, list[tuple[int, Cell]]] = {}
    for i, cell in enumerate(cells):
        by_cluster.setdefault(cell.cluster, []).append((first_index + i, cell))
    for slot, (name, group) in enumerate(by_cluster.items()):
        cluster = clusters[name]
        settings = replace(base, start_timeout=float(cluster.start_timeout)) if cluster.start_timeout else base
        backend: KubernetesBackend | None = None
        runs: list[KubeCellRun] = []
        try:
            say(f"cluster {name}: kubernetes ({cluster.description or cluster.context or cluster.kubeconfig})")
            reach = (access or {}).get(name) or connect(cluster)
            images = resolve_images([c for _, c in group], registry=cluster.registry, images_from=images_from,
                                    log_dir=run_dir / "builds" / "images", say=lambda t: say(f"  {t}"),
                                    platform=cluster.image_platform)
            backend = KubernetesBackend(cluster, reach, run_id=run_id, run_dir=run_dir, stop=stop, slot=slot,
                                        settings=settings, say=say)
            try:
                enter("deploy")
                backend.preflight()
                backend.remove_leftovers()
                backend.deploy_timer(images)
                for index, cell in group:
                    desc = descriptors[cell.folder]
                    problem = images.problem(cell)
                    if problem:
                        results[cell.id] = _error_result(cell, desc, problem)
                    else:
                        runs.append(backend.new_cell(index, cell, desc, images))
                say(f"  {name}: deploying {len(runs)} cells into namespaces watchdrop-{run_id}-cNNN")
                backend.deploy(runs)
                enter("pods")
                say(f"  {name}: waiting up to {settings.start_timeout:.0f} s for the pods to start")
                backend.wait_started(runs)
                enter("rounds")
                if run_rounds is not None:
                    run_rounds(cast("list[CellRun]", runs))
                else:
                    _default_rounds(runs, jobs, stop, say)
                if stop.is_set():
                    raise Interrupted("stopped")
                enter("collect")
                say(f"  {name}: collecting")
                results.update(backend.collect(runs))
                backend.collect_timer()
            except Interrupted:
                for run in runs:
                    if run.cell.id not in results:
                        results[run.cell.id] = run.interrupted_result()
                raise
            finally:
                for run in runs:
                    if run.pod_watcher is not None:
                        run.pod_watcher.close(timeout=1.0)
                with signals.shield():
                    enter("teardown")
                    if keep:
                        say(f"  {name}: --keep: namespaces left in place; delete them with: {backend.delete_command()}")
                    else:
                        say(f"  {name}: tearing down {len(backend.namespaces)} namespaces")
                        backend.problems += backend.teardown()
                if backend.problems:
                    (backend.evidence / "problems.txt").write_text("\n".join(backend.problems) + "\n")
        except WatchdropError as exc:
            say(f"cluster {name}: {exc.message}")
            where = run_dir / "clusters" / name
            where.mkdir(parents=True, exist_ok=True)
            with (where / "problems.txt").open("a") as f:
                f.write(exc.render() + "\n")
            for _, cell in group:
                if cell.id not in results:
                    r = _error_result(cell, descriptors[cell.folder], f"cluster {name}: {exc.message}")
                    if exc.fix:
                        r.errors.append(f"fix: {exc.fix}")
                    results[cell.id] = r
