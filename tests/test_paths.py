"""Named paths and `path:` in a matrix (runner/config/paths.py, runner/config/matrix.py): pure, no kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.config.matrix import load_matrix
from runner.config.paths import PATHS, QUICK_FLOOR, PathError, quick_timer, resolve_path
from runner.config.plan import plan
from tests.test_matrix import make_clients

#: (hop kind, timer, behaviour, proxy) of each real path, pod side first: the issue's numbers.
EXPECTED = {
    "aks-public": [("nat", 1800, "rst-both-ways", "passthrough"), ("front", 240, "rst-both-ways", "tcp")],
    "aks-public-natgw": [("nat", 240, "rst-on-next-packet", "passthrough"), ("front", 240, "rst-both-ways", "tcp")],
    "aks-private": [("nat", 300, "rst-both-ways", "passthrough"), ("front", 240, "rst-both-ways", "tcp")],
    "aks-private-pls-silent": [("nat", 300, "silent-drop", "passthrough"), ("front", 240, "rst-both-ways", "tcp")],
    "eks": [("lb", 432_000, "silent-drop", "passthrough")],
    "eks-nitro": [("lb", 350, "silent-drop", "passthrough")],
    "eks-public": [("nat", 350, "rst-inside-only", "passthrough"), ("lb", 350, "rst-on-next-packet", "passthrough")],
    "gke": [("lb", 600, "silent-drop", "passthrough")],
    "gke-cloudnat": [("nat", 1200, "silent-drop", "passthrough"), ("lb", 600, "silent-drop", "passthrough")],
    "aks-public-2020": [("nat", 1800, "rst-both-ways", "passthrough"), ("front", 240, "silent-drop", "http")],
    "aks-private-2020": [("nat", 300, "silent-drop", "passthrough"), ("front", 240, "silent-drop", "http")],
}


def test_named_paths_carry_the_issues_numbers() -> None:
    real = {n: p for n, p in PATHS.items() if p.scaled_from is None}
    assert set(real) == set(EXPECTED)
    for name, hops in EXPECTED.items():
        assert [(h.kind, h.idle_timeout, h.mode, h.proxy) for h in real[name].hops] == hops, name
        assert all(h.source for h in real[name].hops), name


def test_quick_paths_scale_every_timer_by_one_rule_and_keep_the_real_numbers() -> None:
    for name, path in PATHS.items():
        if path.scaled_from is None:
            continue
        real = PATHS[path.scaled_from]
        for q, r in zip(path.hops, real.hops, strict=True):
            assert q.idle_timeout == quick_timer(r.idle_timeout) >= QUICK_FLOOR
            assert q.scaled_from == r.idle_timeout
            assert f"(real {r.idle_timeout} s)" in path.describe()
        # The order of the hops' timers is the real one (equal stays equal).
        real_order = sorted(range(len(real.hops)), key=lambda i: (real.hops[i].idle_timeout, i))
        quick_order = sorted(range(len(path.hops)), key=lambda i: (path.hops[i].idle_timeout, i))
        assert real_order == quick_order, name
    assert quick_timer(240) == 45 and quick_timer(60) == QUICK_FLOOR


def test_unconfirmed_numbers_say_so() -> None:
    assert "[no public source]" in PATHS["aks-private"].describe()
    assert "[no public source]" not in PATHS["aks-public"].describe()


def test_overrides_and_their_errors() -> None:
    path = resolve_path("eks-public-quick", {"natgw": {"order_ms": 20}})
    assert path.hops[0].order_ms == 20 and path.hops[0].idle_timeout == 66
    with pytest.raises(PathError, match="no hop 'nat'"):
        resolve_path("eks-public", {"nat": {"order_ms": 20}})
    with pytest.raises(PathError, match="cannot override kind"):
        resolve_path("eks-public", {"natgw": {"kind": "lb"}})


MATRIX = """\
clients:
  - name: client-go
clusters:
  - name: aks-public
    path: aks-public-quick
  - name: race
    path: {preset: eks-public-quick, override: {natgw: {order_ms: 20}}}
  - name: custom
    path:
      - {name: natgw, kind: nat, idle_timeout: 60, mode: rst-inside-only}
      - {name: front, kind: front, front: http, idle_timeout: 45, mode: silent-drop}
  - name: nat-before-a-profile
    lb: {profile: azure-slb-quick}
    path: [{name: outbound, kind: nat, idle_timeout: 338, mode: rst-both-ways}]
  - name: single
    lb: {profile: azure-slb-quick}
scenarios:
  watch: {interval: idle+30}
"""


def test_a_matrix_takes_path_beside_or_instead_of_lb(tmp_path: Path) -> None:
    (tmp_path / "matrix.yaml").write_text(MATRIX)
    matrix = load_matrix(tmp_path / "matrix.yaml", make_clients(tmp_path))
    cells = {c.cluster: c for c in plan(matrix)}
    assert cells["aks-public"].path is not None and cells["aks-public"].path.name == "aks-public-quick"
    assert cells["aks-public"].profile.name == "aks-public-quick"
    assert cells["aks-public"].interval == 45 + 30  # the first hop to forget sizes idle+N
    assert cells["race"].path.hops[0].order_ms == 20
    custom = cells["custom"]
    assert custom.profile.front == "http" and custom.profile.mode == "silent-drop" and custom.interval == 75
    mixed = cells["nat-before-a-profile"].path
    assert [h.name for h in mixed.hops] == ["outbound", "lb"] and mixed.last.proxy == "tcp"
    assert mixed.last.idle_timeout == 45 and cells["nat-before-a-profile"].interval == 75
    assert cells["single"].path is None  # `lb:` alone: today's single LB, unchanged


def test_the_report_prints_the_chain_hop_by_hop_with_the_real_numbers() -> None:
    from runner.model import ProfileFacts

    path = PATHS["aks-public-quick"]
    text = ProfileFacts.from_profile(path.profile(), path=path.describe()).describe()
    assert text.startswith("aks-public-quick: rst-both-ways after 45 s idle")
    assert ("path: outbound (nat): rst-both-ways after 338 s (real 1800 s) → front (front tcp): rst-both-ways "
            "after 45 s (real 240 s) → kube-apiserver") in text


def test_every_result_of_a_path_cell_carries_its_chain(tmp_path: Path) -> None:
    """The cell's result and the run's profile list are both built by harness.profile_facts."""
    from runner.harness import profile_facts

    (tmp_path / "matrix.yaml").write_text(MATRIX)
    matrix = load_matrix(tmp_path / "matrix.yaml", make_clients(tmp_path))
    cells = {c.cluster: c for c in plan(matrix)}
    facts = profile_facts(cells["aks-public"])
    assert facts is not None and facts.path == PATHS["aks-public-quick"].describe()
    assert "path: outbound (nat)" in facts.describe()
    single = profile_facts(cells["single"])
    assert single is not None and single.path is None
