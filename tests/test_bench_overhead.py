"""bench/matrix_overhead.py's arithmetic: the inherent minimum (rounds x (wait + detection)) and the
start-up floor read from the cells' `warm` lines."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("matrix_overhead", REPO / "bench" / "matrix_overhead.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass resolves annotations through its module
    spec.loader.exec_module(mod)
    return mod


def _cell(run_dir: Path, name: str, *, interval: float | None, idle: float | None, cpu: float | None,
          verdict: str = "PASS") -> dict[str, Any]:
    rel = f"cells/{name}/harness.log"
    (run_dir / rel).parent.mkdir(parents=True)
    lines = [{"ts": 1.0, "kind": "note", "text": "namespace"}]
    if cpu is not None:
        lines.append({"ts": 2.0, "kind": "warm", "text": "warm", "seconds": 1.5, "cpu": cpu})
    (run_dir / rel).write_text("".join(json.dumps(x) + "\n" for x in lines) + "{half")
    return {"verdict": verdict, "evidence": {"harness.log": rel},
            "timings": {"rounds": 2, "interval": interval, "idle": idle, "detection_timeout": 10.0}}


def test_the_minimum_counts_a_detection_timeout_per_round() -> None:
    b = _bench()
    assert b.cell_minimum({"timings": {"rounds": 2, "interval": 65.0, "idle": None, "detection_timeout": 10.0}}) == 150
    assert b.cell_minimum({"timings": {"rounds": 1, "interval": None, "idle": 65.0, "detection_timeout": 10.0}}) == 75


def test_the_floor_adds_the_longest_cells_start_cpu_over_the_cpus_to_their_rounds(tmp_path: Path) -> None:
    b = _bench()
    ran = [_cell(tmp_path, "a/x/watch", interval=65, idle=None, cpu=30.0),
           _cell(tmp_path, "b/x/watch", interval=65, idle=None, cpu=10.0),
           _cell(tmp_path, "c/x/watch", interval=65, idle=None, cpu=None),  # no process seen: not counted
           _cell(tmp_path, "a/x/idle-request", interval=None, idle=30, cpu=99.0)]  # shorter: not counted
    floor = b.start_floor(tmp_path, ran, cpus=2)
    assert (floor.cells, floor.measured, floor.cpu_seconds) == (3, 2, 40.0)
    assert floor.start == 20.0 and floor.rounds_wait == 130 and floor.seconds == 150.0


def test_the_report_prints_ratio_phases_and_floor(tmp_path: Path) -> None:
    b = _bench()
    cells = [_cell(tmp_path, "a/x/watch", interval=65, idle=None, cpu=40.0),
             _cell(tmp_path, "d/x/watch", interval=65, idle=None, cpu=None, verdict="SKIPPED")]
    (tmp_path / "results.json").write_text(json.dumps({"cells": cells}))
    (tmp_path / "phases.log").write_text("100.0 cluster start\n103.5 rounds\n290.0 done\n")
    lines = b.report(tmp_path, 195.0, 1.15, 2)
    assert lines[0] == "1 cells ran"
    assert "inherent minimum 150 s; ratio 1.30 (target <= 1.15)" in lines[1]
    assert lines[2].split() == ["cluster", "start", "3.5", "s"]
    assert "no rounds phase ends before 150 s" in lines[-2] and "40 CPU-s" in lines[-2]
    # Everything but the rounds phase: 195 - 186.5 s.
    assert lines[-1] == ("with this run's other phases (8 s): no run ends before 158 s, ratio 1.06: "
                         "the target is within reach")


def test_a_floor_above_the_target_is_said_with_the_seconds_missing() -> None:
    line = _bench().floor_verdict(167.0, 13.0, 150.0, 1.15)
    assert line.startswith("with this run's other phases (13 s): no run ends before 180 s, ratio 1.20")
    assert line.endswith("the target 1.15 is out of reach at the speed this run saw unless those phases shrink by 8 s")
