"""The result model: what one run found, cell by cell, as plain dataclasses with a JSON round trip.

This is the one canonical format every later step reads (report, README table, `watchdrop report
RESULTS.json`), so it is written out by hand rather than derived: `to_dict()` emits only JSON types,
`from_dict()` checks every field's type and names the bad one (`cells[3].rounds[0].seen_at: expected
number or null, got 'x'`), and `RunResult.to_json()` is deterministic (sorted keys, fixed indent,
floats always as floats, trailing newline) so rendering the same result twice gives the same bytes.

Times are Unix seconds (float), the clock the watchers' `ts` fields use, so rounds, packets and log
lines compare directly. docs/results-schema.json describes the same shape for other readers.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runner.config.profiles import PROFILES, Profile

#: Bump when a field changes meaning or disappears; readers refuse versions they do not know.
SCHEMA_VERSION = 1


class Verdict(enum.Enum):
    """A cell's outcome. Values are what results.json and the table show."""

    PASS = "PASS"
    RECOVERED = "RECOVERED"
    FAIL_LOUD = "FAIL-LOUD"
    FAIL_SILENT = "FAIL-SILENT"
    ERROR = "ERROR"
    SKIPPED = "SKIPPED"

    @property
    def legend(self) -> str:
        return _LEGEND[self]

    @property
    def rank(self) -> int:
        """Higher is worse. Unknown outranks a pass (Jepsen): SKIPPED sits above PASS/RECOVERED,
        findings above SKIPPED, and ERROR (the harness cannot vouch for anything) above all."""
        return _RANK[self]

    @classmethod
    def worst(cls, verdicts: Iterable[Verdict]) -> Verdict | None:
        """The highest-ranked verdict, or None for no verdicts."""
        return max(verdicts, key=lambda v: v.rank, default=None)


_LEGEND: dict[Verdict, str] = {
    Verdict.PASS: "every round seen in time and the connection never idled out",
    Verdict.RECOVERED: "the LB reset the connection, the library re-watched, and every round was seen in time",
    Verdict.FAIL_LOUD: "a round was missed, and the library raised an error the application must handle",
    Verdict.FAIL_SILENT: ("a round was missed with no error at all — the watch is dead on a socket that looks alive"),
    Verdict.ERROR: "a harness fault, log attached",
    Verdict.SKIPPED: "could not run here, with the reason",
}

_RANK: dict[Verdict, int] = {
    Verdict.PASS: 0,
    Verdict.RECOVERED: 1,
    Verdict.SKIPPED: 2,
    Verdict.FAIL_LOUD: 3,
    Verdict.FAIL_SILENT: 4,
    Verdict.ERROR: 5,
}


# --- strict readers used by every from_dict ------------------------------------------------------


def _obj(d: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(d).__name__}")
    return d


