"""`python -m runner MATRIX`: load → plan → build → run → collect → verdict → report.

Each step is a small function; `execute()` wires them with teardown in `finally`, so an
interrupted run still stops every process, removes every namespace, writes the results it has
(unfinished cells ERROR "interrupted") and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from runner.build.clients import KEEP_UNUSED_DAYS, BuiltClient, build_client, prune_builds
from runner.build.images import kubernetes_problem
from runner.config.descriptor import Descriptor, load_descriptor
from runner.config.matrix import KubernetesCluster, Matrix, load_matrix
from runner.config.plan import Cell, describe_plan, parse_only, plan, select, skip_reasons, unmatched
from runner.embedded.cell import API_PORT, CellRun
from runner.embedded.cluster import EmbeddedCluster
from runner.embedded.lb import LoadBalancer
from runner.embedded.timer import start_timer_server
from runner.errors import BuildError, ExitCode, Interrupted, UsageError, WatchdropError
from runner.evidence.pcap import PcapError, PcapFacts, read_pcap
from runner.harness import CellSetupError, HarnessRun, base_result
from runner.host import cleanup, signals, sysdeps
from runner.host.commands import CommandLog
from runner.host.netns import new_run_id
from runner.kube.backend import run_kubernetes_cells
from runner.model import CellResult, ProfileFacts, RunResult, Verdict
from runner.phases import PhaseLog
from runner.progress import RunProgress
from runner.report.html import write_extras
from runner.report.render import readme_examples, render_readme_section, render_table, update_readme, write_reports
from runner.safetext import printable

REPO = Path(__file__).resolve().parent.parent


def _say(msg: str) -> None:
    # One write per line: build threads print at the same time, and print() writes the text and
    # its newline separately.
    sys.stdout.write(printable(msg) + "\n")  # messages quote libraries and API errors
    sys.stdout.flush()


@dataclass
class Prepared:
    """The selected cells and what the runner knows about them before running anything."""

    matrix_path: Path
    matrix: Matrix
    cells: list[Cell]
    descriptors: dict[str, Descriptor]
    skips: dict[str, str | None]
    full: bool  # no --only: the whole matrix runs
    unmatched: list[tuple[str, str]] = field(default_factory=list)  # --only filters that matched nothing


def prepare(matrix_path: Path, only: Sequence[str], clients_dir: Path | None = None) -> Prepared:
    """Load, validate, plan and select; raises UsageError (exit 4) on any bad input."""
    clients_dir = clients_dir or matrix_path.resolve().parent / "clients"
    matrix = load_matrix(matrix_path, clients_dir)
    filters = parse_only(only)
    all_cells = plan(matrix, clients_dir)
    cells = select(all_cells, filters)
    descriptors = {c.folder: load_descriptor(clients_dir / c.folder) for c in cells}
    skips = skip_reasons(cells, descriptors)
    for c in cells:
        if c.cluster_kind == "kubernetes":
            # The image is the build: local toolchains do not matter; the Dockerfile and scenarios do.
            desc = descriptors[c.folder]
            skips[c.id] = kubernetes_problem(c.src, c.build_env) or (
                None if c.scenario in desc.scenarios
                else f"{c.folder} implements only the {' and '.join(desc.scenarios)} scenario")
    return Prepared(matrix_path, matrix, cells, descriptors, skips, full=not filters,
                    unmatched=unmatched(all_cells, filters))


def skipped_result(cell: Cell, desc: Descriptor, reason: str) -> CellResult:
    return base_result(cell, desc, Verdict.SKIPPED, reason)


def machine_info() -> dict[str, str]:
    return {"kernel": platform.release(), "python": platform.python_version(), "cpus": str(os.cpu_count())}


@dataclass
class Execution:
    """State of one run, so teardown and reporting can see how far it got."""

    prepared: Prepared
    out: Path
    jobs: int
    keep: bool = False
    images_from: str | None = None
    run_id: str = field(default_factory=new_run_id)
    results: dict[str, CellResult] = field(default_factory=dict)
    interrupted: bool = False
    started: float = field(default_factory=time.time)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def run_dir(self) -> Path:
        return self.out / self.run_id

    def cell_dir(self, cell: Cell) -> Path:
        return self.run_dir / "cells" / cell.id

    # -- build ------------------------------------------------------------------------------
    def build(self, cells: list[Cell], phases: PhaseLog) -> dict[tuple[str, str], BuiltClient | BuildError]:
        """Each (folder, build env) once, two at a time; a failure is kept, not raised."""
        keys: dict[tuple[str, str], Cell] = {}
        for c in cells:
            keys.setdefault((c.folder, json.dumps(dict(c.build_env), sort_keys=True)), c)
        built: dict[tuple[str, str], BuiltClient | BuildError] = {}
        phases.enter("build")
        for name in prune_builds():
            _say(f"cache: removed client build {name} (unused for {KEEP_UNUSED_DAYS:.0f} days, or left incomplete)")

        def one(key: tuple[str, str]) -> None:
            cell = keys[key]
            desc = self.prepared.descriptors[cell.folder]
            assert cell.src is not None
            log = self.run_dir / "builds" / f"{cell.client}.log"
            _say(f"build {cell.folder} ({desc.library} {desc.version})")
            try:
                built[key] = build_client(cell.src, desc, cell.build_env, log, stop=self.stop)
            except BuildError as exc:
                built[key] = exc
                _say(f"build {cell.folder} FAILED: {exc.message}")

        with ThreadPoolExecutor(max_workers=2) as pool:
            try:
                list(pool.map(one, keys))
            except BaseException:
                self.stop.set()  # running builds stop before the pool's exit waits for them
                raise
        return built

    # -- run --------------------------------------------------------------------------------
    def execute(self) -> RunResult:
        p = self.prepared
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _link_latest(self.out, self.run_id)
        phases = PhaseLog(self.run_dir / "phases.log")
        runnable: list[Cell] = []
        for cell in p.cells:
            reason = p.skips.get(cell.id)
            if reason:
                self.results[cell.id] = skipped_result(cell, p.descriptors[cell.folder], reason)
            else:
                runnable.append(cell)
        kube = [c for c in runnable if c.cluster_kind == "kubernetes"]
        runnable = [c for c in runnable if c.cluster_kind != "kubernetes"]
        cluster: EmbeddedCluster | None = None
        lbs: dict[str, LoadBalancer] = {}
        runs: list[CellRun] = []
        timer = None
        try:
            built = self.build(runnable, phases) if runnable else {}
            ready: list[tuple[Cell, BuiltClient]] = []
            for cell in runnable:
                b = built[(cell.folder, json.dumps(dict(cell.build_env), sort_keys=True))]
                if isinstance(b, BuildError):
                    r = base_result(cell, p.descriptors[cell.folder], Verdict.ERROR, f"build failed: {b.message}")
                    r.errors.append(b.render())
                    r.evidence["build_log"] = f"builds/{cell.client}.log"
                    self.results[cell.id] = r
                else:
                    ready.append((cell, b))
            if ready:
                phases.enter("cluster start")
                churn = _churn(ready)
                cluster = EmbeddedCluster(run_id=self.run_id, evidence_dir=self.run_dir / "cluster",
                                          churn_interval=churn, progress=lambda m: _say(f"  cluster: {m}"))
                cluster.start()
                timer = start_timer_server(cluster, self.run_dir / "cluster")
                phases.enter("lb setup")
                for slot, name in enumerate(dict.fromkeys(c.cluster for c, _ in ready)):
                    profile = next(c.profile for c, _ in ready if c.cluster == name)
                    assert profile is not None
                    _say(f"  lb {name}: {profile.describe()}")
                    lbs[name] = LoadBalancer(cluster, slot, profile, self.run_dir / "lbs" / name).start()
                phases.enter("cells setup")
                for i, (cell, b) in enumerate(ready):
                    runs.append(CellRun(index=i, cell=cell, built=b, cluster=cluster, lb=lbs[cell.cluster],
                                        evidence=self.cell_dir(cell), run_dir=self.run_dir, stop=self.stop))
                # Pods attach to their LB's bridge one by one (names and addresses are handed out in
                # order); the API calls and process starts of the setup then overlap.
                pods = [run.lb.add_pod(log=run.log) for run in runs]

                def setup(item: tuple[CellRun, object]) -> None:
                    run, pod = item
                    try:
                        run.setup(pod)  # type: ignore[arg-type]
                    except CellSetupError as exc:
                        run.setup_error = str(exc)

                with ThreadPoolExecutor(max_workers=4) as pool:
                    list(pool.map(setup, zip(runs, pods, strict=True)))
                phases.enter("rounds")
                self._run_rounds(runs)
                phases.enter("collect")
                # Stopping a capture waits for its file to settle: do all of them at once.
                with ThreadPoolExecutor(max_workers=32) as pool:
                    list(pool.map(lambda r: r.stop_processes(), runs))
                facts = read_pcaps([run.pcap_path for run in runs])
                for run in runs:
                    self.results[run.cell.id] = run.collect(lbs[run.cell.cluster].problems(), cluster.alive(),
                                                            facts.get(run.pcap_path))
                if self.keep:
                    _say(f"--keep: the cluster stays up; admin kubeconfig {cluster.admin_kubeconfig}; "
                         f"API server {cluster.server_url()}. Ctrl-C tears it down.")
                    _wait_for_ctrl_c()
            if kube:
                phases.enter("kubernetes")
                run_kubernetes_cells(
                    kube, clusters={c.name: c for c in p.matrix.clusters if isinstance(c, KubernetesCluster)},
                    descriptors=p.descriptors, run_id=self.run_id, run_dir=self.run_dir, results=self.results,
                    stop=self.stop, images_from=self.images_from, keep=self.keep, jobs=self.jobs, say=_say,
                    run_rounds=self._run_rounds, phases=phases)
        except Interrupted:
            self.interrupted = True
            raise
        finally:
            with signals.shield():
                self.stop.set()
                phases.enter("teardown")
                # In parallel: each stop may wait a few seconds (grace, capture settling), and a run
                # has up to a few hundred cells; teardown must stay bounded.
                with ThreadPoolExecutor(max_workers=32) as pool:
                    list(pool.map(lambda r: r.stop_processes(), runs))
                if self.interrupted:
                    for run in runs:
                        if run.cell.id not in self.results:
                            self.results[run.cell.id] = run.interrupted_result()
                for lb in lbs.values():
                    lb.close()
                if timer is not None:
                    timer.stop()
                if cluster is not None:
                    cluster.close()
                for cell in p.cells:
                    if cell.id not in self.results:
                        self.results[cell.id] = base_result(
                            cell, p.descriptors[cell.folder], Verdict.ERROR,
                            "interrupted" if self.interrupted else "the run ended before this cell ran")
                phases.enter("report")
                self.interrupted = self.interrupted or signals.interrupted()
                self.result = self.to_result()
                write_reports(self.result, self.run_dir)
                try:
                    # Pictures take about half a second a cell: an interrupted run writes only the
                    # results (`python -m runner report RESULTS.json --html` draws them later).
                    if not self.interrupted:
                        write_extras(self.result, self.run_dir)
                except Exception as exc:  # the JSON and markdown are written; the pictures are extra
                    _say(f"warning: the HTML report could not be written: {exc}")
                phases.enter("done")
        return self.result

    def _run_rounds(self, runs: Sequence[HarnessRun]) -> None:
        todo = [r for r in runs if r.setup_error is None]
        longest = max((r.cell.estimated_seconds for r in todo), default=0)
        jobs = self.jobs or len(todo) or 1
        _say(f"running {len(todo)} cells, {jobs} at once (each about {longest // 60} min {longest % 60} s)")
        with RunProgress() as progress, ThreadPoolExecutor(max_workers=jobs) as pool:
            progress.start_rounds(len(todo), sum(r.cell.rounds for r in todo))

            def say(text: str, round_done: bool = False) -> None:
                (progress.advance if round_done else progress.log)(text)

            futures = [pool.submit(r.run_rounds, say) for r in todo]
            try:
                while not all(f.done() for f in futures):
                    time.sleep(0.2)  # the main thread stays responsive to Ctrl-C
            except BaseException:
                self.stop.set()  # before the pool's exit waits for the harness threads
                raise
            for f in futures:
                f.result()

    def to_result(self) -> RunResult:
        p = self.prepared
        profiles: dict[str, ProfileFacts] = {}
        for c in p.cells:
            if c.profile:
                profiles.setdefault(c.profile.name, ProfileFacts.from_profile(c.profile))
        return RunResult(
            run_id=self.run_id, started=self.started, finished=time.time(),
            matrix=_display_path(p.matrix_path), machine=machine_info(),
            profiles=sorted(profiles.values(), key=lambda x: x.name),
            cells=[self.results[c.id] for c in p.cells], interrupted=self.interrupted,
        )


def readme_images(result: RunResult, run_dir: Path) -> dict[str, str]:
    """Copy the example cells' timelines into docs/timelines/ (results/ is not in the repo)."""
    images = {}
    for verdict, cell in readme_examples(result).items():
        svg = run_dir / "cells" / cell.cell_id / "timeline.svg"
        if svg.exists():
            target = REPO / "docs" / "timelines" / f"{verdict.lower()}.svg"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(svg, target)
            images[verdict] = str(target.relative_to(REPO))
    return images


