"""Subprocesses that can hang have a timeout: a hung `conntrack` cannot stall the LB agent's loop."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from runner.embedded import lbagent
from tests.test_lbagent_unit import _agent


class _NoRaw:
    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        pass


def test_a_hung_conntrack_does_not_hold_up_the_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "conntrack").write_text("#!/bin/sh\nexec sleep 120\n")
    (bin_dir / "conntrack").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(lbagent, "CONNTRACK_TIMEOUT", 1.0)
    a = _agent("rst-both-ways")
    a.raw = _NoRaw()
    flow = lbagent.Flow(pod="198.18.2.130", pod_port=40000, vport=6443, opened_at=0.0, last=0.0,
                        client_next=101, server_next=501)
    t0 = time.monotonic()
    a.reset_both(flow)
    assert time.monotonic() - t0 < 10
    (rec,) = [json.loads(x) for x in a.out.getvalue().splitlines() if '"conntrack-delete"' in x]
    assert rec["rc"] == -1 and "timed out" in rec["error"]
