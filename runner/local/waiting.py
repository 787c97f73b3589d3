"""Bounded waits for the local cluster's daemons, each ending in a located error with the log's tail."""

from __future__ import annotations

import time
from collections.abc import Callable

from runner.errors import ClusterError
from runner.host.procs import Child


def wait_until(child: Child, ready: Callable[[], bool], what: str, timeout: float, log_name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise ClusterError(f"{child.name} exited with code {child.returncode} during start",
                               detail=child.tail(), fix=f"see {log_name} in the evidence")
        try:
            if ready():
                return
        except Exception:  # not up yet: connection refused, socket missing …
            pass
        time.sleep(0.1)
    raise ClusterError(f"{what} within {timeout:.0f} s", detail=child.tail(), fix=f"see {log_name} in the evidence")
