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
#: What sits between the LB and kube-apiserver, and so what the client hears of the server's own
#: closes (docs/facts.md, "Fronts"): `tcp` a TCP proxy that passes them on, `passthrough` nothing
#: (DNAT straight to kube-apiserver), `http` an L7 front that ends TLS and HTTP and keeps them.
Front = Literal["tcp", "passthrough", "http"]

MODES: tuple[str, ...] = get_args(Mode)
FRONTS: tuple[str, ...] = get_args(Front)
#: The fronts' names before issue 17, still accepted in matrices (results written then keep them).
FRONT_ALIASES: dict[str, str] = {"tcp-proxy": "tcp", "none": "passthrough"}

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


def canonical_front(value: object) -> object:
    """A front's name with the old aliases mapped to today's (`tcp-proxy` → `tcp`, `none` → `passthrough`);
    anything else is returned as it is, for the caller's own check to refuse."""
    return FRONT_ALIASES.get(value, value) if isinstance(value, str) else value


def front_fix() -> str:
    """What to write instead of an unknown front."""
    return ("use one of: tcp (a TCP proxy: the server's closes reach the client), passthrough (DNAT only), "
            "http (ends TLS and HTTP, keeps its own connections); tcp-proxy and none are old names of tcp "
            "and passthrough")


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
    #: What answers the client behind the LB (docs/facts.md, "Fronts"). `tcp`: a TCP proxy, as a
    #: provider's TCP front end is; kube-apiserver's 3-minute keepalive probes end at it, its closes
    #: (the 90 s idle close of a pooled connection) are passed on. `passthrough`: DNAT straight to
    #: kube-apiserver; its probes and closes both reach the client. `http`: an L7 front that ends
    #: TLS and HTTP with its own client-side connections (never closed for idleness) and its own pool
    #: toward kube-apiserver, so the server's idle close stays on the front's backend side.
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
            raise ProfileError(f"unknown front {self.front!r}", front_fix())
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
        """Short human text for tables: `rst-both-ways after 240 s, front tcp`."""
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
    Profile("azure-slb", "rst-both-ways", 240, "tcp", _AZURE_DOC),
    # Azure Standard LB with TCP reset off: the flow is forgotten and later packets vanish.
    Profile("azure-slb-no-reset", "silent-drop", 240, "tcp", _AZURE_DOC + "; TCP reset off"),
    # AWS NLB: 350 s; the next packet from either side is answered with an RST, the other side
    # hears nothing.
    Profile(
        "aws-nlb",
        "rst-on-next-packet",
        350,
        "tcp",
        "AWS Network Load Balancer docs, 'Connection idle timeout' (350 s; configurable 60-6000 s since 2024)",
    ),
    # GCP VPC connection tracking / Cloud NAT: established TCP forgotten after 10 min, silently.
    Profile(
        "gcp",
        "silent-drop",
        600,
        "tcp",
        "GCP VPC firewall connection tracking and Cloud NAT docs (10 min for established TCP)",
    ),
    # No LB at all: the control column. 240 s only sizes idle+N waits (see Profile.idle_timeout).
    Profile("direct", "none", 240, "passthrough", "control: watchers dial kube-apiserver directly, no LB"),
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
    if "front" in changes:
        changes["front"] = canonical_front(changes["front"])
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