def _read_one(path: Path) -> PcapFacts | Exception:
    try:
        return read_pcap(path, server_ports={API_PORT})
    except (PcapError, OSError) as exc:
        return exc


def read_pcaps(paths: list[Path]) -> dict[Path, PcapFacts | Exception]:
    """Read every cell's capture in parallel processes: parsing pcaps is CPU work."""
    if not paths:
        return {}
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return dict(zip(paths, pool.map(_read_one, paths), strict=True))


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return path.name


def _churn(ready: list[tuple[Cell, BuiltClient]]) -> float:
    """All embedded clusters share one API server, so they must share one churn setting."""
    values = {c.lease_interval for c, _ in ready if c.lease_interval is not None}
    if len(values) > 1:
        raise UsageError(f"embedded clusters ask for different churn.lease_interval values {sorted(values)}",
                         fix="give every embedded cluster the same churn (they share one kube-apiserver)")
    return float(values.pop()) if values else 10.0


def _link_latest(out: Path, run_id: str) -> None:
    latest = out / "latest"
    tmp = out / f".latest-{run_id}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_id)
    os.replace(tmp, latest)


def _wait_for_ctrl_c() -> None:
    try:
        while True:
            time.sleep(1)
    except Interrupted:
        signals.consume()  # this Ctrl-C only ends --keep; the run itself completed


