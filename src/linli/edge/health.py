"""The health point every connector writes per device: liveness, latency, errors by reason."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

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


# Upper bounds, in seconds, of the poll-latency and schedule-lag histograms on /metrics: fine
# below 50 ms, where a healthy gateway answers, coarse above it.
TIMING_BOUNDS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Timings:
    """A histogram of durations: counts per bucket of TIMING_BOUNDS, the last one open."""

    def __init__(self) -> None:
        self.counts = [0] * (len(TIMING_BOUNDS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(TIMING_BOUNDS, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, int]]:
        """Prometheus's cumulative buckets: (upper bound, observations up to it), +Inf last."""
        out, running = [], 0
        for bound, n in zip([*map(str, TIMING_BOUNDS), "+Inf"], self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass
class PollTimings:
    """How long the agent's Modbus polls took, and how late they started, all devices together."""

    latency: Timings = field(default_factory=Timings)
    lag: Timings = field(default_factory=Timings)
