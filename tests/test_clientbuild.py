"""Client builds: cached by content, failures kept with their log, interrupted builds stopped."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from runner.build.clients import COMPLETE, KEEP_UNUSED_DAYS, build_client, build_key, prune_builds
from runner.config.descriptor import load_descriptor
from runner.errors import BuildError


def _client(tmp: Path, build: str) -> Path:
    src = tmp / "src" / "toy"
    src.mkdir(parents=True)
    (src / "client.yaml").write_text(f"""name: toy
language: shell
library: none
version: "1"
api_style: none
requires: [sh]
build:
  - [sh, -c, '{build}']
run: [sh, -c, "exit 0"]
""")
    return src


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WATCHDROP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_second_build_is_cached_and_a_change_rebuilds(tmp_path: Path) -> None:
    src = _client(tmp_path, "echo built >> {out}/count")
    desc = load_descriptor(src)
    first = build_client(src, desc, {}, tmp_path / "b1.log")
    build_client(src, desc, {}, tmp_path / "b2.log")
    assert (first.out / "count").read_text() == "built\n"  # built once
    other = build_client(src, desc, {"X": "1"}, tmp_path / "b3.log")
    assert other.out != first.out  # another build env is another build
    (src / "extra.txt").write_text("change")
    assert build_key(src, desc, {}) != first.out.name.split("-", 1)[1]


def test_failed_build_leaves_nothing_cached(tmp_path: Path) -> None:
    src = _client(tmp_path, "echo oops >&2; exit 3")
    with pytest.raises(BuildError, match="exit 3") as info:
        build_client(src, load_descriptor(src), {}, tmp_path / "b.log")
    assert "oops" in (info.value.detail or "")
    assert not [p for p in (tmp_path / "cache" / "clients").iterdir() if p.is_dir()]


def test_stop_interrupts_a_running_build_and_its_children(tmp_path: Path) -> None:
    # The pid goes to the build log: a build writes nowhere but its output (which a stop removes).
    src = _client(tmp_path, "sleep 60 & echo child=$!; wait")
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(BuildError):
        build_client(src, load_descriptor(src), {}, tmp_path / "b.log", stop=stop)
    assert time.monotonic() - t0 < 15
    pid = int((tmp_path / "b.log").read_text().split("child=")[-1].split()[0])
    time.sleep(0.2)
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    assert "interrupted" in (tmp_path / "b.log").read_text()


def test_prune_removes_unused_and_incomplete_builds_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDROP_CACHE", str(tmp_path))
    root = tmp_path / "clients"
    now = time.time()
    old = now - (KEEP_UNUSED_DAYS + 1) * 86400

    def build(name: str, *, complete: bool, used: float) -> Path:
        out = root / name
        out.mkdir(parents=True)
        (out / "payload").write_text("x")
        (Path(str(out) + ".lock")).touch()
        if complete:
            (out / COMPLETE).write_text("ok\n")
            os.utime(out / COMPLETE, (used, used))
        os.utime(out, (used, used))
        return out

    build("java-old", complete=True, used=old)
    build("java-new", complete=True, used=now - 3600)
    build("rust-crashed", complete=False, used=now - 7200)
    building = build("go-building", complete=False, used=now - 7200)
    held = build("py-old-in-use", complete=True, used=old)
    with open(str(held) + ".lock", "w") as lock1, open(str(building) + ".lock", "w") as lock2:
        fcntl.flock(lock1, fcntl.LOCK_EX)  # another run is using it
        fcntl.flock(lock2, fcntl.LOCK_EX)  # another run is building it
        removed = prune_builds(now=now)
    assert sorted(removed) == ["java-old", "rust-crashed"]
    assert not (root / "java-old").exists() and not (root / "java-old.lock").exists()
    assert (root / "java-new" / "payload").exists()
    assert (held / "payload").exists() and (building / "payload").exists()


def test_a_cache_hit_counts_as_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDROP_CACHE", str(tmp_path / "cache"))
    src = _client(tmp_path, "true")
    desc = load_descriptor(src)
    first = build_client(src, desc, {}, tmp_path / "b1.log")
    long_ago = time.time() - (KEEP_UNUSED_DAYS + 1) * 86400
    os.utime(first.out / COMPLETE, (long_ago, long_ago))
    assert build_client(src, desc, {}, tmp_path / "b2.log").out == first.out
    assert prune_builds() == []
    assert (first.out / COMPLETE).exists()


def test_a_build_that_prints_without_end_is_cut_at_its_log_limit(tmp_path: Path) -> None:
    import sys

    from runner.build.clients import _run_step

    flood = "import sys\nfor _ in range(4096): sys.stdout.write('x' * 1023 + '\\n')\nprint('done')"
    log_path = tmp_path / "build.log"
    with log_path.open("w") as log:
        rc = _run_step([sys.executable, "-c", flood], tmp_path, dict(os.environ), log, None, log_max=1 << 20)
    assert rc == 0
    text = log_path.read_text()
    assert log_path.stat().st_size < (1 << 20) + 4096, "the build's output was not cut at its limit"
    assert f"{(4 << 20) + 5 - (1 << 20)} more bytes of build output cut at the 1 MiB log limit" in text
