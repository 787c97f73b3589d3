"""Where slow builds are cached: outside the repo, keyed by version."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$WATCHDROP_CACHE`, else `~/.cache/watchdrop`."""
    env = os.environ.get("WATCHDROP_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "watchdrop"
    root.mkdir(parents=True, exist_ok=True)
    return root
