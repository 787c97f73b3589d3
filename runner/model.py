"""The result model: what one run found, cell by cell, as pydantic models that are also results.json's schema.

This is the one canonical format every later step reads (report, README table, `watchdrop report
RESULTS.json`), so one definition gives all three of its faces: the Python objects, their validation
and docs/results-schema.json (`python -m runner.model --schema`, checked by tests/test_model_schema.py).
Pydantic is already a dependency, and a field added here is read, written, validated and documented
at once, where hand-written `to_dict`/`from_dict` pairs and a hand-kept schema drifted apart.

- Strict: `strict=True` and `extra="forbid"` on every model, so a `true` where seconds belong, `"3"`
  where a count belongs, a missing field or an unknown one is an error, never a coercion. Only the
  verdict accepts its string value (that is how results.json spells it). Constructors and assignments
  (`result.rounds = ...`) are checked the same way, so a bad value fails where it is made, not in the report.
- Located errors: `from_dict()` turns pydantic's error into one line that names the path the way a
  reader looks for it, `results.cells[3].rounds[0].seen_at: expected a number, got 'x'`.
- Deterministic: `RunResult.to_json()` sorts keys, indents by 2, writes floats always as floats (`45.0`
  for 45 in a seconds field) and ends with a newline, so rendering the same result twice gives the
  same bytes; tests/test_model_fixtures.py holds files written by the earlier hand-written model and
  checks they re-dump byte for byte.

Times are Unix seconds (float), the clock the watchers' `ts` fields use, so rounds, packets and log
lines compare directly.

To add a field: declare it with a type and a docstring (the docstring becomes its schema description),
and a default if constructors may leave it out; regenerate the schema (the test says how) and let the
fixtures gain the key. Reading requires every key, defaults or not, so a file written before the field
existed is refused as `results.cells[0].<field>: missing`; bump SCHEMA_VERSION if it should be refused
as another version instead. The model has no `Any`-typed field but `pcap`'s values; keep it so (see
`_ABSENT`).

Why one long module: it is the whole results.json contract; its JSON Schema is generated from it.
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ModelWrapValidatorHandler,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    computed_field,
    field_serializer,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import CoreSchema, ErrorDetails, InitErrorDetails, PydanticCustomError

from runner.config.profiles import PROFILES, Profile
from runner.text import plural

#: Bump when a field changes meaning, appears or disappears; readers refuse versions they neither know
#: nor can upgrade (UPGRADES).
SCHEMA_VERSION = 2


def _v1_profiles_have_no_path(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2 added ProfileFacts.path (a chain's hops); every version-1 profile was one box."""
    profiles = [{**p, "path": None} if isinstance(p, dict) else p for p in data.get("profiles") or []]
    cells = [{**c, "profile": {**c["profile"], "path": None}}
             if isinstance(c, dict) and isinstance(c.get("profile"), dict) else c for c in data.get("cells") or []]
    return {**data, "profiles": profiles, "cells": cells}


#: An older version's results.json, read as the current one: version -> the step to the next version.
#: Only for changes with one right answer for old files (a field added whose value they all had).
UPGRADES = {1: _v1_profiles_have_no_path}


class Verdict(enum.Enum):
    """A cell's outcome. Values are what results.json and the table show."""

    PASS = "PASS"
    RECOVERED = "RECOVERED"
    APP_RECOVERED = "APP-RECOVERED"
    FAIL_LOUD = "FAIL-LOUD"
    FAIL_SILENT = "FAIL-SILENT"
    ERROR = "ERROR"
    SKIPPED = "SKIPPED"

    @property
    def legend(self) -> str:
        return _LEGEND[self]

    @property
    def rank(self) -> int:
        """Higher is worse. Unknown outranks a pass (Jepsen): SKIPPED sits above every grade with all
        rounds seen (PASS, RECOVERED, APP-RECOVERED), missed rounds above SKIPPED, and ERROR (the
        harness cannot vouch for anything) above all. APP-RECOVERED sits above RECOVERED: every round
        was seen, but only an application that handles the library's error gets that far."""
        return _RANK[self]

    @classmethod
    def worst(cls, verdicts: Iterable[Verdict]) -> Verdict | None:
        """The highest-ranked verdict, or None for no verdicts."""
        return max(verdicts, key=lambda v: v.rank, default=None)

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        # The legend is the meaning of each value: a reader of the schema gets it without the code.
        schema = handler.resolve_ref_schema(handler(core_schema))
        schema["description"] = " ".join([cls.__doc__ or "", *(f"{v.value}: {v.legend}." for v in cls)])
        return schema


