"""Local cluster start: time to a Ready node and to the first Running pod, cold and warm, and RSS.

Run as root: python bench/local_cluster.py [--runs N] [--cold]
"cold" empties the local cluster's caches first (containerd's image store, Docker's data root,
the registry's blobs; the Go binaries and the Debian base stay: their build times are printed
when they happen). Targets on this machine: warm start to a Ready node <= 20 s, first pod Running
<= 10 s after it is created.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubernetes import client

from runner.build.cache import cache_root
from runner.local import hoststate
from runner.local.cluster import LocalCluster

TARGET_READY_S = 20.0
TARGET_POD_S = 10.0


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def one_run() -> tuple[float, float, int, float]:
    """(start to Ready node, pod create to Running, RSS of everything in MiB, teardown)."""
    c = LocalCluster()
    t0 = time.monotonic()
    with c:
        ready = time.monotonic() - t0
        v1 = client.CoreV1Api(c.admin_api())
        t1 = time.monotonic()
        v1.create_namespaced_pod("default", client.V1Pod(
            metadata=client.V1ObjectMeta(name="bench"),
            spec=client.V1PodSpec(termination_grace_period_seconds=0, containers=[client.V1Container(
                name="c", image=c.pause_image, image_pull_policy="IfNotPresent")])))
        while v1.read_namespaced_pod("bench", "default").status.phase != "Running":
            time.sleep(0.05)
        pod = time.monotonic() - t1
        pids = set(hoststate.pids_mentioning(str(c.workdir)))
        pids |= set(hoststate.cgroup_pids(hoststate.kube_cgroups()))
        rss = sum(rss_kib(p) for p in pids) // 1024
        t2 = time.monotonic()
    return ready, pod, rss, time.monotonic() - t2


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3, help="warm runs")
    ap.add_argument("--cold", action="store_true", help="empty the local cluster's image caches first")
    args = ap.parse_args()
    if args.cold:
        for sub in ("containerd-root", "docker", "registry"):
            shutil.rmtree(cache_root() / "local" / sub, ignore_errors=True)
        ready, pod, rss, down = one_run()
        print(f"cold: Ready node {ready:.1f} s, first pod Running {pod:.1f} s, RSS {rss} MiB, teardown {down:.1f} s")
    runs = [one_run() for _ in range(args.runs)]
    for i, (ready, pod, rss, down) in enumerate(runs, 1):
        print(f"warm {i}: Ready node {ready:.1f} s, first pod Running {pod:.1f} s, RSS {rss} MiB, "
              f"teardown {down:.1f} s")
    ready = statistics.median(r[0] for r in runs)
    pod = statistics.median(r[1] for r in runs)
    print(f"warm median: Ready node {ready:.1f} s ({ready / TARGET_READY_S:.2f} of the {TARGET_READY_S:.0f} s target),"
          f" first pod Running {pod:.1f} s ({pod / TARGET_POD_S:.2f} of the {TARGET_POD_S:.0f} s target),"
          f" RSS {statistics.median(r[2] for r in runs):.0f} MiB")
    return 0 if ready <= TARGET_READY_S and pod <= TARGET_POD_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
