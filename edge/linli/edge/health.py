"""The health point every connector writes per device: liveness, latency, errors by reason."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from linli.catalog.lineprotocol import format_fields, series_key
from linli.catalog.names import HEALTH_MEASUREMENT


@dataclass
class HealthReport:
    """When a device's health point was last written, and what it said.

    A point of every device at every poll or check would be most of what an agent writes; one
    is due when the device went online or offline or counted a new error, and at least every
    `every` seconds (the dashboards look back 5 minutes).
    """

    state: tuple[bool, int] | None = None  # online, errors in all
    at: float = 0.0  # monotonic

    def due(self, online: bool, errors: int, now: float, every: float) -> bool:
        return (online, errors) != self.state or now - self.at >= every

    def mark(self, online: bool, errors: int, now: float) -> None:
        """A point was written now."""
        self.state, self.at = (online, errors), now


def health_key(tags: Mapping[str, str]) -> str:
    """The series of a device's health points, for a connector to keep."""
    return series_key(HEALTH_MEASUREMENT, tags)


def health_line(
    tags: Mapping[str, str] | str,
    time_ms: int,
    *,
    online: bool,
    errors: Counter[str],
    latency_s: float,
    last_seen_ms: int,
    **counts: int | float,
) -> str:
    """One `health` line, under `tags` or a series from `health_key`.

    `counts` are the connector's own figures (polls, messages, lag_ms).
    """
    fields: dict[str, bool | int | float | str] = {
        "online": 1 if online else 0,
        **counts,
        "errors": sum(errors.values()),
        "latency_ms": round(latency_s * 1000, 3),
    }
    fields.update((f"errors_{reason}", n) for reason, n in errors.items())
    if last_seen_ms:
        fields["last_seen_ms"] = last_seen_ms
    # Numbers the connector counted, under tags the config validated: no Reading to check.
    key = tags if isinstance(tags, str) else health_key(tags)
    return f"{key} {format_fields(fields)} {time_ms}"