_LEGEND: dict[Verdict, str] = {
    # Each line must hold for every cell that carries the grade (tests/test_verdicts.py checks them
    # against the verdict table's cells and the fixture results).
    Verdict.PASS: ("every round seen in time, no error reached the application, and no connection a round "
                   "depended on was reset or idled out (an RST that is part of an endpoint's own close is no reset)"),
    Verdict.RECOVERED: ("every round seen in time after a connection was cut (an RST the LB's record says it sent "
                        "or caused, an idle-out at the LB, or, where no LB keeps a record, an RST of unknown "
                        "origin), and the library carried on by itself: no error reached the application"),
    Verdict.APP_RECOVERED: ("every round seen in time, but the library handed the application an error when its "
                            "watch broke (an error line before the re-watch): code must catch it, and watch again "
                            "where the library does not"),
    Verdict.FAIL_LOUD: "a round was missed, and the library raised an error the application must handle",
    Verdict.FAIL_SILENT: ("a round was missed with no error at all — the watch is dead on a socket that looks alive"),
    Verdict.ERROR: ("the harness cannot vouch for the cell: a harness fault, missing evidence, or evidence that "
                    "contradicts itself (reason and logs attached)"),
    Verdict.SKIPPED: "could not run here, with the reason",
}

_RANK: dict[Verdict, int] = {
    Verdict.PASS: 0,
    Verdict.RECOVERED: 1,
    Verdict.APP_RECOVERED: 2,
    Verdict.SKIPPED: 3,
    Verdict.FAIL_LOUD: 4,
    Verdict.FAIL_SILENT: 5,
    Verdict.ERROR: 6,
}


# --- field types ----------------------------------------------------------------------------------

#: Seconds (a duration or a Unix time). Always written as a float, so 45 renders as 45.0 as one read back
#: does: validation already makes it a float, the serializer keeps that for objects that skipped validation
#: (`model_copy(update=...)`, `model_construct`). NaN and infinities are refused: JSON has no spelling for them.
Seconds = Annotated[float, Field(allow_inf_nan=False), PlainSerializer(float, return_type=float)]
#: Counts of lines, events, rounds: never negative.
Count = Annotated[int, Field(ge=0)]

#: Passed to validation by `from_dict()`: a file must carry every key (defaults are for constructors,
#: which fill results in as a run goes) and the derived `cell_id`.
_READING = {"reading results.json": True}


def _reading(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("reading results.json"))


class _Absent:
    """Stands in for a key a file lacks, so pydantic reports it in field order with the other problems."""

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


def _field_error(field: str, data: Any, message: str) -> ValidationError:
    """A validation error located at `field` of the model being validated, for checks that span fields."""
    # "{detail}" keeps any braces in the message from being read as a template.
    error = PydanticCustomError("watchdrop", "{detail}", {"detail": message})
    return ValidationError.from_exception_data("watchdrop", [InitErrorDetails(type=error, loc=(field,), input=data)])


def _wording(err: ErrorDetails) -> str:
    """Pydantic's error in the words the hand-written readers used (tests and users grep for them)."""
    kind, value, ctx = err["type"], err["input"], err.get("ctx") or {}
    if value is _ABSENT:
        return "missing"
    match kind:
        case "missing":
            return "missing"
        case "float_type":
            return f"expected a number, got {value!r}"
        case "finite_number":
            return f"expected a finite number, got {value!r}"
        case "int_type":
            return f"expected an integer, got {value!r}"
        case "bool_type":
            return f"expected true or false, got {value!r}"
        case "string_type":
            return f"expected a string, got {value!r}"
        case "model_type" | "dict_type":
            return f"expected an object, got {type(value).__name__}"
        case "list_type":
            return f"expected a list, got {type(value).__name__}"
        case "enum":
            # ctx["expected"] is "'PASS', 'RECOVERED' or 'SKIPPED'"; the readers listed them bare.
            known = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
            return f"unknown {err['loc'][-1]} {value!r} (known: {known})"
        case "greater_than_equal":
            return f"expected at least {ctx.get('ge')}, got {value!r}"
        case "string_too_short":
            return f"expected a non-empty string, got {value!r}"
        case "extra_forbidden":
            return "unknown field (not in this watchdrop's schema)"
        case "watchdrop":
            return err["msg"]
    return f"{err['msg']}, got {value!r}"


