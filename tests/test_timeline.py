"""The timeline SVG, drawn from the evidence of a real short run that these tests record themselves.

`recorded_run()` runs `python -m runner matrix.quick.yaml` for client-python and client-go behind
the silent-drop profile (about 2.5 minutes as root): one FAIL-SILENT and one PASS cell with every
evidence file. The recording is cached under the temp dir, keyed by the code that records it, so
the three report test files share one recording; under CI (CI=true) only a recording made by this
very pytest process is reused, so CI always draws from evidence it recorded itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.evidence import lb_events
from runner.evidence.pcap import read_pcap
from runner.host.netns import list_project_netns
from runner.model import CellResult, RunResult, Verdict
from runner.report.render import load_results
from runner.report.timeline import (
    HarnessLine,
    _active_spans,
    lb_flows,
    read_evidence,
    read_harness_log,
    render_timeline,
)

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(tempfile.gettempdir()) / "watchdrop-test-evidence"
RECORD_ARGS = ["matrix.quick.yaml", "--no-readme",
               "--only", "client=client-python", "--only", "client=client-go",
               "--only", "cluster=azure-slb-no-reset-quick", "--only", "scenario=watch"]
RECORD_TOOLS = ("ip", "nft", "conntrack", "tcpdump", "haproxy", "go")
#: These render the recording and play no part in making it: editing them must not re-record.
#: The report's renderers do not change what a run records, so they are left out of the key.
_RENDERERS = "runner/report/"
FAIL_SILENT_ID = "client-python/azure-slb-no-reset-quick/watch"
PASS_ID = "client-go/azure-slb-no-reset-quick/watch"
#: The label on a connection's idle gap that reached the LB's timeout (the legend's entry is not one).
IDLE_LABEL = re.compile(r"idle \d+ s ≥ 45 s timeout")


def _recording_key() -> str:
    h = hashlib.sha256(" ".join(RECORD_ARGS).encode())
    files = [p for p in sorted((REPO / "runner").rglob("*.py"))
             if not str(p.relative_to(REPO)).startswith(_RENDERERS)]
    for folder in ("clients/client-python", "clients/client-go"):
        files += sorted(p for p in (REPO / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    files.append(REPO / "matrix.quick.yaml")
    for p in files:
        h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def recorded_run() -> Path:
    """The run dir of the narrow real run; records it first when no usable recording exists.

    Skips (with the reason) when this machine cannot run cells: not root or a tool missing.
    """
    missing = [t for t in RECORD_TOOLS if shutil.which(t) is None]
    if os.geteuid() != 0 or missing:
        pytest.skip("recording a run needs root" if os.geteuid() != 0 else f"missing tools: {', '.join(missing)}")
    entry = CACHE / _recording_key()
    marker = entry / "recorded-by"
    with _locked(CACHE / ".lock"):
        results = entry / "latest" / "results.json"
        mine = marker.is_file() and marker.read_text() == str(os.getpid())
        if results.is_file() and (mine or os.environ.get("CI") != "true"):
            return results.parent.resolve()
        # One recording at a time is kept: older ones were made by other code.
        for old in CACHE.iterdir():
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        entry.mkdir(parents=True)
        proc = subprocess.run([sys.executable, "-m", "runner", *RECORD_ARGS, "--out", str(entry)],
                              cwd=REPO, capture_output=True, text=True, timeout=1200)
        if (entry / "latest").exists():
            # Only this run's namespaces (wd-<run-id>-...): other runs may be going on beside it.
            run_id = (entry / "latest").resolve().name
            left = [n for n in list_project_netns() if n.startswith(f"wd-{run_id}-")]
            assert not left, f"the recording run left namespaces behind: {left}"
        if not results.is_file():
            shutil.rmtree(entry, ignore_errors=True)
            pytest.fail(f"the recording run wrote no results.json (exit {proc.returncode}):\n"
                        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        marker.write_text(str(os.getpid()))
        return results.parent.resolve()


@pytest.fixture(scope="module")
def recorded() -> tuple[RunResult, Path]:
    run_dir = recorded_run()
    return load_results(run_dir / "results.json"), run_dir


def cell_of(run: RunResult, cell_id: str) -> CellResult:
    return next(c for c in run.cells if c.cell_id == cell_id)


def svg_texts(path: Path) -> list[str]:
    """The labels in a timeline: matplotlib writes each text's string as a comment before its paths."""
    return [t.strip() for t in re.findall(r"<!-- (.*?) -->", path.read_text(encoding="utf-8"))]


