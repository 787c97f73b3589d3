"""A capture keeps a burst of packets that arrives while tcpdump waits for a CPU (tcpdump stopped
with SIGSTOP stands for a loaded 2-core machine): the ring must hold them all, or the cell is ERROR
for "dropped by kernel" (runner/host/capture.py's SNAPLEN)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from runner.host.capture import Capture
from runner.host.commands import CommandLog, in_netns
from runner.host.netns import Topology, new_run_id
from tests.conftest import needs_root_tools

pytestmark = [needs_root_tools("ip", "tcpdump", "prlimit"), pytest.mark.slow]

BURST = 300
SEND = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range({BURST}):
    s.sendto(b"x" * 200, ("127.0.0.1", 45999))
"""


def test_a_burst_while_tcpdump_cannot_run_is_kept_whole(tmp_path: Path, no_leftovers) -> None:
    log = CommandLog(tmp_path / "commands.log")
    topo = Topology(new_run_id(), log)
    try:
        ns = topo.add_ns("cap")
        topo.run_in(ns, ["ip", "link", "set", "lo", "up"])
        cap = Capture(ns, "lo", tmp_path / "burst.pcap", log, bpf="udp port 45999").start()
        assert cap.child is not None
        os.kill(cap.child.pid, signal.SIGSTOP)
        try:
            subprocess.run(in_netns(ns, ["python3", "-c", SEND]), check=True, timeout=30)
        finally:
            os.kill(cap.child.pid, signal.SIGCONT)
        time.sleep(0.5)
        cap.stop()
    finally:
        topo.close()
    assert cap.ended is not None and cap.ended.ran_to_end
    # Loopback shows each datagram twice (out and in): all of them kept, none dropped.
    assert cap.ended.dropped == 0, (tmp_path / "burst.tcpdump.log").read_text()
