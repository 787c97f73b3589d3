"""Local cluster start: time to a Ready node and to the first Running pod, cold and warm, and RSS;
with --images, each client's watcher image build and push on the last cluster.

Run as root: python bench/local_cluster.py [--runs N] [--cold] [--images]
"cold" empties the local cluster's caches first (containerd's image store, Docker's data root,
the registry's blobs; the Go binaries and the Debian base stay: their build times are printed
when they happen). Targets on this machine: warm start to a Ready node <= 20 s, first pod Running
<= 10 s after it is created. --images builds every client image the local bases can serve
through the runner's own build code (Docker's layer cache in the cache: after --cold, a cold
build) and pushes it to the cluster's registry, timing each step.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubernetes import client

from runner.build import bases, images
from runner.build.cache import cache_root
from runner.local import hoststate
from runner.local.cluster import LocalCluster
from runner.local.provider import HOST_CA_BUNDLE

CLIENTS = Path(__file__).resolve().parent.parent / "clients"

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


def image_times(c: LocalCluster) -> list[tuple[str, float, float]]:
    """(client folder, build seconds, push seconds) for every client image with local bases."""
    h = c.handover()
    os.environ["DOCKER_HOST"] = h.docker_socket
    api = images.docker_api()
    ca = HOST_CA_BUNDLE if HOST_CA_BUNDLE.exists() else None
    out = []
    with tempfile.TemporaryDirectory(prefix="wd-bench-images-") as logs:
        for src in sorted(p for p in CLIENTS.iterdir() if (p / "Dockerfile").is_file()):
            dockerfile = (src / "Dockerfile").read_text()
            if images.no_local_base(dockerfile):
                print(f"  {src.name}: no local base image, not built")
                continue
            refs = images.resolve_bases("local", images.declared_args(dockerfile))
            bases.ensure_bases(api, refs.values(), Path(logs) / "bases", say=lambda t: print(f"  {t}"))
            spec = images.client_image(src, {}, None, refs)
            ref = spec.ref(h.registry)
            t0 = time.monotonic()
            images.build_image(api, spec, ref, Path(logs) / f"{src.name}.log", ca_bundle=ca)
            t1 = time.monotonic()
            images.push_image(api, ref, Path(logs) / f"{src.name}.log")
            out.append((src.name, t1 - t0, time.monotonic() - t1))
            print(f"  {src.name}: build {t1 - t0:.1f} s, push {out[-1][2]:.1f} s")
    return out


def one_run(build_images: bool = False) -> tuple[float, float, int, float]:
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
        if build_images:
            took = image_times(c)
            print(f"images: {len(took)} built and pushed in {sum(b + p for _, b, p in took):.0f} s")
        t2 = time.monotonic()
    return ready, pod, rss, time.monotonic() - t2


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3, help="warm runs")
    ap.add_argument("--cold", action="store_true", help="empty the local cluster's image caches first")
    ap.add_argument("--images", action="store_true",
                    help="on the last cluster, build and push every client image, timing each")
    args = ap.parse_args()
    if args.cold:
        for sub in ("containerd-root", "docker", "registry"):
            shutil.rmtree(cache_root() / "local" / sub, ignore_errors=True)
        ready, pod, rss, down = one_run()
        print(f"cold: Ready node {ready:.1f} s, first pod Running {pod:.1f} s, RSS {rss} MiB, teardown {down:.1f} s")
    runs = [one_run(build_images=args.images and i == args.runs - 1) for i in range(args.runs)]
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
