"""The timer server (images/timer-server) inside the cluster's backend namespace, behind every LB."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from runner.embedded.cluster import EmbeddedCluster
from runner.errors import ClusterError
from runner.host.commands import in_netns
from runner.host.procs import Child

SCRIPT = Path(__file__).resolve().parents[2] / "images" / "timer-server" / "timer_server.py"


def start_timer_server(cluster: EmbeddedCluster, evidence_dir: Path,
                       ports: tuple[tuple[int, float], ...] = ((8005, 5), (8600, 600))) -> Child:
    """Start it bound to the block's timer address; returns once every port is listening."""
    argv = [sys.executable, str(SCRIPT), "--listen", cluster.block.timer]
    for port, interval in ports:
        argv += ["--port", f"{port}:{interval:g}"]
    child = Child("timer-server", in_netns(cluster.api_ns, argv), stdout=evidence_dir / "timer-server.jsonl",
                  stderr=evidence_dir / "timer-server.stderr", log=cluster.log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = cluster.topology.run_in(cluster.api_ns, ["ss", "-Hltn", f"src {cluster.block.timer}"],
                                      check=False).stdout
        if len(out.strip().splitlines()) >= len(ports):
            return child
        if not child.alive():
            raise ClusterError("the timer server exited at start", detail=child.tail())
        time.sleep(0.05)
    child.stop(1)
    raise ClusterError("the timer server did not listen within 10 s")
