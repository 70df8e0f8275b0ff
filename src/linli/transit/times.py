"""A GTFS time of day both ways: 'H:MM:SS' to seconds from the service day's zero, and back.

The standard library only, so that the command line may format times without importing pydantic
or the geometry (`linli --help` stays light); the timetable's loader (`gtfs.py`) reads with it.
"""

from __future__ import annotations


def gtfs_seconds(text: str) -> int:
    """'H:MM:SS' (hours may pass 24, for trips past midnight) to seconds; ValueError if not."""
    parts = text.strip().split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or not (len(parts[1]) == len(parts[2]) == 2):
        raise ValueError(f"'{text}' is not a time H:MM:SS")
    h, m, s = (int(p) for p in parts)
    if m > 59 or s > 59:
        raise ValueError(f"'{text}' is not a time H:MM:SS")
    return h * 3600 + m * 60 + s


def gtfs_hhmm(seconds: int) -> str:
    """Seconds from the service day's zero as HH:MM, as the timetable writes them (hours may pass
    24): `gtfs_seconds` the other way, to the minute."""
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"
