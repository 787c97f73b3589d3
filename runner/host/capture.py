"""tcpdump captures inside a namespace: the packets every verdict is read from.

A capture that ends before the runner stops it, is cut at its size limit or drops packets leaves
evidence with holes; `facts()` says how it ended (runner.model.CaptureFacts) and the verdict makes
such a cell ERROR, whatever else the evidence says.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from runner.errors import ClusterError
from runner.evidence.limits import SNAPLEN, file_size, pcap_limit, tcpdump_dropped
from runner.host import signals
from runner.host.commands import CommandLog, in_netns
from runner.host.lifetime import concurrently_or_raise
from runner.host.procs import Child, wait_until
from runner.model import CaptureFacts


class Capture:
    """`tcpdump -i IFACE -w FILE` in a namespace; `start()` returns once tcpdump is listening."""

    def __init__(self, netns: str, iface: str, pcap: Path, log: CommandLog, bpf: str = "tcp",
                 tcpdump: str = "tcpdump"):
        self.netns, self.iface, self.pcap, self.log, self.bpf, self.tcpdump = netns, iface, pcap, log, bpf, tcpdump
        self.child: Child | None = None
        self.limit = pcap_limit()
        #: How it ended, once stopped (stop() is idempotent and keeps the first account).
        self.ended: CaptureFacts | None = None

    @property
    def log_path(self) -> Path:
        return self.pcap.with_suffix(".tcpdump.log")

    def start(self, timeout: float = 10.0) -> Capture:
        stderr = self.log_path
        # -U: write each packet as it arrives, so an interrupted run still has its evidence.
        # -Z root: keep root, so tcpdump can write into root-owned evidence folders.
        # prlimit: the kernel stops the file at the limit (tcpdump gets SIGXFSZ), so a flood of
        # packets cannot fill the disk; facts() then says the capture was cut.
        # -s SNAPLEN: in immediate mode libpcap's ring holds whole frames of the snapshot length; at the
        # default 256 KiB its 2 MiB hold 8 packets, and a LIST burst while tcpdump waited for a CPU was
        # "dropped by kernel" (kopf, 14 of 103 packets, an ERROR cell in a CI run of every column).
        # The verdicts read headers only; payload lengths come from the IP header (evidence/pcap.py).
        self.child = Child(f"tcpdump {self.netns}/{self.iface}", in_netns(self.netns, [
            "prlimit", f"--fsize={self.limit}", "--",
            self.tcpdump, "-i", self.iface, "-n", "-s", str(SNAPLEN), "-U", "--immediate-mode", "-Z", "root",
            "-w", self.pcap, self.bpf,
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
        if self.child is None or self.ended is not None:
            return
        ran_to_end = self.child.alive()
        if ran_to_end:
            deadline = time.monotonic() + limit
            last, since = -1, time.monotonic()
            while time.monotonic() < deadline and not signals.hurry.is_set():
                size = self.pcap.stat().st_size if self.pcap.exists() else 0
                if size != last:
                    last, since = size, time.monotonic()
                elif time.monotonic() - since >= settle:
                    break
                time.sleep(0.05)
        code = self.child.stop(grace=5)
        self.ended = self.facts_now(ran_to_end, code)

    def facts_now(self, ran_to_end: bool, exit_code: int | None) -> CaptureFacts:
        try:
            log = self.log_path.read_text(errors="replace")[-4096:]  # the counts are tcpdump's last words
        except OSError:
            log = ""
        return CaptureFacts(ran_to_end=ran_to_end, exit_code=exit_code, dropped=tcpdump_dropped(log),
                            size=file_size(self.pcap), limit=self.limit)


def stop_captures(captures: Sequence[Capture]) -> None:
    """Stop every capture, all at once: each waits for its file to settle first (Capture.stop), and
    those waits overlap. Raises after the last one has stopped if any failed."""
    concurrently_or_raise((f"capture {cap.pcap.name}", cap.stop) for cap in captures)
