"""The timer server (images/timer-server) inside the cluster's backend namespace, behind every LB."""

from __future__ import annotations

import sys
from pathlib import Path

from runner.embedded.cluster import EmbeddedCluster
from runner.errors import ClusterError
from runner.host.commands import in_netns
from runner.host.procs import Child, wait_until

SCRIPT = Path(__file__).resolve().parents[2] / "images" / "timer-server" / "timer_server.py"


def start_timer_server(cluster: EmbeddedCluster, evidence_dir: Path,
                       ports: tuple[tuple[int, float], ...] = ((8005, 5), (8600, 600))) -> Child:
    """Start it bound to the block's timer address; returns once every port is listening."""
    argv = [sys.executable, str(SCRIPT), "--listen", cluster.block.timer]
    for port, interval in ports:
        argv += ["--port", f"{port}:{interval:g}"]
    child = Child("timer-server", in_netns(cluster.api_ns, argv), stdout=evidence_dir / "timer-server.jsonl",
                  stderr=evidence_dir / "timer-server.stderr", log=cluster.log)

    def listening() -> bool:
        out = cluster.topology.run_in(cluster.api_ns, ["ss", "-Hltn", f"src {cluster.block.timer}"],
                                      check=False).stdout
        return len(out.strip().splitlines()) >= len(ports)

    try:
        wait_until(listening, child, 10, f"listening on its {len(ports)} ports")
    except ClusterError:
        child.stop(1)
        raise
    return child
