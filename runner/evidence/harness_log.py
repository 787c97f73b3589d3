"""harness.log: what the harness did in a cell, as JSON lines (one contract, written and read here).

Each line is `{"ts": <unix seconds>, "kind": ..., "text": ...}` plus fields of its kind:

| kind      | fields           | written when                                                   |
|-----------|------------------|----------------------------------------------------------------|
| `update`  | `round`, `value` | the harness set ConfigMap `trigger` (watch)                    |
| `seen`    | `round`, `after` | the watcher's `event-seen` for that value arrived in time      |
| `failure` | `round`          | a round was missed (watch) or a request hung (idle-request)    |
| `warm`    | `seconds`, `cpu` | the watcher is past its start-up (the start-up waves' gate)    |
| `note`    |                  | anything else worth keeping (setup, pod status, stop)          |

A `warm` line's `seconds` is how long the start took, `cpu` the CPU seconds the watcher had used
by then (null where the runner cannot see its process).

`text` is the sentence for people (the HTML report shows it); readers never parse it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from runner.evidence.jsonl import read_timed

Kind = Literal["update", "seen", "failure", "warm", "note"]
KINDS: tuple[str, ...] = ("update", "seen", "failure", "warm", "note")


def append(path: Path, text: str, kind: Kind = "note", **fields: Any) -> None:
    line = {"ts": round(time.time(), 3), "kind": kind, "text": text, **fields}
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")


@dataclass(frozen=True)
class HarnessLine:
    ts: float
    kind: str
    text: str
    #: The value written (`update` lines), else None.
    value: str | None = None


def read(path: Path) -> list[HarnessLine]:
    """The lines that follow the contract; anything else (a half-written last line) is skipped."""
    out = []
    for obj in read_timed(path):
        if obj.get("kind") not in KINDS:
            continue
        value = obj.get("value")
        out.append(HarnessLine(float(obj["ts"]), str(obj["kind"]), str(obj.get("text", "")),
                               value if isinstance(value, str) else None))
    return out