def _explain(exc: ValidationError, where: str) -> str:
    """The first problem as `where.cells[3].rounds[0].seen_at: ...`, and how many more there are."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    path = where
    for part in first["loc"]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    more = f" (and {plural(len(errors) - 1, 'more problem')})" if len(errors) > 1 else ""
    return f"{path}: {_wording(first)}{more}"


class _Model(BaseModel):
    """What every results.json object shares: strict, closed, documented by its field docstrings."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        # The run mutates results as evidence comes in (`result.rounds = ...`); those writes are checked too.
        validate_assignment=True,
        # Field docstrings become the schema's descriptions: the comment and the documentation are one text.
        use_attribute_docstrings=True,
        # results.json always has every key, defaults included: the schema says so.
        json_schema_serialization_defaults_required=True,
    )

    #: The name of this object in error messages when it is read on its own.
    _where: ClassVar[str] = "value"

    @model_validator(mode="before")
    @classmethod
    def _every_key_when_reading(cls, data: Any, info: ValidationInfo) -> Any:
        # A file lacking a key was not written by watchdrop (to_dict writes them all): refuse it rather than
        # fill in a default. The placeholder fails every field type here (none is Any), reported as "missing".
        if not _reading(info) or not isinstance(data, dict):
            return data
        absent = [name for name in cls.model_fields if name not in data]
        return {**data, **dict.fromkeys(absent, _ABSENT)} if absent else data

    def to_dict(self) -> dict[str, Any]:
        """Only JSON types, every field present: what results.json holds for this object."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: Any, where: str | None = None) -> Self:
        """Validate `d` (parsed JSON); a problem is a ValueError naming its path from `where`."""
        try:
            return cls.model_validate(d, context=_READING)
        except ValidationError as exc:
            raise ValueError(_explain(exc, cls._where if where is None else where)) from None


# --- the model ------------------------------------------------------------------------------------


class ProfileFacts(_Model):
    """A cluster's LB profile as it really ran (runner/config/profiles.py Profile, after scaling/overrides)."""

    model_config = ConfigDict(frozen=True)
    _where: ClassVar[str] = "profile"

    name: str
    mode: str
    """What the LB does to a flow idle for `idle_timeout`: "none" (no LB acts: the control),
    "silent-drop", "rst-on-next-packet" or "rst-both-ways"."""
    idle_timeout: Seconds | None
    """Seconds of idle after which the LB forgets the flow; null when unknown (a provider's LB).
    For mode "none" it only sized the idle waits."""
    front: str | None
    """What answers the client behind the LB (docs/facts.md, "Fronts"): "tcp" (a TCP proxy: the
    server's closes reach the client, its keepalive probes do not), "http" (ends TLS and HTTP and keeps
    its own connections: the server's idle close stays behind it) or "passthrough"/null (DNAT straight
    to kube-apiserver, whose own keepalive then hides the LB). Runs before issue 17 wrote "tcp-proxy"
    for "tcp" and "none" for "passthrough"."""
    scaled_from: str | None = None
    """The real profile a `-quick` profile was scaled down from (e.g. "azure-slb"), else null."""
    scaled_from_timeout: Seconds | None = None
    """That real profile's idle timeout, so the report can print both numbers."""
    overrides: dict[str, str] = Field(default_factory=dict)
    """Settings a matrix cluster overrode on top of the named profile."""
    path: str | None = None
    """A chain of hops (a matrix cluster's `path:`, runner/config/paths.py) hop by hop, pod side
    first: each hop's kind, behaviour and timer (with the real one when scaled); the profile's other
    fields are its last hop's. Null for a single LB."""

    @property
    def acts(self) -> bool:
        """Whether an LB forgets idle flows at all (False for the control profile)."""
        return self.mode != "none"

    @classmethod
    def from_profile(cls, profile: Profile, path: str | None = None) -> ProfileFacts:
        """The facts of a resolved runner.config.profiles.Profile, with its real profile's timeout if scaled;
        `path` a chain's description (runner/config/paths.NetPath.describe)."""
        real = PROFILES.get(profile.scaled_from) if profile.scaled_from else None
        return cls(
            name=profile.name,
            mode=profile.mode,
            idle_timeout=float(profile.idle_timeout),
            front=profile.front,
            scaled_from=profile.scaled_from,
            scaled_from_timeout=None if real is None else float(real.idle_timeout),
            overrides={str(k): str(v) for k, v in profile.overrides},
            path=path,
        )

    def describe(self) -> str:
        """One line of real numbers, e.g.
        `azure-slb-quick: rst-both-ways after 45 s idle (scaled from azure-slb: 240 s), front tcp`."""
        if not self.acts:
            text = f"{self.name}: no LB acts on idle flows"
        elif self.idle_timeout is None:
            text = f"{self.name}: {self.mode}, idle timeout unknown"
        else:
            text = f"{self.name}: {self.mode} after {fmt_secs(self.idle_timeout)} idle"
        if self.scaled_from is not None:
            real = f": {fmt_secs(self.scaled_from_timeout)}" if self.scaled_from_timeout is not None else ""
            text += f" (scaled from {self.scaled_from}{real})"
        if self.front and self.front not in ("none", "passthrough"):
            text += f", front {self.front}"
        else:
            text += ", no front (direct to kube-apiserver)"
        if self.overrides:
            text += " [overridden: " + ", ".join(f"{k}={v}" for k, v in sorted(self.overrides.items())) + "]"
        if self.path:
            text += f"; path: {self.path}"
        return text


