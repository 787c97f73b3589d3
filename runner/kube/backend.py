"""The kubernetes backend: the matrix's cells on a real cluster, reached through a kube context.

Per matrix cluster: connect → preflight (SelfSubjectAccessReviews for everything the runner will
do; missing rights stop the run with the manifests to apply, runner/kube/manifests.runner_rbac) →
images → deploy (the timer server in `watchdrop-<run-id>`, each cell in its own namespace
`watchdrop-<run-id>-c<NNN>`, runner/kube/manifests.py; the runner binds its in-run ClusterRole to
itself in each first) → wait for every pod to start (bounded) → rounds → collect → teardown (in
`finally`, also on Ctrl-C; `--keep` leaves the namespaces and prints how to delete them).

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
harness log. Verdicts come from runner/verdict.judge_cell, as on the embedded cluster; a pod that
never started, was evicted or OOM-killed, or whose capture died, is ERROR with the reason.

This module holds one cluster's lifetime (KubernetesBackend) and the run over the matrix's
kubernetes clusters; talking to the API is runner/kube/api.py, reading pods runner/kube/pods.py.

Why one long module: it is one cluster's whole lifetime (preflight, deploy, wait, collect,
teardown), each step a method; talking to the API is runner/kube/api.py, reading pods runner/kube/pods.py.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from runner.backend import RunContext
from runner.build.clients import BuiltClient
from runner.build.images import Images, resolve_images
from runner.config.descriptor import Descriptor
from runner.config.matrix import KubernetesCluster
from runner.config.plan import Cell
from runner.credentials.rbac import token_seconds
from runner.errors import PrerequisiteError
from runner.evidence.lb_events import RecordingLb
from runner.harness import CellSetupError, HarnessRun, base_result, error_result
from runner.host import signals
from runner.host.lifetime import teardown_steps
from runner.kube import leftovers as kube_leftovers
from runner.kube import manifests as m
from runner.kube.api import (
    REQUEST_TIMEOUT,
    KubeAccess,
    KubeSettings,
    Obj,
    api_error,
    apply_all,
    connect,
    copy_capture,
    delete_command,
    excess_permissions,
    holds_everywhere,
    missing_permissions,
    wait_pod_policy,
    whoami,
)
from runner.kube.cell import KubeCellRun
from runner.kube.pods import container_statuses, describe_pod, start_state
from runner.model import CellResult, Verdict

# -- one cluster --------------------------------------------------------------------------------------


class KubernetesBackend:
    """The cells of one matrix cluster of kind `kubernetes` (runner/backend.py's steps);
    `close()` deletes everything it made there."""

    phase_prefix = "kubernetes "

    def __init__(self, cluster: KubernetesCluster, cells: Sequence[tuple[int, Cell]], ctx: RunContext, *,
                 slot: int = 0, settings: KubeSettings | None = None, images_from: str | None = None,
                 access: KubeAccess | None = None, lb: RecordingLb | None = None):
        """`lb`: an emulated LB the cluster's provider put in the pods' API path, whose record the
        cells' verdicts then hold against their captures (a `local` cluster's); None elsewhere."""
        base = settings or KubeSettings()
        self.settings = replace(base, start_timeout=float(cluster.start_timeout)) if cluster.start_timeout else base
        self.cluster, self.ctx, self.slot = cluster, ctx, slot
        self.name = f"cluster {cluster.name}"
        self.indexed = list(cells)
        self.cells_given = [c for _, c in self.indexed]
        self.images_from = images_from
        self.lb = lb
        self._access = access
        self.run_id, self.run_dir, self.stop, self.say = ctx.run_id, ctx.run_dir, ctx.stop, ctx.say
        self.pull_policy = cluster.image_pull_policy or self.settings.pull_policy
        self.run_ns = m.run_namespace(self.run_id, slot)
        self.evidence = self.run_dir / "clusters" / cluster.name
        self.evidence.mkdir(parents=True, exist_ok=True)
        self.images: Images | None = None
        #: Cells with an image, in matrix order, waiting for `cells()`.
        self.deployable: list[tuple[int, Cell]] = []
        self.runs: list[KubeCellRun] = []
        #: Every namespace this run applied (or tried to), for teardown.
        self.namespaces: list[str] = []
        self.timer_started = False
        self.problems: list[str] = []
        #: namespace -> "gone" | what it still was when teardown stopped waiting.
        self.teardown_status: dict[str, str] = {}
        self._secrets: list[tuple[str, str | None, Any]] | None = None
        #: Written on every namespace, so a later run can tell whether this one crashed.
        self.runner = kube_leftovers.runner_mark(os.getpid())
        #: The runner's identity, bound to the in-run ClusterRole in each namespace it makes (preflight
        #: sets it; None when the identity already holds those rights everywhere).
        self.runner_subject: m.Subject | None = None

    @property
    def access(self) -> KubeAccess:
        if self._access is None:
            self._access = connect(self.cluster)
        return self._access

    # -- the steps --------------------------------------------------------------------------------
    def prepare(self) -> dict[str, CellResult]:
        """The images (built and pushed, or named by --images-from); a cell without one is ERROR."""
        self.ctx.enter("kubernetes images")
        c = self.cluster
        self.say(f"cluster {c.name}: kubernetes ({c.description or c.context or c.kubeconfig})")
        self.images = resolve_images(self.cells_given, registry=c.registry, images_from=self.images_from,
                                     log_dir=self.run_dir / "builds" / "images", say=lambda t: self.say(f"  {t}"),
                                     platform=c.image_platform, base_images=c.base_images,
                                     ca_bundle=Path(c.build_ca_bundle).expanduser() if c.build_ca_bundle else None)
        results: dict[str, CellResult] = {}
        for index, cell in self.indexed:
            problem = self.images.problem(cell)
            skip = self.images.skip_reason(cell)
            if skip:
                results[cell.id] = base_result(cell, self.ctx.descriptors[cell.folder], Verdict.SKIPPED, skip)
            elif problem:
                results[cell.id] = error_result(cell, self.ctx.descriptors[cell.folder], problem)
            else:
                self.deployable.append((index, cell))
        return results

    def start(self) -> None:
        self.ctx.enter("kubernetes deploy")
        self.access  # noqa: B018 - connect now: a context that cannot be reached fails this step
        self.preflight()
        self.remove_leftovers()
        assert self.images is not None
        self.deploy_timer(self.images)

    def cells(self) -> Sequence[HarnessRun]:
        assert self.images is not None
        self.runs = [self.new_cell(index, cell, self.ctx.descriptors[cell.folder], self.images)
                     for index, cell in self.deployable]
        self.say(f"  {self.cluster.name}: deploying {len(self.runs)} cells into namespaces "
                 f"watchdrop-{self.run_id}-cNNN")
        self.deploy(self.runs)
        self.ctx.enter("kubernetes pods")
        self.say(f"  {self.cluster.name}: waiting up to {self.settings.start_timeout:.0f} s for the pods to start")
        self.wait_started(self.runs)
        return self.runs

    def hold(self) -> None:
        """Nothing to wait for: with --keep, `close()` leaves the namespaces and says how to delete them."""

    def close(self) -> list[str]:
        for run in self.runs:
            if run.pod_watcher is not None:
                run.pod_watcher.close(timeout=1.0)
        if self._access is None:
            return list(self.problems)  # never reached the cluster: nothing was made there
        if self.ctx.keep:
            self.say(f"  {self.cluster.name}: --keep: namespaces left in place; delete them with: "
                     f"{self.delete_command()}")
        else:
            self.say(f"  {self.cluster.name}: tearing down {len(self.namespaces)} namespaces")
            self.problems += teardown_steps([("teardown", lambda: self.problems.extend(self.teardown()))])
        return list(self.problems)

    def note(self, text: str) -> None:
        with (self.evidence / "cluster.log").open("a") as f:
            f.write(f"{time.time():.3f} {text}\n")

    # -- preflight --------------------------------------------------------------------------------
    def preflight(self) -> None:
        """Who the runner is, what it lacks (an error that prints the manifests to apply) and what
        it holds beyond its job (a warning: the admin's choice, but said)."""
        api = self.access.new_api()
        secrets = tuple(self.cluster.pull_secrets)
        excess: list[str] = []
        try:
            version = client.VersionApi(api).get_code(_request_timeout=REQUEST_TIMEOUT)
            self.note(f"server version {version.git_version}")
            subject = whoami(api)
            missing = missing_permissions(api, self.run_ns, pull_secrets=secrets,
                                          secrets_from=self.access.namespace if secrets else None)
            if not missing:
                everywhere = holds_everywhere(api, pull_secrets=bool(secrets))
                if not everywhere and subject is None:
                    missing.append("a SelfSubjectReview (authentication.k8s.io/v1): the runner binds its own "
                                   "identity in each run namespace and must know it")
                self.runner_subject = None if everywhere else subject
                excess = excess_permissions(api)
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
            shown = subject or m.Subject("User", "RUNNER-USER-NAME")
            raise PrerequisiteError(
                f"cluster {self.cluster.name}: the runner's kube identity may not: {', '.join(missing)}",
                fix=f"apply these manifests as a cluster admin (`kubectl apply -f -`; `python -m runner kube-rbac "
                    f"{_rbac_flags(shown, secrets, self.access.namespace)}` prints them again)",
                detail=m.render_yaml(m.runner_rbac(shown, pull_secrets=secrets,
                                                   secrets_namespace=self.access.namespace)))
        if excess:
            text = (f"  {self.cluster.name}: warning: the runner's kube identity may do more than its job needs: "
                    f"{', '.join(excess)}; least privilege: `python -m runner kube-rbac` (README.md)")
            self.say(text)
            self.note(text.strip())

    def pull_secret_copies(self, ns: str) -> list[Obj]:
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

    def deployment(self, images: Images) -> m.Deployment:
        return m.Deployment(run_id=self.run_id, cluster=self.cluster.name, capture_image=images.capture,
                            pull_policy=self.pull_policy, pull_secrets=tuple(self.cluster.pull_secrets),
                            api_server=self.cluster.api_server, runner=self.runner,
                            runner_subject=self.runner_subject)

    # -- the timer server -------------------------------------------------------------------------
    def deploy_timer(self, images: Images) -> None:
        """The seed's LB probe behind a Service of the cluster's service_type. Not evidence for any
        cell, so a failure here is noted, not fatal."""
        c = self.cluster
        objs = m.timer_objects(self.run_ns, self.deployment(images), image=images.timer_server,
                               service_type=c.service_type, source_ranges=c.load_balancer_source_ranges,
                               internal=c.internal_load_balancer)
        (self.evidence / "timer-manifests.json").write_text(json.dumps(objs, indent=2) + "\n")
        self.namespaces.append(self.run_ns)
        api = self.access.new_api()
        try:
            apply_all(api, m.with_secrets(objs, self.pull_secret_copies(self.run_ns)), self.note)
        except Exception as exc:
            self.problems.append(f"timer server not deployed: {api_error(exc)}")
            self.say(f"  {self.cluster.name}: timer server not deployed: {api_error(exc)}")
            return
        finally:
            api.close()
        self.check_pod_policy(next(o for o in objs if o["kind"] == "Pod"))

    def check_pod_policy(self, pod: Obj) -> None:
        """The preflight could only probe the namespace policy (the runner may make pods in run
        namespaces only); with the first one bound, the pod policy is probed too, by a dry run."""
        if self.runner_subject is None:  # bound everywhere: the preflight has warned already
            return
        api = self.access.new_api()
        try:
            in_force = wait_pod_policy(api, pod)
        except Exception as exc:  # like the timer server's own deploy: said, never fatal
            in_force, why = False, f"the probe failed: {api_error(exc)}"
        else:
            why = "a dry-run pod with hostNetwork was admitted"
        finally:
            api.close()
        if in_force:
            self.note(f"{m.POD_POLICY} in force (a dry-run pod with hostNetwork was refused)")
            return
        text = (f"  {self.cluster.name}: warning: the runner's kube identity may make pods that reach the node "
                f"({m.POD_POLICY} is not in force: {why}); least privilege: `python -m runner kube-rbac` (README.md)")
        self.say(text)
        self.note(text.strip())

    # -- cells ------------------------------------------------------------------------------------
    def new_cell(self, index: int, cell: Cell, desc: Descriptor, images: Images) -> KubeCellRun:
        image = images.watcher(cell)
        assert image is not None, "cells without an image are ERROR before deploy"
        ns = m.cell_namespace(self.run_id, index)
        objs = m.cell_objects(ns, self.deployment(images), m.CellSpec(
            index=index, cell=cell.id, client_name=cell.client, scenario=cell.scenario, image=image,
            env=cell.watcher_env(), token_seconds=token_seconds(cell.estimated_seconds, floor=m.TOKEN_SECONDS)))
        src = cell.src or Path(cell.folder)
        # The image is the build; BuiltClient only carries the descriptor here.
        built = BuiltClient(folder=cell.folder, descriptor=desc, out=src, src=src)
        return KubeCellRun(index=index, cell=cell, built=built, evidence=self.run_dir / "cells" / cell.id,
                           run_dir=self.run_dir, stop=self.stop, run_id=self.run_id, access=self.access,
                           settings=self.settings, objects=objs, lb=self.lb)

    def deploy(self, runs: Sequence[KubeCellRun]) -> None:
        for run in runs:
            if self.stop.is_set():
                return
            self.namespaces.append(run.namespace)
            try:
                run.pull_secrets = self.pull_secret_copies(run.namespace)
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
                        run.started_now(pod.status.pod_ip if pod.status else None)
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

    def collect(self, runs: Sequence[HarnessRun]) -> dict[str, CellResult]:
        """Stop, copy out and judge every cell, several at once (each waits on exec and its pod)."""

        def one(run: KubeCellRun) -> CellResult:
            try:
                return run.collect()
            except Exception as exc:  # a collect fault is ERROR for that cell, never a lost result
                return error_result(run.cell, run.built.descriptor, f"collect failed: {api_error(exc)}")

        kube_runs = [r for r in runs if isinstance(r, KubeCellRun)]
        if not kube_runs:
            return {}
        # Called for each cell as its rounds end, and once for the rest (runner/backend.py).
        self.say(f"  {self.cluster.name}: collecting "
                 + (kube_runs[0].cell.id if len(kube_runs) == 1 else f"{len(kube_runs)} cells"))
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(one, kube_runs))
        return {r.cell.id: res for r, res in zip(kube_runs, results, strict=True)}

    def collected(self) -> None:
        self.collect_timer()

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
                # Labels are anyone's to set: only a namespace also named like a run's is ours to delete.
                names.update(dict.fromkeys(
                    str(n.metadata.name) for n in listed if n.metadata is not None
                    and (n.metadata.annotations or {}).get(m.ANNOTATION_CLUSTER) == self.cluster.name
                    and re.match(m.RUN_NAMESPACE_PATTERN, str(n.metadata.name))))
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


