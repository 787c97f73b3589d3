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


def pytest_configure(config: pytest.Config) -> None:
    """As root, install the Debian packages the runner needs, as `python -m runner` itself does.

    Before collection, not in a session fixture: `needs_root_tools` looks for the tools when a test
    module is imported, so on a fresh machine a later install left every kernel test skipped."""
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


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory):
    """A private Docker engine for real image builds (tests/dockerd.py), DOCKER_HOST set to it.

    Its data root is in the cache (`<cache>/docker`), so base and client images built once are
    found again by the next run. Stopped at the end, and then nothing of it may be left: no
    process, no mount, no network namespace. Skips with the reason where dockerd cannot run."""
    from runner.build.cache import cache_root
    from tests import dockerd

    problem = dockerd.install_problem()
    if problem:
        pytest.skip(problem)
    engine = dockerd.start(cache_root() / "docker", tmp_path_factory.mktemp("dockerd") / "dockerd.log")
    before = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = engine.host
    try:
        yield engine
    finally:
        if before is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = before
        left = dockerd.stop(engine)
        assert not left, f"the private dockerd left behind: {left}"


@pytest.fixture(scope="session")
def local_bases(docker_engine, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Build argument -> local base image (runner/build/bases.py) for the timer server, the capture
    sidecar, client-go and client-python; built once, found in the engine's store afterwards."""
    from runner.build import bases, images
    from runner.errors import PrerequisiteError

    args = set().union(*(images.declared_args(text) for text in (
        images.CAPTURE_DOCKERFILE, (images.TIMER_SERVER_DIR / "Dockerfile").read_text(),
        (images.REPO / "clients" / "client-go" / "Dockerfile").read_text(),
        (images.REPO / "clients" / "client-python" / "Dockerfile").read_text())))
    api = images.docker_api()
    try:
        refs = images.resolve_bases("local", args)
        bases.ensure_bases(api, refs.values(), tmp_path_factory.mktemp("bases"), print)
    except PrerequisiteError as exc:
        pytest.skip(exc.message)
    finally:
        api.close()
    return refs