class Timings(_Model):
    """The cell's timing settings, as passed to the watcher (clients/README.md)."""

    model_config = ConfigDict(frozen=True)
    _where: ClassVar[str] = "timings"

    interval: Seconds | None
    """watch: seconds between the harness's updates (idle on the flow); null for idle-request."""
    detection_timeout: Seconds
    """Seconds the harness waits for an `event-seen` / `request-done` before the round is missed."""
    rounds: Count
    idle: Seconds | None = None
    """idle-request: seconds idle between the two requests of a round; null for watch."""


class RoundFailure(enum.Enum):
    """Why an idle-request round tells nothing about idle flows (runner.verdict): the watcher never
    sent it, or the request before the idle period failed. Kept in memory while judging, never in
    results.json (the round's note says it in words)."""

    NEVER_SENT = "never-sent"
    BEFORE_IDLE = "before-idle"


class RoundResult(_Model):
    """One round: what the harness did, what the watcher saw, and how idle the flow was before."""

    _where: ClassVar[str] = "round"
    _failure: RoundFailure | None = PrivateAttr(default=None)

    index: int
    scenario: str
    update_at: Seconds
    """watch: when the harness wrote the trigger (taken before the write was sent);
    idle-request: when the watcher sent the request that follows the idle period."""
    expected: str
    """watch: the trigger's `data.value` written this round; idle-request: "ok"."""
    seen_at: Seconds | None
    """The matching `event-seen` / `request-done` time, or null when nothing matched in time."""
    deadline: Seconds
    ok: bool
    idle_before: Seconds | None
    """Seconds the pod's flow had been idle when the update happened (from the capture), or null
    when no connection was open then or there was no capture."""
    note: str = ""

    @property
    def failure(self) -> RoundFailure | None:
        """Set by runner.verdict while judging (`failed_as`); None once read back from results.json."""
        return self._failure

    def failed_as(self, failure: RoundFailure | None) -> RoundResult:
        self._failure = failure
        return self


class WatcherFacts(_Model):
    """Counts read from the watcher's JSON lines and stderr."""

    _where: ClassVar[str] = "watcher"

    started: bool
    """A `started` line was printed (the watcher ran at all)."""
    lines: Count
    """JSON lines that followed the contract (had `ts` and `event`)."""
    errors: Count
    reconnects: Count
    watch_opened: Count
    stderr_errors: Count
    """stderr lines that look like the library logging an error (klog `E....`, Traceback, "error")."""
    exit_code: int | None
    """null when the harness recorded no exit (it never ended or was never started)."""
    first_error: str | None = None
    """The first `error` line's message, for the reason text."""
    reported_version: str | None = None
    """`version` from the `started` line: what the watcher actually loaded."""


class LbSummary(_Model):
    """What the LB emulator's event log says it did to this cell's flows, up to the last round's
    deadline (runner.evidence.lb_events.summarize_lb_events)."""

    model_config = ConfigDict(frozen=True)
    _where: ClassVar[str] = "lb"

    expired: Count = 0
    rst_to_client: Count = 0
    rst_to_server: Count = 0
    dropped_after_expiry: Count = 0


MIB = 1024 * 1024


