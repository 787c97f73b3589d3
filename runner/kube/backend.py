"""The kubernetes backend: the matrix's cells on a real cluster, reached through a kube context.

Per matrix cluster: connect → preflight (SelfSubjectAccessReviews for everything the runner will
do) → images → deploy (the timer server in `watchdrop-<run-id>`, each cell in its own namespace
`watchdrop-<run-id>-c<NNN>`, runner/kube/manifests.py) → wait for every pod to start (bounded) → rounds →
collect → teardown (in `finally`, also on Ctrl-C; `--keep` leaves the namespaces and prints how to
delete them).

The rounds are the embedded cells' own (runner/harness.py: update `trigger` every interval, wait
for `event-seen`, write `failure-<timestamp>` on a miss), driven from outside the cluster by
runner/kube/cell.py's KubeCellRun. Two things differ from the embedded cluster, both because the
runner's own path to the API server may cross the same kind of load balancer the cells test:

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

This module holds one cluster's lifetime (KubernetesBackend) and the run over the matrix's
kubernetes clusters; talking to the API is runner/kube/api.py, reading pods runner/kube/pods.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from runner.build.clients import BuiltClient
from runner.build.images import Images, resolve_images
from runner.config.descriptor import Descriptor
from runner.config.matrix import KubernetesCluster
from runner.config.plan import Cell
from runner.credentials.rbac import token_seconds
from runner.errors import Interrupted, PrerequisiteError, WatchdropError
from runner.harness import CellSetupError, HarnessRun, error_result
from runner.host import signals
from runner.kube import leftovers as kube_leftovers
from runner.kube import manifests as m
from runner.kube.api import (
    REQUEST_TIMEOUT,
    KubeAccess,
    KubeSettings,
    Obj,
    Say,
    api_error,
    apply,
    connect,
    copy_capture,
    delete_command,
    describe_obj,
    missing_permissions,
)
from runner.kube.cell import KubeCellRun
from runner.kube.pods import container_statuses, describe_pod, start_state
from runner.model import CellResult
from runner.phases import PhaseLog

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
        teardown (runner/kube/leftovers.py); a fault here is noted, it does not stop the run."""
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
                self.note(f"applied {describe_obj(obj)}")
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
                              runner=self.runner,
                              token_seconds=token_seconds(cell.estimated_seconds, floor=m.TOKEN_SECONDS))
        src = cell.src or Path(cell.folder)
        # The image is the build; BuiltClient only carries the descriptor here.
        built = BuiltClient(folder=cell.folder, descriptor=desc, out=src, src=src)
        return KubeCellRun(index=index, cell=cell, built=built, evidence=self.run_dir / "cells" / cell.id,
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
        statuses = container_statuses(pod)
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
                return error_result(run.cell, run.built.descriptor, f"collect failed: {api_error(exc)}")

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
                                          prefix="timer-server-", timeout=self.settings.exec_timeout).problems
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


def _default_rounds(runs: Sequence[HarnessRun], jobs: int, stop: threading.Event, say: Say) -> None:
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


def run_kubernetes_cells(
    cells: Sequence[Cell], *, clusters: Mapping[str, KubernetesCluster], descriptors: Mapping[str, Descriptor],
    run_id: str, run_dir: Path, results: dict[str, CellResult], stop: threading.Event,
    images_from: str | None = None, keep: bool = False, jobs: int = 0, settings: KubeSettings | None = None,
    say: Say = print, run_rounds: Callable[[Sequence[HarnessRun]], None] | None = None, first_index: int = 0,
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
                        results[cell.id] = error_result(cell, desc, problem)
                    else:
                        runs.append(backend.new_cell(index, cell, desc, images))
                say(f"  {name}: deploying {len(runs)} cells into namespaces watchdrop-{run_id}-cNNN")
                backend.deploy(runs)
                enter("pods")
                say(f"  {name}: waiting up to {settings.start_timeout:.0f} s for the pods to start")
                backend.wait_started(runs)
                enter("rounds")
                if run_rounds is not None:
                    run_rounds(runs)
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
                    r = error_result(cell, descriptors[cell.folder], f"cluster {name}: {exc.message}")
                    if exc.fix:
                        r.errors.append(f"fix: {exc.fix}")
                    results[cell.id] = r