def _field(d: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ValueError(f"{where}.{key}: missing")
    return d[key]


def _str(d: Mapping[str, Any], key: str, where: str) -> str:
    v = _field(d, key, where)
    if not isinstance(v, str):
        raise ValueError(f"{where}.{key}: expected a string, got {v!r}")
    return v


def _opt_str(d: Mapping[str, Any], key: str, where: str) -> str | None:
    v = _field(d, key, where)
    if v is not None and not isinstance(v, str):
        raise ValueError(f"{where}.{key}: expected a string or null, got {v!r}")
    return v


def _num(d: Mapping[str, Any], key: str, where: str) -> float:
    v = _field(d, key, where)
    # bool is an int in Python; a `true` where seconds belong is a broken file, not 1 s.
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{where}.{key}: expected a number, got {v!r}")
    return float(v)


def _opt_num(d: Mapping[str, Any], key: str, where: str) -> float | None:
    if _field(d, key, where) is None:
        return None
    return _num(d, key, where)


def _int(d: Mapping[str, Any], key: str, where: str) -> int:
    v = _field(d, key, where)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{where}.{key}: expected an integer, got {v!r}")
    return v


def _opt_int(d: Mapping[str, Any], key: str, where: str) -> int | None:
    if _field(d, key, where) is None:
        return None
    return _int(d, key, where)


def _bool(d: Mapping[str, Any], key: str, where: str) -> bool:
    v = _field(d, key, where)
    if not isinstance(v, bool):
        raise ValueError(f"{where}.{key}: expected true or false, got {v!r}")
    return v


def _str_map(d: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    v = _obj(_field(d, key, where), f"{where}.{key}")
    out: dict[str, str] = {}
    for k, val in v.items():
        if not isinstance(val, str):
            raise ValueError(f"{where}.{key}.{k}: expected a string, got {val!r}")
        out[str(k)] = val
    return out


def _list(d: Mapping[str, Any], key: str, where: str) -> list[Any]:
    v = _field(d, key, where)
    if not isinstance(v, list):
        raise ValueError(f"{where}.{key}: expected a list, got {type(v).__name__}")
    return v


def _f(x: float | None) -> float | None:
    # Always emit floats for float fields: 45 and 45.0 would otherwise render differently.
    return None if x is None else float(x)


# --- the model ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileFacts:
    """A cluster's LB profile as it really ran (runner/config/profiles.py Profile, after scaling/overrides)."""

    name: str
    #: What the LB does to a flow idle for `idle_timeout`: "none" (no LB acts: the control),
    #: "silent-drop", "rst-on-next-packet" or "rst-both-ways".
    mode: str
    #: Seconds of idle after which the LB forgets the flow; None when unknown (a provider's LB).
    #: For mode "none" it only sized the idle waits.
    idle_timeout: float | None
    #: The TCP-terminating front in the API server's path ("tcp-proxy"), or "none"/None when
    #: watchers reach kube-apiserver directly (whose own keepalive then hides the LB: FACTS.md).
    front: str | None
    #: The real profile a `-quick` profile was scaled down from (e.g. "azure-slb"), else None.
    scaled_from: str | None = None
    #: That real profile's idle timeout, so the report can print both numbers.
    scaled_from_timeout: float | None = None
    #: Settings a matrix cluster overrode on top of the named profile.
    overrides: dict[str, str] = field(default_factory=dict)

    @property
    def acts(self) -> bool:
        """Whether an LB forgets idle flows at all (False for the control profile)."""
        return self.mode != "none"

    @classmethod
    def from_profile(cls, profile: Profile) -> ProfileFacts:
        """The facts of a resolved runner.config.profiles.Profile, with its real profile's timeout if scaled."""
        real = PROFILES.get(profile.scaled_from) if profile.scaled_from else None
        return cls(
            name=profile.name,
            mode=profile.mode,
            idle_timeout=float(profile.idle_timeout),
            front=profile.front,
            scaled_from=profile.scaled_from,
            scaled_from_timeout=None if real is None else float(real.idle_timeout),
            overrides={str(k): str(v) for k, v in profile.overrides},
        )

    def describe(self) -> str:
        """One line of real numbers, e.g.
        `azure-slb-quick: rst-both-ways after 45 s idle (scaled from azure-slb: 240 s), front tcp-proxy`."""
        if not self.acts:
            text = f"{self.name}: no LB acts on idle flows"
        elif self.idle_timeout is None:
            text = f"{self.name}: {self.mode}, idle timeout unknown"
        else:
            text = f"{self.name}: {self.mode} after {fmt_secs(self.idle_timeout)} idle"
        if self.scaled_from is not None:
            real = f": {fmt_secs(self.scaled_from_timeout)}" if self.scaled_from_timeout is not None else ""
            text += f" (scaled from {self.scaled_from}{real})"
        if self.front and self.front != "none":
            text += f", front {self.front}"
        else:
            text += ", no front (direct to kube-apiserver)"
        if self.overrides:
            text += " [overridden: " + ", ".join(f"{k}={v}" for k, v in sorted(self.overrides.items())) + "]"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self.mode,
            "idle_timeout": _f(self.idle_timeout),
            "front": self.front,
            "scaled_from": self.scaled_from,
            "scaled_from_timeout": _f(self.scaled_from_timeout),
            "overrides": dict(self.overrides),
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "profile") -> ProfileFacts:
        d = _obj(d, where)
        return cls(
            name=_str(d, "name", where),
            mode=_str(d, "mode", where),
            idle_timeout=_opt_num(d, "idle_timeout", where),
            front=_opt_str(d, "front", where),
            scaled_from=_opt_str(d, "scaled_from", where),
            scaled_from_timeout=_opt_num(d, "scaled_from_timeout", where),
            overrides=_str_map(d, "overrides", where),
        )


@dataclass(frozen=True)
class Timings:
    """The cell's timing settings, as passed to the watcher (clients/README.md)."""

    #: watch: seconds between the harness's updates (idle on the flow); None for idle-request.
    interval: float | None
    #: Seconds the harness waits for an `event-seen` / `request-done` before the round is missed.
    detection_timeout: float
    rounds: int
    #: idle-request: seconds idle between the two requests of a round; None for watch.
    idle: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "interval": _f(self.interval),
            "detection_timeout": _f(self.detection_timeout),
            "rounds": self.rounds,
            "idle": _f(self.idle),
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "timings") -> Timings:
        d = _obj(d, where)
        return cls(
            interval=_opt_num(d, "interval", where),
            detection_timeout=_num(d, "detection_timeout", where),
            rounds=_int(d, "rounds", where),
            idle=_opt_num(d, "idle", where),
        )


