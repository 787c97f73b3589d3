"""Ctrl-C and SIGTERM: turn the first into an exception that unwinds through every teardown.

The first signal raises `Interrupted` in the main thread, so each `finally`/`__exit__` runs its
bounded teardown. A second signal sets `hurry`, which teardown code reads to skip grace periods;
it never skips the cleanup itself.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from runner.errors import Interrupted

hurry = threading.Event()
_count = 0


def _handler(signum: int, _frame: FrameType | None) -> None:
    global _count
    _count += 1
    if _count == 1:
        raise Interrupted(signal.Signals(signum).name)
    hurry.set()


def install() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _handler)


def grace(default: float) -> float:
    """The grace period to give a child: none after a second Ctrl-C."""
    return 0.5 if hurry.is_set() else default
