"""Each probe connection's fate from both ends' evidence; per path where and how the flow broke.

Pure functions over plain records, so every sentence of the story is tested without a cluster:

- the client's end: curl's exit code, stderr and output (outside), or the in-cluster client's JSON
  line (inside): it heard the line after the idle (`survived`), an RST (`reset`), nothing until its
  deadline (`silent`), a FIN (`closed`);
- the server's end: the timer server's JSON log for the rung's port (`reset`, `timeout`: its
  TCP_USER_TIMEOUT ran out while its line went unacknowledged, `closed`) and its capture (its
  line retransmitted, RSTs that reached it);
- the LB's own record where the emulator keeps one (local clusters): when it forgot the flow, whom
  it sent RSTs, what it dropped after.

How it broke: `rst-both` (RST to the client and to the server), `rst-client`, `rst-server` (the
server's next line drew an RST, the client heard nothing), `silent` (the client heard nothing and
the server's line went into the void). Matching a profile needs the how and the window; anything
missing is `unknown`, never a guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runner.config.profiles import PROFILES, Profile
from runner.probe.ladder import Rung

#: How a break shows at the ends → the profile mode that produces it.
MODE_OF = {"rst-both": "rst-both-ways", "rst-server": "rst-on-next-packet", "silent": "silent-drop"}
HOW_TEXT = {
    "rst-both": "an RST to both ends",
    "rst-client": "an RST to the client only",
    "rst-server": "an RST to the server when it spoke, the client not told",
    "rst-server-idle": "an RST to the server while the flow was idle, the client not told",
    "silent": "a silent drop: the server's line retransmitted into the void, the client not told",
}


@dataclass(frozen=True)
class ClientEnd:
    outcome: str          # survived | reset | silent | closed | unknown
    elapsed: float | None  # seconds from connecting to the end of the client
    detail: str = ""      # curl's stderr, the in-cluster client's error


@dataclass(frozen=True)
class ServerEnd:
    outcome: str                  # reset | timeout | closed | spoke | unknown
    idle: float | None = None     # the timer server's `idle` at that event
    retransmissions: int | None = None  # of the server's data, from its capture (None: no capture)
    rsts_in: int | None = None    # RSTs that reached the server, from its capture


@dataclass(frozen=True)
class LbRecord:
    expired_after: float | None = None   # the LB forgot the flow after this much idle
    rst_to: tuple[str, ...] = ()
    dropped: int = 0                      # packets dropped after expiry
    rejected: int = 0                     # packets answered with an RST after expiry


@dataclass(frozen=True)
class Fate:
    rung: Rung
    client: ClientEnd
    server: ServerEnd
    lb: LbRecord | None = None

    @property
    def broke(self) -> bool | None:
        if self.client.outcome == "survived":
            return False
        if self.client.outcome in ("reset", "silent", "closed"):
            return True
        return None

    @property
    def how(self) -> str:
        c, s = self.client.outcome, self.server.outcome
        if c == "survived":
            return "survived"
        if c == "reset":
            if s == "reset" or (self.server.rsts_in or 0) > 0:
                return "rst-both"
            return "rst-client" if s in ("spoke", "timeout") else "unknown"
        if c == "silent":
            if s == "reset" and self._reset_while_idle():
                return "rst-server-idle"
            if s == "reset":
                return "rst-server"
            if s == "timeout" or (self.server.retransmissions or 0) > 0:
                return "silent"
        return "unknown"


    def _reset_while_idle(self) -> bool:
        """The server's socket was reset before its line was due (its `idle` counts from its last
        successful send, the banner): the LB cut it at a timeout, not in answer to its line."""
        idle = self.server.idle
        return idle is not None and 1.0 < idle < self.rung.idle - 1.0


# -- reading each end's evidence --------------------------------------------------------------------


def curl_end(rc: int | None, stderr: str, stdout: str, elapsed: float | None) -> ClientEnd:
    """curl --no-keepalive --http0.9: the first line after the banner is `Message 1`."""
    if rc is None:
        return ClientEnd("unknown", elapsed, "curl did not run")
    heard = "Message 1." in stdout
    err = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if heard:
        return ClientEnd("survived", elapsed, err)
    if rc == 56 and "reset" in stderr.lower():
        return ClientEnd("reset", elapsed, err)
    if rc == 28:
        return ClientEnd("silent", elapsed, err or "curl: (28) timed out")
    if rc in (0, 18, 52):  # ended by the server's FIN (52: empty reply before even the banner)
        return ClientEnd("closed", elapsed, err)
    return ClientEnd("unknown", elapsed, err or f"curl exited {rc}")


def pod_client_end(line: Mapping[str, Any] | None) -> ClientEnd:
    """The in-cluster client's line for one rung (runner/probe/manifests.CLIENT_SCRIPT)."""
    if not line:
        return ClientEnd("unknown", None, "no line from the in-cluster client")
    outcome = {"survived": "survived", "reset": "reset", "silent": "silent", "closed": "closed"}.get(
        str(line.get("outcome")), "unknown")
    elapsed = line.get("elapsed")
    return ClientEnd(outcome, float(elapsed) if elapsed is not None else None, str(line.get("error") or ""))


