"""Binary search for the release where a cell's grade changes, with the cell run injected.

Pure logic: `bisect(versions, run_one)` never builds or runs anything itself, so a fake `run_one`
tests it. Both ends are run first; equal grades mean no boundary in range. Otherwise the search
keeps `lo` at the first end's grade and `hi` at another, halving the index range until they are
neighbours: at most 2 + ceil(log2(N - 1)) runs for N versions, within the issue's ceil(log2 N) + 2.
A version whose build failed or whose cell is ERROR or SKIPPED says nothing about the library: the
search stops there and names it instead of guessing which side it belongs to.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

#: Grades that are findings about the library; anything else (ERROR, SKIPPED, no build) is refused.
GRADES = ("PASS", "RECOVERED", "FAIL-LOUD", "FAIL-SILENT")


@dataclass(frozen=True)
class Outcome:
    """One tried version: its cell's grade (None when it did not build), why, and where the evidence is."""

    version: str
    grade: str | None
    reason: str
    evidence: str | None = None

    @property
    def usable(self) -> bool:
        return self.grade in GRADES

    @property
    def label(self) -> str:
        return self.grade or "NO BUILD"


#: Build the watcher at this version, run the one cell, say how it went.
RunOne = Callable[[str], Outcome]


@dataclass
class Bisection:
    """What the search tried (in the order it ran them) and what it found."""

    versions: list[str]
    tried: list[Outcome] = field(default_factory=list)
    #: The neighbouring versions where the grade changes: (last with the first end's grade, first without).
    boundary: tuple[Outcome, Outcome] | None = None
    #: The version the search stopped at because its grade is no finding (build failed, ERROR, SKIPPED).
    refused: Outcome | None = None

    @property
    def runs(self) -> int:
        return len(self.tried)

    @property
    def equal_ends(self) -> bool:
        return (self.boundary is None and self.refused is None and len(self.tried) >= 2
                and self.tried[0].grade == self.tried[1].grade)

    def summary(self) -> str:
        """The one line the command ends with."""
        if self.refused is not None:
            o = self.refused
            what = "did not build" if o.grade is None else f"is {o.grade}"
            where = f" (evidence: {o.evidence})" if o.evidence else ""
            return (f"refused: {o.version} {what}: {o.reason}{where}; no boundary is guessed across it; "
                    "bisect a range that leaves it out (--from/--to) or fix what broke")
        if self.boundary is not None:
            a, b = self.boundary
            return f"boundary: {a.version} {a.label} → {b.version} {b.label}"
        first, last = self.tried[0], self.tried[-1]
        return f"no boundary in range: {first.version} and {last.version} are both {first.label}"


def max_runs(n: int) -> int:
    """The issue's bound for N versions: ceil(log2 N) + 2."""
    return math.ceil(math.log2(n)) + 2 if n > 1 else n


def bisect(versions: Sequence[str], run_one: RunOne) -> Bisection:
    """Run both ends, then halve the range between them until the grade change sits between neighbours."""
    if len(versions) < 2:
        raise ValueError("bisect needs at least two versions")
    result = Bisection(list(versions))

    def run(i: int) -> Outcome | None:
        outcome = run_one(versions[i])
        result.tried.append(outcome)
        if not outcome.usable:
            result.refused = outcome
            return None
        return outcome

    lo_i, hi_i = 0, len(versions) - 1
    lo = run(lo_i)
    if lo is None:
        return result
    hi = run(hi_i)
    if hi is None or hi.grade == lo.grade:
        return result
    while hi_i - lo_i > 1:
        mid_i = (lo_i + hi_i) // 2
        mid = run(mid_i)
        if mid is None:
            return result
        if mid.grade == lo.grade:
            lo_i, lo = mid_i, mid
        else:
            hi_i, hi = mid_i, mid
    result.boundary = (lo, hi)
    return result
