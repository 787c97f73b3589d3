"""A chain of hops on the local cluster (issue 17), end to end through the kubernetes backend.

`python -m runner <matrix>` with one `kind: local` cluster whose `path:` is GKE with Cloud NAT, its
Cloud NAT hop shortened so that it forgets first (45 s, silent) and the firewall hop after it (112 s):
pod → ClusterIP → kube-proxy → [cloudnat: SNAT] → [fw: the VIP, DNAT] → kube-apiserver. Checks that
every hop was in the pods' path and saw what it should (the first hop the pods' own addresses, the
last only the nat hop's), that each cell's evidence names the hop that forgot the flow first, that the
results carry the path hop by hop, and the verdicts the path predicts: client-go's HTTP/2 keepalive
keeps its watch alive, client-python's watch dies silently. About 3.5 minutes with the images cached.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from runner.model import RunResult
from tests.conftest import needs_root_tools
from tests.test_local_cluster import _host_state
from tests.test_local_e2e import _assert_nothing_left, _verdicts, run_matrix

pytestmark = [needs_root_tools("ip", "go", "nft", "conntrack", "tcpdump", "haproxy"), pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
CLUSTER = "local-path"

MATRIX = f"""
clients:
  - name: client-go
    folder: client-go
    env: {{WATCHDROP_STYLE: informer}}
  - name: client-python
clusters:
  - name: {CLUSTER}
    kind: local
    path: {{preset: gke-cloudnat-quick, override: {{cloudnat: {{idle_timeout: 45}}}}}}
    churn: {{lease_interval: 10}}
scenarios:
  watch: {{interval: idle+20, detection_timeout: 10, rounds: 1}}
"""


@pytest.fixture(scope="module")
def before() -> dict[str, object]:
    return _host_state()


@pytest.fixture(scope="module")
def run(before: dict[str, object], tmp_path_factory: pytest.TempPathFactory
        ) -> tuple[RunResult, Path, subprocess.CompletedProcess[str]]:
    return run_matrix(tmp_path_factory.mktemp("local-path"), MATRIX)


def _syn_sources(pcap: Path, vip: str) -> set[str]:
    """The source addresses of the SYNs toward `vip` in a capture."""
    out = subprocess.run(["tcpdump", "-nr", str(pcap), "tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & "
                          "tcp-ack == 0"], capture_output=True, text=True).stdout
    return {line.split(" IP ")[1].split(" > ")[0].rsplit(".", 1)[0] for line in out.splitlines()
            if f" > {vip}." in line}


def test_the_path_predicts_the_verdicts(run) -> None:
    result, _, proc = run
    assert _verdicts(result) == {
        f"client-go/{CLUSTER}/watch": "PASS",
        f"client-python/{CLUSTER}/watch": "FAIL-SILENT",
    }, proc.stdout[-3000:]
    assert proc.returncode == 0, proc.stderr[-3000:]  # FAIL cells are the finding, not a failure of the run


def test_every_hop_was_in_the_pods_path(run) -> None:
    """The first hop sees the pods' own addresses (kube-proxy does not masquerade them); the last
    sees only the first hop's masquerade address; each hop's agent kept its own event log."""
    _, run_dir, _ = run
    ev = run_dir / "clusters" / CLUSTER
    info = json.loads((ev / "local-cluster.json").read_text())
    assert [h["name"] for h in info["path"]] == ["cloudnat", "fw"]
    vip = info["advertised"].split(":")[0]
    pod_net = info["pod_cidr"].rsplit(".", 1)[0] + "."
    first = _syn_sources(ev / "lb" / "hop-cloudnat-pod-leg.pcap", vip)
    assert first and all(a.startswith(pod_net) for a in first), first
    last = _syn_sources(ev / "lb" / "lb-pod-leg.pcap", vip)
    assert len(last) == 1 and not last & first, (last, first)
    for log in ("hop-cloudnat-events.jsonl", "lb-events.jsonl"):
        assert (ev / "lb" / log).stat().st_size > 0, log


def test_each_cell_names_the_hop_that_forgot_first(run) -> None:
    """client-python's idle watch was forgotten by Cloud NAT at 45 s, not by the firewall behind it;
    the results print the chain hop by hop."""
    result, run_dir, _ = run
    cell = next(c for c in result.cells if c.client == "client-python")
    assert cell.profile is not None and cell.profile.path is not None
    assert "cloudnat (nat): silent-drop after 45 s" in cell.profile.path
    events = [json.loads(line) for line in (run_dir / cell.evidence["lb-events.jsonl"]).read_text().splitlines()
              if line.strip()]
    expired = [e for e in events if e.get("event") == "expired"]
    assert expired and expired[0].get("hop") == "cloudnat", events[-10:]
    assert cell.lb is not None and cell.lb.expired >= 1


def test_nothing_is_left(run, before: dict[str, object]) -> None:
    _, run_dir, _ = run
    _assert_nothing_left(run_dir, before, CLUSTER)
