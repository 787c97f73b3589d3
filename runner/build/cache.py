"""Where slow builds are cached: outside the repo, keyed by version.

Root runs what it finds there (kube-apiserver, etcd, client builds), so as root the cache must be
root's alone: a directory another user owns or can write (e.g. a user's ~/.cache kept by an
environment-preserving sudo) is refused with the fix, never used.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from runner.errors import UnsafePathError


def cache_root() -> Path:
    """`$WATCHDROP_CACHE`, else `~/.cache/watchdrop`; checked when running as root."""
    env = os.environ.get("WATCHDROP_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "watchdrop"
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        check_root_owned(root)
    return root


def check_root_owned(path: Path) -> None:
    """Refuse `path` unless it and every directory above it are root's and no one else can write
    them (a sticky directory such as /tmp is fine above: others cannot rename what root owns)."""
    path = Path(os.path.abspath(path))
    fix = (f"`chown root:root {path} && chmod go-w {path}`, or set WATCHDROP_CACHE to a directory only "
           "root can write (e.g. /var/cache/watchdrop)")
    for p in [path, *path.parents]:
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            # The cache itself may not be a link; a link above it is resolved and checked below.
            if p == path:
                raise UnsafePathError(f"cache directory {path} is a symlink; root will not use it", fix=fix)
            check_root_owned(p.resolve())
            return
        if st.st_uid != 0:
            raise UnsafePathError(f"cache directory {path} is not safe for root: {p} is owned by uid {st.st_uid}",
                                  fix=fix)
        sticky_above = p != path and st.st_mode & stat.S_ISVTX
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not sticky_above:
            raise UnsafePathError(f"cache directory {path} is not safe for root: {p} is writable by group or "
                                  "others", fix=fix)
