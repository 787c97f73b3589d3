"""The embedded backend: the matrix's embedded cells on this machine (runner/backend.py's steps).

prepare: build each client's watcher once per (folder, build env), two at a time.
start:   one real etcd + kube-apiserver (runner/embedded/cluster.py) shared by every embedded
         cluster of the matrix, the timer server, one LB emulator per matrix cluster.
cells:   per cell a namespace with its own credentials, a pod netns on its LB's bridge, a capture
         and the watcher process (runner/embedded/cell.py).
collect: stop every watcher and capture at once, read the captures in parallel processes, judge.
close:   stop the cells, the LBs, the timer server and the cluster, each step even if one fails.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from pathlib import Path

from runner.backend import RunContext
from runner.build.cache import cache_root
from runner.build.clients import KEEP_UNUSED_DAYS, BuiltClient, build_client, prune_builds
from runner.config.plan import Cell
from runner.contract import API_PORT
from runner.embedded import schedule
from runner.embedded.cell import CellRun
from runner.embedded.chain import ChainLb
from runner.embedded.cluster import EmbeddedCluster
from runner.embedded.lb import LoadBalancer
from runner.embedded.timer import start_timer_server
from runner.errors import BuildError, Interrupted, UsageError
from runner.evidence.pcap import PcapFacts, read_pcap_or_error
from runner.harness import CellSetupError, HarnessRun, base_result
from runner.host import signals
from runner.host.lifetime import teardown_concurrently, teardown_steps
from runner.host.procs import Child
from runner.model import BUILD_LOG, CellResult, Verdict

BuildKey = tuple[str, str]


#: The capture readers' niceness: cells collected early share the CPUs with cells still in their rounds.
READER_NICE = 10


def build_key(cell: Cell) -> BuildKey:
    return cell.folder, json.dumps(dict(cell.build_env), sort_keys=True)


class EmbeddedBackend:
    """Every embedded cell of the run: they share one kube-apiserver, so one backend holds them all."""

    name = "embedded"
    phase_prefix = ""

    def __init__(self, cells: Sequence[Cell], ctx: RunContext):
        self.cells_given = list(cells)
        self.ctx = ctx
        self.evidence = ctx.run_dir / "cluster"
        self.ready: list[tuple[Cell, BuiltClient]] = []
        self.cluster: EmbeddedCluster | None = None
        self.timer: Child | None = None
        self.lbs: dict[str, LoadBalancer] = {}
        self.runs: list[CellRun] = []
        self._setups: ThreadPoolExecutor | None = None
        self._pods: ThreadPoolExecutor | None = None
        self._readers: ProcessPoolExecutor | None = None

    @property
    def _history(self) -> Path:
        """Each cell's duration in earlier runs (runner/embedded/schedule.py), beside the builds."""
        return cache_root() / schedule.FILENAME

    # -- prepare ----------------------------------------------------------------------------------
    def prepare(self) -> dict[str, CellResult]:
        built = self._build()
        results: dict[str, CellResult] = {}
        for cell in self.cells_given:
            b = built[build_key(cell)]
            if isinstance(b, BuildError):
                r = base_result(cell, self.ctx.descriptors[cell.folder], Verdict.ERROR, f"build failed: {b.message}")
                r.errors.append(b.render())
                r.evidence[BUILD_LOG] = f"builds/{cell.client}.log"
                results[cell.id] = r
            else:
                self.ready.append((cell, b))
        return results

    def _build(self) -> dict[BuildKey, BuiltClient | BuildError]:
        """Each (folder, build env) once, two at a time; a failure is kept, not raised."""
        ctx = self.ctx
        keys: dict[BuildKey, Cell] = {}
        for c in self.cells_given:
            keys.setdefault(build_key(c), c)
        built: dict[BuildKey, BuiltClient | BuildError] = {}
        ctx.enter("build")
        for name in prune_builds():
            ctx.say(f"cache: removed client build {name} (unused for {KEEP_UNUSED_DAYS:.0f} days, or left incomplete)")

        def one(key: BuildKey) -> None:
            cell = keys[key]
            desc = ctx.descriptors[cell.folder]
            assert cell.src is not None
            log = ctx.run_dir / "builds" / f"{cell.client}.log"
            ctx.say(f"build {cell.folder} ({desc.library} {desc.version_for(cell.build_env)})")
            try:
                built[key] = build_client(cell.src, desc, cell.build_env, log, stop=ctx.stop)
            except BuildError as exc:
                built[key] = exc
                ctx.say(f"build {cell.folder} FAILED: {exc.message}")

        with ThreadPoolExecutor(max_workers=2) as pool:
            try:
                list(pool.map(one, keys))
            except BaseException:
                ctx.stop.set()  # running builds stop before the pool's exit waits for them
                raise
        return built

    # -- start ------------------------------------------------------------------------------------
    def start(self) -> None:
        if not self.ready:
            return
        ctx = self.ctx
        ctx.enter("cluster start")
        self.cluster = EmbeddedCluster(run_id=ctx.run_id, evidence_dir=ctx.run_dir / "cluster",
                                       churn_interval=shared_churn(self.ready),
                                       progress=lambda m: ctx.say(f"  cluster: {m}"))
        self.cluster.start()
        self.timer = start_timer_server(self.cluster, ctx.run_dir / "cluster")
        ctx.enter("lb setup")
        for slot, name in enumerate(dict.fromkeys(c.cluster for c, _ in self.ready)):
            profile = next(c.profile for c, _ in self.ready if c.cluster == name)
            assert profile is not None
            ctx.say(f"  lb {name}: {profile.describe()}")
            path = next(c.path for c, _ in self.ready if c.cluster == name)
            if path is not None:
                # A chain of hops (runner/embedded/chain.py); its report line gives every hop.
                ctx.say(f"  path {name}: {path.describe()}")
                self.lbs[name] = ChainLb(self.cluster, slot, path, ctx.run_dir / "lbs" / name).start()
            else:
                self.lbs[name] = LoadBalancer(self.cluster, slot, profile, ctx.run_dir / "lbs" / name).start()

    # -- cells ------------------------------------------------------------------------------------
    def cells(self) -> Sequence[HarnessRun]:
        if self.cluster is None:
            return []
        ctx = self.ctx
        ctx.enter("cells setup")
        for i, (cell, b) in enumerate(self.ready):
            self.runs.append(CellRun(index=i, cell=cell, built=b, cluster=self.cluster, lb=self.lbs[cell.cluster],
                                     break_capture=cell.client == ctx.break_capture,
                                     evidence=ctx.cell_dir(cell), run_dir=ctx.run_dir, stop=ctx.stop))
        # The longest cells first (runner/embedded/schedule.py), and each cell's rounds start as
        # soon as its own setup is over (HarnessRun.setup_done): the start-up of the short cells
        # overlaps the long ones' first idle period instead of delaying every cell's rounds.
        order = schedule.admission_order(self.runs, schedule.load(self._history))
        for run in self.runs:
            run.setup_done.clear()
        # Pods attach to their LBs' bridges one by one, in admission order (names and addresses
        # are handed out in order), in a thread of their own: the first setups start at once.
        self._pods = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pods")
        pods = {run.cell.id: self._pods.submit(run.lb.add_pod, log=run.log) for run in order}

        def setup(run: CellRun) -> None:
            try:
                if ctx.stop.is_set():
                    run.setup_error = "interrupted before its watcher started"
                else:
                    run.setup(pods[run.cell.id].result())
            except CellSetupError as exc:
                run.setup_error = str(exc)
            except Exception as exc:  # the pod's namespace or link could not be made
                run.setup_error = f"cell setup failed: its pod: {exc}"
            finally:
                run.setup_done.set()
            if run.setup_error is None:
                # Start-up waves: this slot admits the next cell only once this watcher is warm, so
                # no watcher's start (a first request answered in time or not) competes with more
                # than WAVE - 1 others starting, however many cells the matrix has.
                waited = run.wait_warm()
                # Its CPU so far: what starting it cost, which bench/matrix_overhead.py adds up.
                cpu = run.process.cpu_seconds() if run.process is not None else None
                used = f", {cpu:.2f} CPU-s" if cpu is not None else ""
                run.harness(f"warm after {waited:.1f} s{used} (start-up wave of {wave})", "warm",
                            seconds=round(waited, 3), cpu=None if cpu is None else round(cpu, 3))

        wave = 2 * (os.cpu_count() or 1)
        self._setups = ThreadPoolExecutor(max_workers=wave)
        for run in order:
            self._setups.submit(setup, run)
        return self.runs

    def _finish_setups(self) -> None:
        if self._setups is not None:
            self._setups.shutdown(wait=True, cancel_futures=self.ctx.stop.is_set())
            self._setups = None
        if self._pods is not None:
            self._pods.shutdown(wait=True, cancel_futures=True)  # every setup that wanted its pod has it
            self._pods = None

    # -- collect ----------------------------------------------------------------------------------
    def collect(self, runs: Sequence[HarnessRun]) -> dict[str, CellResult]:
        if self.cluster is None:  # every build failed: those cells have their results from prepare()
            return {}
        mine = [r for r in runs if isinstance(r, CellRun)]
        if any(not r.setup_done.is_set() for r in mine):
            self._finish_setups()  # the last collect: a cell that never ran may still be setting up
        self._stop_cells(mine)
        facts = self._read_pcaps([run.pcap_path for run in mine])
        alive = self.cluster.alive()
        return {run.cell.id: run.collect(self.lbs[run.cell.cluster].problems(), alive, facts.get(run.pcap_path))
                for run in mine}

    def collected(self) -> None:
        """Nothing run-wide to fetch (the cluster's and LBs' evidence is written in place); each
        cell's duration is kept for the next run's admission order."""
        try:
            schedule.record(self._history, schedule.measured(self.runs))
        except OSError as exc:  # only the next run's order suffers
            self.ctx.say(f"  could not keep the cells' durations in {self._history}: {exc}")

    def _read_pcaps(self, paths: list[Path]) -> dict[Path, PcapFacts | Exception]:
        """Each capture read in the backend's reader processes (parsing pcaps is CPU work), started
        once: cells are collected a few at a time while others run."""
        if not paths:
            return {}
        if self._readers is None:
            # spawn, not fork: the runner's harness threads are mid-round when the first cells end.
            self._readers = ProcessPoolExecutor(max_workers=os.cpu_count() or 1,
                                                mp_context=multiprocessing.get_context("spawn"),
                                                initializer=os.nice, initargs=(READER_NICE,))
        read = partial(read_pcap_or_error, server_ports=frozenset({API_PORT}))
        return dict(zip(paths, self._readers.map(read, paths), strict=True))

    def _stop_cells(self, runs: Sequence[CellRun] | None = None) -> None:
        # In parallel: each stop may wait a few seconds (SIGTERM grace, capture settling), and a
        # run has up to a few hundred cells.
        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(lambda r: r.stop_processes(), self.runs if runs is None else runs))

    def _close_readers(self) -> None:
        if self._readers is not None:
            self._readers.shutdown(wait=True, cancel_futures=True)
            self._readers = None

    def hold(self) -> None:
        if self.cluster is None:
            return
        self.ctx.say(f"--keep: the cluster stays up; admin kubeconfig {self.cluster.admin_kubeconfig}; "
                     f"API server {self.cluster.server_url()}. Ctrl-C tears it down.")
        try:
            while True:
                time.sleep(1)
        except Interrupted:
            signals.consume()  # this Ctrl-C only ends --keep; the run itself completed

    # -- close ------------------------------------------------------------------------------------
    def close(self) -> list[str]:
        problems: list[str] = []
        steps: list[tuple[str, Callable[[], object]]] = [
            ("cell setups", self._finish_setups),
            ("stopping the cells", self._stop_cells),
            # The readers' processes exit while the servers stop: neither needs the other.
            ("capture readers, servers and network", lambda: problems.extend(teardown_concurrently([
                ("capture readers", self._close_readers),
                ("servers and network", lambda: problems.extend(self._close_servers()))]))),
        ]
        return teardown_steps(steps) + problems

    def _close_servers(self) -> list[str]:
        """The LBs (agents, fronts, captures settling) and the timer server together, as each mostly
        waits; then the cluster, after the LBs, so that no LB capture sees the API server go."""
        problems: list[str] = []
        servers = [(f"lb {name}", lb.close) for name, lb in self.lbs.items()]
        if self.timer is not None:
            servers.append(("timer server", self.timer.stop))
        steps: list[tuple[str, Callable[[], object]]] = [
            ("load balancers and timer server", lambda: problems.extend(teardown_concurrently(servers)))]
        cluster = self.cluster
        if cluster is not None:
            # Its own problems (a namespace that would not go) are the run's too.
            steps.append(("embedded cluster", lambda: problems.extend(cluster.close())))
        return teardown_steps(steps) + problems


def shared_churn(ready: Sequence[tuple[Cell, BuiltClient]]) -> float:
    """All embedded clusters share one API server, so they must share one churn setting."""
    values = {c.lease_interval for c, _ in ready if c.lease_interval is not None}
    if len(values) > 1:
        raise UsageError(f"embedded clusters ask for different churn.lease_interval values {sorted(values)}",
                         fix="give every embedded cluster the same churn (they share one kube-apiserver)")
    return float(values.pop()) if values else 10.0
