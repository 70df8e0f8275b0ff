"""Small helpers for what linli prints to people."""

from __future__ import annotations


def plural(n: int, noun: str) -> str:
    """'1 device', '2 devices', '1,200 devices'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