def main(args: argparse.Namespace) -> int:
    matrix_path = Path(args.matrix)
    prepared = prepare(matrix_path, args.only, Path(args.clients) if getattr(args, "clients", None) else None)
    for key, glob in prepared.unmatched:
        _say(f"note: --only {key}={glob} matched no cell")
    if not prepared.cells:
        print("watchdrop: nothing selected: no cell matches the --only filters", file=sys.stderr)
        return int(ExitCode.NOTHING_SELECTED)
    if args.plan:
        print(describe_plan(prepared.cells, prepared.skips))
        return 0
    if any(c.cluster_kind != "kubernetes" and not prepared.skips.get(c.id) for c in prepared.cells):
        sysdeps.require_root("running the matrix on the embedded cluster")
        sysdeps.ensure_tools(_say)
        # A run killed with SIGKILL never reached its teardown: remove what it left (only dead
        # runs' `wd-` resources; a parallel live run is left alone).
        cleanup.clean(CommandLog(), say=lambda t: _say(f"leftover of a crashed run: {t}"))
    out = Path(args.out)
    if args.jobs < 0:
        raise UsageError("--jobs must be 0 (all at once) or a positive number")
    ex = Execution(prepared=prepared, out=out, jobs=args.jobs, keep=args.keep,
                   images_from=getattr(args, "images_from", None))
    _say(f"run {ex.run_id}: {len(prepared.cells)} cells from {matrix_path}; evidence in {ex.run_dir}")
    try:
        result = ex.execute()
    except Interrupted:
        _say(f"interrupted; partial results in {ex.run_dir}")
        raise
    except WatchdropError:
        raise
    print()
    print(render_table(result, "plain"))
    print(f"\nresults: {ex.run_dir / 'results.json'}  report: {ex.run_dir / 'report.md'}")
    if prepared.full and not args.no_readme and matrix_path.resolve().parent == REPO:
        readme = REPO / "README.md"
        if readme.exists() and update_readme(readme, render_readme_section(result, readme_images(result, ex.run_dir))):
            _say("README.md: table updated")
    return int(ExitCode.CELL_ERRORS if any(c.verdict is Verdict.ERROR for c in result.cells) else ExitCode.OK)

