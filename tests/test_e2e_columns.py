"""Every column end to end on one profile: each buildable client gets a verdict from evidence.

The full quick matrix (every column × four profiles × two scenarios) takes longer than CI should;
CI runs every column behind one profile, the silent drop (azure-slb-no-reset-quick), in the watch
scenario. .NET is SKIPPED with its reason where no SDK is installed, never faked.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner.config.matrix import load_matrix
from runner.report.render import load_results
from tests.conftest import needs_root_tools

pytestmark = [needs_root_tools("ip", "nft", "conntrack", "tcpdump", "haproxy", "go"), pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
PROFILE = "azure-slb-no-reset-quick"


def test_every_column_gets_a_verdict_behind_one_profile(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "matrix.quick.yaml", "--out", str(tmp_path), "--no-readme",
         "--only", f"cluster={PROFILE}", "--only", "scenario=watch"],
        cwd=REPO, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    run = load_results(tmp_path / "latest" / "results.json")
    columns = [c.name for c in load_matrix(REPO / "matrix.quick.yaml", REPO / "clients").clients]
    by_client = {c.client: c for c in run.cells}
    assert sorted(by_client) == sorted(columns)
    for name, cell in by_client.items():
        if cell.folder == "dotnet" and shutil.which("dotnet") is None:
            assert cell.verdict.value == "SKIPPED" and "dotnet" in cell.reason
            continue
        assert cell.verdict.value in ("PASS", "RECOVERED", "APP-RECOVERED", "FAIL-LOUD", "FAIL-SILENT"), (
            name, cell.reason)
        assert (tmp_path / "latest" / "cells" / cell.cell_id / "pod.pcap").exists()
    # The finding the project exists for, and its proven fix, in the same run.
    assert by_client["client-python"].verdict.value == "FAIL-SILENT"
    assert by_client["client-python-keepalive"].verdict.value == "PASS"
