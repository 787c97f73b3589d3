"""Matrix run overhead: wall time over the inherent minimum, the start-up floor, and the watchers' peak memory.

Run as root: python bench/matrix_overhead.py [MATRIX] [--only ...]
The inherent minimum is the longest cell's rounds x (wait + detection timeout) (cells run
concurrently, so nothing can finish sooner; issue 16 §6's "2 rounds x (65 s + 10 s)"). Target
ratio (issue 16 §6): <= 1.05 for the default matrix, <= 1.15 for the quick one, <= 1.10 for any
other. Watchers' memory is sampled every second from every process that carries a cell's
WATCHDROP_NAMESPACE in its environment.

The start-up floor is what this machine's CPUs allow: each cell's harness.log says how much CPU
its watcher used until it was warm (a `warm` line); the longest cells' watchers need that CPU
before the last of them can start its rounds, which then take at least rounds x wait (every
round seen at once). No order of starts beats it on this many CPUs. That CPU is measured per run,
not assumed: on one VM the same watchers took 73-90 CPU-s one morning and 42-58 the same evening
(README, Benchmarks), so the floor holds for the run it is printed under.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Run by path, the script sees its own folder, not the repository's root: the runner it imports is
# this checkout's, installed or not.
sys.path.insert(0, str(REPO))

from runner.host.procs import run_forwarding_interrupt as run_runner  # noqa: E402

#: Overhead targets by matrix file (issue 16 §6); any other matrix is held to 1.10.
TARGETS = {"matrix.yaml": 1.05, "matrix.quick.yaml": 1.15}


def watcher_rss_kib() -> int:
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"WATCHDROP_NAMESPACE=" not in (proc / "environ").read_bytes():
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def cell_minimum(cell: dict[str, Any]) -> float:
    """rounds x (wait + detection timeout): a cell that misses every round waits this long."""
    t = cell["timings"]
    return t["rounds"] * ((t["interval"] or t["idle"] or 0) + t["detection_timeout"])


def warm_cpu(run_dir: Path, cell: dict[str, Any]) -> float | None:
    """The CPU seconds the cell's watcher used until it was warm (its harness.log `warm` line)."""
    rel = cell["evidence"].get("harness.log")
    if rel is None or not (run_dir / rel).is_file():
        return None
    for line in (run_dir / rel).read_text().splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if obj.get("kind") == "warm" and isinstance(obj.get("cpu"), int | float):
            return float(obj["cpu"])
    return None


@dataclass(frozen=True)
class StartFloor:
    cells: int
    measured: int
    cpu_seconds: float
    cpus: int
    rounds_wait: float

    @property
    def start(self) -> float:
        """The last of the longest cells cannot be warm sooner than their start CPU over the CPUs."""
        return self.cpu_seconds / self.cpus

    @property
    def seconds(self) -> float:
        return self.start + self.rounds_wait


def start_floor(run_dir: Path, ran: list[dict[str, Any]], cpus: int) -> StartFloor:
    """The floor of the rounds phase from the longest cells' start-up CPU (module docstring)."""
    longest = max(cell_minimum(c) for c in ran)
    long_cells = [c for c in ran if cell_minimum(c) == longest]
    cpu = [x for c in long_cells if (x := warm_cpu(run_dir, c)) is not None]
    rounds_wait = min(c["timings"]["rounds"] * (c["timings"]["interval"] or c["timings"]["idle"] or 0)
                      for c in long_cells)
    return StartFloor(cells=len(long_cells), measured=len(cpu), cpu_seconds=sum(cpu), cpus=cpus,
                      rounds_wait=rounds_wait)


def report(run_dir: Path, wall: float, target: float, cpus: int) -> list[str]:
    results = json.loads((run_dir / "results.json").read_text())
    ran = [c for c in results["cells"] if c["verdict"] not in ("SKIPPED",)]
    minimum = max(cell_minimum(c) for c in ran)
    out = [f"{len(ran)} cells ran",
           f"wall time {wall:.0f} s; inherent minimum {minimum:.0f} s; ratio {wall / minimum:.2f} "
           f"(target <= {target:.2f})"]
    phases = [line.split(" ", 1) for line in (run_dir / "phases.log").read_text().splitlines()]
    took = {name: float(t_b) - float(t_a) for (t_a, name), (t_b, _) in itertools.pairwise(phases)}
    out += [f"  {name:12s} {seconds:7.1f} s" for name, seconds in took.items()]
    floor = start_floor(run_dir, ran, cpus)
    if floor.measured:
        out.append(f"start-up floor: the {floor.cells} longest cells' watchers used {floor.cpu_seconds:.0f} CPU-s "
                   f"to start ({floor.measured} measured), {floor.start:.0f} s on {cpus} CPUs, then at least "
                   f"{floor.rounds_wait:.0f} s of rounds: no rounds phase ends before {floor.seconds:.0f} s "
                   f"(ratio {floor.seconds / minimum:.2f} before any cluster start, setup or teardown)")
        out.append(floor_verdict(floor.seconds, wall - took.get("rounds", 0.0), minimum, target))
    return out


def floor_verdict(rounds_floor: float, rest: float, minimum: float, target: float) -> str:
    """The floor of the whole run: the rounds phase's floor plus everything else this run spent
    (cluster start, LB setup, collect, teardown, report, the runner's own start), and whether the
    target lies above it. `rest` can shrink too, so the answer holds for this run's other phases."""
    ratio = (rounds_floor + rest) / minimum
    answer = ("the target is within reach" if ratio <= target
              else f"the target {target:.2f} is out of reach at the speed this run saw unless those phases shrink "
                   f"by {(ratio - target) * minimum:.0f} s")
    return (f"with this run's other phases ({rest:.0f} s): no run ends before {rounds_floor + rest:.0f} s, "
            f"ratio {ratio:.2f}: {answer}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("matrix", nargs="?", default="matrix.quick.yaml")
    ap.add_argument("--only", action="append", default=[])
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="wd-bench-"))
    argv = [sys.executable, "-m", "runner", args.matrix, "--out", str(out), "--no-readme"]
    for o in args.only:
        argv += ["--only", o]
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(1.0):
            peak = max(peak, watcher_rss_kib())

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.monotonic()
    proc = run_runner(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    done.set()
    print(f"exit {proc.returncode}; results in {out}")
    target = TARGETS.get(Path(args.matrix).name, 1.10)
    for line in report((out / "latest").resolve(), wall, target, os.cpu_count() or 1):
        print(line)
    print(f"peak RSS of all watchers: {peak / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