@dataclass
class RoundResult:
    """One round: what the harness did, what the watcher saw, and how idle the flow was before."""

    index: int
    scenario: str
    #: watch: when the harness wrote the trigger (taken before the write was sent);
    #: idle-request: when the watcher sent the request that follows the idle period.
    update_at: float
    #: watch: the trigger's `data.value` written this round; idle-request: "ok".
    expected: str
    #: The matching `event-seen` / `request-done` time, or None when nothing matched in time.
    seen_at: float | None
    deadline: float
    ok: bool
    #: Seconds the pod's flow had been idle when the update happened (from the capture), or None
    #: when no connection was open then or there was no capture.
    idle_before: float | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "scenario": self.scenario,
            "update_at": _f(self.update_at),
            "expected": self.expected,
            "seen_at": _f(self.seen_at),
            "deadline": _f(self.deadline),
            "ok": self.ok,
            "idle_before": _f(self.idle_before),
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "round") -> RoundResult:
        d = _obj(d, where)
        return cls(
            index=_int(d, "index", where),
            scenario=_str(d, "scenario", where),
            update_at=_num(d, "update_at", where),
            expected=_str(d, "expected", where),
            seen_at=_opt_num(d, "seen_at", where),
            deadline=_num(d, "deadline", where),
            ok=_bool(d, "ok", where),
            idle_before=_opt_num(d, "idle_before", where),
            note=_str(d, "note", where),
        )


@dataclass
class WatcherFacts:
    """Counts read from the watcher's JSON lines and stderr."""

    #: A `started` line was printed (the watcher ran at all).
    started: bool
    #: JSON lines that followed the contract (had `ts` and `event`).
    lines: int
    errors: int
    reconnects: int
    watch_opened: int
    #: stderr lines that look like the library logging an error (klog `E....`, Traceback, "error").
    stderr_errors: int
    #: None when the harness recorded no exit (it never ended or was never started).
    exit_code: int | None
    #: The first `error` line's message, for the reason text.
    first_error: str | None = None
    #: `version` from the `started` line: what the watcher actually loaded.
    reported_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "lines": self.lines,
            "errors": self.errors,
            "reconnects": self.reconnects,
            "watch_opened": self.watch_opened,
            "stderr_errors": self.stderr_errors,
            "exit_code": self.exit_code,
            "first_error": self.first_error,
            "reported_version": self.reported_version,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "watcher") -> WatcherFacts:
        d = _obj(d, where)
        return cls(
            started=_bool(d, "started", where),
            lines=_int(d, "lines", where),
            errors=_int(d, "errors", where),
            reconnects=_int(d, "reconnects", where),
            watch_opened=_int(d, "watch_opened", where),
            stderr_errors=_int(d, "stderr_errors", where),
            exit_code=_opt_int(d, "exit_code", where),
            first_error=_opt_str(d, "first_error", where),
            reported_version=_opt_str(d, "reported_version", where),
        )


