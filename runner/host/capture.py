"""tcpdump captures inside a namespace: the packets every verdict is read from."""

from __future__ import annotations

import time
from pathlib import Path

from runner.errors import ClusterError
from runner.host import signals
from runner.host.commands import CommandLog, in_netns
from runner.host.procs import Child, wait_until


class Capture:
    """`tcpdump -i IFACE -w FILE` in a namespace; `start()` returns once tcpdump is listening."""

    def __init__(self, netns: str, iface: str, pcap: Path, log: CommandLog, bpf: str = "tcp",
                 tcpdump: str = "tcpdump"):
        self.netns, self.iface, self.pcap, self.log, self.bpf, self.tcpdump = netns, iface, pcap, log, bpf, tcpdump
        self.child: Child | None = None

    def start(self, timeout: float = 10.0) -> Capture:
        stderr = self.pcap.with_suffix(".tcpdump.log")
        # -U: write each packet as it arrives, so an interrupted run still has its evidence.
        # -Z root: keep root, so tcpdump can write into root-owned evidence folders.
        self.child = Child(f"tcpdump {self.netns}/{self.iface}", in_netns(self.netns, [
            self.tcpdump, "-i", self.iface, "-n", "-U", "--immediate-mode", "-Z", "root", "-w", self.pcap, self.bpf,
        ]), stdout=stderr, log=self.log)
        child = self.child
        try:
            wait_until(lambda: "listening on" in child.tail(5), child, timeout, "capturing (no capture: no evidence)",
                       poll=0.02)
        except ClusterError:
            child.stop(1)
            raise
        return self

    def alive(self) -> bool:
        return self.child is not None and self.child.alive()

    def stop(self, settle: float = 0.5, limit: float = 3.0) -> None:
        """Stop once the file has stopped growing: tcpdump drops what it has not read yet on SIGTERM,
        which would lose the last FIN or RST that a verdict reads."""
        if self.child is None:
            return
        if self.child.alive():
            deadline = time.monotonic() + limit
            last, since = -1, time.monotonic()
            while time.monotonic() < deadline and not signals.hurry.is_set():
                size = self.pcap.stat().st_size if self.pcap.exists() else 0
                if size != last:
                    last, since = size, time.monotonic()
                elif time.monotonic() - since >= settle:
                    break
                time.sleep(0.05)
        self.child.stop(grace=5)
