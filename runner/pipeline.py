"""`python -m runner MATRIX`: load → plan → [per backend: build → start → cells → rounds → collect →
close] → verdicts → report.

`prepare()` is everything that can fail on bad input (exit 4) before anything runs. `execute()`
hands each backend (runner/backend.py: embedded, kubernetes) its cells through the one shared
loop, then writes the results in `finally`, so an interrupted run still stops every process,
removes every namespace, writes the results it has (unfinished cells ERROR "interrupted") and
exits 2.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runner.backend import Backend, RunContext, run_backend, unfinished
from runner.build.images import kubernetes_problem
from runner.config.descriptor import Descriptor
from runner.config.matrix import KubernetesCluster, LocalCluster, Matrix, load_matrix
from runner.config.plan import Cell, describe_plan, parse_only, plan, select, skip_reasons, unmatched
from runner.embedded.backend import EmbeddedBackend
from runner.errors import ExitCode, Interrupted, UsageError, WatchdropError
from runner.evidence.limits import Limits, use_limits
from runner.harness import base_result, profile_facts
from runner.host import cleanup, signals, sysdeps
from runner.host.commands import CommandLog
from runner.host.netns import new_run_id
from runner.kube.backend import kubernetes_backends
from runner.local.provider import LocalProvidedBackend
from runner.model import CellResult, ProfileFacts, RunResult, Verdict
from runner.phases import PhaseLog
from runner.report.compact import render_compact
from runner.report.early import EarlyTimelines
from runner.report.html import RunIds, write_extras
from runner.report.readme import readme_examples, render_readme_section
from runner.report.render import update_readme, write_reports
from runner.text import printable

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
    checked = matrix.descriptors  # load_matrix read and checked each client.yaml once
    descriptors = {c.folder: checked[c.folder] for c in cells}
    skips = skip_reasons(cells, descriptors)
    for c in cells:
        if c.cluster_kind in ("kubernetes", "local"):
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
    #: Test seams (hidden --pause-at, --break-capture, --limit-log-mib, --limit-pcap-mib): hold the run a
    #: few seconds after entering this phase; make this client's captures fail to start; other size caps.
    pause_at: str | None = None
    break_capture: str | None = None
    limits: Limits = field(default_factory=Limits)
    run_id: str = field(default_factory=new_run_id)
    results: dict[str, CellResult] = field(default_factory=dict)
    interrupted: bool = False
    started: float = field(default_factory=time.time)
    stop: threading.Event = field(default_factory=threading.Event)
    #: Why a backend could not start, what its teardown could not undo (also in its problems.txt).
    backend_problems: list[str] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return self.out / self.run_id

    def cell_dir(self, cell: Cell) -> Path:
        return self.run_dir / "cells" / cell.id

    def execute(self) -> RunResult:
        """skip → for each backend: prepare, start, cells, rounds, collect, close → report."""
        p = self.prepared
        use_limits(self.limits)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _link_latest(self.out, self.run_id)
        phases = PhaseLog(self.run_dir / "phases.log", self.pause_at)
        # Each cell's timeline and page are written as soon as it is judged, while longer cells still run.
        timelines = EarlyTimelines(self.run_dir, RunIds(self.run_id, _display_path(p.matrix_path)))
        ctx = RunContext(run_id=self.run_id, run_dir=self.run_dir, descriptors=p.descriptors, stop=self.stop,
                         say=_say, phases=phases, jobs=self.jobs, keep=self.keep, break_capture=self.break_capture,
                         on_result=timelines)
        try:
            for backend in self.backends(ctx):
                self.backend_problems += run_backend(backend, ctx, self.results)
        except Interrupted:
            self.interrupted = True
            raise
        finally:
            with signals.shield():
                try:
                    self.report(ctx, timelines)
                finally:
                    timelines.close()
        return self.result

    def backends(self, ctx: RunContext) -> list[Backend]:
        """The cells that are not skipped, grouped by the backend that runs them."""
        p = self.prepared
        runnable: list[Cell] = []
        for cell in p.cells:
            reason = p.skips.get(cell.id)
            if reason:
                self.results[cell.id] = skipped_result(cell, p.descriptors[cell.folder], reason)
            else:
                runnable.append(cell)
        embedded = [c for c in runnable if c.cluster_kind == "embedded"]
        kube = [c for c in runnable if c.cluster_kind == "kubernetes"]
        backends: list[Backend] = [EmbeddedBackend(embedded, ctx)] if embedded else []
        if kube:
            clusters = {c.name: c for c in p.matrix.clusters if isinstance(c, KubernetesCluster)}
            backends += kubernetes_backends(kube, clusters, ctx, images_from=self.images_from)
        # A local cluster is *got* (brought up, handed over as a kube context, torn down) around a
        # plain kubernetes backend, one cluster at a time: only one can run on a machine.
        local_specs = {c.name: c for c in p.matrix.clusters if isinstance(c, LocalCluster)}
        by_local: dict[str, list[tuple[int, Cell]]] = {}
        for i, cell in enumerate(runnable):
            if cell.cluster_kind == "local":
                by_local.setdefault(cell.cluster, []).append((i, cell))
        backends += [LocalProvidedBackend(local_specs[name], group, ctx, slot=len(backends) + n,
                                          images_from=self.images_from)
                     for n, (name, group) in enumerate(by_local.items())]
        return backends

    def report(self, ctx: RunContext, timelines: EarlyTimelines | None = None) -> None:
        """Results for every cell (ERROR for those never reached), then the files; always runs."""
        p = self.prepared
        self.results.update(unfinished(p.cells, self.results, p.descriptors,
                                       self.interrupted or signals.interrupted()))
        for problem in self.backend_problems:
            _say(f"problem: {problem}")
        ctx.enter("report")
        # After entering the phase: a Ctrl-C while the results are being written still marks them.
        self.interrupted = self.interrupted or signals.interrupted()
        self.result = self.to_result()
        write_reports(self.result, self.run_dir)
        try:
            # Pictures take about half a second a cell: an interrupted run writes only the
            # results (`python -m runner report RESULTS.json --html` draws them later).
            if not self.interrupted:
                write_extras(self.result, self.run_dir, timelines.drawn() if timelines is not None else frozenset())
        except Exception as exc:  # the JSON and markdown are written; the pictures are extra
            _say(f"warning: the HTML report could not be written: {exc}")
        ctx.enter("done")

    def to_result(self) -> RunResult:
        p = self.prepared
        # Keyed by the whole description, not the name: two clusters may run one named profile with
        # different overrides (a front each, say), and each really ran.
        profiles: dict[str, ProfileFacts] = {}
        for c in p.cells:
            facts = profile_facts(c)
            if facts is not None:
                profiles.setdefault(facts.describe(), facts)
        return RunResult(
            run_id=self.run_id, started=self.started, finished=time.time(),
            matrix=_display_path(p.matrix_path), machine=machine_info(),
            profiles=sorted(profiles.values(), key=lambda x: (x.name, x.describe())),
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


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return path.name


def _link_latest(out: Path, run_id: str) -> None:
    latest = out / "latest"
    tmp = out / f".latest-{run_id}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_id)
    os.replace(tmp, latest)


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
                   images_from=getattr(args, "images_from", None), pause_at=getattr(args, "pause_at", None),
                   break_capture=getattr(args, "break_capture", None),
                   limits=Limits.in_mib(getattr(args, "limit_log_mib", None), getattr(args, "limit_pcap_mib", None)))
    _say(f"run {ex.run_id}: {len(prepared.cells)} cells from {matrix_path}; evidence in {ex.run_dir}")
    try:
        result = ex.execute()
    except Interrupted:
        _say(f"interrupted; partial results in {ex.run_dir}")
        raise
    except WatchdropError:
        raise
    print()
    print(render_compact(result, "plain"))
    print(f"\nresults: {ex.run_dir / 'results.json'}  report: {ex.run_dir / 'report.md'}")
    if prepared.full and not args.no_readme and matrix_path.resolve().parent == REPO:
        readme = REPO / "README.md"
        if readme.exists() and update_readme(readme, render_readme_section(result, readme_images(result, ex.run_dir))):
            _say("README.md: table updated")
    return int(ExitCode.CELL_ERRORS if any(c.verdict is Verdict.ERROR for c in result.cells) else ExitCode.OK)

