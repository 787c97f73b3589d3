"""The HTML pages stay byte-identical to golden copies rendered before the pages moved to templates.

Two runs are rendered, each from files in the repo so the test needs no recording:

- `tests/fixtures/html-run/`: the results.json and evidence of a real recorded quick run (one
  FAIL-SILENT and one PASS cell, pod captures included; the LB's own captures are emptied, as the
  pages only link them).
- a model-built run (`hostile_run`): every verdict, plus one cell whose client name, reason, harness
  errors, watcher lines, LB events and environment carry `HOSTILE`, with evidence files written here.

Their pages were rendered once by the f-string renderer and kept under `tests/fixtures/html-golden/`;
`python -m tests.test_html_golden` rewrites them (only when a page is meant to change).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from urllib.parse import quote

from runner.model import RunResult, Verdict, WatcherFacts
from runner.report.html import write_html
from runner.report.render import load_results
from tests.test_junit import _cell, synthetic_run

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RECORDED = FIXTURES / "html-run"
GOLDEN = FIXTURES / "html-golden"

#: Text that breaks a page if any of it reaches the HTML unescaped: a tag, a quote, an ampersand.
HOSTILE = '<script>alert(1)</script>"&'
#: The hostile cell's client name (the `/` inside `</script>` makes its page one folder deeper).
HOSTILE_CLIENT = f"evil{HOSTILE}"
HOSTILE_CLUSTER = "lb-1"
BASE = 1_800_000_000.0


def _jsonl(path: Path, objs: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # ensure_ascii=False and no escaping of "/": the hostile text sits in the file as a library could write it.
    path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs), encoding="utf-8")


def hostile_run(run_dir: Path) -> RunResult:
    """synthetic_run() plus a cell whose every free text carries HOSTILE, its evidence written to run_dir."""
    run = synthetic_run()
    cell = _cell(HOSTILE_CLIENT, HOSTILE_CLUSTER, Verdict.FAIL_LOUD, f"reason {HOSTILE}", ok=False,
                 errors=[f"error {HOSTILE}"], variant_env={"EVIL": HOSTILE}, build_env={"PIN": HOSTILE},
                 watcher=WatcherFacts(started=True, lines=4, errors=1, reconnects=1, watch_opened=1,
                                      stderr_errors=1, exit_code=1))
    cell.folder = "client-a"  # a variant row: its label names the folder too
    cell.keepalive = f"keepalive {HOSTILE}"
    cell_dir = run_dir / "cells" / Path(*cell.cell_id.split("/"))
    _jsonl(cell_dir / "watcher.jsonl", [
        {"ts": BASE + 1, "event": "started"},
        {"ts": BASE + 2, "event": "watch-opened"},
        {"ts": BASE + 30, "event": "event-seen", "value": f"value {HOSTILE}"},
        {"ts": BASE + 65, "event": "error", "message": f"message {HOSTILE}"},
        {"ts": BASE + 66, "event": "reconnect"},
    ])
    (cell_dir / "watcher.stderr").write_text(f"stderr {HOSTILE}\n", encoding="utf-8")
    _jsonl(cell_dir / "harness.log", [
        {"ts": BASE + 60, "kind": "update", "text": "round 1: set trigger to round-1", "round": 1, "value": "round-1"},
        {"ts": BASE + 70, "kind": "failure", "text": f"FAILURE {HOSTILE}", "round": 1},
    ])
    with (cell_dir / "harness.log").open("a", encoding="utf-8") as f:
        f.write(f"not timed {HOSTILE}\n")
    flow = "10.0.0.5:40000>10.0.0.1:6443"
    _jsonl(cell_dir / "lb-events.jsonl", [
        {"ts": BASE + 2, "event": "flow-opened", "flow": flow},
        {"ts": BASE + 50, "event": "expired", "flow": flow, "last_activity": BASE + 5},
        {"ts": BASE + 61, "event": "after-expiry", "flow": flow, "side": "server", "action": "drop"},
        {"ts": BASE + 75, "event": "after-expiry", "flow": flow, "side": "client", "action": "reset"},
        {"ts": BASE + 76, "event": "note", "flow": HOSTILE, "detail": HOSTILE, "n": [1, HOSTILE]},
    ])
    cell.evidence = {"watcher_log": f"cells/{cell.cell_id}/watcher.jsonl",
                     "lb_events": f"cells/{cell.cell_id}/lb-events.jsonl"}
    lb_dir = run_dir / "lbs" / HOSTILE_CLUSTER
    lb_dir.mkdir(parents=True, exist_ok=True)
    (lb_dir / "front.pcap").write_bytes(b"")
    run.cells.append(cell)
    return run


def recorded_fixture(run_dir: Path) -> RunResult:
    """A copy of the recorded run's files in run_dir (pages are written next to the evidence)."""
    shutil.copytree(RECORDED, run_dir)
    return load_results(run_dir / "results.json")


def pages(run_dir: Path) -> dict[str, bytes]:
    """Every page write_html wrote, by its path relative to run_dir, percent-encoded (the hostile
    client's folder name would be a poor file name in the repo)."""
    found = [run_dir / "index.html", *sorted((run_dir / "cells").rglob("index.html"))]
    return {quote(p.relative_to(run_dir).as_posix()): p.read_bytes() for p in found}


def _render(kind: str, run_dir: Path) -> dict[str, bytes]:
    run = hostile_run(run_dir) if kind == "hostile" else recorded_fixture(run_dir)
    write_html(run, run_dir)
    return pages(run_dir)


def _assert_same(kind: str, tmp_path: Path) -> None:
    got = _render(kind, tmp_path / kind)
    golden = GOLDEN / kind
    want = {p.relative_to(golden).as_posix(): p.read_bytes() for p in golden.rglob("*.html")}
    assert sorted(got) == sorted(want)
    for name, data in got.items():
        assert data == want[name], name


def test_recorded_run_pages_are_byte_identical_to_golden(tmp_path) -> None:
    _assert_same("recorded", tmp_path)


def test_hostile_run_pages_are_byte_identical_to_golden(tmp_path) -> None:
    _assert_same("hostile", tmp_path)


def _update() -> None:
    import tempfile

    for kind in ("recorded", "hostile"):
        with tempfile.TemporaryDirectory() as tmp:
            got = _render(kind, Path(tmp) / kind)
        out = GOLDEN / kind
        shutil.rmtree(out, ignore_errors=True)
        for name, data in got.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(data)
        print(f"{out}: {len(got)} pages", file=sys.stderr)


if __name__ == "__main__":
    _update()


def test_pages_drawn_in_parallel_processes_are_the_golden_bytes_timelines_included(tmp_path) -> None:
    """write_html splits the cells across processes on a big run: the same pages and timelines."""
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    write_html(recorded_fixture(serial), serial, workers=1)
    write_html(recorded_fixture(parallel), parallel, workers=2)
    assert pages(parallel) == pages(serial)
    svgs = sorted(p.relative_to(serial) for p in serial.rglob("timeline.svg"))
    assert svgs and all((parallel / s).read_bytes() == (serial / s).read_bytes() for s in svgs)
