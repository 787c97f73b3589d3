"""Files root opens in places others might have touched: never through a planted symlink.

Lock and claim files live in /run and in the cache; a symlink planted where one of them goes
would make root truncate or write whatever it points to. O_NOFOLLOW refuses the last component
if it is a symlink; the error names the path and what to do.
"""

from __future__ import annotations

import errno
import os
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
