"""The start-up waves' order (runner/embedded/schedule.py): longest first by each cell's last
measured duration, the plan's estimate where there is none; the duration file's upkeep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from runner.config.matrix import load_matrix
from runner.config.plan import Cell, plan
from runner.embedded import schedule
from runner.host.procs import cpu_seconds
from tests.test_plan import MATRIX, _clients


@dataclass
class Run:
    cell: Cell
    started: float | None = None
    finished: float | None = None


def embedded_cells(tmp_path: Path) -> list[Cell]:
    path = tmp_path / "matrix.yaml"
    path.write_text(MATRIX)
    return [c for c in plan(load_matrix(path, _clients(tmp_path))) if c.profile is not None]


def test_without_history_the_estimates_decide_and_ties_keep_the_plan_order(tmp_path: Path) -> None:
    cells = embedded_cells(tmp_path)
    runs = [Run(c) for c in cells]
    order = schedule.admission_order(runs, {})
    estimates = [r.cell.estimated_seconds for r in order]
    assert estimates == sorted(estimates, reverse=True)
    longest = [r.cell.id for r in order if r.cell.estimated_seconds == estimates[0]]
    assert longest == [c.id for c in cells if c.estimated_seconds == estimates[0]]


def test_a_cell_that_took_longest_last_time_goes_first(tmp_path: Path) -> None:
    """Two watch cells with the same estimate: the one that missed its rounds last run (a detection
    timeout per round longer) is admitted before the one that saw them at once."""
    watch = [c for c in embedded_cells(tmp_path) if c.scenario == "watch" and c.cluster == "azure-slb"]
    fast, slow = watch[0], watch[1]
    assert fast.estimated_seconds == slow.estimated_seconds
    seconds = {schedule.cell_key(fast): fast.rounds * fast.wait + 0.5,
               schedule.cell_key(slow): slow.estimated_seconds - 0.5}
    order = [r.cell for r in schedule.admission_order([Run(fast), Run(slow)], seconds)]
    assert order == [slow, fast]


def test_a_cell_never_measured_takes_its_upper_estimate_and_goes_before_measured_ones(tmp_path: Path) -> None:
    watch = [c for c in embedded_cells(tmp_path) if c.scenario == "watch" and c.cluster == "azure-slb"]
    measured, new = watch[0], watch[1]
    seconds = {schedule.cell_key(measured): measured.estimated_seconds - 1}
    assert [r.cell for r in schedule.admission_order([Run(measured), Run(new)], seconds)] == [new, measured]


def test_the_key_changes_with_the_cells_timings(tmp_path: Path) -> None:
    cell = embedded_cells(tmp_path)[0]
    assert schedule.cell_key(cell) != schedule.cell_key(replace(cell, rounds=cell.rounds + 1))
    assert schedule.cell_key(cell).startswith(cell.id + " ")


def test_measured_runs_from_the_watchers_start_to_the_cells_end(tmp_path: Path) -> None:
    a, b, c = embedded_cells(tmp_path)[:3]
    got = schedule.measured([Run(a, started=100.0, finished=230.25), Run(b, started=None, finished=5.0),
                             Run(c, started=100.0, finished=None)])
    assert got == {schedule.cell_key(a): 130.2}


def test_record_merges_drops_stale_records_and_load_reads_them_back(tmp_path: Path) -> None:
    path = tmp_path / schedule.FILENAME
    now = 1_800_000_000.0
    path.write_text(json.dumps({"old": {"seconds": 9, "at": now - (schedule.KEEP_DAYS + 1) * 86400},
                                "kept": {"seconds": 7, "at": now - 86400},
                                "bad": {"seconds": 1}, "worse": 3}))
    schedule.record(path, {"new": 150.0, "kept": 8.0}, now=now)
    assert schedule.load(path) == {"new": 150.0, "kept": 8.0}
    assert [p.name for p in tmp_path.iterdir()] == [schedule.FILENAME]  # no temp file left


def test_an_unreadable_history_is_no_history(tmp_path: Path) -> None:
    path = tmp_path / schedule.FILENAME
    assert schedule.load(path) == {}
    for text in ("{half", "[]", '{"a": 3}', '{"a": {"at": 1}}'):
        path.write_text(text)
        assert schedule.load(path) == {}
    schedule.record(path, {"a": 1.0})  # a broken file is replaced, not fatal
    assert schedule.load(path) == {"a": 1.0}


def test_cpu_seconds_counts_the_process_and_is_none_once_it_is_gone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time\nt=time.process_time()\n"
                             "while time.process_time()-t<0.3: pass\nprint(1, flush=True)\ntime.sleep(30)"],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline()
        used = cpu_seconds(proc.pid)
        assert used is not None and used >= 0.25
    finally:
        proc.kill()
        proc.wait()
    assert cpu_seconds(proc.pid) is None
    assert cpu_seconds(os.getpid()) is not None
