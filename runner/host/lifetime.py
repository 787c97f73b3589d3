"""A thing that starts in steps and must be undone whatever happens (kind's create/rollback shape).

`start()` runs the subclass's `_start()`; a start that fails halfway (an error, Ctrl-C) runs
`close()` before the error goes on, so nothing half-made outlives it. Used as a context manager,
`close()` also runs on the way out. Each step's time is kept in `phases` and told to `progress`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Self

from runner.host import signals


class StartStop:
    phases: list[tuple[str, float]]
    progress: Callable[[str], None]

    def _start(self) -> None:
        raise NotImplementedError

    def close(self) -> object:
        raise NotImplementedError

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            with signals.shield():
                self.close()
            raise

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _phase(self, name: str, t0: float) -> None:
        took = time.monotonic() - t0
        self.phases.append((name, took))
        self.progress(f"{name}: {took:.2f} s")


def teardown_steps(steps: Iterable[tuple[str, Callable[[], object]]]) -> list[str]:
    """Run every step even when one fails; each failure becomes one problem line.

    Teardown's steps are independent undo actions: a namespace that will not go away must not keep
    the routes, the run's claim or the admin credentials' folder from being removed after it."""
    problems: list[str] = []
    for what, step in steps:
        try:
            step()
        except Exception as exc:
            problems.append(f"{what}: {exc.__class__.__name__}: {exc}")
    return problems


def teardown_concurrently(steps: Iterable[tuple[str, Callable[[], object]]], workers: int | None = None) -> list[str]:
    """teardown_steps for steps that do not depend on each other and mostly wait (a capture settling,
    a child's SIGTERM grace): all at once (or `workers` at a time), each failure one problem line,
    in the steps' order."""
    steps = list(steps)
    with ThreadPoolExecutor(max_workers=max(1, min(len(steps), workers or len(steps)))) as pool:
        parts = list(pool.map(lambda step: teardown_steps([step]), steps))
    return [problem for part in parts for problem in part]


def concurrently_or_raise(steps: Iterable[tuple[str, Callable[[], object]]], workers: int | None = None) -> None:
    """teardown_concurrently for a caller that reports by raising: every step runs, then one
    RuntimeError names each failure."""
    problems = teardown_concurrently(steps, workers)
    if problems:
        raise RuntimeError("; ".join(problems))
