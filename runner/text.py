"""Wording: small helpers shared by verdict reasons, facts and reports, and text from libraries,
watchers and API errors made safe to show, on a terminal and in Markdown.

A watcher's error message or an API server's reason ends up in the terminal output, the report
and the README. Control characters (an ESC starting a terminal escape sequence, a carriage
return overwriting a line) and bidirectional overrides are shown escaped (`\\x1b`), never
interpreted; in Markdown `<` becomes `&lt;`, so no text can open an HTML comment and forge or
break the README's matrix markers.
"""

from __future__ import annotations

import re

# C0 controls except tab and newline, DEL, C1 controls, and the Unicode bidi controls.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with every control character shown as an escape (`\\x1b`, `\\u202e`)."""
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                       text)


def markdown_text(text: str) -> str:
    """One line of Markdown table/list text: printable, whitespace collapsed, `|` and `<` escaped."""
    return " ".join(printable(text).split()).replace("|", "\\|").replace("<", "&lt;")


def plural(n: int, word: str) -> str:
    """`1 round`, `2 rounds`."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
