"""The run's phase log: one line per phase entered, so tests (and people) can see how far a run got.

`pause_at` (the hidden `--pause-at PHASE` of `python -m runner run`) holds the run for a few
seconds right after it enters that phase: a seam for interruption tests, which aim a signal at a
phase by reading this log instead of guessing with sleeps. Nothing reads it from the environment.
"""

from __future__ import annotations

import time
from pathlib import Path

PAUSE_SECONDS = 5.0


class PhaseLog:
    def __init__(self, path: Path, pause_at: str | None = None):
        self.path = path
        self.pause_at = pause_at
        self.current = ""

    def enter(self, phase: str) -> None:
        self.current = phase
        with self.path.open("a") as f:
            f.write(f"{time.time():.3f} {phase}\n")
        if phase == self.pause_at:
            time.sleep(PAUSE_SECONDS)
