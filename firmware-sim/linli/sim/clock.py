"""Simulated time: a start instant and a speed-up factor over the wall clock."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class SimClock:
    """Maps wall time to simulated UTC epoch seconds, `time_scale` times faster."""

    start: float = field(default_factory=time.time)
    time_scale: float = 1.0
    _wall0: float = field(default_factory=time.monotonic)

    @classmethod
    def behind_wall(cls, time_scale: float, hours: float, now: float | None = None) -> SimClock:
        """A clock that starts far enough in the past to stay behind the wall clock for
        `hours` of running: device clocks ahead of the edge's are refused as bad_time."""
        now = time.time() if now is None else now
        return cls(start=now - max(0.0, time_scale - 1) * hours * 3600, time_scale=time_scale)

    def begin(self) -> None:
        """Simulated time is `start` from this moment: called once the simulator is ready, so
        that the time it took to build and start is not simulated (at 120x, seconds of set-up
        would otherwise be minutes gone before anyone could watch)."""
        self._wall0 = time.monotonic()

    def now(self) -> float:
        """Simulated epoch seconds."""
        return self.start + (time.monotonic() - self._wall0) * self.time_scale
