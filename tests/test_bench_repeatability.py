"""bench/repeatability.py --compare: agreement read from runs already made (no runner started)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(folder: Path, run_id: str, cells: list[tuple[str, str]]) -> Path:
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"run_id": run_id, "matrix": "m.yaml", "cells": [
        {"client": client, "cluster": "azure-slb-quick", "scenario": "watch", "verdict": verdict, "reason": "r"}
        for client, verdict in cells]}))
    return folder


def test_compare_counts_a_changed_and_a_missing_cell_as_differing(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", "aaaaaa", [("client-go", "PASS"), ("kube-rs", "FAIL-SILENT"), ("java", "PASS")])
    b = _run(tmp_path / "b", "bbbbbb", [("client-go", "PASS"), ("kube-rs", "RECOVERED")])
    out = subprocess.run([sys.executable, "bench/repeatability.py", "--compare", str(a), str(b / "results.json")],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "agreement: 1/3 cells = 0.333" in out
    assert "differs: kube-rs/azure-slb-quick/watch" in out and "differs: java/azure-slb-quick/watch" in out
    assert "missing: not in this run" in out


CHILD = """
import signal, sys, time
def on_int(*_):
    open(sys.argv[1], "a").write("SIGINT\\n")
    time.sleep(0.5)  # its teardown
    open(sys.argv[1], "a").write("torn down\\n")
    sys.exit(2)
signal.signal(signal.SIGINT, on_int)
open(sys.argv[1], "a").write("started\\n")
time.sleep(30)
"""


@pytest.mark.parametrize("script", ["repeatability", "matrix_overhead"])
def test_ctrl_c_reaches_the_runner_once_and_is_waited_for(tmp_path: Path, script: str) -> None:
    """A bench interrupted while its runner runs: the runner gets one SIGINT and finishes its
    teardown (subprocess.run would SIGKILL it, and its namespaces and agents would outlive the run)."""
    log, child = tmp_path / "child.log", tmp_path / "child.py"
    child.write_text(CHILD)
    # Python leaves SIGINT ignored when it starts so (a test run started in the background by a
    # non-interactive shell): the driver stands for a bench started from a terminal.
    driver = (f"import bench.{script} as b, signal, sys\n"
              "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
              f"b.run_runner([sys.executable, {str(child)!r}, {str(log)!r}])\n")
    proc = subprocess.Popen([sys.executable, "-c", driver], cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (log.exists() and "started" in log.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert log.read_text().splitlines() == ["started", "SIGINT", "torn down"]
    assert "KeyboardInterrupt" in err  # and the bench itself stops
