"""What a backend is, and the one loop that drives every backend through a run.

A backend is a way to run some of the matrix's cells somewhere: the embedded cluster
(runner/embedded/backend.py: watchers as processes in pod namespaces behind the LB emulator) or a
kube context (runner/kube/backend.py: watcher pods on a real cluster). As kind's providers do, each
implements a few small steps and knows nothing of the others; the pipeline (runner/pipeline.py)
hands each its cells and calls `run_backend`, which is the only place that orders the steps:

    prepare -> start -> cells -> rounds (runner/harness.py, the same for every backend)
            -> collect (each cell as soon as its own rounds end, the rest after the last round)
            -> collected -> [hold, with --keep] -> close (always, also on Ctrl-C)

A backend that cannot start (no permission on the cluster, a build toolchain missing) turns its own
cells into ERROR with the reason and fix; the run goes on with the other backends. `close()` never
raises: every teardown step's problem is collected and returned, so one failing step cannot skip
the others or the writing of results.json.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from runner.config.descriptor import Descriptor
from runner.config.plan import Cell
from runner.errors import Interrupted, WatchdropError
from runner.harness import HarnessRun, base_result, error_result
from runner.host import signals
from runner.model import CellResult, Verdict
from runner.phases import PhaseLog
from runner.progress import RunProgress

Say = Callable[[str], None]


@dataclass
class RunContext:
    """What every backend of one run shares: where evidence goes, how to stop, how to talk."""

    run_id: str
    run_dir: Path
    descriptors: Mapping[str, Descriptor]
    stop: threading.Event = field(default_factory=threading.Event)
    say: Say = print
    phases: PhaseLog | None = None
    #: Cells whose rounds run at once (0: all).
    jobs: int = 0
    #: --keep: leave the cluster side up after collecting (each backend says how).
    keep: bool = False
    #: Test seam (hidden --break-capture CLIENT): that client's captures fail to start.
    break_capture: str | None = None
    #: Told of each cell's result as soon as it is judged (the report draws its timeline then).
    on_result: Callable[[CellResult], None] | None = None

    def enter(self, phase: str) -> None:
        if self.phases is not None:
            self.phases.enter(phase)

    def cell_dir(self, cell: Cell) -> Path:
        return self.run_dir / "cells" / cell.id


class Backend(Protocol):
    """One backend's cells through one run. Steps are called in order, each at most once."""

    #: Names the backend in messages and problems ("embedded", "cluster aks-eastus").
    name: str
    #: Prefix of the phases the shared loop enters for it ("" or "kubernetes ").
    phase_prefix: str
    #: The cells this backend was given.
    cells_given: Sequence[Cell]
    #: The backend's own evidence folder; its problems land in `problems.txt` there.
    evidence: Path

    def prepare(self) -> dict[str, CellResult]:
        """Build what the cells need (client builds, images); a cell that cannot get it gets its
        result here (ERROR with the build's reason) and is left out of the later steps."""
        ...

    def start(self) -> None:
        """Bring up or reach the cluster side (cluster, load balancers, timer server, preflight);
        raises WatchdropError when it cannot."""
        ...

    def cells(self) -> Sequence[HarnessRun]:
        """Set up every remaining cell; a cell that cannot start carries its `setup_error` and is
        judged ERROR by collect. It may return while setups still run, each run's `setup_done`
        set when its own is over: its rounds start then, overlapping the setups of the others."""
        ...

    def collect(self, runs: Sequence[HarnessRun]) -> dict[str, CellResult]:
        """Stop these cells' watchers and captures and judge each from its evidence. Called while
        other cells still run, for cells whose rounds are over (each cell once), and after the last
        round for every cell not collected yet; a call may run beside another."""
        ...

    def collected(self) -> None:
        """Once every cell is collected: the backend's own run-wide evidence (a timer server's log)."""
        ...

    def hold(self) -> None:
        """--keep: say how to reach what stays up; return when the user is done with it."""
        ...

    def close(self) -> list[str]:
        """Undo everything this backend made, whatever state it is in; never raises."""
        ...


# -- the shared steps ---------------------------------------------------------------------------------


def run_rounds(runs: Sequence[HarnessRun], ctx: RunContext) -> None:
    """Every cell's rounds at once (or `ctx.jobs` at a time), with progress; the same for every
    backend. The main thread only waits, so Ctrl-C reaches it at once."""
    # Cells still being set up are in: each one's rounds wait for its own setup (HarnessRun.setup_done).
    todo = [r for r in runs if r.setup_error is None]
    if not todo:
        return
    longest = max(r.cell.estimated_seconds for r in todo)
    jobs = ctx.jobs or len(todo)
    ctx.say(f"running {len(todo)} cells, {jobs} at once (each about {longest // 60} min {longest % 60} s)")
    with RunProgress() as progress, ThreadPoolExecutor(max_workers=jobs) as pool:
        progress.start_rounds(len(todo), sum(r.cell.rounds for r in todo))

        def say(text: str, round_done: bool = False) -> None:
            (progress.advance if round_done else progress.log)(text)

        futures = [pool.submit(r.run_rounds, say) for r in todo]
        try:
            while not all(f.done() for f in futures):
                time.sleep(0.2)
        except BaseException:
            ctx.stop.set()  # before the pool's exit waits for the harness threads
            raise
        for f in futures:
            f.result()