@dataclass(frozen=True)
class LbSummary:
    """What the LB emulator's event log says it did to this cell's flows, up to the last round's
    deadline (runner.verdict.summarize_lb_events)."""

    expired: int = 0
    rst_to_client: int = 0
    rst_to_server: int = 0
    dropped_after_expiry: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "expired": self.expired,
            "rst_to_client": self.rst_to_client,
            "rst_to_server": self.rst_to_server,
            "dropped_after_expiry": self.dropped_after_expiry,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "lb") -> LbSummary:
        d = _obj(d, where)
        return cls(
            expired=_int(d, "expired", where),
            rst_to_client=_int(d, "rst_to_client", where),
            rst_to_server=_int(d, "rst_to_server", where),
            dropped_after_expiry=_int(d, "dropped_after_expiry", where),
        )


MIB = 1024 * 1024


@dataclass(frozen=True)
class CaptureFacts:
    """How the pod's capture ended, by tcpdump's own account: a capture that stopped early, was cut
    at its size cap or lost packets is missing evidence (runner.verdict makes the cell ERROR)."""

    #: tcpdump was still running when the runner stopped it (False: it died or exited first).
    ran_to_end: bool
    #: tcpdump's exit code (0 after the runner's SIGTERM/SIGINT); None when it never ended.
    exit_code: int | None
    #: "N packets dropped by kernel" (plus "by interface") from tcpdump's last words; None when it
    #: printed no counts.
    dropped: int | None
    #: Size of pod.pcap in bytes, and the cap it may not reach (runner.evidence.limits).
    size: int
    limit: int

    def problems(self) -> list[str]:
        out = []
        if self.size >= self.limit:
            out.append(f"capture cut at {self.limit / MIB:g} MiB: packets after that were not recorded")
        elif not self.ran_to_end:
            out.append("the capture stopped before the cell ended (tcpdump exited early): packets after that "
                       "were not recorded")
        if self.exit_code is None:
            out.append("tcpdump never exited")
        elif self.exit_code != 0:
            out.append(f"tcpdump exited with code {self.exit_code}")
        if self.dropped:
            out.append(f"tcpdump reported {self.dropped} packets dropped by the kernel")
        elif self.dropped is None and self.exit_code == 0:
            out.append("tcpdump reported no packet counts, so packets it may have dropped are unknown")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"ran_to_end": self.ran_to_end, "exit_code": self.exit_code, "dropped": self.dropped,
                "size": self.size, "limit": self.limit}

    @classmethod
    def from_dict(cls, d: Any, where: str = "capture") -> CaptureFacts:
        d = _obj(d, where)
        return cls(ran_to_end=_bool(d, "ran_to_end", where), exit_code=_opt_int(d, "exit_code", where),
                   dropped=_opt_int(d, "dropped", where), size=_int(d, "size", where),
                   limit=_int(d, "limit", where))


@dataclass(frozen=True)
class Cut:
    """What the runner cut from one evidence file so a watcher or a capture cannot exhaust its
    memory or disk (runner.evidence.limits)."""

    #: The evidence file's name (watcher.jsonl, watcher.stderr, watcher.log, pod.pcap).
    file: str
    #: Lines longer than the line cap, each cut to it.
    long_lines: int = 0
    #: The file reached its size cap at this many bytes; what came later was not kept.
    capped_at: int | None = None

    def describe(self) -> str:
        parts = []
        if self.long_lines:
            parts.append(f"{self.long_lines} line(s) longer than the cap cut")
        if self.capped_at is not None:
            parts.append(f"stopped at {self.capped_at / MIB:g} MiB")
        return f"{self.file}: {', '.join(parts) or 'nothing cut'}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "long_lines": self.long_lines, "capped_at": self.capped_at}

    @classmethod
    def from_dict(cls, d: Any, where: str = "cut") -> Cut:
        d = _obj(d, where)
        return cls(file=_str(d, "file", where), long_lines=_int(d, "long_lines", where),
                   capped_at=_opt_int(d, "capped_at", where))


def make_cell_id(client: str, cluster: str, scenario: str) -> str:
    return f"{client}/{cluster}/{scenario}"


