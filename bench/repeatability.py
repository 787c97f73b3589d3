"""Repeatability: run a matrix N times and print how often each cell got the same verdict.

Run as root: python bench/repeatability.py [MATRIX] [--runs 3] [--only ...]
Or compare runs already made: python bench/repeatability.py --compare results/A results/B [...]
(each a run folder holding results.json, or the results.json itself).
Prints the agreement ratio (cells whose verdict was identical in every run / all cells) and, for
every cell that differed, its verdicts and reasons, so the difference can be explained by evidence.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run by path, the script sees its own folder, not the repository's root: the runner it imports is
# this checkout's, installed or not.
sys.path.insert(0, str(REPO))

from runner.host.procs import run_forwarding_interrupt as run_runner  # noqa: E402


def _cells(results: dict) -> dict[str, tuple[str, str]]:
    return {f"{c['client']}/{c['cluster']}/{c['scenario']}": (c["verdict"], c["reason"]) for c in results["cells"]}


def _run(matrix: str, only: list[str], i: int, runs: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix="wd-repeat-"))
    argv = [sys.executable, "-m", "runner", matrix, "--out", str(out), "--no-readme"]
    for o in only:
        argv += ["--only", o]
    t0 = time.monotonic()
    # The runner's own output goes to a log next to the results, to read while it runs.
    with (out / "runner.log").open("w") as log:
        rc = run_runner(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    took = time.monotonic() - t0
    results = json.loads((out / "latest" / "results.json").read_text())
    print(f"run {i + 1}/{runs}: {results['run_id']} exit {rc} in {took:.0f} s, {out}", flush=True)
    return results


def _load(path: str) -> dict:
    p = Path(path)
    results = json.loads((p / "results.json" if p.is_dir() else p).read_text())
    print(f"run {results['run_id']} of {results.get('matrix', '?')}: {len(results['cells'])} cells, {p}")
    return results


def agreement(runs: list[dict]) -> tuple[list[str], dict[str, list[tuple[str, str]]]]:
    """Cells whose verdict was the same in every run that has them, and every cell's verdicts.
    A cell missing from a run counts as differing (its verdict there is `missing`)."""
    seen: dict[str, list[tuple[str, str]]] = {}
    cells = [_cells(r) for r in runs]
    for key in sorted({k for c in cells for k in c}):
        seen[key] = [c.get(key, ("missing", "not in this run")) for c in cells]
    same = [k for k, v in seen.items() if len({verdict for verdict, _ in v}) == 1]
    return same, seen


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("matrix", nargs="?", default="matrix.quick.yaml")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--compare", nargs="+", metavar="RUN", help="compare runs already made instead of running")
    args = ap.parse_args()
    if args.compare:
        runs = [_load(p) for p in args.compare]
    else:
        runs = [_run(args.matrix, args.only, i, args.runs) for i in range(args.runs)]
    same, seen = agreement(runs)
    print(f"agreement: {len(same)}/{len(seen)} cells = {len(same) / max(len(seen), 1):.3f}")
    for k, v in sorted(seen.items()):
        if k not in same:
            print(f"  differs: {k}")
            for verdict, reason in v:
                print(f"    {verdict}: {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
