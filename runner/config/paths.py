"""Paths: a cluster's way to kube-apiserver as an ordered chain of hops (issue 17, docs/paths.md).

A watch from a pod crosses several boxes that keep their own idea of an idle flow; the first to
forget decides what the client sees. A hop has a kind, an idle timer and a behaviour at expiry:

* `nat`: SNAT (an outbound rule of an Azure Standard LB, a NAT gateway, a Private Link Service);
  every hop but the last is one, since the client dials the last hop's VIP.
* `lb`: DNAT to a VIP with nothing behind it but kube-apiserver (an NLB, a firewall's connection
  tracking in front of the API server's address): the chain's last hop, front `passthrough`.
* `front`: DNAT to a TCP-terminating proxy (the provider's front end, runner/embedded/front.py),
  which hides kube-apiserver's 3-minute keepalive from every hop before it: the last hop.

The last hop is today's LB profile (runner/config/profiles.py), so a single-LB cluster is a one-hop
chain. Named paths carry the numbers of each provider's public docs (docs/paths.md says which
source gives each number and marks what no public source confirms). The `-quick` variants scale
every timer of a chain by one rule (`quick_timer`), never below `QUICK_FLOOR`.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runner.config.profiles import (
    CLIENT_GO_KEEPALIVE,
    QUICK_FLOOR,
    QUICK_IDLE_TIMEOUT,
    Front,
    Mode,
    Profile,
)

HopKind = Literal["nat", "lb", "front"]
#: The longest hop timer a path may have: EC2 security-group connection tracking's 5 days.
MAX_HOP_SECONDS = 432_000
#: How far `order_ms` may move a timer: enough to order two equal timers, never to change one.
MAX_ORDER_MS = 999
#: The real timer that `QUICK_IDLE_TIMEOUT` stands for (the single profiles' rule: 240 s → 45 s),
#: so a chain's quick timers keep the ratio of the single profiles' and the order of its hops.
QUICK_SCALE_FROM = 240

HopName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=24)]


class Hop(BaseModel):
    """One box on the path that keeps its own idle timer (module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    #: The hop's name in reports and evidence file names (`hop-<name>-events.jsonl`).
    name: HopName
    kind: HopKind
    #: Whole seconds of idleness after which this hop forgets the flow.
    idle_timeout: Annotated[int, Field(gt=0, le=MAX_HOP_SECONDS)]
    #: What the hop does once it forgot the flow (runner/config/profiles.Profile.mode).
    mode: Mode
    #: The proxy behind a `front` hop (`tcp` or `http`); a `lb` hop's is `passthrough`, a `nat` hop has none.
    front: Front | None = None
    #: Milliseconds added to the timer, so that two equal timers fire in a chosen order: the kernel's
    #: conntrack counts whole seconds and would otherwise decide by its tick. The hop's agent then
    #: forgets the flow itself at the exact deadline (runner/embedded/lbagent.py, `--cut`).
    order_ms: Annotated[int, Field(ge=0, le=MAX_ORDER_MS)] = 0
    #: Where the timer and behaviour come from, in words.
    source: str = ""
    #: False when no public source confirms the number or the behaviour (docs/paths.md says what is missing).
    confirmed: bool = True
    #: The real timer this one was scaled from (`-quick` paths), for the report's real numbers.
    scaled_from: int | None = None

    @model_validator(mode="after")
    def _front_fits_kind(self) -> Hop:
        if self.kind == "front" and self.front not in (None, "tcp", "http"):
            raise ValueError(f"a front hop runs a proxy: front tcp or http, not {self.front}")
        if self.kind != "front" and self.front is not None:
            raise ValueError(f"a {self.kind} hop has no front (only kind front does): remove `front`")
        return self

    @property
    def proxy(self) -> Front:
        """What answers the client behind this hop, were it the last."""
        if self.kind == "front":
            return self.front or "tcp"
        return "passthrough"

    def describe(self) -> str:
        timer = f"{self.idle_timeout} s" + (f" (real {self.scaled_from} s)" if self.scaled_from else "")
        order = f" +{self.order_ms} ms" if self.order_ms else ""
        kind = f"front {self.proxy}" if self.kind == "front" else self.kind
        mark = "" if self.confirmed else " [no public source]"
        return f"{self.name} ({kind}): {self.mode} after {timer}{order}{mark}"


class PathError(ValueError):
    """A chain that cannot run as given; `fix` says what to write instead."""

    def __init__(self, what: str, fix: str):
        super().__init__(what)
        self.what = what
        self.fix = fix


@dataclasses.dataclass(frozen=True)
class NetPath:
    """An ordered chain of hops, pod side first."""

    name: str
    hops: tuple[Hop, ...]
    note: str = ""
    scaled_from: str | None = None

    def __post_init__(self) -> None:
        check_chain(self.hops)

    @property
    def last(self) -> Hop:
        return self.hops[-1]

    @property
    def before(self) -> tuple[Hop, ...]:
        """The `nat` hops between the pods and the last hop."""
        return self.hops[:-1]

    def profile(self) -> Profile:
        """The last hop as today's LB profile (runner/embedded/lb.py runs it)."""
        last = self.last
        return Profile(name=self.name, mode=last.mode, idle_timeout=last.idle_timeout, front=last.proxy,
                       source=last.source or self.note, scaled_from=self.scaled_from)

    @property
    def first_expiry(self) -> int | None:
        """The shortest timer of a hop that acts: when the path first forgets an idle flow."""
        timers = [h.idle_timeout for h in self.hops if h.mode != "none"]
        return min(timers) if timers else None

    def describe(self) -> str:
        return " → ".join(h.describe() for h in self.hops) + " → kube-apiserver"


def check_chain(hops: tuple[Hop, ...]) -> None:
    """Raise PathError unless the hops form a chain the emulator can build."""
    if not hops:
        raise PathError("a path needs at least one hop", "list its hops, pod side first")
    names = [h.name for h in hops]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PathError(f"hop names repeat: {', '.join(dup)}", "give each hop its own name")
    for h in hops[:-1]:
        if h.kind != "nat":
            raise PathError(f"hop {h.name} is a {h.kind} hop before the last one",
                            "only nat hops may come before the last hop (the client dials the last hop's VIP); "
                            "put the lb or front hop last")
    if hops[-1].kind == "nat":
        raise PathError(f"the last hop {hops[-1].name} is a nat hop",
                        "end the path with an lb hop (DNAT straight to kube-apiserver) or a front hop")


def quick_timer(seconds: int) -> int:
    """A real timer scaled for quick runs: the single profiles' ratio (240 s → 45 s), never below
    QUICK_FLOOR (client-go's keepalive would keep the flow busy)."""
    return max(QUICK_FLOOR, round(seconds * QUICK_IDLE_TIMEOUT / QUICK_SCALE_FROM))


def quick(path: NetPath) -> NetPath:
    hops = tuple(h.model_copy(update={"idle_timeout": quick_timer(h.idle_timeout), "scaled_from": h.idle_timeout})
                 for h in path.hops)
    return NetPath(f"{path.name}-quick", hops, note=path.note + f"; timers scaled by {QUICK_IDLE_TIMEOUT}/"
                f"{QUICK_SCALE_FROM}, at least {QUICK_FLOOR} s (client-go keepalive {CLIENT_GO_KEEPALIVE} s)",
                scaled_from=path.name)


_SLB_RESET = "Azure Load Balancer doc 'TCP reset and idle timeout'"
_AKS_OUTBOUND = ("AKS API reference (loadBalancerProfile.idleTimeoutInMinutes: outbound rule idle timeout, 30 min "
                 "default, 4 to 120); AKS changelog 2020-03-23 (TCP reset on the outbound rule)")
_AKS_FRONT = ("Azure/AKS changelog 2020-11-09 (TCP reset on for the control plane at 4 min); Azure/AKS#1052, "
              "#1755, #1877, #2209")
_AZ_NATGW = "Azure NAT gateway resource doc (TCP idle timeout 4 min default, 4 to 120)"
_PLS = ("Azure Private Link Service overview, limitations (about 5 min idle); azure-docs#94724 (whether it "
        "resets is disputed: RST both ways per support, 'behaviour of LB' per the docs team)")
_AWS_NATGW = ("AWS VPC NAT gateway docs (350 s idle timeout; 'returns an RST packet to any resources behind the "
              "NAT gateway that attempt to continue the connection', no FIN)")
_NLB = "AWS Network Load Balancer docs, 'Connection idle timeout' (350 s; 60 to 6000 s since 2024)"
_SG = "Amazon EC2 ConnectionTrackingConfiguration docs (established TCP 432000 s; 350 s on the newest Nitro types)"
_GCP_FW = "GCP VPC firewall connection tracking, GCE troubleshooting docs (established TCP 10 min, silent)"
_CLOUD_NAT = "Cloud NAT docs (established TCP idle timeout 1200 s, configurable)"


def hop_of_profile(profile: Profile, name: str = "lb") -> Hop:
    """A matrix's `lb:` profile as the last hop of a path (`path:` then lists the nat hops before it)."""
    kind: HopKind = "lb" if profile.front == "passthrough" else "front"
    return Hop(name=name, kind=kind, idle_timeout=profile.idle_timeout, mode=profile.mode,
               front=None if kind == "lb" else profile.front, source=profile.source)


def _hop(name: str, kind: HopKind, seconds: int, mode: Mode, source: str, *, front: Front | None = None,
         confirmed: bool = True) -> Hop:
    return Hop(name=name, kind=kind, idle_timeout=seconds, mode=mode, front=front, source=source, confirmed=confirmed)


_AKS_FRONT_TODAY = _hop("front", "front", 240, "rst-both-ways", _AKS_FRONT, front="tcp")

_REAL: tuple[NetPath, ...] = (
    NetPath("aks-public", (_hop("outbound", "nat", 1800, "rst-both-ways", _AKS_OUTBOUND), _AKS_FRONT_TODAY),
            note="AKS, public API server, egress through the cluster LB's outbound rule"),
    # Egress through a NAT gateway: its timer equals the front's, a race (order_ms sets the order).
    NetPath("aks-public-natgw", (_hop("natgw", "nat", 240, "rst-on-next-packet", _AZ_NATGW), _AKS_FRONT_TODAY),
            note="AKS, public API server, egress through a NAT gateway"),
    NetPath("aks-private", (_hop("pls", "nat", 300, "rst-both-ways", _PLS, confirmed=False),
                            _hop("front", "front", 240, "rst-both-ways", _AKS_FRONT, front="tcp")),
            note="AKS private cluster: private endpoint / Private Link Service, then the internal LB front; "
                 "the PLS resetting both ways is support's word"),
    NetPath("aks-private-pls-silent", (_hop("pls", "nat", 300, "silent-drop", _PLS, confirmed=False),
                                       _hop("front", "front", 240, "rst-both-ways", _AKS_FRONT, front="tcp")),
            note="aks-private with the other reading of the disputed PLS behaviour (silent)"),
    NetPath("eks", (_hop("sg", "lb", 432_000, "silent-drop", _SG),),
            note="EKS in-cluster path to the cross-account ENIs; kube-apiserver's own keepalive reaches the client"),
    NetPath("eks-nitro", (_hop("sg", "lb", 350, "silent-drop", _SG),),
            note="eks on the newest Nitro instance types (350 s security-group tracking)"),
    NetPath("eks-public", (_hop("natgw", "nat", 350, "rst-inside-only", _AWS_NATGW),
                           _hop("nlb", "lb", 350, "rst-on-next-packet", _NLB)),
            note="EKS public endpoint from a private subnet: NAT gateway, then the endpoint's NLB (equal timers)"),
    NetPath("gke", (_hop("fw", "lb", 600, "silent-drop", _GCP_FW),), note="GKE: VPC firewall connection tracking"),
    NetPath("gke-cloudnat", (_hop("cloudnat", "nat", 1200, "silent-drop", _CLOUD_NAT, confirmed=False),
                             _hop("fw", "lb", 600, "silent-drop", _GCP_FW)),
            note="GKE with Cloud NAT before the API server's address (Cloud NAT's silence: secondary source only)"),
    # The seed's columns (October 2020, AKS 1.17): the front silent before the 2020-11-09 release; an
    # `http` front so that, as the seed's capture shows, no server close reaches an idle pooled connection.
    NetPath("aks-public-2020", (_hop("outbound", "nat", 1800, "rst-both-ways", _AKS_OUTBOUND, confirmed=False),
                                _hop("front", "front", 240, "silent-drop", _AKS_FRONT + "; " + _SLB_RESET,
                                     front="http")),
            note="the seed's public column, October 2020 (the outbound rule's 30 min default then: not confirmed)"),
    NetPath("aks-private-2020", (_hop("pls", "nat", 300, "silent-drop", _PLS, confirmed=False),
                                 _hop("front", "front", 240, "silent-drop", _AKS_FRONT + "; " + _SLB_RESET,
                                      front="http")),
            note="the seed's private column, October 2020"),
)

#: Every named path: the real ones and their `-quick` variants.
PATHS: dict[str, NetPath] = {p.name: p for p in (*_REAL, *(quick(p) for p in _REAL))}

#: Hop fields a matrix may override in a named path (`path: {preset: ..., override: {HOP: {...}}}`).
HOP_OVERRIDABLE = ("idle_timeout", "mode", "front", "order_ms")


def resolve_path(name: str, overrides: dict[str, dict[str, object]] | None = None) -> NetPath:
    """The named path with a matrix cluster's per-hop overrides; PathError names what is wrong."""
    base = PATHS.get(name)
    if base is None:
        raise PathError(f"unknown path {name!r}", "use one of: " + ", ".join(PATHS))
    hops = {h.name: h for h in base.hops}
    for hop_name, changes in (overrides or {}).items():
        if hop_name not in hops:
            raise PathError(f"path {name} has no hop {hop_name!r}", "its hops: " + ", ".join(hops))
        bad = sorted(set(changes) - set(HOP_OVERRIDABLE))
        if bad:
            raise PathError(f"cannot override {', '.join(bad)} of hop {hop_name}",
                            "override only: " + ", ".join(HOP_OVERRIDABLE))
        new = {k: v for k, v in changes.items() if v is not None}
        if base.scaled_from is not None and "idle_timeout" in new and isinstance(new["idle_timeout"], int) \
                and new["idle_timeout"] < QUICK_FLOOR:
            raise PathError(f"hop {hop_name} of scaled path {name}: idle_timeout {new['idle_timeout']} s is below "
                            f"the {QUICK_FLOOR} s floor (client-go's {CLIENT_GO_KEEPALIVE} s keepalive would hide it)",
                            f"use idle_timeout >= {QUICK_FLOOR}")
        try:
            hops[hop_name] = Hop.model_validate({**hops[hop_name].model_dump(), **new})
        except ValueError as exc:
            raise PathError(f"hop {hop_name}: {_first_error(exc)}", "see runner/config/paths.py, class Hop") from None
    return NetPath(name, tuple(hops[h.name] for h in base.hops), note=base.note, scaled_from=base.scaled_from)


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(str(x) for x in first['loc'])}: {first['msg']}" if first["loc"] else first["msg"]
    return str(exc)
