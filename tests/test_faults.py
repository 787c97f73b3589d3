"""Faults must not become verdicts: each one injected into a real run makes its cells ERROR.

One run carries several faults at once (a watcher crashing at start and mid-round, a pod
capture that cannot start, a client whose build fails, the LB agent of one profile killed
mid-run) next to healthy cells, which must still get their verdicts. A second run loses
kube-apiserver mid-run. Profiles are overridden to 5 s so each run takes well under a minute.
The throwaway `rawpy` client also proves that adding a column takes only a folder and a line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import needs_root_tools

pytestmark = [needs_root_tools("ip", "nft", "conntrack", "tcpdump", "haproxy", "go"), pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

MATRIX = """
clients:
  - name: rawpy
  - name: rawpy-crash-start
    folder: rawpy
    env: {CRASH_AT: start}
  - name: rawpy-crash-mid
    folder: rawpy
    env: {CRASH_AT: mid}
  - name: rawpy-nocapture
    folder: rawpy
  - name: brokenbuild
clusters:
  - name: reset-fast
    lb: {profile: azure-slb, idle_timeout: 5}
  - name: drop-fast
    lb: {profile: azure-slb-no-reset, idle_timeout: 5}
scenarios:
  watch: {interval: idle+3, detection_timeout: 5, rounds: 2}
"""


def _setup(tmp: Path) -> Path:
    clients = tmp / "clients"
    for name in ("rawpy", "brokenbuild"):
        shutil.copytree(FIXTURES / name, clients / name)
    (tmp / "matrix.yaml").write_text(MATRIX)
    return tmp / "matrix.yaml"


def _pids(marks: tuple[str, ...], needle: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if needle.encode() in cmd and any(m.encode() in cmd for m in marks):
            found.append(int(proc.name))
    return found


def _run(matrix: Path, out: Path, kill: str | None, only: list[str] | None = None) -> tuple[int, dict, str]:
    argv = [sys.executable, "-m", "runner", str(matrix), "--out", str(out), "--no-readme",
            "--break-capture", "rawpy-nocapture"]
    for o in only or []:
        argv += ["--only", o]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        if kill:
            log = out / "latest" / "phases.log"
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not (log.exists() and "rounds" in log.read_text()):
                time.sleep(0.2)
            time.sleep(4)
            run_id = (out / "latest").resolve().name
            pids = _pids((run_id, str(out)), kill)
            assert pids, f"found no {kill} of run {run_id} to kill"
            for pid in pids[:1]:
                os.kill(pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    results = json.loads(((out / "latest") / "results.json").read_text())
    cells = {f"{c['client']}/{c['cluster']}/{c['scenario']}": c for c in results["cells"]}
    return proc.returncode, cells, output


def test_faults_become_errors_and_healthy_cells_keep_their_verdicts(tmp_path: Path) -> None:
    matrix = _setup(tmp_path)
    rc, cells, output = _run(matrix, tmp_path / "out", kill="runner.embedded.lbagent")
    assert rc == 1, output  # some cells are ERROR
    v = {k: (c["verdict"], c["reason"] + " " + " ".join(c["errors"])) for k, c in cells.items()}
    # The LB agent of one profile was killed mid-run: every cell behind it is ERROR.
    killed = [k for k in v if k.startswith("rawpy/") and v[k][0] == "ERROR" and "agent" in v[k][1]]
    assert len(killed) == 1, v
    killed_cluster = killed[0].split("/")[1]
    other = "drop-fast" if killed_cluster == "reset-fast" else "reset-fast"
    for client in ("rawpy", "rawpy-crash-start", "rawpy-crash-mid", "rawpy-nocapture", "brokenbuild"):
        assert v[f"{client}/{killed_cluster}/watch"][0] == "ERROR", v
    # Behind the other profile, the healthy client gets a real verdict from evidence...
    assert v[f"rawpy/{other}/watch"][0] not in ("ERROR", "SKIPPED"), v
    # ...and each injected fault is ERROR with its reason.
    assert v[f"rawpy-crash-start/{other}/watch"][0] == "ERROR"
    assert v[f"rawpy-crash-mid/{other}/watch"][0] == "ERROR"
    nocap = v[f"rawpy-nocapture/{other}/watch"]
    assert nocap[0] == "ERROR" and "tcpdump" in nocap[1], nocap
    broken = v[f"brokenbuild/{other}/watch"]
    assert broken[0] == "ERROR" and "build failed" in broken[1], broken
    assert "fails on purpose" in (tmp_path / "out" / "latest" / "builds" / "brokenbuild.log").read_text()


def test_apiserver_killed_mid_run_makes_every_cell_error(tmp_path: Path) -> None:
    matrix = _setup(tmp_path)
    rc, cells, output = _run(matrix, tmp_path / "out", kill="kube-apiserver",
                             only=["client=rawpy", "cluster=drop-fast"])
    assert rc == 1, output
    (cell,) = cells.values()
    assert cell["verdict"] == "ERROR" and "kube-apiserver" in cell["reason"] + " ".join(cell["errors"]), cell


EVIDENCE_MATRIX = """
clients:
  - name: rawpy
  - name: rawpy-flood
    folder: rawpy
    env: {FLOOD: stdout}
  - name: rawpy-short-idle
    folder: rawpy
    env: {IDLE_SHORT: "1"}
  - name: rawpy-tcpdump-killed
    folder: rawpy
