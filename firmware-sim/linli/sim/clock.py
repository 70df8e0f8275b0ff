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
    # Never past the present: a stretch simulated fast that reaches it goes on at real time, so
    # that the devices' clocks never run ahead of an edge's (which refuses them as bad_time) and
    # whoever waits on the district for an event can wait as long as it takes.
    capped: bool = False

    @classmethod
    def behind_wall(cls, time_scale: float, hours: float, now: float | None = None) -> SimClock:
        """A clock that starts far enough in the past to stay behind the wall clock for
        `hours` of running: device clocks ahead of the edge's are refused as bad_time."""
        now = time.time() if now is None else now
        return cls(start=now - max(0.0, time_scale - 1) * hours * 3600, time_scale=time_scale, capped=True)

    def begin(self) -> None:
        """Simulated time is `start` from this moment: called once the simulator is ready, so
        that the time it took to build and start is not simulated (at 120x, seconds of set-up
        would otherwise be minutes gone before anyone could watch)."""
        self._wall0 = time.monotonic()

    def now(self) -> float:
        """Simulated epoch seconds."""
        simulated = self.start + (time.monotonic() - self._wall0) * self.time_scale
        return min(simulated, time.time()) if self.capped else simulated
