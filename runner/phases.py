"""The run's phase log: one line per phase entered, so tests (and people) can see how far a run got."""

from __future__ import annotations

import time
from pathlib import Path


class PhaseLog:
    def __init__(self, path: Path):
        self.path = path
        self.current = ""

    def enter(self, phase: str) -> None:
        self.current = phase
        with self.path.open("a") as f:
            f.write(f"{time.time():.3f} {phase}\n")
