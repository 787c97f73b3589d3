"""The runner's exception tree and exit codes, written out once.

    WatchdropError               anything the runner reports as one clear line, no traceback
    ├── UsageError               bad command line or bad input file            -> exit 4
    │   └── MatrixError          matrix.yaml / descriptor problems (many at once)
    ├── PrerequisiteError        missing root, tool or package, with the fix   -> exit 3
    ├── CommandError             an external command failed (argv + output tail)-> exit 3
    ├── BuildError               a Go/client build failed                      -> exit 3
    └── ClusterError             the cluster could not start or broke           -> exit 3
    Interrupted                  SIGINT/SIGTERM reached the runner             -> exit 2
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from runner.text import printable


class ExitCode(enum.IntEnum):
    """pytest-style exit codes (STYLE.md)."""

    OK = 0
    CELL_ERRORS = 1
    INTERRUPTED = 2
    INTERNAL = 3
    USAGE = 4
    NOTHING_SELECTED = 5


class WatchdropError(Exception):
    """An error the CLI prints as one line (plus optional detail) instead of a traceback."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, *, fix: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.detail = detail

    def render(self) -> str:
        # Messages and details quote command output and API errors: shown, never interpreted.
        text = f"watchdrop: error: {printable(self.message)}"
        if self.fix:
            text += f"\n  fix: {printable(self.fix)}"
        if self.detail:
            text += "\n" + "\n".join("  | " + printable(line) for line in self.detail.rstrip().splitlines())
        return text


class UsageError(WatchdropError):
    exit_code = ExitCode.USAGE


class MatrixError(UsageError):
    """One or more problems in an input file; each problem is one `file:line: field: what` line."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def render(self) -> str:
        return "\n".join(f"watchdrop: error: {p}" for p in self.problems)


class PrerequisiteError(WatchdropError):
    pass


class UnsafePathError(PrerequisiteError):
    """A file or directory root would trust is not safe to (a planted symlink, others can write it)."""


class CommandError(WatchdropError):
    def __init__(self, argv: Sequence[str], returncode: int, output: str, *, fix: str | None = None):
        tail = "\n".join(output.rstrip().splitlines()[-20:])
        super().__init__(
            f"command failed (exit {returncode}): {' '.join(argv)}", fix=fix, detail=tail or None
        )
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output


class BuildError(WatchdropError):
    pass


class ClusterError(WatchdropError):
    pass


class Interrupted(BaseException):
    """Raised from the signal handler so every `finally` (teardown) still runs."""

    exit_code = ExitCode.INTERRUPTED