@dataclass
class CellResult:
    """One (client entry, cluster, scenario) cell with its verdict and the evidence behind it."""

    #: The matrix entry's name, the row key: the folder name, or a variant's name.
    client: str
    #: The clients/ folder the entry builds from; equals `client` for the folder's default entry.
    folder: str
    library: str
    library_version: str
    api_style: str
    #: The variant's extra environment (e.g. {"WATCHDROP_TCP_KEEPALIVE": "30"}); {} for a default.
    variant_env: dict[str, str]
    cluster: str
    #: None on a kubernetes cluster, whose LB is the provider's and not emulated.
    profile: ProfileFacts | None
    scenario: str
    timings: Timings
    verdict: Verdict
    #: Short one-liner without the verdict prefix, e.g. "no event for 2/2 rounds, no RST seen".
    reason: str
    rounds: list[RoundResult] = field(default_factory=list)
    watcher: WatcherFacts | None = None
    #: PcapFacts.to_dict() of the pod's capture, or None when there was none.
    pcap: dict[str, Any] | None = None
    lb: LbSummary | None = None
    #: The observed keepalive summary read from the capture (PcapFacts.keepalive_summary()).
    keepalive: str = ""
    #: Evidence files by kind ("watcher_log", "stderr", "pcap", "lb_events", ...), relative to the run dir.
    evidence: dict[str, str] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None
    #: Harness problems met while running this cell (each one line).
    errors: list[str] = field(default_factory=list)
    #: The variant's build settings (e.g. an older library pin); {} for a default.
    build_env: dict[str, str] = field(default_factory=dict)
    #: How the pod's capture ended; None where no capture ran (or a result from before it was kept).
    capture: CaptureFacts | None = None
    #: What was cut from evidence files to keep memory and disk bounded; [] when nothing was.
    cuts: list[Cut] = field(default_factory=list)

    @property
    def cell_id(self) -> str:
        return make_cell_id(self.client, self.cluster, self.scenario)

    @property
    def is_variant(self) -> bool:
        return self.client != self.folder

    def to_dict(self) -> dict[str, Any]:
        return {
            "cell_id": self.cell_id,
            "client": self.client,
            "folder": self.folder,
            "library": self.library,
            "library_version": self.library_version,
            "api_style": self.api_style,
            "variant_env": dict(self.variant_env),
            "build_env": dict(self.build_env),
            "cluster": self.cluster,
            "profile": None if self.profile is None else self.profile.to_dict(),
            "scenario": self.scenario,
            "timings": self.timings.to_dict(),
            "verdict": self.verdict.value,
            "reason": self.reason,
            "rounds": [r.to_dict() for r in self.rounds],
            "watcher": None if self.watcher is None else self.watcher.to_dict(),
            # A JSON round trip normalises whatever PcapFacts.to_dict() returned (tuples -> lists),
            # so the in-memory result already equals what a reader of results.json gets back.
            "pcap": None if self.pcap is None else json.loads(json.dumps(self.pcap, allow_nan=False)),
            "lb": None if self.lb is None else self.lb.to_dict(),
            "keepalive": self.keepalive,
            "evidence": dict(self.evidence),
            "started": _f(self.started),
            "finished": _f(self.finished),
            "errors": list(self.errors),
            "capture": None if self.capture is None else self.capture.to_dict(),
            "cuts": [c.to_dict() for c in self.cuts],
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "cell") -> CellResult:
        d = _obj(d, where)
        verdict_text = _str(d, "verdict", where)
        try:
            verdict = Verdict(verdict_text)
        except ValueError:
            known = ", ".join(v.value for v in Verdict)
            raise ValueError(f"{where}.verdict: unknown verdict {verdict_text!r} (known: {known})") from None
        watcher = _field(d, "watcher", where)
        lb = _field(d, "lb", where)
        pcap = _field(d, "pcap", where)
        profile = _field(d, "profile", where)
        if pcap is not None:
            pcap = dict(_obj(pcap, f"{where}.pcap"))
        errors = _list(d, "errors", where)
        for i, e in enumerate(errors):
            if not isinstance(e, str):
                raise ValueError(f"{where}.errors[{i}]: expected a string, got {e!r}")
        cell = cls(
            client=_str(d, "client", where),
            folder=_str(d, "folder", where),
            library=_str(d, "library", where),
            library_version=_str(d, "library_version", where),
            api_style=_str(d, "api_style", where),
            variant_env=_str_map(d, "variant_env", where),
            build_env=_str_map(d, "build_env", where),
            cluster=_str(d, "cluster", where),
            profile=None if profile is None else ProfileFacts.from_dict(profile, f"{where}.profile"),
            scenario=_str(d, "scenario", where),
            timings=Timings.from_dict(_field(d, "timings", where), f"{where}.timings"),
            verdict=verdict,
            reason=_str(d, "reason", where),
            rounds=[RoundResult.from_dict(r, f"{where}.rounds[{i}]") for i, r in enumerate(_list(d, "rounds", where))],
            watcher=None if watcher is None else WatcherFacts.from_dict(watcher, f"{where}.watcher"),
            pcap=pcap,
            lb=None if lb is None else LbSummary.from_dict(lb, f"{where}.lb"),
            keepalive=_str(d, "keepalive", where),
            evidence=_str_map(d, "evidence", where),
            started=_opt_num(d, "started", where),
            finished=_opt_num(d, "finished", where),
            errors=list(errors),
            # Optional: results written before these were recorded lack them.
            capture=None if d.get("capture") is None else CaptureFacts.from_dict(d["capture"], f"{where}.capture"),
            cuts=[Cut.from_dict(c, f"{where}.cuts[{i}]") for i, c in enumerate(d.get("cuts") or [])],
        )
        # cell_id is derived; a file whose id disagrees with its own fields was edited by hand wrongly.
        stored_id = _str(d, "cell_id", where)
        if stored_id != cell.cell_id:
            raise ValueError(f"{where}.cell_id: {stored_id!r} does not match client/cluster/scenario {cell.cell_id!r}")
        return cell


