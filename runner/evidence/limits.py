"""Bounds on what a cell may put in front of the runner: a watcher that prints without end, a giant
line, or a capture that grows without bound must not exhaust the runner's memory or the disk.

- Files: the watcher's stdout and stderr (and the kubernetes backend's copies of its log) stop
  growing at `log_limit()` bytes, the pod's capture at `pcap_limit()` bytes. On the embedded
  backend the kernel enforces both (RLIMIT_FSIZE via `prlimit`: a write past it fails and the
  process gets SIGXFSZ, so the watcher or tcpdump ends there); the kubernetes backend's log sink
  stops writing at the limit and the capture sidecar runs tcpdump under the same `prlimit`.
- Lines: the runner reads logs incrementally from an offset (`LineReader`), never the whole file
  per poll, and cuts a line longer than LINE_MAX (the cut is counted).

What was cut is recorded in the cell's result (runner.model.Cut); a capture that reached its limit
makes the cell ERROR ("capture cut at N MiB"): what happened on the wire after the cut is unknown,
and the packet that decides a verdict (the RST, the event that never came) may be just there. A
watcher's stdout cut is ERROR too (its lines are the rounds' evidence); a cut stderr only stops a
FAIL-SILENT (runner.verdict), the one verdict that rests on stderr holding no error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.model import MIB, Cut

#: The longest line kept whole; an honest watcher's JSON line is a few hundred bytes.
LINE_MAX = 64 * 1024
#: Bytes read per call of LineReader.read(): bounds the runner's memory per poll.
READ_CHUNK = 1024 * 1024

_DROPPED = re.compile(r"(\d+) packets? dropped by (?:kernel|interface)")


@dataclass(frozen=True)
class Limits:
    """The size caps of a run, in bytes: each of the watcher's log files, and the pod's capture."""

    log: int = 16 * MIB
    pcap: int = 64 * MIB

    @classmethod
    def in_mib(cls, log: float | None = None, pcap: float | None = None) -> Limits:
        """Caps given in MiB (the hidden `--limit-log-mib`/`--limit-pcap-mib` of `python -m runner run`,
        which tests make small); None keeps the default."""
        d = cls()
        return cls(log=d.log if log is None else max(1, int(log * MIB)),
                   pcap=d.pcap if pcap is None else max(1, int(pcap * MIB)))


_limits = Limits()


def use_limits(limits: Limits) -> None:
    """Set the caps for what this process runs next (runner/pipeline.py Execution, from its `limits`)."""
    global _limits
    _limits = limits


def log_limit() -> int:
    """Bytes each of the watcher's log files may reach (default 16 MiB)."""
    return _limits.log


#: Bytes a capture keeps of each packet, on both backends: Ethernet, IP and TCP headers with every
#: option (at most 134) and the start of the payload, so libpcap's ring holds thousands of packets
#: instead of 8 (runner/host/capture.py says why).
SNAPLEN = 512


def pcap_limit() -> int:
    """Bytes the pod's capture may reach (default 64 MiB)."""
    return _limits.pcap


def tcpdump_dropped(log_text: str) -> int | None:
    """Packets tcpdump said it dropped ("N packets dropped by kernel", and "by interface" where
    libpcap reports it), from its last words; None when it printed no counts (it did not exit cleanly)."""
    counts = [int(n) for n in _DROPPED.findall(log_text)]
    return sum(counts) if counts else None


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass
class LineReader:
    """Reads a growing file's lines from where it last stopped.

    Each `read()` returns the complete lines written since the previous one (at most READ_CHUNK
    bytes of them); a line longer than LINE_MAX is cut to it and counted in `long_lines`. The file
    is opened per read, so a reader holds no descriptor between polls.
    """

    path: Path
    offset: int = 0
    long_lines: int = 0
    _partial: bytes = b""
    #: A line being skipped past LINE_MAX: its rest is dropped until its newline.
    _skipping: bool = False
    _pending: list[str] = field(default_factory=list)

    def read(self, final: bool = False) -> list[str]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read(READ_CHUNK)
        except OSError:
            data = b""
        self.offset += len(data)
        out: list[str] = []
        buf = self._partial + data
        *complete, rest = buf.split(b"\n")
        for raw in complete:
            if self._skipping:
                self._skipping = False  # the newline ending the overlong line
                continue
            out.append(self._cut(raw))
        if self._skipping:
            rest = b""
        elif len(rest) > LINE_MAX:
            out.append(self._cut(rest))
            rest, self._skipping = b"", True
        if final and rest:
            out.append(rest.decode("utf-8", "replace"))
            rest = b""
        self._partial = rest
        return out

    def _cut(self, raw: bytes) -> str:
        if len(raw) > LINE_MAX:
            self.long_lines += 1
            raw = raw[:LINE_MAX]
        return raw.decode("utf-8", "replace")

    def read_all(self) -> list[str]:
        """Every remaining line, the last one even without its newline."""
        out: list[str] = []
        while True:
            before = self.offset
            out += self.read()
            if self.offset == before:
                return out + self.read(final=True)


def contract_line(text: str) -> dict[str, Any] | None:
    """One line of the watcher contract (clients/README.md): a JSON object with a numeric `ts` and a
    string `event`; None for anything else."""
    text = text.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    ts, event = obj.get("ts"), obj.get("event")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not isinstance(event, str):
        return None
    return obj


def cut_of(name: str, path: Path, long_lines: int, limit: int) -> Cut | None:
    """The Cut to record for one evidence file, or None when nothing was cut."""
    size = file_size(path)
    capped = limit if size >= limit else None
    if not long_lines and capped is None:
        return None
    return Cut(file=name, long_lines=long_lines, capped_at=capped)
