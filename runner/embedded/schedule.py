"""The order the start-up waves admit cells in: the longest first, by what each took last time.

Watchers start a few at a time (runner/embedded/backend.py), and on a small machine the last of
a matrix's watchers starts tens of seconds after the first: starting CPython, Node and JVM
watchers is CPU work. A run ends when its last cell does, so the cells that take longest should
start first. The plan's estimate (rounds x (wait + detection)) is an upper bound and the same for
every cell of a scenario; what tells them apart is the run: a watch cell whose rounds are all
seen ends a detection timeout per round sooner than one that misses them, and a Go watcher is
warm in a fraction of a second where a JVM takes seconds. So each embedded run records how long
each cell took from its watcher's start to its last round, and the next run admits the cells in
that order, as test runners schedule by past durations. A cell without a record takes its
estimate and goes first. Order changes no verdict: every cell's
rounds start from its own warm watcher (issue 16 §1's max-concurrency bench).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from runner.config.plan import Cell
from runner.host.safefiles import write_atomic

#: Records older than this are dropped when the file is written (a cell no matrix runs anymore).
KEEP_DAYS = 30.0
FILENAME = "cell-seconds.json"


class Timed(Protocol):
    """What the schedule needs of a run: its cell, when its watcher started and its rounds ended."""

    cell: Cell
    started: float | None
    finished: float | None


R = TypeVar("R", bound=Timed)


def cell_key(cell: Cell) -> str:
    """A cell's identity for its duration: the same cell with other timings is another cell."""
    return f"{cell.id} {cell.rounds}x{cell.wait}+{cell.detection_timeout}"


def load(path: Path) -> dict[str, float]:
    """Seconds by cell key; a missing or unreadable file is no history (the estimates decide)."""
    try:
        data = json.loads(path.read_text())
        return {k: float(v["seconds"]) for k, v in data.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def admission_order(runs: Sequence[R], seconds: Mapping[str, float]) -> list[R]:
    """Longest first: a recorded duration where there is one, else the cell's upper estimate.
    Stable, so cells that tie keep the plan's order."""
    return sorted(runs, key=lambda r: -seconds.get(cell_key(r.cell), r.cell.estimated_seconds))


def measured(runs: Iterable[Timed]) -> dict[str, float]:
    """Each run's seconds from its watcher's start to its end, for the runs that had both."""
    return {cell_key(r.cell): round(r.finished - r.started, 1)
            for r in runs if r.started is not None and r.finished is not None and r.finished >= r.started}


def record(path: Path, got: Mapping[str, float], now: float | None = None) -> None:
    """Merge `got` into the file, dropping stale records; written atomically, so a run reading it
    never sees half a file (two runs at once: the last one's records win)."""
    now = time.time() if now is None else now
    try:
        old = json.loads(path.read_text())
        if not isinstance(old, dict):
            old = {}
    except (OSError, ValueError):
        old = {}
    keep = {k: v for k, v in old.items() if _fresh(v, now)}
    keep.update({k: {"seconds": s, "at": round(now)} for k, s in got.items()})
    write_atomic(path, json.dumps(keep, sort_keys=True, indent=0))


def _fresh(value: object, now: float) -> bool:
    try:
        return isinstance(value, dict) and now - float(value["at"]) < KEEP_DAYS * 86400
    except (KeyError, TypeError, ValueError):
        return False