# --- from the recorded evidence -------------------------------------------------------------------


@pytest.mark.slow
def test_every_recorded_cell_gets_a_parseable_svg(recorded, tmp_path) -> None:
    run, run_dir = recorded
    assert run.cells
    for cell in run.cells:
        out = render_timeline(run_dir / "cells" / cell.cell_id, cell, tmp_path / f"{cell.client}.svg")
        root = ET.parse(out).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert "<script" not in out.read_text(encoding="utf-8")


@pytest.mark.slow
def test_lanes_are_the_connections_and_flows_of_the_evidence(recorded, tmp_path) -> None:
    run, run_dir = recorded
    for cell in run.cells:
        cell_dir = run_dir / "cells" / cell.cell_id
        out = render_timeline(cell_dir, cell, tmp_path / "t.svg")
        texts = svg_texts(out)
        conns = read_pcap(cell_dir / "pod.pcap", server_ports={6443}).connections
        assert conns, f"{cell.cell_id}: the recording captured no connection"
        for c in conns:
            port = c.client.rpartition(":")[2]
            assert f"TCP :{port}" in texts
            assert f"{c.client} → {c.server}" in texts
        flows = [f for f in lb_flows(lb_events.read(cell_dir / "lb-events.jsonl"))]
        assert flows, f"{cell.cell_id}: the LB logged no flow for this pod"
        assert {f"LB :{f.client.rpartition(':')[2]}" for f in flows} <= set(texts)
        for r in cell.rounds:
            assert (f"r{r.index} seen" if r.ok else f"r{r.index} MISSED") in texts
        for h in read_harness_log(cell_dir / "harness.log"):
            if h.kind == "update":
                assert f"set {h.value}" in texts


@pytest.mark.slow
def test_fail_silent_timeline_shows_idle_expiry_update_and_silence(recorded, tmp_path) -> None:
    run, run_dir = recorded
    cell = cell_of(run, FAIL_SILENT_ID)
    assert cell.verdict is Verdict.FAIL_SILENT, cell.reason
    texts = svg_texts(render_timeline(run_dir / "cells" / cell.cell_id, cell, tmp_path / "t.svg"))
    assert [t for t in texts if IDLE_LABEL.fullmatch(t)], texts
    assert "expired after 45 s idle: LB forgot the flow, sent no RST" in texts
    assert any(t.endswith("dropped (from pod, from server)") or t.endswith("dropped (from server)") for t in texts)
    assert {"set round-1", "set round-2", "r1 MISSED", "r2 MISSED", "FAILURE"} <= set(texts)
    # Nothing from the watcher after the initial list: no label of a round's value there.
    assert "round-1" not in texts and "round-2" not in texts


@pytest.mark.slow
def test_pass_timeline_has_no_expiry_and_sees_both_rounds(recorded, tmp_path) -> None:
    run, run_dir = recorded
    cell = cell_of(run, PASS_ID)
    assert cell.verdict is Verdict.PASS, cell.reason
    texts = svg_texts(render_timeline(run_dir / "cells" / cell.cell_id, cell, tmp_path / "t.svg"))
    assert {"r1 seen", "r2 seen", "round-1", "round-2"} <= set(texts)
    assert not any(t.startswith("expired") for t in texts)
    assert not [t for t in texts if IDLE_LABEL.fullmatch(t)]


