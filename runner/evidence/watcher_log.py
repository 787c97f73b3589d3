"""A watcher's own account of a cell: its JSON lines (clients/README.md's contract) and its stderr."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from runner.evidence.limits import contract_line
from runner.model import WatcherFacts

#: stderr lines that look like a library logging an error: klog's `E1125 ...` prefix, Python and
#: Java tracebacks/exceptions, Go panics, and any line that says "error". A heuristic on purpose:
#: it only decides LOUD versus SILENT for a round that was already missed.
_STDERR_ERROR = re.compile(r"^E\d{4} |\b(error|exception|traceback|panic|fatal)\b", re.IGNORECASE)


def parse_watcher_log(text: str) -> list[dict[str, Any]]:
    """The contract's JSON lines from a watcher's stdout; anything else on stdout is ignored.

    A line counts only if it is a JSON object with a numeric `ts` and a string `event`.
    """
    return [obj for raw in text.splitlines() if (obj := contract_line(raw)) is not None]


def count_stderr_errors(stderr: str) -> int:
    return sum(1 for line in stderr.splitlines() if _STDERR_ERROR.search(line))


def summarize_watcher(lines: Sequence[Mapping[str, Any]], exit_code: int | None, stderr: str = "") -> WatcherFacts:
    def of(kind: str) -> list[Mapping[str, Any]]:
        return [ln for ln in lines if ln.get("event") == kind]

    started = of("started")
    errors = of("error")
    first_error = None
    if errors:
        msg = errors[0].get("message")
        first_error = msg if isinstance(msg, str) else json.dumps(msg)
    version = started[0].get("version") if started else None
    return WatcherFacts(
        started=bool(started),
        lines=len(lines),
        errors=len(errors),
        reconnects=len(of("reconnect")),
        watch_opened=len(of("watch-opened")),
        stderr_errors=count_stderr_errors(stderr),
        exit_code=exit_code,
        first_error=first_error,
        reported_version=version if isinstance(version, str) else None,
    )
