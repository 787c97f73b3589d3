"""Which released versions a bisection walks: the registry's stable releases, oldest first, in [--from, --to].

Ordering is releases.py's (PEP 440 for Python, dotted numbers elsewhere); pre-releases and versions
a build setting cannot take (runner/config/matrix.VERSION_RE: three numbers and an optional suffix)
are left out. --from and --to must each be such a release: a typo is refused, never rounded to a
neighbour.
"""

from __future__ import annotations

from collections.abc import Iterable

from packaging.version import Version

from runner.build.releases import release_tuple
from runner.config.matrix import VERSION_RE
from runner.errors import UsageError


def _key(version: str, python: bool) -> tuple[tuple[int, ...], Version | None]:
    numbers = release_tuple(version, python=python)
    assert numbers is not None
    return numbers, (Version(version) if python else None)


def stable_releases(released: Iterable[str], *, python: bool) -> list[str]:
    """The stable releases a build can be asked for, oldest first, each once."""
    seen: dict[tuple[tuple[int, ...], Version | None], str] = {}
    for v in released:
        if VERSION_RE.fullmatch(v) and release_tuple(v, python=python) is not None:
            seen.setdefault(_key(v, python), v)
    return [seen[k] for k in sorted(seen)]


def select_range(released: Iterable[str], first: str | None, last: str | None, *, python: bool,
                 library: str = "the library", registry: str = "its registry") -> list[str]:
    """The stable releases from `first` to `last` inclusive (default: the oldest and the newest)."""
    stable = stable_releases(released, python=python)
    if not stable:
        raise UsageError(f"{registry} lists no stable release of {library}")

    def index(option: str, version: str) -> int:
        version = version.strip()
        if version in stable:
            return stable.index(version)
        near = [v for v in stable if v.startswith(version.rsplit(".", 1)[0])][-5:] or stable[-5:]
        if VERSION_RE.fullmatch(version) and release_tuple(version, python=python) is None:
            why = "is not a stable release (pre-releases are not bisected)"
        else:
            why = "is not a release"
        raise UsageError(f"{option} {version}: {why} of {library} on {registry}",
                         fix="give a released version, e.g. one of: " + ", ".join(near))

    lo = index("--from", first) if first else 0
    hi = index("--to", last) if last else len(stable) - 1
    if lo > hi:
        raise UsageError(f"--from {stable[lo]} comes after --to {stable[hi]}",
                         fix=f"swap them: --from {stable[hi]} --to {stable[lo]}")
    if lo == hi:
        raise UsageError(f"--from and --to are both {stable[lo]}: nothing to bisect",
                         fix="give a range of at least two releases")
    return stable[lo:hi + 1]