@pytest.mark.slow
def test_rendering_twice_gives_the_same_bytes(recorded, tmp_path) -> None:
    run, run_dir = recorded
    cell = cell_of(run, FAIL_SILENT_ID)
    a = render_timeline(run_dir / "cells" / cell.cell_id, cell, tmp_path / "a.svg")
    # A second process, as `watchdrop report` would be: no state carried over in matplotlib.
    code = ("import sys; from pathlib import Path; from runner.report.render import load_results; "
            "from runner.report.timeline import render_timeline; "
            "r = load_results(Path(sys.argv[1]) / 'results.json'); "
            "c = next(c for c in r.cells if c.cell_id == sys.argv[2]); "
            "render_timeline(Path(sys.argv[1]) / 'cells' / c.cell_id, c, Path(sys.argv[3]))")
    subprocess.run([sys.executable, "-c", code, str(run_dir), cell.cell_id, str(tmp_path / "b.svg")],
                   cwd=REPO, check=True, timeout=120)
    assert a.read_bytes() == (tmp_path / "b.svg").read_bytes()
    assert "<dc:date>" not in a.read_text(encoding="utf-8")


# --- pure logic (no evidence needed) --------------------------------------------------------------


def test_lb_events_fold_into_flows() -> None:
    events = [
        {"ts": 1.0, "event": "ready", "mode": "silent-drop"},
        {"ts": 2.0, "event": "flow-opened", "flow": "198.18.3.136:5000>6443", "client": "198.18.3.136:5000"},
        {"ts": 47.0, "event": "expired", "flow": "198.18.3.136:5000>6443", "last_activity": 2.5, "idle": 45.0},
        {"ts": 47.1, "event": "rst-sent", "flow": "198.18.3.136:5000>6443", "to": "client"},
        {"ts": 60.0, "event": "after-expiry", "flow": "198.18.3.136:5000>6443", "side": "server",
         "action": "dropped"},
        {"ts": 70.0, "event": "flow-closed", "flow": "198.18.3.136:5001>6443", "by": "client", "kind": "rst"},
    ]
    a, b = lb_flows(events)
    assert (a.client, a.opened_at, a.expired_at, a.last_activity) == ("198.18.3.136:5000", 2.0, 47.0, 2.5)
    assert a.rst_sent == [(47.1, "client")] and a.after_expiry == [(60.0, "server", "dropped")]
    assert (b.client, b.opened_at, b.closed_at, b.closed_by) == ("198.18.3.136:5001", None, 70.0, "client")


def test_harness_lines_are_data_not_sentences(tmp_path) -> None:
    """harness.log is JSON lines typed by `kind`; the reader never parses the sentence (which may say anything)."""
    from runner.evidence import harness_log

    log = tmp_path / "harness.log"
    harness_log.append(log, "round 1: set trigger=round-1", "update", round=1, value="round-1")
    harness_log.append(log, "a note that mentions FAILURE and set trigger=x")
    harness_log.append(log, "round 1: FAILURE", "failure", round=1)
    got = harness_log.read(log)
    assert [(h.kind, h.value) for h in got] == [("update", "round-1"), ("note", None), ("failure", None)]
    assert isinstance(got[0], HarnessLine) and got[1].text.startswith("a note")


def test_active_spans_join_close_packets() -> None:
    assert _active_spans([1.0, 1.5, 1.9, 10.0, 30.0], 0.0, 20.0) == [(1.0, 1.9), (10.0, 10.3)]


def test_unreadable_logs_are_skipped_not_fatal(tmp_path) -> None:
    (tmp_path / "lb-events.jsonl").write_text('{"ts": 1.0, "event": "flow-opened", "flow": "a:1>6443"}\n{"ts": 2')
    (tmp_path / "harness.log").write_text('{"ts": 1.5, "kind": "update", "text": "round 1: set trigger=x", '
                                          '"value": "x"}\nnot a line\n{"ts": 2')
    (tmp_path / "pod.pcap").write_bytes(b"garbage")
    ev = read_evidence(tmp_path)
    assert [f.client for f in ev.lb_flows] == ["a:1"]
    assert [h.text for h in ev.harness] == ["round 1: set trigger=x"]
    assert ev.pcap is None and ev.pcap_problem


def test_a_cell_without_evidence_still_draws(tmp_path) -> None:
    from tests.test_junit import synthetic_run

    cell = next(c for c in synthetic_run().cells if c.verdict is Verdict.SKIPPED)
    out = render_timeline(tmp_path / "nothing-here", cell, tmp_path / "t.svg")
    texts = svg_texts(out)
    assert any(t.startswith("no capture of the pod's connections") for t in texts)
    json.dumps(texts)  # plain strings only
