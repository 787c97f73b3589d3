from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from runner.host.netns import list_project_netns


def needs_root_tools(*tools: str) -> pytest.MarkDecorator:
    missing = [t for t in tools if shutil.which(t) is None]
    reason = "needs root" if os.geteuid() != 0 else f"missing tools: {', '.join(missing)}"
    return pytest.mark.skipif(os.geteuid() != 0 or bool(missing), reason=reason)


@pytest.fixture
def no_leftovers():
    """Assert a test leaves no project namespace behind that was not there before it."""
    before = set(list_project_netns())
    yield
    after = set(list_project_netns())
    assert after <= before, f"namespaces left behind: {sorted(after - before)}"


@pytest.fixture(scope="session", autouse=True)
def system_tools():
    """As root, install the Debian packages the runner needs, as `python -m runner` itself does."""
    if os.geteuid() == 0:
        from runner.host import sysdeps
        sysdeps.ensure_tools()


def wait_for_phase(proc: subprocess.Popen[str], out: Path, phase: str, timeout: float = 180) -> str:
    """The run id, once the runner started with `--out out` has entered `phase` (its phase log)."""
    log = out / "latest" / "phases.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and any(line.split(" ", 1)[1] == phase for line in log.read_text().splitlines()):
            return (out / "latest").resolve().name
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.1)
    pytest.fail(f"the run never reached phase {phase}")
