"""Each cell's timeline and page written as soon as the cell is judged, while longer cells still run.

Drawing the timelines and parsing each capture for its page was most of the report's time after
the last round (about half a second a cell); cells are collected as their own rounds end
(runner/backend.py, EarlyCollect), so their pictures and pages can be written then, and the report
only writes the index. One process per CPU, spawned (the runner has threads mid-round) and niced,
so that a picture never competes with a watcher for the CPU. A cell whose page has not started when the
report begins is written by the report as before.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from runner.model import CellResult
from runner.report.html import RunIds, write_early

#: Below the watchers and the harness: pictures can wait, a watcher's first packet cannot.
DRAW_NICE = 10


class EarlyTimelines:
    """RunContext.on_result: queue the judged cell's page; `drawn()` says which were written."""

    def __init__(self, run_dir: Path, run: RunIds):
        self.run_dir, self.run = run_dir, run
        self.pool: ProcessPoolExecutor | None = None
        self.futures: dict[str, Future[bool]] = {}

    def __call__(self, result: CellResult) -> None:
        if self.pool is None:
            # One per CPU: the cells whose rounds end last are judged together, and their pages are
            # drawn while the run tears down instead of in the report after it.
            self.pool = ProcessPoolExecutor(max_workers=os.cpu_count() or 1,
                                            mp_context=multiprocessing.get_context("spawn"),
                                            initializer=os.nice, initargs=(DRAW_NICE,))
        self.futures[result.cell_id] = self.pool.submit(write_early, self.run_dir, self.run, result)

    def drawn(self) -> frozenset[str]:
        """Stop (what has not started is left to the report) and name the cells whose page is written."""
        self.close()
        return frozenset(cell_id for cell_id, f in self.futures.items()
                         if f.done() and not f.cancelled() and f.exception() is None and f.result())

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