def server_end(events: Iterable[Mapping[str, Any]], port: int, *, retransmissions: int | None = None,
               rsts_in: int | None = None) -> ServerEnd:
    """The timer server's log for one port (one connection per rung and path)."""
    mine = [e for e in events if e.get("port") == port and e.get("event") != "listening"]
    if not any(e.get("event") == "connected" for e in mine):
        return ServerEnd("unknown", retransmissions=retransmissions, rsts_in=rsts_in)
    end = next((e for e in mine if e.get("event") in ("reset", "timeout", "closed", "error")), None)
    if end is not None:
        outcome = "unknown" if end["event"] == "error" else str(end["event"])
        return ServerEnd(outcome, end.get("idle"), retransmissions, rsts_in)
    spoke = any(e.get("event") == "sent" and int(e.get("n") or 0) >= 1 for e in mine)
    return ServerEnd("spoke" if spoke else "unknown", None, retransmissions, rsts_in)


def lb_record(events: Sequence[Mapping[str, Any]], vport: int) -> LbRecord:
    """The LB agent's events for flows to `vport` (one connection per rung and path)."""
    flows = {e["flow"] for e in events if e.get("event") == "flow-opened"
             and str(e.get("flow", "")).endswith(f">{vport}")}
    mine = [e for e in events if e.get("flow") in flows]
    expired = next((e for e in mine if e.get("event") == "expired"), None)
    after = [e for e in mine if e.get("event") == "after-expiry"]
    return LbRecord(expired_after=float(expired["idle"]) if expired else None,
                    rst_to=tuple(sorted({str(e["to"]) for e in mine if e.get("event") == "rst-sent"})),
                    dropped=sum(e.get("action") == "dropped" for e in after),
                    rejected=sum(e.get("action") == "reset" for e in after))


# -- per path ---------------------------------------------------------------------------------------


@dataclass
class PathResult:
    path: str
    fates: list[Fate]
    survived: int | None = None   # the largest idle that survived
    broke: int | None = None      # the smallest idle that broke
    how: str = "unknown"
    cut_after: float | None = None  # measured: the client's RST came this long after connecting
    matches: list[str] = field(default_factory=list)
    problem: str = ""             # why the path is unknown or contradictory


def judge_path(path: str, fates: Sequence[Fate], profiles: Mapping[str, Profile] = PROFILES) -> PathResult:
    res = PathResult(path, sorted(fates, key=lambda f: f.rung.idle))
    known = [f for f in res.fates if f.broke is not None]
    if not known:
        res.problem = "no connection's fate is known from the evidence"
        return res
    ok = [f.rung.idle for f in known if f.broke is False]
    bad = [f for f in known if f.broke]
    res.survived = max(ok) if ok else None
    res.broke = min(f.rung.idle for f in bad) if bad else None
    if res.survived is not None and res.broke is not None and res.survived > res.broke:
        res.problem = f"contradictory: {res.survived} s idle survived but {res.broke} s broke"
        return res
    if not bad:
        res.how = "survived"
        res.matches = [p.name for p in profiles.values()
                       if p.mode == "none" or p.idle_timeout > (res.survived or 0)]
        return res
    first = bad[0]
    res.how = first.how
    if res.how in ("rst-both", "rst-client") and first.client.elapsed is not None:
        res.cut_after = round(first.client.elapsed, 1)
    mode = MODE_OF.get(res.how)
    if mode is None:
        res.problem = ("how it broke is not known from the evidence" if res.how == "unknown"
                       else f"{HOW_TEXT[res.how]}: no profile behaves so")
        return res
    lo = res.survived or 0
    res.matches = [p.name for p in profiles.values() if p.mode == mode and lo < p.idle_timeout <= res.broke
                   and (res.cut_after is None or _near(res.cut_after, p.idle_timeout))]
    return res


