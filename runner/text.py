"""Small wording helpers shared by verdict reasons, facts and reports."""

from __future__ import annotations


def plural(n: int, word: str) -> str:
    """`1 round`, `2 rounds`."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
