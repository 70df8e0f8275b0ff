"""Simulated time: a start instant and a speed-up factor over the wall clock."""

from __future__ import annotations

import time
from collections.abc import Callable
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
    # A clock shared with other processes (`linli.catalog.simtime`): read it rather than keep one's own.
    follow: Callable[[], float] | None = None

    @classmethod
    def following(cls, now: Callable[[], float], time_scale: float) -> SimClock:
        """A clock that reads `now`, which runs `time_scale` times faster than the wall clock."""
        return cls(start=now(), time_scale=time_scale, follow=now)

    @classmethod
    def behind_wall(cls, time_scale: float, hours: float, now: float | None = None) -> SimClock:
        """A clock that starts far enough in the past to stay behind the wall clock for
        `hours` of running: device clocks ahead of the edge's are refused as bad_time."""
        now = time.time() if now is None else now
        return cls(start=now - max(0.0, time_scale - 1) * hours * 3600, time_scale=time_scale, capped=True)

    def begin(self) -> None:
        """Simulated time is `start` from this moment: called once the simulator is ready, so
        that the time it took to build and start is not simulated (at 120x, seconds of set-up
        would otherwise be minutes gone before anyone could watch). A shared clock runs on."""
        if self.follow is not None:
            return
        self._wall0 = time.monotonic()

    def now(self) -> float:
        """Simulated epoch seconds."""
        if self.follow is not None:
            return self.follow()
        simulated = self.start + (time.monotonic() - self._wall0) * self.time_scale
        return min(simulated, time.time()) if self.capped else simulated