@dataclass
class RunResult:
    """Everything one `watchdrop run` found; results.json is `to_json()` of this."""

    run_id: str
    started: float
    finished: float | None
    #: The matrix file the run was planned from, as given on the command line.
    matrix: str
    #: Facts about the machine (kernel, cpus, python, kube-apiserver/etcd versions, ...).
    machine: dict[str, str]
    #: Every profile the cells used, with the real numbers after scaling.
    profiles: list[ProfileFacts]
    cells: list[CellResult]
    #: SIGINT/SIGTERM stopped the run early; cells not reached are absent.
    interrupted: bool = False
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "run_id": self.run_id,
            "started": _f(self.started),
            "finished": _f(self.finished),
            "matrix": self.matrix,
            "machine": dict(self.machine),
            "profiles": [p.to_dict() for p in self.profiles],
            "cells": [c.to_dict() for c in self.cells],
            "interrupted": self.interrupted,
        }

    def to_json(self) -> str:
        """Deterministic JSON text: the same result always gives the same bytes."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, d: Any, where: str = "results") -> RunResult:
        d = _obj(d, where)
        version = _int(d, "schema_version", where)
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"{where}.schema_version: this watchdrop reads version {SCHEMA_VERSION}, the file has {version}"
            )
        return cls(
            schema_version=version,
            run_id=_str(d, "run_id", where),
            started=_num(d, "started", where),
            finished=_opt_num(d, "finished", where),
            matrix=_str(d, "matrix", where),
            machine=_str_map(d, "machine", where),
            profiles=[
                ProfileFacts.from_dict(p, f"{where}.profiles[{i}]") for i, p in enumerate(_list(d, "profiles", where))
            ],
            cells=[CellResult.from_dict(c, f"{where}.cells[{i}]") for i, c in enumerate(_list(d, "cells", where))],
            interrupted=_bool(d, "interrupted", where),
        )

    @classmethod
    def from_json(cls, text: str) -> RunResult:
        return cls.from_dict(json.loads(text))


def fmt_secs(x: float) -> str:
    """Seconds for humans, stable across renders: `45 s`, `0.4 s`, `1.5 s`."""
    if abs(x) >= 10:
        return f"{x:.0f} s"
    return f"{x:.1f} s"
