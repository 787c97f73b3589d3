"""Which of a registry's versions is the newest stable release, and how a pin compares with it.

Python versions follow PEP 440 (packaging.version); everything else here (Go modules, npm, Maven,
crates.io, NuGet) is compared as dotted numbers with an optional leading `v`. A version with any
suffix (-rc.1, -alpha, -SNAPSHOT, .M1, +incompatible, a Go pseudo-version) is not a stable release:
a pin should be measured against what a user would upgrade to, not against a preview.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from packaging.version import InvalidVersion, Version

_PLAIN = re.compile(r"v?(\d+(?:\.\d+){0,3})")

_PARTS = ("major", "minor", "patch")

State = Literal["current", "behind", "ahead?", "unknown"]


def release_tuple(version: str, *, python: bool) -> tuple[int, ...] | None:
    """The stable release's numbers padded to three (v0.34.4 -> (0, 34, 4)); None for a pre-release
    or anything unreadable. Python post-releases keep their release numbers (1.0.post1 -> (1, 0, 0))."""
    if python:
        try:
            parsed = Version(version)
        except InvalidVersion:
            return None
        if parsed.is_prerelease or parsed.local is not None:
            return None
        numbers = parsed.release
    else:
        m = _PLAIN.fullmatch(version.strip())
        if not m:
            return None
        numbers = tuple(int(n) for n in m.group(1).split("."))
    numbers = numbers + (0,) * (3 - len(numbers))
    while len(numbers) > 3 and numbers[-1] == 0:  # 1.2.3.0 is 1.2.3
        numbers = numbers[:-1]
    return numbers


_Key = tuple[tuple[int, ...], Version | None]


def _key(version: str, *, python: bool) -> _Key | None:
    """A sort key for stable versions; Python's second part orders post-releases after their release
    (the second parts are compared only when the numbers are equal, and then both are None or both set)."""
    numbers = release_tuple(version, python=python)
    if numbers is None:
        return None
    return (numbers, Version(version) if python else None)


def newest_stable(versions: Iterable[str], *, python: bool, major: int | None = None) -> str | None:
    """The highest stable version, or None if there is none. With `major`, only that major line counts.

    Go passes the pin's major: a module path carries its major from v2 on (`/v2`), so a higher major
    in the same list is a leftover, e.g. k8s.io/client-go's v1.4/v1.5 tags of 2016, which semver ranks
    above today's v0.x releases of the same module but which nobody would upgrade to.
    """
    best: tuple[_Key, str] | None = None
    for version in versions:
        key = _key(version, python=python)
        if key is None or (major is not None and key[0][0] != major):
            continue
        if best is None or key > best[0]:
            best = (key, version)
    return best[1] if best else None


@dataclass(frozen=True)
class Status:
    """How a pin stands against the newest stable release; `text` is the report's cell."""

    state: State
    #: For `behind`: e.g. "4 minor" (the first part that differs, and by how much).
    by: str | None = None
    #: For `unknown`: why.
    reason: str | None = None

    @property
    def text(self) -> str:
        if self.state == "behind" and self.by:
            return f"behind ({self.by})"
        if self.state == "unknown":
            return f"unknown ({self.reason})"
        return self.state


def compare(pinned: str, newest: str, *, python: bool) -> Status:
    """current, behind (by how much), or `ahead?` (the pin is newer than any stable release: a
    pre-release pin, or a registry that has not caught up; worth a look, hence the question mark)."""
    pin_key = _key(pinned, python=python)
    if pin_key is None:
        if python:
            try:
                pin_version = Version(pinned)
            except InvalidVersion:
                return Status("unknown", reason=f"pin {pinned} is not a version")
            # A pre-release pin: PEP 440 still orders it.
            return Status("ahead?") if pin_version > Version(newest) else Status("behind", by="pre-release pin")
        return Status("unknown", reason=f"pin {pinned} is not a stable release")
    new_key = _key(newest, python=python)
    if new_key is None:
        return Status("unknown", reason=f"newest {newest} is not a stable release")
    if pin_key == new_key:
        return Status("current")
    if pin_key > new_key:
        return Status("ahead?")
    pin_numbers, new_numbers = pin_key[0], new_key[0]
    for i, (old, new) in enumerate(zip(pin_numbers, new_numbers, strict=False)):
        if old != new:
            part = _PARTS[min(i, 2)]
            return Status("behind", by=f"{new - old} {part}" if i < 3 else part)
    if len(new_numbers) > len(pin_numbers):
        return Status("behind", by="patch")
    return Status("behind", by="post-release")
