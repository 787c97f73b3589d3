"""Repeatability: run a matrix N times and print how often each cell got the same verdict.

Run as root: python bench/repeatability.py [MATRIX] [--runs 3] [--only ...]
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("matrix", nargs="?", default="matrix.quick.yaml")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", action="append", default=[])
    args = ap.parse_args()
    seen: dict[str, list[tuple[str, str]]] = {}
    for i in range(args.runs):
        out = Path(tempfile.mkdtemp(prefix="wd-repeat-"))
        argv = [sys.executable, "-m", "runner", args.matrix, "--out", str(out), "--no-readme"]
        for o in args.only:
            argv += ["--only", o]
        t0 = time.monotonic()
        # The runner's own output goes to a log next to the results, to read while it runs.
        with (out / "runner.log").open("w") as log:
            rc = subprocess.run(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
        took = time.monotonic() - t0
        results = json.loads((out / "latest" / "results.json").read_text())
        for c in results["cells"]:
            seen.setdefault(f"{c['client']}/{c['cluster']}/{c['scenario']}", []).append((c["verdict"], c["reason"]))
        print(f"run {i + 1}/{args.runs}: {results['run_id']} exit {rc} in {took:.0f} s, {out}", flush=True)
    same = [k for k, v in seen.items() if len({verdict for verdict, _ in v}) == 1]
    print(f"agreement: {len(same)}/{len(seen)} cells = {len(same) / max(len(seen), 1):.3f}")
    for k, v in sorted(seen.items()):
        if k not in same:
            print(f"  differs: {k}")
            for verdict, reason in v:
                print(f"    {verdict}: {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
