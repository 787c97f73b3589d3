"""Reading an evidence file of JSON lines, each stamped with `ts` (Unix seconds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_timed(path: Path) -> list[dict[str, Any]]:
    """The file's JSON objects with a numeric `ts`, one a line; anything else (a half-written last
    line, a foreign line) is skipped. A missing file reads as empty."""
    if not path.is_file():
        return []
    out = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        ts = obj.get("ts") if isinstance(obj, dict) else None
        if isinstance(ts, int | float) and not isinstance(ts, bool):
            out.append(obj)
    return out
