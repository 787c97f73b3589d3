"""Load-balancer profiles: what a cloud LB does to a TCP flow that has been idle too long.

Each profile is a name for numbers and behaviour taken from the provider's public docs (the table
in docs/facts.md); the LB emulator reproduces a profile, and the report prints which one a
cell ran behind. The `-quick` variants keep the behaviour but scale the timeout down for short
runs; they may not go below `QUICK_FLOOR`, because client-go's 30 s TCP keepalive would then keep
the flow busy and the scaled run would prove something different from the real one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

Mode = Literal["none", "silent-drop", "rst-on-next-packet", "rst-both-ways"]
Front = Literal["tcp-proxy", "none"]

MODES: tuple[str, ...] = get_args(Mode)
FRONTS: tuple[str, ...] = get_args(Front)

#: client-go dials with a 30 s TCP keepalive (`net.Dialer{KeepAlive: 30 * time.Second}` in
#: k8s.io/client-go/transport/cache.go); a timeout at or below it never fires for client-go, so
#: scaled profiles stay above it.
CLIENT_GO_KEEPALIVE = 30
QUICK_FLOOR = CLIENT_GO_KEEPALIVE + 1

#: Idle timeout of the `-quick` variants: short enough for a few-minute run, above the floor with
#: room for timer jitter.
QUICK_IDLE_TIMEOUT = 45

#: Keys a matrix cluster may override on top of a named profile.
OVERRIDABLE = ("idle_timeout", "mode", "front")


class ProfileError(ValueError):
    """A profile name or override that cannot be used; `fix` says what to write instead."""

    def __init__(self, what: str, fix: str):
        super().__init__(what)
        self.what = what
        self.fix = fix


@dataclass(frozen=True)
class Profile:
    """One LB behaviour, as the emulator reproduces it."""

    #: Profile name as written in matrix.yaml (`azure-slb`, `aws-nlb-quick`, ...).
    name: str
    #: What happens to a flow idle for `idle_timeout` seconds: nothing (`none`), later packets are
    #: dropped without a word (`silent-drop`), the next packet from either side gets an RST and the
    #: other side is not told (`rst-on-next-packet`), or both ends get an RST at the timeout
    #: (`rst-both-ways`).
    mode: Mode
    #: Whole seconds of idleness after which the LB forgets the flow. For mode `none` no LB acts on
    #: it; it only sets how long `idle+N` scenarios wait, so the control cell idles as long as the
    #: cells it is compared with.
    idle_timeout: int
    #: `tcp-proxy`: a TCP-terminating front sits in the API server's path, as the provider's front
    #: end does, so kube-apiserver's own 3-minute server-side keepalive probes (docs/facts.md) end at the
    #: front and do not keep the client's flow alive. `none`: watchers reach kube-apiserver directly.
    front: Front
    #: Where the numbers and the behaviour come from.
    source: str
    #: Name of the real profile this one scales down, or None for a real profile.
    scaled_from: str | None = None
    #: `(key, value)` pairs a matrix cluster changed, shown in the report next to the profile name.
    overrides: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ProfileError(f"unknown LB mode {self.mode!r}", "use one of: " + ", ".join(MODES))
        if self.front not in FRONTS:
            raise ProfileError(f"unknown front {self.front!r}", "use one of: " + ", ".join(FRONTS))
        if isinstance(self.idle_timeout, bool) or not isinstance(self.idle_timeout, int):
            raise ProfileError(f"idle_timeout must be whole seconds, got {self.idle_timeout!r}", "write e.g. 240")
        if self.idle_timeout <= 0:
            raise ProfileError(
                f"idle_timeout must be > 0 s, got {self.idle_timeout}", "write a positive number of seconds"
            )
        if self.scaled_from is not None and self.mode != "none" and self.idle_timeout < QUICK_FLOOR:
            raise ProfileError(
                f"scaled profile {self.name} has idle_timeout {self.idle_timeout} s, below the "
                f"{QUICK_FLOOR} s floor (client-go's {CLIENT_GO_KEEPALIVE} s keepalive would hide the drop)",
                f"use idle_timeout >= {QUICK_FLOOR}",
            )

    def describe(self) -> str:
        """Short human text for tables: `rst-both-ways after 240 s, front tcp-proxy`."""
        if self.mode == "none":
            text = f"no LB (idle+N uses {self.idle_timeout} s), front {self.front}"
        else:
            text = f"{self.mode} after {self.idle_timeout} s, front {self.front}"
        if self.overrides:
            text += " [overridden: " + ", ".join(f"{k}={v}" for k, v in self.overrides) + "]"
        return text


_AZURE_DOC = (
    "Azure Load Balancer 'TCP reset and idle timeout' doc (4 min default); Azure/AKS#2209 "
    "(RST at 4 min on the AKS control plane is by design, since Nov 2020)"
)

_REAL: tuple[Profile, ...] = (
    # Azure Standard LB with TCP reset on, in front of every AKS API server: RST to both ends at 4 min.
    Profile("azure-slb", "rst-both-ways", 240, "tcp-proxy", _AZURE_DOC),
    # Azure Standard LB with TCP reset off: the flow is forgotten and later packets vanish.
    Profile("azure-slb-no-reset", "silent-drop", 240, "tcp-proxy", _AZURE_DOC + "; TCP reset off"),
    # AWS NLB: 350 s; the next packet from either side is answered with an RST, the other side
    # hears nothing.
    Profile(
        "aws-nlb",
        "rst-on-next-packet",
        350,
        "tcp-proxy",
        "AWS Network Load Balancer docs, 'Connection idle timeout' (350 s; configurable 60-6000 s since 2024)",
    ),
    # GCP VPC connection tracking / Cloud NAT: established TCP forgotten after 10 min, silently.
    Profile(
        "gcp",
        "silent-drop",
        600,
        "tcp-proxy",
        "GCP VPC firewall connection tracking and Cloud NAT docs (10 min for established TCP)",
    ),
    # No LB at all: the control column. 240 s only sizes idle+N waits (see Profile.idle_timeout).
    Profile("direct", "none", 240, "none", "control: watchers dial kube-apiserver directly, no LB"),
)


def _quick(real: Profile) -> Profile:
    return Profile(
        name=f"{real.name}-quick",
        mode=real.mode,
        idle_timeout=QUICK_IDLE_TIMEOUT,
        front=real.front,
        source=f"{real.source}; timeout scaled to {QUICK_IDLE_TIMEOUT} s for quick runs",
        scaled_from=real.name,
    )


#: Every named profile: the real ones and their `-quick` variants.
PROFILES: dict[str, Profile] = {p.name: p for p in (*_REAL, *(_quick(p) for p in _REAL))}


def resolve_profile(name: str, overrides: Mapping[str, Any] | None = None) -> Profile:
    """The named profile with a matrix cluster's overrides applied.

    Raises ProfileError for an unknown name, an unknown override key or a value the profile
    cannot take (including a scaled profile pushed under `QUICK_FLOOR`).
    """
    base = PROFILES.get(name)
    if base is None:
        raise ProfileError(f"unknown LB profile {name!r}", "use one of: " + ", ".join(PROFILES))
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(changes) - set(OVERRIDABLE))
    if unknown:
        raise ProfileError(
            f"cannot override {', '.join(unknown)} of a profile", "override only: " + ", ".join(OVERRIDABLE)
        )
    if not changes:
        return base
    return dataclasses.replace(
        base, **changes, overrides=tuple((k, str(changes[k])) for k in OVERRIDABLE if k in changes)
    )
