"""The ladder of idle periods a probe holds connections open at, and the ports that speak at each.

One timer-server port per rung and path: the server speaks every `idle` seconds on it, so a
connection there is idle exactly that long before its first line, and the server's log and capture
tell the paths apart by port alone (both paths reach the server from the node's address after
kube-proxy's NodePort masquerade, so the peer address cannot).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from runner.errors import UsageError

#: Seconds of idle. No rung sits on a profile's timeout (45, 240, 350, 600 s), where the LB's cut and
#: the server's line would race: each profile's timeout falls strictly inside one window between rungs.
DEFAULT_LADDER: tuple[int, ...] = (30, 60, 120, 200, 270, 330, 400, 540, 660, 900, 1200, 1800)
#: --max-idle's default: the ladder up to 660 s brackets every real profile (600 s is GCP's).
DEFAULT_MAX_IDLE = 660
#: How long each client waits after its rung's line was due before it calls the flow dead (and the
#: server's TCP_USER_TIMEOUT is this less 5 s, so its fate is logged before the probe collects).
MARGIN = 15
PATHS = ("outside", "inside")
#: A port that speaks every 5 s, for the clients to wait on until the Service forwards (kube-proxy's
#: rules, a cloud LB's health checks) before any rung's connection is made.
READY_PORT = 8999
_BASE = {"outside": 9000, "inside": 9100}


@dataclass(frozen=True)
class Rung:
    path: str
    idle: int
    port: int


def ladder(max_idle: int, rungs: Sequence[int] = DEFAULT_LADDER) -> list[int]:
    """The rungs up to --max-idle; a bound below the first rung is a usage error with the fix."""
    if max_idle <= 0:
        raise UsageError(f"lb-probe --max-idle {max_idle}: must be a positive number of seconds",
                         fix=f"e.g. --max-idle {DEFAULT_MAX_IDLE}")
    chosen = sorted({r for r in rungs if 0 < r <= max_idle})
    if not chosen:
        raise UsageError(f"lb-probe --max-idle {max_idle}: below the ladder's first rung ({min(rungs)} s), "
                         "so no connection would be held idle",
                         fix=f"use --max-idle {min(rungs)} or more (the ladder: {', '.join(map(str, rungs))} s)")
    if len(chosen) > 30:
        raise UsageError(f"lb-probe --ladder: {len(chosen)} rungs; at most 30 (each is a port and a connection "
                         "per path)", fix="give fewer rungs")
    return chosen


def parse_ladder(text: str | None) -> tuple[int, ...]:
    """`--ladder 30,60,120` (seconds); None keeps the default."""
    if not text:
        return DEFAULT_LADDER
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(f"lb-probe --ladder {text}: expected whole seconds separated by commas",
                         fix="e.g. --ladder 30,60,120") from None
    if not values or any(v <= 0 for v in values):
        raise UsageError(f"lb-probe --ladder {text}: every rung must be a positive number of seconds",
                         fix="e.g. --ladder 30,60,120")
    return values


def rungs(idles: Sequence[int], paths: Sequence[str] = PATHS) -> list[Rung]:
    return [Rung(path, idle, _BASE[path] + i) for path in paths for i, idle in enumerate(idles)]


def server_ports(rs: Sequence[Rung]) -> list[str]:
    """The timer server's `--port PORT:INTERVAL` values, the readiness port first."""
    return [f"{READY_PORT}:5", *(f"{r.port}:{r.idle}" for r in rs)]
