"""Writing result files: whole or not at all, readable by whoever reads results.

Results, pages and README are read by people, web servers and CI collectors running as other
users, so a new file is 0644 even when the runner is root (mkstemp alone makes 0600). A file that
exists keeps its mode and owner: root rewriting a user's README leaves it theirs.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


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
