"""bench/repeatability.py --compare: agreement read from runs already made (no runner started)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