class CaptureFacts(_Model):
    """How the pod's capture ended, by tcpdump's own account: a capture that stopped early, was cut
    at its size cap or lost packets is missing evidence (runner.verdict makes the cell ERROR)."""

    model_config = ConfigDict(frozen=True)
    _where: ClassVar[str] = "capture"

    ran_to_end: bool
    """tcpdump was still running when the runner stopped it (false: it died or exited first)."""
    exit_code: int | None
    """tcpdump's exit code (0 after the runner's SIGTERM/SIGINT); null when it never ended."""
    dropped: Count | None
    """"N packets dropped by kernel" (plus "by interface") from tcpdump's last words; null when it
    printed no counts."""
    size: Count
    """Size of pod.pcap in bytes."""
    limit: Count
    """The size pod.pcap may not reach (runner.evidence.limits)."""

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


class Cut(_Model):
    """What the runner cut from one evidence file so a watcher or a capture cannot exhaust its
    memory or disk (runner.evidence.limits)."""

    model_config = ConfigDict(frozen=True)
    _where: ClassVar[str] = "cut"

    file: str
    """The evidence file's name (watcher.jsonl, watcher.stderr, watcher.log, pod.pcap)."""
    long_lines: Count = 0
    """Lines longer than the line cap, each cut to it."""
    capped_at: Count | None = None
    """The file reached its size cap at this many bytes; what came later was not kept."""

    def describe(self) -> str:
        parts = []
        if self.long_lines:
            parts.append(f"{self.long_lines} line(s) longer than the cap cut")
        if self.capped_at is not None:
            parts.append(f"stopped at {self.capped_at / MIB:g} MiB")
        return f"{self.file}: {', '.join(parts) or 'nothing cut'}"


#: The evidence key of a client build's log (`CellResult.evidence`): a cell whose build failed has
#: it, and never ran.
BUILD_LOG = "build_log"


def make_cell_id(client: str, cluster: str, scenario: str) -> str:
    return f"{client}/{cluster}/{scenario}"


class CellResult(_Model):
    """One (client entry, cluster, scenario) cell with its verdict and the evidence behind it."""

    _where: ClassVar[str] = "cell"

    client: str
    """The matrix entry's name, the row key: the folder name, or a variant's name."""
    folder: str
    """The clients/ folder the entry builds from; equals `client` for the folder's default entry."""
    library: str
    library_version: str
    api_style: str
    variant_env: dict[str, str]
    """The variant's extra environment (e.g. {"WATCHDROP_TCP_KEEPALIVE": "30"}); {} for a default."""
    cluster: str
    profile: ProfileFacts | None
    """null on a kubernetes cluster, whose LB is the provider's and not emulated."""
    scenario: str
    timings: Timings
    # Not strict: results.json spells a verdict as its value ("FAIL-SILENT"), which strict mode refuses.
    verdict: Annotated[Verdict, Field(strict=False)]
    reason: str
    """Short one-liner without the verdict prefix, e.g. "no event for 2/2 rounds, no RST seen"."""
    rounds: list[RoundResult] = Field(default_factory=list)
    watcher: WatcherFacts | None = None
    pcap: dict[str, Any] | None = None
    """runner/evidence/pcap.py PcapFacts.to_dict() of the pod's capture, or null when there was none."""
    lb: LbSummary | None = None
    keepalive: str = ""
    """The observed keepalive summary read from the capture (PcapFacts.keepalive_summary())."""
    evidence: dict[str, str] = Field(default_factory=dict)
    """Evidence files by kind ("watcher_log", "stderr", "pcap", "lb_events", ...), relative to the run dir."""
    started: Seconds | None = None
    finished: Seconds | None = None
    errors: list[str] = Field(default_factory=list)
    """Harness problems met while running this cell (each one line)."""
    build_env: dict[str, str] = Field(default_factory=dict)
    """The variant's build settings (e.g. an older library pin); {} for a default."""
    capture: CaptureFacts | None = None
    """How the pod's capture ended; null where no capture ran."""
    cuts: list[Cut] = Field(default_factory=list)
    """What was cut from evidence files to keep memory and disk bounded; [] when nothing was."""

    @computed_field(  # type: ignore[prop-decorator]
        description="client/cluster/scenario: derived, and checked against them on read.",
        json_schema_extra={"pattern": "^[^/]+/[^/]+/[^/]+$"},
    )
    @property
    def cell_id(self) -> str:
        return make_cell_id(self.client, self.cluster, self.scenario)

    @property
    def is_variant(self) -> bool:
        return self.client != self.folder

    @field_serializer("pcap")
    def _pcap_as_json(self, pcap: dict[str, Any] | None) -> dict[str, Any] | None:
        # A JSON round trip normalises whatever PcapFacts.to_dict() returned (tuples -> lists),
        # so the in-memory result already equals what a reader of results.json gets back.
        return None if pcap is None else json.loads(json.dumps(pcap, allow_nan=False))

    @model_validator(mode="wrap")
    @classmethod
    def _check_cell_id(cls, data: Any, handler: ModelWrapValidatorHandler[CellResult], info: ValidationInfo) -> Any:
        # cell_id is written for readers but derived from three fields: a file must carry it (as the
        # schema says) and a file whose id disagrees with its own fields was edited by hand wrongly.
        if not isinstance(data, dict) or (not _reading(info) and "cell_id" not in data):
            return handler(data)
        data = dict(data)
        if "cell_id" not in data:
            handler(data)  # the other fields' problems come first, as they would in the file
            raise _field_error("cell_id", data, "missing")
        stored = data.pop("cell_id")
        if not isinstance(stored, str):
            handler(data)
            raise _field_error("cell_id", stored, f"expected a string, got {stored!r}")
        cell = handler(data)
        if stored != cell.cell_id:
            raise _field_error(
                "cell_id", stored, f"{stored!r} does not match client/cluster/scenario {cell.cell_id!r}"
            )
        return cell


