"""Adding a column takes a folder under clients/ and one line in the matrix, nothing in runner/.

A throwaway client (tests/fixtures/rawpy: a raw HTTP watch on Python's standard library) goes
into a temporary clients folder next to the real ones, one line goes into a copy of the quick
matrix, and one cell runs for real and gets a verdict from evidence.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import needs_root_tools

REPO = Path(__file__).resolve().parent.parent


@needs_root_tools("ip", "nft", "conntrack", "tcpdump", "haproxy", "go")
@pytest.mark.slow
def test_a_new_folder_and_one_line_give_a_real_verdict(tmp_path: Path) -> None:
    clients = tmp_path / "clients"
    clients.mkdir()
    for real in (REPO / "clients").iterdir():
        if real.is_dir():
            (clients / real.name).symlink_to(real)
    shutil.copytree(Path(__file__).parent / "fixtures" / "rawpy", clients / "rawpy")
    text = (REPO / "matrix.quick.yaml").read_text()
    text = text.replace("\nclients:\n", "\nclients:\n  - name: rawpy\n", 1)
    (tmp_path / "matrix.yaml").write_text(text)
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "runner", str(tmp_path / "matrix.yaml"), "--clients", str(clients), "--out", str(out),
         "--no-readme", "--only", "client=rawpy", "--only", "cluster=azure-slb-no-reset-quick",
         "--only", "scenario=idle-request"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (cell,) = json.loads((out / "latest" / "results.json").read_text())["cells"]
    assert cell["client"] == "rawpy" and cell["library"] == "http.client"
    assert cell["verdict"] not in ("ERROR", "SKIPPED"), cell["reason"]
    assert (out / "latest" / "cells" / "rawpy" / "azure-slb-no-reset-quick" / "idle-request" / "pod.pcap").exists()
    assert not (REPO / "clients" / "rawpy").exists()
