"""The plan: every cell of the matrix (client x cluster x scenario), resolved, filtered, described.

A cell carries everything the runner needs that does not depend on the machine: the resolved LB
profile and timings (`idle+N` turned into seconds for this cell's cluster) and the variant's
environment. Whether a cell can run here (`skip_reason`) is a separate question, answered from the
client's descriptor, so `--plan` can show both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from types import MappingProxyType

from tabulate import tabulate

from runner.config.descriptor import Descriptor, missing_requirements
from runner.config.matrix import EmbeddedCluster, LocalCluster, Matrix, WatchScenario
from runner.config.paths import NetPath
from runner.config.profiles import Profile
from runner.contract import IDLE_REQUEST
from runner.errors import UsageError

#: `--only` keys and the Cell attribute each one matches.
FILTER_KEYS = ("client", "cluster", "scenario")

Filter = tuple[str, str]


@dataclass(frozen=True)
class Cell:
    """One client variant against one cluster in one scenario."""

    #: Column key (the matrix's client name, e.g. client-go-watch).
    client: str
    #: Folder under clients/ that holds the code and client.yaml.
    folder: str
    cluster: str
    #: `embedded`, `local` or `kubernetes`.
    cluster_kind: str
    #: `watch` or `idle-request`.
    scenario: str
    #: The resolved LB profile; None on a kubernetes cluster, whose LB is the provider's.
    profile: Profile | None
    #: The LB idle timeout `idle+N` was resolved against (None when unknown); a path's first expiry.
    idle_timeout: int | None
    #: watch: seconds idle between updates; None for idle-request.
    interval: int | None
    #: idle-request: seconds idle between the two requests; None for watch.
    idle: int | None
    detection_timeout: int
    rounds: int
    #: Background write period of the cluster (embedded), 0 = off, None for kubernetes.
    lease_interval: int | None = None
    #: Extra environment of the variant (read-only).
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    #: Build environment of the variant (read-only).
    build_env: Mapping[str, str] = field(default_factory=dict, hash=False)
    note: str | None = None
    #: The client folder on disk (clients/<folder>), when known.
    src: Path | None = None
    #: The chain of hops of an embedded or local cluster with `path:` (runner/config/paths.py); None for a single LB.
    path: NetPath | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # Read-only views, so a frozen cell cannot be changed through its mappings either.
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        object.__setattr__(self, "build_env", MappingProxyType(dict(self.build_env)))

    @property
    def id(self) -> str:
        """`client/cluster/scenario`: the cell's key and its evidence path fragment."""
        return f"{self.client}/{self.cluster}/{self.scenario}"

    @property
    def wait(self) -> int:
        """The idle period of one round (interval for watch, idle for idle-request)."""
        value = self.interval if self.interval is not None else self.idle
        if value is None:
            raise ValueError(f"cell {self.id} has neither interval nor idle")
        return value

    @property
    def estimated_seconds(self) -> int:
        """Upper estimate of the scenario's own time: each round idles, then waits for detection."""
        return self.rounds * (self.wait + self.detection_timeout)

    def watcher_env(self) -> dict[str, str]:
        """The contract's WATCHDROP_* variables for this cell (clients/README.md) plus the variant's
        env. The runner adds WATCHDROP_KUBECONFIG and WATCHDROP_NAMESPACE, which are per run."""
        env = {
            "WATCHDROP_SCENARIO": self.scenario,
            "WATCHDROP_DETECTION_TIMEOUT": str(self.detection_timeout),
            "WATCHDROP_ROUNDS": str(self.rounds),
        }
        if self.interval is not None:
            env["WATCHDROP_INTERVAL"] = str(self.interval)
        if self.idle is not None:
            env["WATCHDROP_IDLE"] = str(self.idle)
        return {**self.env, **env}


def plan(matrix: Matrix, clients_dir: Path | None = None) -> list[Cell]:
    """Every cell, in matrix order: clients outermost, then clusters, then scenarios.

    `clients_dir` sets each cell's `src`; by default the one the matrix was loaded with.
    """
    base = clients_dir if clients_dir is not None else matrix.clients_dir
    cells: list[Cell] = []
    for client in matrix.clients:
        for cluster in matrix.clusters:
            profile = cluster.profile()
            # A path's first expiry (runner/config/paths.py); a single LB's timeout; a real cluster's setting.
            idle_timeout = cluster.idle_timeout
            lease = getattr(getattr(cluster, "churn", None), "lease_interval", None)
            for name, scenario in matrix.scenarios.items():
                wait = scenario.wait().resolve(idle_timeout)
                if wait is None:
                    # load_matrix refuses idle+N against an unknown idle timeout; a Matrix built
                    # some other way must not produce a cell without a wait.
                    raise UsageError(
                        f"cannot resolve {scenario.wait()} for cluster {cluster.name}: its LB idle timeout is unknown",
                        fix="give the cluster idle_timeout: <seconds>",
                    )
                is_watch = isinstance(scenario, WatchScenario)
                cells.append(
                    Cell(
                        client=client.name,
                        folder=client.folder_name,
                        cluster=cluster.name,
                        cluster_kind=cluster.kind,
                        scenario=name,
                        profile=profile,
                        idle_timeout=idle_timeout,
                        interval=wait if is_watch else None,
                        idle=None if is_watch else wait,
                        detection_timeout=scenario.detection_timeout,
                        rounds=scenario.rounds,
                        lease_interval=lease,
                        path=cluster.net_path() if isinstance(cluster, EmbeddedCluster | LocalCluster) else None,
                        env=client.env,
                        build_env=client.build_env,
                        note=client.note,
                        src=base / client.folder_name if base is not None else None,
                    )
                )
    return cells


