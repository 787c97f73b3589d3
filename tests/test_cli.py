"""The command line as a user meets it: clear one-line errors, exit codes, no tracebacks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner.cli import main, normalise
from tests.conftest import needs_root_tools

REPO = Path(__file__).resolve().parent.parent
BAD = sorted((Path(__file__).parent / "bad_matrices").glob("*.yaml"))


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_normalise_treats_a_file_as_run() -> None:
    assert normalise(["matrix.yaml", "--plan"]) == ["run", "matrix.yaml", "--plan"]
    assert normalise(["--plan", "matrix.yaml"]) == ["--plan", "run", "matrix.yaml"]
    assert normalise(["report", "r.json"]) == ["report", "r.json"]


def test_help_explains_each_command() -> None:
    out = cli("--help").stdout
    for word in ("report", "cluster check", "cluster up", "lb-probe", "clean", "exit codes"):
        assert word in out


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_matrix_exits_4_with_file_line_and_fix(path: Path) -> None:
    proc = cli(str(path), "--plan")
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert lines and all(line.startswith("watchdrop: error: ") for line in lines), proc.stderr
    assert all(str(path) in line and "fix:" in line for line in lines), proc.stderr


@pytest.mark.parametrize("args", [
    ["matrix.quick.yaml", "--only", "colour=red"],
    ["matrix.quick.yaml", "--only", "client"],
    ["matrix.quick.yaml", "--jobs", "many"],
    ["report", "no-such-results.json"],
    ["lb-probe", "--profile", "no-such-profile"],
])
def test_usage_errors_exit_4(args: list[str]) -> None:
    proc = cli(*args)
    if args[0] == "lb-probe" and os.geteuid() != 0:
        pytest.skip("lb-probe checks root first")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("watchdrop: error: ")


def test_a_directory_instead_of_a_matrix(tmp_path: Path) -> None:
    proc = cli(str(tmp_path), "--plan")
    assert proc.returncode == 4 and "Traceback" not in proc.stderr


def test_nothing_selected_exits_5() -> None:
    proc = cli("matrix.quick.yaml", "--plan", "--only", "client=no-such-client")
    assert proc.returncode == 5, proc.stdout + proc.stderr


def test_plan_lists_cells_and_runs_nothing() -> None:
    proc = cli("matrix.quick.yaml", "--plan", "--only", "client=client-go", "--only", "scenario=watch")
    assert proc.returncode == 0
    assert "client-go/azure-slb-quick/watch" in proc.stdout
    assert "client-go-watch/" not in proc.stdout  # exact names, never a prefix


def test_main_returns_codes_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["matrix.quick.yaml", "--plan", "--only", "client=no-such"]) == 5
    assert main(["run"]) == 4


@needs_root_tools("setpriv")
def test_non_root_gets_one_clear_line() -> None:
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-m", "runner", "cluster", "check"],
                          capture_output=True, text=True, cwd="/", env={**os.environ, "PYTHONPATH": str(REPO)},
                          timeout=60)
    assert proc.returncode == 3
    assert "needs root" in proc.stderr and "Traceback" not in proc.stderr


@needs_root_tools("ip")
def test_missing_go_toolchain_is_one_clear_line(tmp_path: Path) -> None:
    """With an empty cache and no `go` on PATH, nothing is started and the fix is named."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("ip", "nft", "conntrack", "tcpdump", "haproxy", "curl", "apt-get"):
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    env = {"PATH": str(bindir), "WATCHDROP_CACHE": str(tmp_path / "cache")}
    proc = cli("cluster", "check", env=env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Go toolchain is not on PATH" in proc.stderr and "fix:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_children_are_stopped_when_the_runner_dies_of_a_bug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A bug anywhere in a command still stops every child it started (procs.REGISTRY), not only Ctrl-C."""
    from runner import cli as cli_module
    from runner.host.procs import REGISTRY, Child

    started: list[Child] = []

    def buggy(_args: object) -> int:
        started.append(Child("sleeper", ["sleep", "300"], stdout=tmp_path / "out"))
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli_module, "dispatch", buggy)
    assert cli_module.main(["report", "x.json"]) == 3
    assert "internal error" in capsys.readouterr().err
    assert started and not started[0].alive()
    assert started[0] not in REGISTRY.alive()