clusters:
  - name: reset-fast
    lb: {profile: azure-slb, idle_timeout: 5}
scenarios:
  watch: {interval: idle+3, detection_timeout: 5, rounds: 2}
  idle-request: {idle: idle+3, detection_timeout: 5, rounds: 1}
"""


def test_lost_or_unbounded_evidence_is_error_and_bounded(tmp_path: Path) -> None:
    """Issue 13, on a real run: a cell whose tcpdump is killed mid-run, a watcher that prints giant
    lines without end, and one that does not stay idle as long as told are each ERROR with the
    reason, the flood stops at the log limit, and the honest cells keep their verdicts."""
    clients = tmp_path / "clients"
    shutil.copytree(FIXTURES / "rawpy", clients / "rawpy")
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(EVIDENCE_MATRIX)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "runner", str(matrix), "--out", str(out), "--no-readme",
            "--break-capture", "rawpy-nocapture", "--limit-log-mib", "1"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log = out / "latest" / "phases.log"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (log.exists() and "rounds" in log.read_text()):
            time.sleep(0.2)
        time.sleep(2)
        pids = _pids(("rawpy-tcpdump-killed/reset-fast/watch/",), "tcpdump")
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGKILL)
        proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    results = json.loads((out / "latest" / "results.json").read_text())
    cells = {c["cell_id"]: c for c in results["cells"]}
    v = {k: (c["verdict"], c["reason"]) for k, c in cells.items()}

    killed = cells["rawpy-tcpdump-killed/reset-fast/watch"]
    assert killed["verdict"] == "ERROR", v
    assert "the capture stopped before the cell ended" in killed["reason"], killed["reason"]
    assert killed["capture"]["ran_to_end"] is False and killed["capture"]["exit_code"] == -9
    # The same client with its capture intact gets a verdict from evidence.
    for scenario in ("watch", "idle-request"):
        honest = cells[f"rawpy/reset-fast/{scenario}"]
        assert honest["verdict"] not in ("ERROR", "SKIPPED"), v
        assert honest["capture"]["ran_to_end"] is True and honest["capture"]["dropped"] == 0, honest["capture"]
        assert honest["cuts"] == []

    flood = cells["rawpy-flood/reset-fast/watch"]
    assert flood["verdict"] == "ERROR", v
    # The kernel refused its writes past the limit (Python turns SIGXFSZ into an OSError): it ended.
    assert "the watcher exited (code " in flood["reason"], flood["reason"]
    assert "watcher.jsonl: " in flood["reason"] and "stopped at 1 MiB" in flood["reason"], flood["reason"]
    assert {"file": "watcher.jsonl", "long_lines": flood["cuts"][0]["long_lines"], "capped_at": 1 << 20} in \
        flood["cuts"] and flood["cuts"][0]["long_lines"] > 0
    stdout = out / "latest" / "cells" / "rawpy-flood" / "reset-fast" / "watch" / "watcher.jsonl"
    assert stdout.stat().st_size <= 1 << 20

    short = cells["rawpy-short-idle/reset-fast/idle-request"]
    assert short["verdict"] == "ERROR", v
    assert "round 1: the watcher idled 1.0 s between its requests, not the 8.0 s WATCHDROP_IDLE asks for" in \
        short["reason"], short["reason"]
