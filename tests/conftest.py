from __future__ import annotations

import os
import shutil

import pytest

from runner.netns import list_project_netns


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
        from runner import sysdeps

        sysdeps.ensure_tools()
