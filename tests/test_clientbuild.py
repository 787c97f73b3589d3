"""Client builds: cached by content, failures kept with their log, interrupted builds stopped."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from runner.clientbuild import build_client, build_key
from runner.descriptor import load_descriptor
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
    marker = tmp_path / "child.pid"
    src = _client(tmp_path, f"sleep 60 & echo $! > {marker}; wait")
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(BuildError):
        build_client(src, load_descriptor(src), {}, tmp_path / "b.log", stop=stop)
    assert time.monotonic() - t0 < 15
    pid = int(marker.read_text())
    time.sleep(0.2)
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    assert "interrupted" in (tmp_path / "b.log").read_text()
