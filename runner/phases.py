"""The run's phase log: one line per phase entered, so tests (and people) can see how far a run got.

`WATCHDROP_PAUSE_AT=<phase>` holds the run for a few seconds right after it enters that phase:
a test hook, so interruption tests can aim a signal at a phase by reading this log instead of
guessing with sleeps.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PAUSE_SECONDS = 5.0


class PhaseLog:
    def __init__(self, path: Path):
        self.path = path
        self.current = ""

    def enter(self, phase: str) -> None:
        self.current = phase
        with self.path.open("a") as f:
            f.write(f"{time.time():.3f} {phase}\n")
        if os.environ.get("WATCHDROP_PAUSE_AT") == phase:
            time.sleep(PAUSE_SECONDS)