def _near(measured: float, timeout: int) -> bool:
    """An RST the client saw this long after connecting (the banner is its last data) is the
    profile's cut when within 3 s or 5 % of its timeout."""
    return abs(measured - timeout) <= max(3.0, 0.05 * timeout)


# -- the story --------------------------------------------------------------------------------------


def _client_sentence(f: Fate) -> str:
    c = f.client
    when = f" after {c.elapsed:.1f} s" if c.elapsed is not None else ""
    if c.outcome == "reset":
        return f"{c.detail or 'the client got an RST'}{when}"
    if c.outcome == "silent":
        return f"the client heard nothing more and gave up{when} ({c.detail or 'its deadline'})"
    if c.outcome == "closed":
        return f"the server closed the connection{when}"
    return f"the client's end is unknown ({c.detail or 'no evidence'})"


def _server_sentence(f: Fate) -> str:
    s = f.server
    parts = []
    if f.how == "rst-server-idle":
        parts.append(f"the server's socket was reset after {s.idle:.0f} s idle, before its line was due")
    elif s.outcome == "reset" and f.client.outcome == "silent":
        parts.append(f"the server's line after {f.rung.idle} s drew an RST")
    elif s.outcome == "reset":
        parts.append("the server's socket was reset too")
    elif s.outcome == "timeout":
        parts.append(f"the server's line after {f.rung.idle} s was never acknowledged and it gave up")
    elif s.outcome == "spoke":
        parts.append("the server's send succeeded and it heard of no trouble")
    elif s.outcome == "unknown":
        parts.append("the server's end is unknown (no log for its port)")
    if s.retransmissions:
        parts.append(f"its capture shows {s.retransmissions} retransmissions into the void")
    return ", ".join(parts)


def _lb_sentence(f: Fate) -> str:
    lb = f.lb
    if lb is None:
        return ""
    if lb.expired_after is None:
        return "the LB's record shows no expiry"
    parts = [f"the LB's record: it forgot the flow after {lb.expired_after:g} s idle"]
    if lb.rst_to:
        parts.append("sent an RST to the " + " and the ".join(lb.rst_to))
    if lb.dropped:
        parts.append(f"dropped {lb.dropped} packets after")
    if lb.rejected:
        parts.append(f"answered {lb.rejected} packets with an RST")
    return ", ".join(parts)


def story(res: PathResult, where: str) -> str:
    """A few lines for a path: where it ran, the window, the how from both ends, the profiles it matches."""
    head = f"{res.path}: {where}"
    if res.problem and res.survived is None and res.broke is None:
        return _lines(head, [f"unknown: {res.problem}"])
    window = [f"survived {res.survived} s idle"] if res.survived is not None else []
    if res.broke is None:
        window.append("nothing broke within the ladder")
        return _lines(head, [", ".join(window), "fits every profile whose timeout is longer, or no LB: "
                             + (", ".join(res.matches) or "none")])
    first = next(f for f in res.fates if f.broke and f.rung.idle == res.broke)
    window.append(f"broke at {res.broke} s")
    parts = [", ".join(window), _client_sentence(first), _server_sentence(first), _lb_sentence(first)]
    if res.problem:
        parts.append(f"unknown: {res.problem}")
    else:
        parts.append(f"how: {HOW_TEXT[res.how]}")
        between = (f"after {res.cut_after:g} s" if res.cut_after is not None
                   else f"between {res.survived or 0} and {res.broke} s")
        parts.append(f"matches {', '.join(res.matches)} ({MODE_OF[res.how]} {between})" if res.matches
                     else f"matches no known profile ({MODE_OF[res.how]} {between})")
    return _lines(head, parts)


def _lines(head: str, parts: Sequence[str]) -> str:
    return "\n".join([head, *(f"  {p}" for p in parts if p)])


def as_record(res: PathResult) -> dict[str, Any]:
    """probe.json's entry for a path."""
    return {"path": res.path, "survived": res.survived, "broke": res.broke, "how": res.how,
            "cut_after": res.cut_after, "matches": res.matches, "problem": res.problem,
            "fates": [{"idle": f.rung.idle, "port": f.rung.port, "client": vars(f.client), "server": vars(f.server),
                       "lb": vars(f.lb) if f.lb else None, "how": f.how} for f in res.fates]}
