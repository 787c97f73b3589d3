"""The nftables text of chain hops (runner/embedded/hop.py, lb.py): what each expiry behaviour asks of the kernel."""

from __future__ import annotations

from runner.config.paths import Hop
from runner.config.profiles import PROFILES
from runner.embedded.hop import agent_cuts, nat_hop_ruleset
from runner.embedded.lb import expired_chain, nft_ruleset


def _hop(mode: str, order_ms: int = 0) -> Hop:
    return Hop(name="natgw", kind="nat", idle_timeout=350, mode=mode, order_ms=order_ms)  # type: ignore[arg-type]


def test_rst_inside_only_rejects_only_what_comes_from_the_client_side() -> None:
    text = expired_chain("rst-inside-only", "br0")
    assert 'ct state invalid iifname "br0" counter reject with tcp reset' in text
    assert "ct state invalid counter drop" in text
    assert text.index('iifname "br0"') < text.index("ct state invalid counter drop")  # reject first


def test_a_nat_hop_masquerades_tracks_and_leaves_its_own_rsts_untracked() -> None:
    text = nat_hop_ruleset(table="t", hop=_hop("rst-inside-only"), vip="198.18.2.8", inside="br0",
                           snat="198.18.2.17")
    assert 'oifname "out0" snat to 198.18.2.17' in text
    assert "established: 350," in text  # the kernel's own timer
    assert "tcp flags & rst == rst notrack" in text


def test_an_ordered_timer_is_the_agents_and_the_kernel_waits_longer() -> None:
    hop = _hop("silent-drop", order_ms=20)
    assert agent_cuts(hop)
    text = nat_hop_ruleset(table="t", hop=hop, vip="198.18.2.8", inside="br0", snat="198.18.2.17")
    assert "established: 410," in text  # 350 + the margin: the agent's cut comes first
    assert not agent_cuts(_hop("silent-drop")) and not agent_cuts(_hop("rst-both-ways", order_ms=20))


def test_single_lb_rules_are_unchanged_by_the_inside_interface() -> None:
    for profile in PROFILES.values():
        base = nft_ruleset(table="t", profile=profile, vip="v", api_target="a", timer="m")
        assert base == nft_ruleset(table="t", profile=profile, vip="v", api_target="a", timer="m", inside_iface="in0")
