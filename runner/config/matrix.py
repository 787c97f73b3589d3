"""matrix.yaml: which clients run against which clusters in which scenarios, strictly checked.

The file is decoded strictly (unknown keys, wrong types and impossible values are errors) and every
problem is reported at once, each as one `matrix.yaml:LINE: field: what; fix: how` line, the way
kind decodes its config. Checks that span entries (duplicate names, client folders, a fixed
interval that would not outlast an LB's idle timeout) run on whatever parts did validate, so one
typo does not hide the rest.

Why one long module: it is the whole schema of matrix.yaml, every field with its documentation and
its located checks, so one file answers "what may a matrix say".
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    PrivateAttr,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from runner.config.descriptor import DESCRIPTOR_FILE, Descriptor, load_descriptor
from runner.config.paths import (
    MAX_HOP_SECONDS,
    MAX_ORDER_MS,
    PATHS,
    Hop,
    NetPath,
    PathError,
    hop_of_profile,
    resolve_path,
)
from runner.config.profiles import (
    FRONTS,
    PROFILES,
    Front,
    Mode,
    Profile,
    ProfileError,
    canonical_front,
    front_fix,
    resolve_profile,
)
from runner.config.yamlmarks import (
    MarkedYaml,
    custom_error,
    format_loc,
    load_marked,
    located_problems,
    short_repr,
    unique_in_file_order,
)
from runner.contract import IDLE_REQUEST, WATCH
from runner.credentials.rbac import TOKEN_MARGIN, TOKEN_MAX_SECONDS
from runner.errors import MatrixError

_HELP = "the comments in matrix.yaml"

#: The longest wait anything in the matrix may ask for; anything longer is a typo (minutes for seconds).
MAX_SECONDS = 86_400

#: Scenario names, in the order cells are planned; the watcher contract (clients/README.md) defines them.

#: Environment variables the harness sets for every watcher (clients/README.md); a variant setting
#: one of them would silently change the scenario under the watcher's feet.
HARNESS_ENV = frozenset(
    {
        "WATCHDROP_KUBECONFIG",
        "WATCHDROP_NAMESPACE",
        "WATCHDROP_SCENARIO",
        "WATCHDROP_INTERVAL",
        "WATCHDROP_DETECTION_TIMEOUT",
        "WATCHDROP_ROUNDS",
        "WATCHDROP_IDLE",
    }
)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Name = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        max_length=63,
        json_schema_extra={"fix": "use lowercase letters, digits and '-', starting with a letter or digit"},
    ),
]
Seconds = Annotated[
    int,
    Field(strict=True, gt=0, le=MAX_SECONDS, json_schema_extra={"fix": "write whole seconds, e.g. 10"}),
]
Rounds = Annotated[int, Field(strict=True, ge=1, le=100, json_schema_extra={"fix": "write a count, e.g. 2"})]


def _env_name(name: str) -> str:
    if not _ENV_NAME.match(name):
        raise custom_error(
            f"{name!r} is not an environment variable name", "use letters, digits and '_', e.g. WATCHDROP_STYLE"
        )
    return name


def _watcher_env_name(name: str) -> str:
    _env_name(name)
    if name in HARNESS_ENV:
        raise custom_error(
            f"{name} is set by the harness for every cell", "remove it; set it through `scenarios:` instead"
        )
    return name


EnvName = Annotated[str, AfterValidator(_env_name)]


def _cidr(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text.strip(), strict=True))
    except ValueError as exc:
        raise custom_error(f"{text!r} is not a CIDR: {exc}", "write a network, e.g. 10.0.0.0/8 or 203.0.113.7/32") \
            from None


Cidr = Annotated[str, AfterValidator(_cidr)]
WatcherEnvName = Annotated[str, AfterValidator(_watcher_env_name)]


@dataclass(frozen=True)
class Timing:
    """A scenario wait: fixed whole seconds, or `idle+N` (the cell's LB idle timeout plus N s)."""

    seconds: int | None = None
    plus: int | None = None

    def resolve(self, idle_timeout: int | None) -> int | None:
        """Seconds for a cell whose LB forgets flows after `idle_timeout` (None when unknown)."""
        if self.seconds is not None:
            return self.seconds
        if idle_timeout is None or self.plus is None:
            return None
        return idle_timeout + self.plus

    def __str__(self) -> str:
        return f"idle+{self.plus}" if self.seconds is None else str(self.seconds)


_IDLE_PLUS = re.compile(r"^\s*idle\s*\+\s*([0-9]+)\s*$")


def _parse_timing(value: Any) -> Timing:
    fix = "write idle+30 (the cluster's LB idle timeout + 30 s) or whole seconds, e.g. 300"
    if isinstance(value, Timing):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 < value <= MAX_SECONDS:
            raise custom_error(f"must be > 0 and <= {MAX_SECONDS} s, got {value}", fix)
        return Timing(seconds=value)
    if isinstance(value, str):
        match = _IDLE_PLUS.match(value)
        if match:
            plus = int(match.group(1)[:6])  # bounded: the digits may be a typo'd wall of numbers
            if not 0 < plus <= MAX_SECONDS:
                raise custom_error(
                    f"{value.strip()} must add 1 to {MAX_SECONDS} s to the idle timeout",
                    "write e.g. idle+30: at idle+0 the flow is cut just as the scenario resumes",
                )
            return Timing(plus=plus)
    raise custom_error(f"expected whole seconds or idle+N, got {short_repr(value)}", fix)


TimingField = Annotated[Timing, PlainValidator(_parse_timing)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClientEntry(_Strict):
    """One column: a client folder plus the settings of this variant."""

    name: Name = Field(description="the column key, unique, e.g. client-go-watch")
    folder: Name | None = Field(default=None, description="folder under clients/ (default: the name)")
    env: dict[WatcherEnvName, str] = Field(
        default_factory=dict, description="extra environment for the watcher, e.g. {WATCHDROP_STYLE: watch}"
    )
    build_env: dict[EnvName, str] = Field(default_factory=dict, description="environment for the build")
    note: str | None = Field(default=None, description="shown in the report")

    @property
    def folder_name(self) -> str:
        return self.folder or self.name


class LbSpec(_Strict):
    """A named LB profile plus overrides."""

    profile: str = Field(description="an LB profile name, e.g. azure-slb")
    idle_timeout: Seconds | None = Field(default=None, description="override of the profile's idle timeout")
    mode: Mode | None = Field(default=None, description="override of the profile's mode")
    front: Front | None = Field(
        default=None, description="override of the profile's front: tcp, passthrough or http (docs/facts.md)"
    )

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, name: str) -> str:
        if name not in PROFILES:
            close = difflib.get_close_matches(name, list(PROFILES), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise custom_error(f"unknown LB profile {name!r}", hint + "known: " + ", ".join(PROFILES))
        return name

    @field_validator("front", mode="before")
    @classmethod
    def _known_front(cls, value: object) -> object:
        # The old names still load, as today's (a matrix written before issue 17 means the same front).
        value = canonical_front(value)
        if value is not None and value not in FRONTS:
            raise custom_error(f"unknown front {short_repr(value)}", front_fix())
        return value

    @model_validator(mode="after")
    def _overrides_fit(self) -> LbSpec:
        try:
            self.resolve()
        except ProfileError as exc:
            raise custom_error(exc.what, exc.fix) from None
        return self

    def resolve(self) -> Profile:
        return resolve_profile(
            self.profile, {"idle_timeout": self.idle_timeout, "mode": self.mode, "front": self.front}
        )


class HopOverride(_Strict):
    """Changes to one hop of a named path."""

    idle_timeout: Annotated[int, Field(strict=True, gt=0, le=MAX_HOP_SECONDS)] | None = Field(
        default=None, description="the hop's idle timer in whole seconds")
    mode: Mode | None = Field(default=None, description="the hop's behaviour at expiry")
    front: Front | None = Field(default=None, description="a front hop's proxy: tcp or http")
    order_ms: Annotated[int, Field(strict=True, ge=0, le=MAX_ORDER_MS)] | None = Field(
        default=None, description="milliseconds added to the timer, to order two equal timers")


class PathSpec(_Strict):
    """A cluster's chain of hops (runner/config/paths.py): `path: aks-public`, `path: {preset: NAME,
    override: {HOP: {...}}}`, or `path: [ {name, kind, idle_timeout, mode, ...}, ... ]`, pod side first."""

    preset: str | None = Field(default=None, description="a named path, e.g. aks-public")
    override: dict[str, HopOverride] = Field(default_factory=dict, description="per-hop changes, by hop name")
    hops: tuple[Hop, ...] | None = Field(default=None, description="the hops, pod side first")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        if isinstance(value, str):
            return {"preset": value}
        if isinstance(value, list):
            return {"hops": value}
        return value

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str | None) -> str | None:
        if name is not None and name not in PATHS:
            close = difflib.get_close_matches(name, list(PATHS), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise custom_error(f"unknown path {name!r}", hint + "known: " + ", ".join(PATHS))
        return name

    @model_validator(mode="after")
    def _one_source(self) -> PathSpec:
        if (self.preset is None) == (self.hops is None):
            raise custom_error("a path is either a named path or a list of hops",
                               "write `path: aks-public` or `path: [{name: nat, kind: nat, ...}, ...]`")
        if self.hops is not None and self.override:
            raise custom_error("override changes a named path's hops",
                               "write the changed values into the listed hops instead")
        try:
            self.hop_list()
        except PathError as exc:
            raise custom_error(exc.what, exc.fix) from None
        return self

    def hop_list(self) -> tuple[Hop, ...]:
        """The hops, a named path's with its overrides applied (PathError when one does not fit)."""
        if self.hops is not None:
            return self.hops
        assert self.preset is not None
        return resolve_path(self.preset, {h: o.model_dump(exclude_none=True) for h, o in self.override.items()}).hops

    def resolve(self, name: str) -> NetPath:
        """The chain; a listed one is named `name` (its cluster's), a named one keeps its name."""
        return NetPath(self.preset or name, self.hop_list())


class ChurnSpec(_Strict):
    """Background writes that keep the resource version moving, as a real cluster's node leases do.

    Bookmarks (which can keep a watch busy) only flow once the resource version has moved, so the
    amount of churn must be a stated setting of the cluster, the same for every cell (docs/facts.md).
    """

    lease_interval: Annotated[int, Field(strict=True, ge=0, le=3600)] = Field(
        default=10, description="seconds between background writes; 0 = off"
    )


class _LbOrPath(_Strict):
    """The LB emulator's part of a cluster the runner builds (embedded, local): one LB (`lb:`), a
    chain of hops (`path:`), or nat hops (`path:`) before an LB (`lb:`)."""

    name: Name = Field(description="unique cluster name")
    kind: str
    lb: LbSpec | None = Field(default=None, description="the LB in front of the API server, e.g. {profile: azure-slb}")
    path: PathSpec | None = Field(
        default=None, description="the chain of hops to the API server (a named path or a list of hops); with `lb:` "
                                  "only the nat hops before that LB")

    @model_validator(mode="after")
    def _lb_or_path(self) -> Self:
        if self.lb is None and self.path is None:
            raise custom_error(f"a{'n' if self.kind[0] in 'aeiou' else ''} {self.kind} cluster needs `lb:` or `path:`",
                               "add lb: {profile: azure-slb}, or path: aks-public (runner/config/paths.py)")
        if self.lb is not None and self.path is not None:
            before = self.path.hop_list()
            if any(h.kind != "nat" for h in before):
                raise custom_error("with `lb:` the path lists only the nat hops before that LB, and this one has "
                                   + ", ".join(f"a {h.kind} hop ({h.name})" for h in before if h.kind != "nat"),
                                   "drop `lb:` (the path has its own last hop), or list only nat hops under `path:`")
        try:
            self.net_path()
        except PathError as exc:
            raise custom_error(f"path: {exc.what}", exc.fix) from None
        return self

    def net_path(self) -> NetPath | None:
        """The chain of hops, or None for a single LB (`lb:` alone: today's one-box path)."""
        if self.path is None:
            return None
        if self.lb is None:
            return self.path.resolve(self.name)
        return NetPath(self.name, (*self.path.hop_list(), hop_of_profile(self.lb.resolve())))

    def profile(self) -> Profile:
        """The LB profile of the path's last hop (the one the client dials)."""
        path = self.net_path()
        if path is not None:
            return path.profile()
        assert self.lb is not None
        return self.lb.resolve()

    @property
    def idle_timeout(self) -> int | None:
        """When the path first forgets an idle flow: what `idle+N` waits are sized by."""
        path = self.net_path()
        if path is not None and path.first_expiry is not None:
            return path.first_expiry
        return self.profile().idle_timeout


class EmbeddedCluster(_LbOrPath):
    """etcd + kube-apiserver run by watchdrop, each watcher behind the LB emulator."""

    name: Name = Field(description="unique cluster name, e.g. azure-slb")
    kind: Literal["embedded"] = "embedded"  # type: ignore[assignment]
    churn: ChurnSpec = Field(default=ChurnSpec(), description="background writes")  # frozen, so sharing is safe


class LocalCluster(_LbOrPath):
    """A real single-node Kubernetes that watchdrop runs on this machine (runner/local/), with the
    same LB (or chain of hops) and churn settings as an embedded cluster, in the pods' path to the API
    server; its cells go through the kubernetes backend."""

    name: Name = Field(description="unique cluster name, e.g. local-azure-slb")
    kind: Literal["local"]  # type: ignore[assignment]
    churn: ChurnSpec = Field(default=ChurnSpec(), description="background writes")


class KubernetesCluster(_Strict):
    """A real cluster reached through a kube context; its LB is whatever the provider runs."""

    name: Name = Field(description="unique cluster name, e.g. my-aks")
    kind: Literal["kubernetes"]
    context: str | None = Field(default=None, description="kube context name")
    kubeconfig: str | None = Field(default=None, description="path of a kubeconfig file")
    registry: str | None = Field(default=None, description="registry the cluster pulls watchdrop images from")
    pull_secrets: list[str] = Field(default_factory=list, description="image pull secret names")
    description: str | None = Field(default=None, description="shown in the report")
    api_server: (
        Annotated[
            str,
            Field(
                pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$",
                json_schema_extra={"fix": "write host:port, e.g. myaks-dns.hcp.westeurope.azmk8s.io:443"},
            ),
        ]
        | None
    ) = Field(default=None, description="host:port watchers dial instead of kubernetes.default")
    service_type: Literal["LoadBalancer", "NodePort", "ClusterIP"] = Field(
        default="ClusterIP",
        description="Service type of the timer server (ClusterIP: reachable in the cluster only)",
    )
    load_balancer_source_ranges: list[Cidr] = Field(
        default_factory=list, description="LoadBalancer only: the client CIDRs the timer server's LB admits"
    )
    internal_load_balancer: Literal["azure", "aws", "gcp"] | None = Field(
        default=None, description="LoadBalancer only: ask this provider for an internal (VNet/VPC) LB"
    )
    expose_publicly: bool = Field(
        default=False,
        description="allow a timer server open to every address (NodePort, or a LoadBalancer without source ranges)",
    )
    idle_timeout: Seconds | None = Field(
        default=None,
        description="idle timeout of the provider's LB in front of the API server (240 on AKS), resolves idle+N",
    )
    start_timeout: Seconds | None = Field(
        default=None, description="seconds for every pod to be running, image pulls included (default 300)"
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="imagePullPolicy of the pods (default IfNotPresent: tags follow content)"
    )
    image_platform: (
        Annotated[
            str,
            Field(pattern=r"^[a-z0-9]+/[a-z0-9]+(/[a-z0-9]+)?$",
                  json_schema_extra={"fix": "write os/arch, e.g. linux/amd64"}),
        ]
        | None
    ) = Field(default=None, description="platform to build images for when it differs from the builder's")
    base_images: (
        Literal["public", "local"]
        | dict[Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$")], Annotated[str, Field(min_length=1)]]
    ) = Field(
        default="public",
        description="base images of the image builds: public (the Dockerfiles' defaults), local (built here "
                    "from Debian packages, for a machine with no public registry) or build argument -> image, "
                    "e.g. {GO_IMAGE: myregistry/golang:1.26}",
    )
    build_ca_bundle: str | None = Field(
        default=None,
        description="PEM file of extra CAs the image builds trust (a TLS-inspecting proxy's); build stages "
                    "only, never in the final images",
    )

    @model_validator(mode="after")
    def _reachable(self) -> KubernetesCluster:
        missing = []
        if not self.context and not self.kubeconfig:
            missing.append("context: <kube context> (or kubeconfig: <path>)")
        if not self.registry:
            missing.append("registry: <registry the cluster can pull from>")
        if missing:
            raise custom_error(
                "a kubernetes cluster needs " + " and ".join(m.split(":")[0] for m in missing),
                "add " + "; ".join(missing),
            )
        return self

    @model_validator(mode="after")
    def _not_public_unless_asked(self) -> KubernetesCluster:
        """The timer server accepts any TCP client: never on the internet by accident."""
        lb_only = [f for f in ("load_balancer_source_ranges", "internal_load_balancer") if getattr(self, f)]
        if self.service_type != "LoadBalancer" and lb_only:
            raise custom_error(
                f"{' and '.join(lb_only)} apply to service_type: LoadBalancer only, not {self.service_type}",
                "set service_type: LoadBalancer, or remove " + " and ".join(lb_only),
            )
        if self.expose_publicly:
            return self
        if self.service_type == "NodePort":
            raise custom_error(
                "service_type: NodePort opens the timer server on every node's address",
                "use ClusterIP, or LoadBalancer with load_balancer_source_ranges; or say expose_publicly: true",
            )
        everyone = [r for r in self.load_balancer_source_ranges if r.endswith("/0")]
        if self.service_type == "LoadBalancer" and (not self.load_balancer_source_ranges or everyone):
            what = f"source range {everyone[0]} admits every address" if everyone else \
                "without load_balancer_source_ranges the LB admits every address"
            raise custom_error(
                f"service_type: LoadBalancer: {what}, and the timer server would be open to the internet",
                "add load_balancer_source_ranges: [<your client CIDRs>] (and internal_load_balancer: "
                "azure|aws|gcp for a VNet/VPC-only LB), or say expose_publicly: true",
            )
        return self

    def profile(self) -> Profile | None:
        return None


def _cluster_kind(value: Any) -> str:
    """Tag of a cluster entry: its `kind`, defaulting to embedded (also for non-mappings, so that the
    error says "expected a mapping" rather than "no tag")."""
    if isinstance(value, dict):
        kind = value.get("kind", "embedded")
        return kind if isinstance(kind, str) else repr(kind)
    return getattr(value, "kind", "embedded")


Cluster = Annotated[
    Annotated[EmbeddedCluster, Tag("embedded")] | Annotated[KubernetesCluster, Tag("kubernetes")]
    | Annotated[LocalCluster, Tag("local")],
    Discriminator(_cluster_kind),
]
_CLUSTER = TypeAdapter(Cluster)


class WatchScenario(_Strict):
    """Open a watch, let it idle for `interval`, change the ConfigMap, wait for the event."""

    interval: TimingField = Field(description="idle+N or whole seconds between updates")
    detection_timeout: Seconds = Field(default=10, description="seconds to wait for the event after an update")
    rounds: Rounds = Field(default=2, description="number of idle-then-update rounds")

    def wait(self) -> Timing:
        return self.interval


class IdleRequestScenario(_Strict):
    """Request, idle for `idle` on the same client object, request again."""

    idle: TimingField = Field(description="idle+N or whole seconds between the two requests")
    detection_timeout: Seconds = Field(default=10, description="seconds to wait for the second request")
    rounds: Rounds = Field(default=1, description="number of request-idle-request rounds")

    def wait(self) -> Timing:
        return self.idle


Scenario = WatchScenario | IdleRequestScenario


class Scenarios(_Strict):
    watch: WatchScenario | None = Field(
        default=None, description="{interval: idle+30, detection_timeout: 10, rounds: 2}"
    )
    idle_request: IdleRequestScenario | None = Field(
        default=None, alias=IDLE_REQUEST, description="{idle: idle+30, detection_timeout: 10, rounds: 1}"
    )

    @model_validator(mode="after")
    def _some(self) -> Scenarios:
        if self.watch is None and self.idle_request is None:
            raise custom_error("no scenario given", "add watch: {...} and/or idle-request: {...}")
        return self

    def items(self) -> list[tuple[str, Scenario]]:
        """`(name, scenario)` in planning order, for the scenarios that are present."""
        out: list[tuple[str, Scenario]] = []
        if self.watch is not None:
            out.append((WATCH, self.watch))
        if self.idle_request is not None:
            out.append((IDLE_REQUEST, self.idle_request))
        return out


class Matrix(_Strict):
    """The whole matrix.yaml. Build it with `load_matrix`, which also checks client folders."""

    clients: list[ClientEntry] = Field(min_length=1, description="the columns")
    clusters: list[Cluster] = Field(min_length=1, description="the clusters (embedded, local or kubernetes)")
    scenarios: Scenarios = Field(description="watch: {...} and/or idle-request: {...}")

    _source: Path | None = PrivateAttr(None)
    _clients_dir: Path | None = PrivateAttr(None)
    _descriptors: dict[str, Descriptor] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> Path | None:
        """The file this matrix was read from."""
        return self._source

    @property
    def clients_dir(self) -> Path | None:
        """The clients/ folder the matrix was checked against."""
        return self._clients_dir

    @property
    def descriptors(self) -> dict[str, Descriptor]:
        """Client folder name -> its checked descriptor (filled by `load_matrix`)."""
        return dict(self._descriptors)

    def cluster(self, name: str) -> EmbeddedCluster | KubernetesCluster | LocalCluster:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise KeyError(name)


# --- checks across entries -------------------------------------------------------------------------


@dataclass
class _Parts:
    """The entries that validated on their own, with their index in the file."""

    clients: list[tuple[int, ClientEntry]]
    clusters: list[tuple[int, EmbeddedCluster | KubernetesCluster | LocalCluster]]
    #: `(scenario, key, wait)` for each scenario whose wait parsed.
    waits: list[tuple[str, str, Timing]]


def _valid_parts(data: dict[str, Any]) -> _Parts:
    def items(key: str) -> list[tuple[int, Any]]:
        value = data.get(key)
        return list(enumerate(value)) if isinstance(value, list) else []

    clients: list[tuple[int, ClientEntry]] = []
    for i, item in items("clients"):
        try:
            clients.append((i, ClientEntry.model_validate(item)))
        except ValidationError:
            pass  # already reported by the validation of the whole file
    clusters: list[tuple[int, EmbeddedCluster | KubernetesCluster | LocalCluster]] = []
    for i, item in items("clusters"):
        try:
            clusters.append((i, _CLUSTER.validate_python(item)))
        except ValidationError:
            pass
    # Each scenario's wait is parsed on its own: a bad detection_timeout must not hide a wait
    # that is too short.
    waits: list[tuple[str, str, Timing]] = []
    scenarios = data.get("scenarios")
    if isinstance(scenarios, dict):
        for name, key in ((WATCH, "interval"), (IDLE_REQUEST, "idle")):
            entry = scenarios.get(name)
            if isinstance(entry, dict) and key in entry:
                try:
                    waits.append((name, key, _parse_timing(entry[key])))
                except PydanticCustomError:
                    pass
    return _Parts(clients, clusters, waits)


def _duplicates(marked: MarkedYaml, data: dict[str, Any], section: str, what: str) -> list[tuple[int, str]]:
    """Entries of `section` whose `name` repeats an earlier one (checked on the raw data, so an
    entry with other problems still counts)."""
    found: list[tuple[int, str]] = []
    entries = data.get(section)
    if not isinstance(entries, list):
        return found
    first: dict[str, int] = {}
    for i, item in enumerate(entries):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            continue
        if name in first:
            loc = (section, i, "name")
            earlier = (section, first[name])
            found.append(
                (
                    marked.line_of(loc) or 0,
                    marked.problem(
                        loc,
                        f"duplicate {what} name {name!r} (first used by {format_loc(earlier)} "
                        f"at line {marked.line_of(earlier)})",
                        f"give each {what} a unique name",
                    ),
                )
            )
        else:
            first[name] = i
    return found


def _folder_problem(
    marked: MarkedYaml, index: int, client: ClientEntry, clients_dir: Path, existing: list[str]
) -> tuple[int, str] | None:
    """Why the entry's client folder cannot be used (missing, or without client.yaml), or None."""
    folder = client.folder_name
    loc: tuple[int | str, ...] = ("clients", index, "folder") if client.folder else ("clients", index, "name")
    if not (clients_dir / folder).is_dir():
        close = difflib.get_close_matches(folder, existing, n=1)
        fix = f"did you mean {close[0]}? " if close else ""
        fix += "existing: " + (", ".join(existing) or f"none in {clients_dir}")
        fix += " (or set folder: to one of them)" if not client.folder else ""
        return marked.line_of(loc) or 0, marked.problem(loc, f"no client folder {clients_dir / folder}", fix)
    if not (clients_dir / folder / DESCRIPTOR_FILE).is_file():
        what = f"{clients_dir / folder} has no {DESCRIPTOR_FILE}"
        return marked.line_of(loc) or 0, marked.problem(loc, what, "write one (see clients/README.md)")
    return None


def _check_clients(
    marked: MarkedYaml, parts: _Parts, clients_dir: Path, descriptors: dict[str, Descriptor]
) -> list[tuple[int, str]]:
    """Each entry's folder exists and has a valid client.yaml (loaded into `descriptors`), and the
    variant's env fits what that client declares."""
    found: list[tuple[int, str]] = []
    existing: list[str] = []
    if clients_dir.is_dir():
        existing = sorted(p.name for p in clients_dir.iterdir() if (p / DESCRIPTOR_FILE).is_file())
    failed: set[str] = set()
    for i, client in parts.clients:
        folder = client.folder_name
        bad_folder = _folder_problem(marked, i, client, clients_dir, existing)
        if bad_folder is not None:
            found.append(bad_folder)
            continue
        if folder not in descriptors and folder not in failed:
            try:
                descriptors[folder] = load_descriptor(clients_dir / folder)
            except MatrixError as exc:
                # Reported once per folder; the lines point into its client.yaml, so they sort
                # after this file's.
                found.extend((10**9, text) for text in exc.problems)
                failed.add(folder)
        desc = descriptors.get(folder)
        if desc is not None:
            found += _check_variant_env(marked, i, client, desc)
    return found


def _check_variant_env(marked: MarkedYaml, index: int, client: ClientEntry, desc: Descriptor) -> list[tuple[int, str]]:
    """A variant's env must be something its client reads: a misspelt variable would silently run
    the library's defaults under the variant's name."""
    found: list[tuple[int, str]] = []
    ref = f"{desc.name}/{DESCRIPTOR_FILE}"
    for key, value in client.env.items():
        loc = ("clients", index, "env", key)
        if key == "WATCHDROP_STYLE":
            if desc.styles and value not in desc.styles:
                what, fix = (
                    f"{desc.name} does not implement style {value!r}",
                    "use one of: " + ", ".join(desc.styles) + f" (styles: in {ref})",
                )
            else:
                continue
        elif desc.settings and key not in desc.settings:
            close = difflib.get_close_matches(key, list(desc.settings), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            what = f"{desc.name} does not read {key}"
            fix = hint + "its settings: " + ", ".join(desc.settings) + f" (settings: in {ref})"
        else:
            continue
        found.append((marked.line_of(loc) or 0, marked.problem(loc, what, fix)))
    for key, value in client.build_env.items():
        loc = ("clients", index, "build_env", key)
        if key == desc.version_env and not VERSION_RE.fullmatch(value):
            # The value reaches a package manager: `file:`, `github:` or another package's name
            # would build something else than the library under the library's name.
            found.append((marked.line_of(loc) or 0, marked.problem(
                loc, f"{key} must be a version such as 1.0.0, not {value!r}",
                f"give the release number of {desc.library} only (digits and dots, e.g. 1.0.0 or 1.0.0-rc.1)")))
    return found


#: A release number: 1.2.3, 1.2.3-rc.1, 1.2.3+build.5 (no ranges, tags, paths or URLs).
VERSION_RE = re.compile(r"\d+\.\d+\.\d+(?:-[0-9A-Za-z]+(?:\.[0-9A-Za-z]+)*)?(?:\+[0-9A-Za-z]+(?:\.[0-9A-Za-z]+)*)?")


def _check_timings(marked: MarkedYaml, parts: _Parts) -> list[tuple[int, str]]:
    """A fixed wait must outlast every LB idle timeout, and idle+N needs a known idle timeout."""
    found: list[tuple[int, str]] = []
    timeouts: list[tuple[str, int]] = []
    unknown: list[tuple[int, str]] = []
    for i, cluster in parts.clusters:
        profile = cluster.profile()
        if profile is not None:
            path = cluster.net_path() if isinstance(cluster, EmbeddedCluster) else None
            acts = path.first_expiry is not None if path is not None else profile.mode != "none"
            if acts and cluster.idle_timeout is not None:
                # A path's first expiry: a fixed wait must outlast the first hop that forgets.
                timeouts.append((cluster.name, cluster.idle_timeout))
        elif cluster.idle_timeout is not None:
            timeouts.append((cluster.name, cluster.idle_timeout))
        else:
            unknown.append((i, cluster.name))
    for name, key, timing in parts.waits:
        loc = ("scenarios", name, key)
        if timing.seconds is not None:
            short = [(c, t) for c, t in timeouts if timing.seconds <= t]
            if short:
                longest = max(t for _, t in short)
                names = ", ".join(f"{c} ({t} s)" for c, t in short)
                found.append(
                    (
                        marked.line_of(loc) or 0,
                        marked.problem(
                            loc,
                            f"{timing.seconds} s is not longer than the LB idle timeout of {names}, so the "
                            "flow is never forgotten and the test would prove nothing",
                            f"write idle+30 (resolved per cluster) or more than {longest}",
                        ),
                    )
                )
        else:
            for i, cluster_name in unknown:
                cloc = ("clusters", i)
                found.append(
                    (
                        marked.line_of(cloc) or 0,
                        marked.problem(
                            cloc,
                            f"scenario {name} uses {timing} but cluster {cluster_name}'s LB idle timeout is unknown",
                            "add idle_timeout: <seconds> (240 for AKS, 350 for an AWS NLB, 600 for GCP), "
                            f"or give {name} fixed seconds",
                        ),
                    )
                )
    return found


def _check_token_lifetime(marked: MarkedYaml, matrix: Matrix) -> list[tuple[int, str]]:
    """A cell must end well before its watcher's token expires: a 401 inside the cell would be
    judged instead of the LB. Token lifetimes follow each cell's length (rbac.token_seconds) up to
    TOKEN_MAX_SECONDS; a scenario whose cells need more is refused here, on its `rounds` line."""
    found: list[tuple[int, str]] = []
    for name, sc in matrix.scenarios.items():
        worst: tuple[int, str, int] | None = None
        for cluster in matrix.clusters:
            wait = sc.wait().resolve(cluster.idle_timeout)
            if wait is None:
                continue
            seconds = sc.rounds * (wait + sc.detection_timeout)
            if worst is None or seconds > worst[0]:
                worst = (seconds, cluster.name, wait)
        if worst is None or worst[0] + TOKEN_MARGIN <= TOKEN_MAX_SECONDS:
            continue
        seconds, cluster_name, wait = worst
        most = max(1, (TOKEN_MAX_SECONDS - TOKEN_MARGIN) // (wait + sc.detection_timeout))
        loc = ("scenarios", name, "rounds")
        found.append((marked.line_of(loc) or 0, marked.problem(
            loc,
            f"{sc.rounds} rounds of {wait + sc.detection_timeout} s run {seconds / 3600:.1f} h on cluster "
            f"{cluster_name}, so the watcher's token ({TOKEN_MAX_SECONDS // 3600} h at most, "
            f"{TOKEN_MARGIN // 60} min kept in reserve) would expire inside the cell and a 401 would be judged "
            "instead of the LB",
            f"at most {most} rounds, or a shorter {'interval' if name == WATCH else 'idle'}")))
    return found


def load_matrix(path: Path, clients_dir: Path) -> Matrix:
    """Read and check a matrix file; raise MatrixError listing every problem, one line each."""
    marked = load_marked(path)
    data = marked.data
    if not isinstance(data, dict):
        raise MatrixError(
            [marked.problem((), "expected a mapping with clients:, clusters: and scenarios:", f"see {_HELP}")]
        )
    found: list[tuple[int, str]] = []
    matrix: Matrix | None = None
    try:
        matrix = Matrix.model_validate(data)
    except ValidationError as exc:
        found += located_problems(exc, marked, Matrix, _HELP)
    parts = _valid_parts(data)
    descriptors: dict[str, Descriptor] = {}
    found += _duplicates(marked, data, "clients", "client")
    found += _duplicates(marked, data, "clusters", "cluster")
    found += _check_clients(marked, parts, clients_dir, descriptors)
    found += _check_timings(marked, parts)
    if matrix is not None:
        found += _check_token_lifetime(marked, matrix)
    if found or matrix is None:
        raise MatrixError(unique_in_file_order(found))
    matrix._source = path
    matrix._clients_dir = clients_dir
    matrix._descriptors = descriptors
    return matrix
