"""Ctrl-C and SIGTERM: turn the first into an exception that unwinds through every teardown.

The first signal raises `Interrupted` in the main thread, so each `finally`/`__exit__` runs its
bounded teardown. A second signal sets `hurry`, which teardown code reads to skip grace periods;
it never skips the cleanup itself. Inside `shield()` (the teardown and report-writing itself) a
signal is only remembered, so the results are still written; it is raised when the shield ends.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from runner.errors import Interrupted

hurry = threading.Event()
_state = {"count": 0, "shielded": 0, "pending": ""}


def _handler(signum: int, _frame: FrameType | None) -> None:
    _state["count"] += 1
    name = signal.Signals(signum).name
    if _state["count"] > 1:
        hurry.set()
    if _state["shielded"]:
        _state["pending"] = _state["pending"] or name
        return
    if _state["count"] == 1:
        raise Interrupted(name)


def install() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _handler)


def interrupted() -> bool:
    """Whether any signal arrived so far (raised or remembered)."""
    return _state["count"] > 0


@contextmanager
def shield() -> Iterator[None]:
    """Let the block finish (teardown, results); a signal that arrives meanwhile is raised after it."""
    _state["shielded"] += 1
    try:
        yield
    finally:
        _state["shielded"] -= 1
    if not _state["shielded"] and _state["pending"]:
        name, _state["pending"] = _state["pending"], ""
        raise Interrupted(name)


def consume() -> None:
    """Forget the signals so far (the one that ended `--keep` did not interrupt the run)."""
    _state["count"] = 0
    hurry.clear()


def grace(default: float) -> float:
    """The grace period to give a child: none after a second Ctrl-C."""
    return 0.5 if hurry.is_set() else default