class RunResult(_Model):
    """One watchdrop run: every cell's verdict and the evidence behind it; results.json is `to_json()` of this.
    Times are Unix seconds, the clock of the watchers' `ts` fields."""

    model_config = ConfigDict(title="watchdrop results.json")
    _where: ClassVar[str] = "results"

    schema_version: Annotated[int, Field(json_schema_extra={"const": SCHEMA_VERSION})] = SCHEMA_VERSION
    """Bumped when a field changes meaning or disappears; readers refuse versions they do not know."""
    run_id: Annotated[str, Field(min_length=1)]
    started: Seconds
    finished: Seconds | None
    matrix: str
    """The matrix file the run was planned from, as given on the command line."""
    machine: dict[str, str]
    """Facts about the machine (kernel, cpus, python, kube-apiserver/etcd versions, ...)."""
    profiles: list[ProfileFacts]
    """Every profile the cells used, with the real numbers after scaling."""
    cells: list[CellResult]
    interrupted: bool = False
    """SIGINT/SIGTERM stopped the run early; cells not reached are absent."""

    @model_validator(mode="before")
    @classmethod
    def _known_version(cls, data: Any) -> Any:
        # Another version is refused for that alone: its other fields may mean other things, so listing
        # their problems would only mislead.
        version = data.get("schema_version", SCHEMA_VERSION) if isinstance(data, dict) else SCHEMA_VERSION
        while isinstance(data, dict) and type(version) is int and version in UPGRADES:
            data = {**UPGRADES[version](data), "schema_version": version + 1}
            version += 1
        if isinstance(version, int) and not isinstance(version, bool) and version != SCHEMA_VERSION:
            raise _field_error(
                "schema_version", version, f"this watchdrop reads version {SCHEMA_VERSION}, the file has {version}"
            )
        return data

    def to_json(self) -> str:
        """Deterministic JSON text: the same result always gives the same bytes."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RunResult:
        return cls.from_dict(json.loads(text))


def fmt_secs(x: float) -> str:
    """Seconds for humans, stable across renders: `45 s`, `0.4 s`, `1.5 s`."""
    if abs(x) >= 10:
        return f"{x:.0f} s"
    return f"{x:.1f} s"


# --- the schema -----------------------------------------------------------------------------------


class _SchemaGenerator(GenerateJsonSchema):
    # Field titles would only repeat the field names ("Run Id"); the descriptions say what they mean.
    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def results_schema() -> dict[str, Any]:
    """The JSON Schema of results.json, from the model: what docs/results-schema.json holds."""
    # Serialization mode: the file as written, with the computed cell_id and every default present.
    schema = RunResult.model_json_schema(mode="serialization", schema_generator=_SchemaGenerator)
    # The run's own object first, the definitions it refers to after it: the file reads top-down.
    defs = schema.pop("$defs")
    return {"$schema": _SchemaGenerator.schema_dialect, **schema, "$defs": defs}


def results_schema_text() -> str:
    """docs/results-schema.json's exact text (fields in model order, so a diff reads like the model's)."""
    return json.dumps(results_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.model", description="The results.json model.")
    parser.add_argument("--schema", action="store_true",
                        help="print results.json's JSON Schema (> docs/results-schema.json)")
    args = parser.parse_args(argv)
    if not args.schema:
        parser.print_help()
        return 2
    sys.stdout.write(results_schema_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
