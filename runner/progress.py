"""Live progress: a rich progress bar on a terminal, plain log lines otherwise (CI, pipes)."""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from runner.text import printable


class RunProgress:
    """`log()` for events, `advance()` when a round ends; a bar only when stdout is a terminal."""

    def __init__(self, tty: bool | None = None):
        self.tty = sys.stdout.isatty() if tty is None else tty
        self._lock = threading.Lock()
        self._bar: Progress | None = None
        self._task = None
        self._done = 0
        self._total = 0
        self._started = time.monotonic()

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start_rounds(self, cells: int, rounds: int) -> None:
        self._total = rounds
        if self.tty:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=Console(), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(f"{cells} cells, rounds", total=rounds)

    def advance(self, text: str) -> None:
        with self._lock:
            self._done += 1
            if self._bar is not None and self._task is not None:
                self._bar.advance(self._task)
                self._bar.console.print(printable(text), markup=False)
            else:
                took = time.monotonic() - self._started
                print(f"{printable(text)}  [{self._done}/{self._total} rounds, {took:.0f} s]", flush=True)

    def log(self, text: str) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.console.print(printable(text), markup=False)
            else:
                print(printable(text), flush=True)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
