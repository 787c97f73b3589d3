"""One client behind a two-hop chain, end to end (issue 17): pod → NAT gateway → front → kube-apiserver.

A real run of `python -m runner` with client-python's watch behind a quick chain: a `nat` hop that
behaves as an AWS NAT gateway (silent, then an RST only to a client that speaks) and the provider's
front (a `tcp` front that resets both ways), both at 45 s, the front 50 ms later (`order_ms`), so the
NAT gateway forgets the flow first and the front's RST toward the client dies there: the cell's
evidence must say so hop by hop, and the verdict must rest on it (not ERROR). About 3 minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner.report.render import load_results
from tests.conftest import needs_root_tools

pytestmark = [needs_root_tools("ip", "nft", "conntrack", "tcpdump", "haproxy", "go"), pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
T = 45

MATRIX = f"""
clients:
  - name: client-python
clusters:
  - name: natgw-front
    path:
      - {{name: natgw, kind: nat, idle_timeout: {T}, mode: rst-inside-only}}
      - {{name: front, kind: front, front: tcp, idle_timeout: {T}, mode: rst-both-ways, order_ms: 50}}
    churn: {{lease_interval: 10}}
scenarios:
  watch: {{interval: idle+15, detection_timeout: 10, rounds: 1}}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("chain-e2e")
    (tmp / "matrix.yaml").write_text(MATRIX)
    proc = subprocess.run(
        [sys.executable, "-m", "runner", str(tmp / "matrix.yaml"), "--clients", str(REPO / "clients"),
         "--out", str(tmp / "results"), "--no-readme"],
        cwd=REPO, capture_output=True, text=True, timeout=1200)
    run_dir = (tmp / "results" / "latest").resolve()
    assert (run_dir / "results.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir, proc.stdout


def test_the_nat_gateway_forgets_first_and_the_fronts_rst_is_lost(run) -> None:
    run_dir, stdout = run
    (cell,) = load_results(run_dir / "results.json").cells
    print(f"{cell.verdict.value}: {cell.reason}")
    assert cell.verdict.value != "ERROR", (cell.reason, stdout[-2000:])
    cell_dir = run_dir / "cells" / "client-python" / "natgw-front" / "watch"
    events = [json.loads(x) for x in (cell_dir / "lb-events.jsonl").read_text().splitlines()]
    assert {e["hop"] for e in events} == {"natgw", "front"}
    expired = [e for e in events if e["event"] == "expired"]
    assert expired and expired[0]["hop"] == "natgw", expired
    # The front's RST toward the client met the forgotten flow at the NAT gateway.
    assert [e for e in events if e["event"] == "rst-lost" and e["hop"] == "front"], events
    assert not [e for e in events if e["event"] == "rst-sent" and e.get("to") == "client"]
    # Each hop's own evidence, both legs captured.
    lbs = run_dir / "lbs" / "natgw-front"
    for name in ("hop-natgw-events.jsonl", "hop-natgw-pod-leg.pcap", "hop-natgw-server-leg.pcap",
                 "lb-events.jsonl", "lb-pod-leg.pcap", "lb-server-leg.pcap"):
        assert (lbs / name).is_file(), name


def test_the_report_prints_the_chain(run) -> None:
    run_dir, _ = run
    report = (run_dir / "report.md").read_text()
    assert "path: natgw (nat): rst-inside-only after 45 s → front (front tcp): rst-both-ways after 45 s +50 ms" \
        in report, report
