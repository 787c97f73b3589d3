"""LB profiles: the numbers and behaviours docs/facts.md gives, their quick variants, and overrides."""

from __future__ import annotations

import dataclasses

import pytest

from runner.config.profiles import (
    CLIENT_GO_KEEPALIVE,
    PROFILES,
    QUICK_FLOOR,
    Profile,
    ProfileError,
    resolve_profile,
)

REAL = ("azure-slb", "azure-slb-no-reset", "aws-nlb", "gcp", "direct")


@pytest.mark.parametrize(
    ("name", "mode", "idle_timeout", "front"),
    [
        ("azure-slb", "rst-both-ways", 240, "tcp"),
        ("azure-slb-no-reset", "silent-drop", 240, "tcp"),
        ("aws-nlb", "rst-on-next-packet", 350, "tcp"),
        ("gcp", "silent-drop", 600, "tcp"),
    ],
)
def test_real_profiles_match_the_facts_table(name: str, mode: str, idle_timeout: int, front: str) -> None:
    profile = resolve_profile(name)
    assert (profile.name, profile.mode, profile.idle_timeout, profile.front) == (name, mode, idle_timeout, front)
    assert profile.scaled_from is None and profile.overrides == ()


def test_direct_is_the_control() -> None:
    direct = resolve_profile("direct")
    assert (direct.mode, direct.front) == ("none", "passthrough")


def test_every_profile_cites_a_source() -> None:
    for profile in PROFILES.values():
        assert len(profile.source) > 20, profile.name


@pytest.mark.parametrize("real", REAL)
def test_quick_variants_keep_the_behaviour_at_45_seconds(real: str) -> None:
    base, quick = PROFILES[real], PROFILES[f"{real}-quick"]
    assert quick.idle_timeout == 45 and quick.scaled_from == real
    assert (quick.mode, quick.front) == (base.mode, base.front)
    assert quick.idle_timeout >= QUICK_FLOOR > CLIENT_GO_KEEPALIVE


def test_scaled_profiles_may_not_go_below_the_floor() -> None:
    with pytest.raises(ProfileError) as info:
        resolve_profile("aws-nlb-quick", {"idle_timeout": CLIENT_GO_KEEPALIVE})
    assert "floor" in info.value.what and str(QUICK_FLOOR) in info.value.fix
    assert resolve_profile("aws-nlb-quick", {"idle_timeout": QUICK_FLOOR}).idle_timeout == QUICK_FLOOR
    # A real profile may be set lower on purpose (e.g. to see client-go's keepalive win).
    assert resolve_profile("aws-nlb", {"idle_timeout": 20}).idle_timeout == 20


def test_overrides_are_applied_and_recorded() -> None:
    profile = resolve_profile("gcp", {"idle_timeout": 360, "mode": None, "front": "http"})
    assert (profile.name, profile.idle_timeout, profile.mode, profile.front) == ("gcp", 360, "silent-drop", "http")
    assert profile.overrides == (("idle_timeout", "360"), ("front", "http"))
    assert "overridden: idle_timeout=360, front=http" in profile.describe()
    assert PROFILES["gcp"].idle_timeout == 600  # the table itself is untouched


@pytest.mark.parametrize(("old", "new"), [("tcp-proxy", "tcp"), ("none", "passthrough")])
def test_old_front_names_resolve_to_todays(old: str, new: str) -> None:
    """Matrices written before the fronts got their names keep loading, and say today's name."""
    profile = resolve_profile("azure-slb-quick", {"front": old})
    assert profile.front == new and profile.overrides == (("front", new),)
    assert f"front={new}" in profile.describe()


def test_an_unknown_front_names_every_kind() -> None:
    with pytest.raises(ProfileError) as info:
        Profile("x", "silent-drop", 45, "tcp-proxy", "test")  # type: ignore[arg-type]  # aliases are the matrix's
    assert all(kind in info.value.fix for kind in ("tcp", "passthrough", "http"))


@pytest.mark.parametrize(
    ("name", "overrides", "text"),
    [
        ("azure-slbb", None, "unknown LB profile"),
        ("azure-slb", {"colour": "blue"}, "cannot override colour"),
        ("azure-slb", {"mode": "rst-sometimes"}, "unknown LB mode"),
        ("azure-slb", {"front": "haproxy"}, "unknown front"),
        ("azure-slb", {"idle_timeout": 0}, "must be > 0"),
        ("azure-slb", {"idle_timeout": 2.5}, "whole seconds"),
        ("azure-slb", {"idle_timeout": True}, "whole seconds"),
    ],
)
def test_bad_names_and_overrides(name: str, overrides: dict[str, object] | None, text: str) -> None:
    with pytest.raises(ProfileError) as info:
        resolve_profile(name, overrides)
    assert text in info.value.what and info.value.fix


def test_profiles_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        PROFILES["azure-slb"].idle_timeout = 1  # type: ignore[misc]


def test_describe() -> None:
    assert PROFILES["azure-slb"].describe() == "rst-both-ways after 240 s, front tcp"
    assert PROFILES["direct-quick"].describe() == "no LB (idle+N uses 45 s), front passthrough"
    assert Profile("x", "silent-drop", 31, "passthrough", "test", scaled_from="y").idle_timeout == 31