class EarlyCollect:
    """Collects each cell as soon as its own rounds are over (HarnessRun.finished), while the
    others still run: a run then ends little after its longest cell instead of collecting every
    cell after the last round. A few at a time: each mostly waits (a SIGTERM grace, a capture
    settling, a pod's exec), and the judging itself is light."""

    POLL = 0.5
    WORKERS = 4

    def __init__(self, backend: Backend, runs: Sequence[HarnessRun], ctx: RunContext,
                 results: dict[str, CellResult]):
        self.backend, self.ctx, self.results = backend, ctx, results
        self.waiting = [r for r in runs if r.setup_error is None]
        self.submitted: set[str] = set()
        self.pool = ThreadPoolExecutor(max_workers=self.WORKERS, thread_name_prefix="collect")
        self.futures: list[Future[None]] = []
        self.watcher = threading.Thread(target=self._watch, name="early-collect", daemon=True)
        self.done = threading.Event()

    def __enter__(self) -> EarlyCollect:
        self.watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.watcher.join()
        # An interrupt stops what has not started; a collect under way finishes (it only stops
        # and reads the cell's own processes and files).
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _watch(self) -> None:
        while not self.done.wait(self.POLL) and not self.ctx.stop.is_set():
            for run in self.waiting:
                if run.finished is not None and run.cell.id not in self.submitted:
                    self.submitted.add(run.cell.id)
                    self.futures.append(self.pool.submit(self._one, run))

    def _one(self, run: HarnessRun) -> None:
        if not self.ctx.stop.is_set():
            self._store(self.backend.collect([run]))

    def _store(self, got: Mapping[str, CellResult]) -> None:
        self.results.update(got)
        if self.ctx.on_result is not None:
            for result in got.values():
                self.ctx.on_result(result)

    def finish(self, runs: Sequence[HarnessRun]) -> None:
        """After the last round: wait for the early collects, then collect every cell they did not."""
        self.done.set()
        self.watcher.join()
        for f in self.futures:
            f.result()  # a collect's own failure surfaces here, as it would have in one collect
        rest = [r for r in runs if r.cell.id not in self.submitted]
        if rest:
            self._store(self.backend.collect(rest))


def run_backend(backend: Backend, ctx: RunContext, results: dict[str, CellResult],
                rounds: Callable[[Sequence[HarnessRun], RunContext], None] = run_rounds) -> list[str]:
    """One backend through the steps, filling `results` in place (an interrupted run keeps what it
    has). Returns its problems (why it could not start, what teardown could not undo), also written
to the backend's problems.txt; Interrupted propagates after teardown."""
    prefix = backend.phase_prefix
    runs: Sequence[HarnessRun] = []
    problems: list[str] = []
    try:
        results.update(backend.prepare())
        backend.start()
        runs = backend.cells()
        ctx.enter(f"{prefix}rounds")
        with EarlyCollect(backend, runs, ctx, results) as early:
            rounds(runs, ctx)
            if ctx.stop.is_set():
                raise Interrupted("stopped")
            ctx.enter(f"{prefix}collect")
            early.finish(runs)
        backend.collected()
        if ctx.keep:
            backend.hold()
    except WatchdropError as exc:
        ctx.stop.set()
        ctx.say(f"{backend.name}: {exc.message}" + (f" (fix: {exc.fix})" if exc.fix else ""))
        problems.append(exc.render())
        for cell in backend.cells_given:
            if cell.id not in results:
                r = error_result(cell, ctx.descriptors[cell.folder], f"{backend.name}: {exc.message}")
                if exc.fix:
                    r.errors.append(f"fix: {exc.fix}")
                results[cell.id] = r
        ctx.stop.clear()  # only this backend's threads had to stop; the next backend runs
    except BaseException:
        ctx.stop.set()  # an interrupt or a bug: every thread of this backend stops before close
        raise
    finally:
        with signals.shield():
            ctx.enter(f"{prefix}teardown")
            try:
                problems += backend.close()
            except Exception as exc:  # close() should not raise; if it does, the results are still written
                problems.append(f"{backend.name} teardown: {exc.__class__.__name__}: {exc}")
            if problems:
                backend.evidence.mkdir(parents=True, exist_ok=True)
                with (backend.evidence / "problems.txt").open("a") as f:
                    f.write("\n".join(problems) + "\n")
    return problems


def unfinished(cells: Iterable[Cell], results: Mapping[str, CellResult], descriptors: Mapping[str, Descriptor],
               interrupted: bool) -> dict[str, CellResult]:
    """ERROR for every cell that got no result: the run was interrupted, or ended before it ran."""
    out: dict[str, CellResult] = {}
    for cell in cells:
        if cell.id in results:
            continue
        desc = descriptors[cell.folder]
        if interrupted:
            r = base_result(cell, desc, Verdict.ERROR, "interrupted")
            r.errors.append("the run was interrupted before this cell finished")
        else:
            r = base_result(cell, desc, Verdict.ERROR, "the run ended before this cell ran")
        out[cell.id] = r
    return out
