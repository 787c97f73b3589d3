"""Embedded cluster start: cold build (when the cache is empty), warm start to /readyz, RSS.

Run as root: python bench/cluster_start.py [--runs N]
Prints ratios against the target (warm start to ready <= 5 s on this machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runner.build import gobuild
from runner.embedded.cluster import EmbeddedCluster

TARGET_READY_S = 5.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    cold = [b for b in (gobuild.ETCD, gobuild.KUBE_APISERVER) if not b.cached_path().exists()]
    t0 = time.monotonic()
    gobuild.ensure_control_plane_binaries()
    build = time.monotonic() - t0
    if cold:
        print(f"cold build ({', '.join(b.name for b in cold)}): {build:.0f} s")
    else:
        print("cold build: not measured (binaries already cached; set WATCHDROP_CACHE to an empty dir to measure)")
    readies, rss = [], []
    for _ in range(args.runs):
        t0 = time.monotonic()
        with EmbeddedCluster(churn_interval=0) as c:
            readies.append(time.monotonic() - t0)
            time.sleep(2)  # let both settle before reading their memory
            rss.append(sum(rss_kib(ch.pid) for ch in (c.etcd, c.apiserver) if ch))
    med = statistics.median(readies)
    print(f"warm start to /readyz: median {med:.2f} s, worst {max(readies):.2f} s over {args.runs} runs")
    print(f"ratio to target ({TARGET_READY_S:.0f} s): {med / TARGET_READY_S:.2f}")
    print(f"RSS etcd + kube-apiserver: median {statistics.median(rss) / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