def _rbac_flags(subject: m.Subject, secrets: Sequence[str], secrets_namespace: str) -> str:
    who = {"User": f"--user {subject.name}", "Group": f"--group {subject.name}",
           "ServiceAccount": f"--service-account {subject.namespace}/{subject.name}"}[subject.kind]
    return who + "".join(f" --pull-secret {s}" for s in secrets) + \
        (f" --secrets-namespace {secrets_namespace}" if secrets else "")


# -- the run --------------------------------------------------------------------------------------------


def kubernetes_backends(cells: Sequence[Cell], clusters: Mapping[str, KubernetesCluster], ctx: RunContext, *,
                        images_from: str | None = None, settings: KubeSettings | None = None,
                        access: Mapping[str, KubeAccess] | None = None,
                        first_index: int = 0) -> list[KubernetesBackend]:
    """One backend per matrix cluster, in matrix order; `access` overrides how a cluster is reached
    (tests pass the embedded API server's)."""
    by_cluster: dict[str, list[tuple[int, Cell]]] = {}
    for i, cell in enumerate(cells):
        by_cluster.setdefault(cell.cluster, []).append((first_index + i, cell))
    return [KubernetesBackend(clusters[name], group, ctx, slot=slot, settings=settings, images_from=images_from,
                              access=(access or {}).get(name))
            for slot, (name, group) in enumerate(by_cluster.items())]