def skip_reason(cell: Cell, descriptor: Descriptor) -> str | None:
    """Why this cell cannot run on this machine (it is then SKIPPED, never FAILED), or None."""
    missing = missing_requirements(descriptor)
    if missing:
        return f"no {', '.join(missing)} on this machine (needed by {cell.folder})"
    if cell.scenario not in descriptor.scenarios:
        return f"{cell.folder} implements only the {' and '.join(descriptor.scenarios)} scenario"
    return None


def skip_reasons(cells: Iterable[Cell], descriptors: Mapping[str, Descriptor]) -> dict[str, str | None]:
    """`cell.id -> skip reason` for every cell (a cell whose folder has no descriptor is skipped)."""
    out: dict[str, str | None] = {}
    for cell in cells:
        desc = descriptors.get(cell.folder)
        out[cell.id] = f"no descriptor for {cell.folder}" if desc is None else skip_reason(cell, desc)
    return out


def parse_only(values: Sequence[str]) -> list[Filter]:
    """`["client=client-go", "cluster=azure-*"]` -> `[("client", "client-go"), ("cluster", "azure-*")]`.

    Globs match the whole name (fnmatchcase), never a prefix: `client=client-go` does not select
    `client-go-watch`; write `client=client-go*` for that.
    """
    filters: list[Filter] = []
    for value in values:
        key, sep, glob = value.partition("=")
        key = key.strip()
        glob = glob.strip()
        if not sep or not glob:
            raise UsageError(
                f"--only {value!r}: expected KEY=GLOB",
                fix="write e.g. --only client=client-go or --only cluster='azure-*'",
            )
        if key not in FILTER_KEYS:
            raise UsageError(
                f"--only {value!r}: unknown key {key!r}",
                fix="use one of: " + ", ".join(f"{k}=GLOB" for k in FILTER_KEYS),
            )
        filters.append((key, glob))
    return filters


def _value(cell: Cell, key: str) -> str:
    return {"client": cell.client, "cluster": cell.cluster, "scenario": cell.scenario}[key]


def select(cells: Iterable[Cell], filters: Sequence[Filter]) -> list[Cell]:
    """Cells matching the filters: globs of the same key OR together, different keys AND."""
    by_key: dict[str, list[str]] = {}
    for key, glob in filters:
        by_key.setdefault(key, []).append(glob)
    return [
        cell
        for cell in cells
        if all(any(fnmatchcase(_value(cell, key), g) for g in globs) for key, globs in by_key.items())
    ]


def unmatched(cells: Iterable[Cell], filters: Sequence[Filter]) -> list[Filter]:
    """Filters that match no cell at all (most likely a typo; the CLI should say so)."""
    cells = list(cells)
    return [(k, g) for k, g in filters if not any(fnmatchcase(_value(c, k), g) for c in cells)]


def _minutes(seconds: int) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}m{secs:02d}s"


def _profile_text(cell: Cell) -> str:
    if cell.path is not None:
        return f"{cell.path.name}: {cell.path.describe()}"
    if cell.profile is not None:
        return f"{cell.profile.name}: {cell.profile.describe()}"
    if cell.idle_timeout is not None:
        return f"real cluster (LB idle timeout expected {cell.idle_timeout} s)"
    return "real cluster"


def describe_plan(cells: Sequence[Cell], skips: Mapping[str, str | None] | None = None) -> str:
    """The `--plan` table: one row per cell, then the expected wall time (cells run concurrently)."""
    skips = skips or {}
    rows = []
    for cell in cells:
        rows.append(
            [
                cell.id,
                _profile_text(cell),
                f"{cell.rounds} x {cell.wait} s" + (" idle" if cell.scenario == IDLE_REQUEST else ""),
                _minutes(cell.estimated_seconds),
                skips.get(cell.id) or "",
            ]
        )
    table = tabulate(rows, headers=["cell", "LB profile", "rounds x wait", "est.", "skip"], tablefmt="simple")
    runnable = [c for c in cells if not skips.get(c.id)]
    longest = max((c.estimated_seconds for c in runnable), default=0)
    summary = (
        f"{len(cells)} cells, {len(cells) - len(runnable)} skipped; cells run concurrently, so about "
        f"{_minutes(longest)} plus cluster start-up"
    )
    return f"{table}\n\n{summary}"
