"""Bounded inputs (issue 13): a watcher that prints without end, a giant line, or a capture that grows
without bound cannot exhaust the runner's memory or the disk, and the cell says what was cut.

Pure-Python checks of the readers and the kubernetes log sink; tests/test_faults.py runs a real cell
whose watcher floods its stdout and one whose tcpdump is killed.
"""

from __future__ import annotations

import json
import threading
import tracemalloc
from pathlib import Path
from typing import Any, cast

from runner.collect import merge_cuts
from runner.evidence.limits import LINE_MAX, LineReader, cut_of, tcpdump_dropped
from runner.harness import HarnessRun
from runner.kube.pods import LineSink
from runner.model import Cut


def _line(ts: float, event: str, **kw: Any) -> bytes:
    return (json.dumps({"ts": ts, "event": event, **kw}) + "\n").encode()


def _run(tmp_path: Path) -> HarnessRun:
    return HarnessRun(index=0, cell=cast(Any, None), built=cast(Any, None), evidence=tmp_path / "cell",
                      run_dir=tmp_path, stop=threading.Event())


def test_wait_line_reads_from_an_offset_not_the_whole_file_per_poll(tmp_path: Path) -> None:
    """Today's reader loads the whole watcher.jsonl every 50 ms: a 24 MiB line costs 24 MiB+ per
    poll. Read incrementally, memory stays near one chunk however big the file is."""
    run = _run(tmp_path)
    run.stdout.write_bytes(b"x" * (24 << 20))  # a giant line, still being written (no newline)
    tracemalloc.start()
    try:
        assert run._wait_line(lambda x: x.get("event") == "watch-opened", 0.3) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"peak {peak / 2**20:.1f} MiB while waiting on a 24 MiB file"
    with run.stdout.open("ab") as f:
        f.write(b"\n" + _line(1.0, "watch-opened"))
    found = run._wait_line(lambda x: x.get("event") == "watch-opened", 5)
    assert found is not None and found["ts"] == 1.0
    assert run.stdout_long_lines == 1  # the giant line was cut and counted


def test_a_wait_sees_lines_read_in_the_same_batch_as_an_earlier_match(tmp_path: Path) -> None:
    run = _run(tmp_path)
    run.stdout.write_bytes(_line(1.0, "watch-opened") + b"noise\n" + _line(2.0, "event-seen", name="trigger",
                                                                            value="round-1"))
    assert run._wait_line(lambda x: x.get("event") == "watch-opened", 2) is not None
    seen = run._wait_line(lambda x: x.get("value") == "round-1", 2)
    assert seen is not None and seen["ts"] == 2.0


def test_hung_request_follows_the_last_request_line(tmp_path: Path) -> None:
    run = _run(tmp_path)
    run.stdout.write_bytes(_line(1.0, "request-sent", round=1) + _line(1.1, "request-done", round=1, ok=True)
                           + _line(2.0, "request-sent", round=1))
    hung = run._hung_request(5)
    assert hung is not None and hung["ts"] == 2.0  # second request of round 1: no warm-up grace
    with run.stdout.open("ab") as f:
        f.write(_line(3.0, "request-done", round=1, ok=True) + _line(4.0, "request-sent", round=2))
    assert run._hung_request(1e12) is None  # first of round 2 within its grace


def test_line_reader_cuts_long_lines_and_keeps_partial_ones(tmp_path: Path) -> None:
    p = tmp_path / "w.jsonl"
    p.write_bytes(b"a" * (LINE_MAX + 10) + b"\nshort\npart")
    r = LineReader(p)
    lines = r.read()
    assert [len(x) for x in lines] == [LINE_MAX, 5]
    assert r.long_lines == 1
    with p.open("ab") as f:
        f.write(b"ial\n")
    assert r.read() == ["partial"]
    # A long line written in pieces is cut once, and its rest skipped up to its newline.
    with p.open("ab") as f:
        f.write(b"b" * (LINE_MAX + 1))
    assert [len(x) for x in r.read()] == [LINE_MAX]
    with p.open("ab") as f:
        f.write(b"bbbb\nnext\n")
    assert r.read() == ["next"]
    assert r.long_lines == 2


def test_cut_of_reports_a_file_at_its_limit(tmp_path: Path) -> None:
    p = tmp_path / "watcher.stderr"
    p.write_bytes(b"e" * 1000)
    assert cut_of("watcher.stderr", p, 0, 2000) is None
    assert cut_of("watcher.stderr", p, 0, 1000) == Cut(file="watcher.stderr", capped_at=1000)
    assert merge_cuts([Cut(file="watcher.jsonl", long_lines=1), Cut(file="watcher.jsonl", capped_at=5)]) == [
        Cut(file="watcher.jsonl", long_lines=1, capped_at=5)]


def test_tcpdump_counts_are_read_from_its_last_words() -> None:
    log = "listening on eth0\n12 packets captured\n12 packets received by filter\n3 packets dropped by kernel\n"
    assert tcpdump_dropped(log) == 3
    assert tcpdump_dropped(log + "2 packets dropped by interface\n") == 5
    assert tcpdump_dropped("listening on eth0\n") is None


def _sink(tmp_path: Path, limit: int = 1 << 20) -> LineSink:
    return LineSink(tmp_path / "watcher.jsonl", tmp_path / "watcher.stderr", tmp_path / "watcher.log", limit=limit)


def test_log_sink_cuts_a_giant_line_without_holding_it(tmp_path: Path) -> None:
    """The kubernetes backend's log stream: a watcher printing a 10 MiB line in 8 KiB chunks."""
    sink = _sink(tmp_path)
    giant = [b'{"ts": 1, "event": "error", "message": "'] + [b"x" * 8192] * 1280 + [b'"}\n']
    tracemalloc.start()
    try:
        sink.feed_stream(iter([*giant, _line(2.0, "started")]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, f"peak {peak / 2**20:.1f} MiB"
    assert sink.long_json == 1 and sink.seen == 2
    assert [json.loads(x)["event"] for x in (tmp_path / "watcher.jsonl").read_text().splitlines()] == ["started"]
    assert (tmp_path / "watcher.log").stat().st_size < LINE_MAX + 200
    # A second read of the whole log (a reconnect) emits nothing twice.
    sink.feed_stream(iter([*giant, _line(2.0, "started"), _line(3.0, "watch-opened")]), final=True)
    assert sink.seen == 3 and sink.long_json == 1
    assert sink.cuts() == [Cut(file="watcher.jsonl", long_lines=1)]


def test_log_sink_files_stop_at_the_limit(tmp_path: Path) -> None:
    sink = _sink(tmp_path, limit=10_000)
    flood = [_line(float(i), "event-seen", name="trigger", value="v") for i in range(2000)]
    sink.feed_stream(iter([*flood, *[b"noise line\n"] * 2000]), final=True)
    for name in ("watcher.jsonl", "watcher.stderr", "watcher.log"):
        assert (tmp_path / name).stat().st_size == 10_000, name
    assert {c.file: c.capped_at for c in sink.cuts()} == {"watcher.jsonl": 10_000, "watcher.stderr": 10_000,
                                                           "watcher.log": 10_000}
    assert len(sink.received) < 2000  # lines that were not kept are not clock evidence either
