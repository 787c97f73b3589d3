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
        front = f", front {self.proxy}" if self.kind == "front" else ""
        mark = "" if self.confirmed else " [no public source]"
        return f"{self.name} ({self.kind}{front}): {self.mode} after {timer}{order}{mark}"


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
