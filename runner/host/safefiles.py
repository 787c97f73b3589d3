"""Files written safely: never through a planted symlink, and result files whole or not at all.

Lock and claim files live in /run and in the cache; a symlink planted where one of them goes
would make root truncate or write whatever it points to. O_NOFOLLOW refuses the last component
if it is a symlink; the error names the path and what to do.

Results, pages and README are read by people, web servers and CI collectors running as other
users, so a new file `write_atomic` makes is 0644 even when the runner is root (mkstemp alone makes
0600). A file that exists keeps its mode and owner: root rewriting a user's README leaves it theirs.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import IO

from runner.errors import UnsafePathError


def open_nofollow(path: Path | str, mode: str = "w", perm: int = 0o644) -> IO[str]:
    """open(path, mode) for "w" or "a", refusing a symlink (and anything but a regular file)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= os.O_APPEND if mode == "a" else os.O_TRUNC
    try:
        fd = os.open(path, flags | os.O_NONBLOCK, perm)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(f"{path} is a symlink; refusing to follow it as root",
                                  fix=f"remove {path} (nothing of watchdrop makes it a link) and retry") from None
        raise
    if not os.path.isfile(f"/proc/self/fd/{fd}"):
        os.close(fd)
        raise UnsafePathError(f"{path} is not a regular file; refusing to use it",
                              fix=f"remove {path} and retry")
    os.set_blocking(fd, True)
    return os.fdopen(fd, mode)


def write_nofollow(path: Path | str, text: str) -> None:
    with open_nofollow(path) as f:
        f.write(text)


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> Path:
    """Write beside `path` and rename: a reader (or an interrupted run) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        try:
            st = path.stat()
        except FileNotFoundError:
            os.chmod(tmp, mode)
        else:
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
            if os.geteuid() == 0:
                os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
