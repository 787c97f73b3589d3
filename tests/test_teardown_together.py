"""Teardown's waits overlap: captures settle together, an LB's agent and front stop together, and a
topology's namespaces go a few at a time; every step still runs when another fails."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runner.host.capture import stop_captures
from runner.host.lifetime import teardown_concurrently
from runner.host.procs import stop_together


def test_a_bound_on_workers_holds_and_every_step_runs() -> None:
    lock, running, peak, ran = threading.Lock(), [0], [0], []

    def step(i: int) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        threading.Event().wait(0.05)
        with lock:
            running[0] -= 1
            ran.append(i)
        if i == 3:
            raise OSError("netns busy")

    problems = teardown_concurrently(((f"netns {i}", lambda i=i: step(i)) for i in range(9)), workers=2)
    assert sorted(ran) == list(range(9))
    assert peak[0] == 2
    assert problems == ["netns 3: OSError: netns busy"]


@dataclass
class _Settling:
    """What stop_captures needs of a capture: its file's name and a stop() that waits."""

    pcap: Path
    barrier: threading.Barrier
    fails: bool = False
    stopped: list[str] = field(default_factory=list)

    def stop(self) -> None:
        self.barrier.wait()  # passes only if every capture is settling at the same time
        self.stopped.append(self.pcap.name)
        if self.fails:
            raise RuntimeError("tcpdump would not exit")


def test_captures_settle_together_and_a_failure_is_raised_after_all_stopped() -> None:
    barrier = threading.Barrier(3, timeout=5)
    caps = [_Settling(Path("pod-leg.pcap"), barrier), _Settling(Path("server-leg.pcap"), barrier, fails=True),
            _Settling(Path("hop.pcap"), barrier)]
    with pytest.raises(RuntimeError, match=r"capture server-leg\.pcap: RuntimeError: tcpdump would not exit"):
        stop_captures(caps)  # type: ignore[arg-type]
    assert [c.stopped for c in caps] == [["pod-leg.pcap"], ["server-leg.pcap"], ["hop.pcap"]]


@dataclass
class _Child:
    name: str
    barrier: threading.Barrier
    graces: list[float] = field(default_factory=list)

    def stop(self, grace: float) -> None:
        self.barrier.wait()  # the agent's and the front's graces overlap
        self.graces.append(grace)


def test_children_stop_together_with_their_grace() -> None:
    barrier = threading.Barrier(2, timeout=5)
    agent, front = _Child("lb-agent", barrier), _Child("front", barrier)
    stop_together([agent, front], grace=5)  # type: ignore[list-item]
    assert agent.graces == front.graces == [5]
