"""Teardown of a large interrupted run: seconds from Ctrl-C to a clean machine.

Run as root: python bench/teardown.py [MATRIX] [--after 20] [--twice]
Starts the whole matrix (matrix.quick.yaml: 132 watchers at once), waits until its phase log says
"rounds" plus --after seconds, sends SIGINT (with --twice, a second one a second later) and times
the runner's exit. Then checks that nothing of the run is left: no network namespace, no process
naming the run, no temp dir, no nft table. Prints the time and its ratio to the 30 s target; exits 1
if anything was left behind.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runner.host.netns import list_project_netns  # noqa: E402

TARGET_S = 30.0


def run_processes(marks: tuple[str, ...]) -> list[str]:
    """Live processes whose command line or environment names the run (id or results dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            text = (proc / "cmdline").read_bytes() + b"\0" + (proc / "environ").read_bytes()
        except OSError:
            continue
        if any(m.encode() in text for m in marks):
            found.append(f"{proc.name} {text[:80]!r}")
    return found


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("matrix", nargs="?", default="matrix.quick.yaml")
    ap.add_argument("--after", type=float, default=20.0, help="seconds into the rounds before Ctrl-C")
    ap.add_argument("--twice", action="store_true", help="a second Ctrl-C one second after the first")
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="wd-teardown-"))
    proc = subprocess.Popen([sys.executable, "-m", "runner", args.matrix, "--out", str(out), "--no-readme"],
                            cwd=REPO, stdout=(out / "runner.log").open("w"), stderr=subprocess.STDOUT)
    phases = out / "latest" / "phases.log"
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline and proc.poll() is None:
        if phases.exists() and " rounds" in phases.read_text():
            break
        time.sleep(0.5)
    else:
        print(f"the run never reached its rounds; see {out / 'runner.log'}")
        proc.kill()
        return 1
    run_id = (out / "latest").resolve().name
    watchers = len(run_processes(("WATCHDROP_NAMESPACE=",)))
    time.sleep(args.after)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    if args.twice:
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
    rc = proc.wait()
    took = time.monotonic() - t0
    left = [f"netns {n}" for n in list_project_netns() if run_id in n]
    left += [f"process {p}" for p in run_processes((run_id, str(out)))]
    left += [f"dir {d}" for d in Path(tempfile.gettempdir()).glob(f"watchdrop-{run_id}-*")]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    left += [f"nft table {t}" for t in tables.split() if run_id in t]
    print(f"run {run_id}: {watchers} watcher processes when interrupted; exit {rc}")
    print(f"teardown: {took:.1f} s from Ctrl-C{' (twice)' if args.twice else ''} to exit; "
          f"ratio to the {TARGET_S:.0f} s target: {took / TARGET_S:.2f}")
    print("left behind: " + ("; ".join(left) if left else "nothing"))
    print(f"evidence: {out}")
    return 1 if left else 0


if __name__ == "__main__":
    raise SystemExit(main())
